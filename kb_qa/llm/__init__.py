"""The LLM layer: a LangChain ``LLM`` over three backends (transformers, ChatGLM, OpenAI-compatible)."""

from kb_qa.llm.base import ChatBackend, GenerationParams, InvalidHistory, Message, StopFilter, normalize_history
from kb_qa.llm.budget import Budget, ContextTooLong, fit_context
from kb_qa.llm.chat_llm import ChatLLM, ConcurrencyGate

__all__ = [
    "Budget",
    "ChatBackend",
    "ChatLLM",
    "ConcurrencyGate",
    "ContextTooLong",
    "GenerationParams",
    "InvalidHistory",
    "Message",
    "StopFilter",
    "fit_context",
    "normalize_history",
]
