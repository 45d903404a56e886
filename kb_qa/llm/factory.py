"""Build the configured chat model (one of three backends) from the settings."""

from __future__ import annotations

import os

from kb_qa.errors import ConfigError
from kb_qa.llm.base import ChatBackend
from kb_qa.llm.chat_llm import ChatLLM, ConcurrencyGate
from kb_qa.provision import resolve_chat_model
from kb_qa.settings import Settings


def build_backend(settings: Settings) -> ChatBackend:
    """The backend named by ``llm.backend``; checks the combination, loads nothing yet."""
    cfg = settings.llm
    if cfg.backend == "openai":
        from kb_qa.llm.openai_backend import OpenAIBackend

        if not cfg.base_url:
            raise ConfigError("llm.base_url: the openai backend needs the server's URL, e.g. http://127.0.0.1:8000/v1")
        return OpenAIBackend(
            cfg.base_url,
            cfg.model,
            api_key=cfg.api_key or os.environ.get("OPENAI_API_KEY"),
            timeout=cfg.request_timeout,
            context_window=cfg.context_window or 8192,
            tokenizer_path=cfg.tokenizer,
        )
    path = resolve_chat_model(cfg.model, settings.model_cache)
    name = path.name if os.sep in cfg.model else cfg.model
    if cfg.backend == "chatglm":
        from kb_qa.llm.chatglm_backend import ChatGLMBackend

        bits = {"none": None, "8bit": 8, "4bit": 4}[cfg.quantization]
        device_map = cfg.device_map if isinstance(cfg.device_map, dict) else None
        return ChatGLMBackend(
            path,
            name=name,
            device=cfg.device,
            quantize_bits=bits,
            num_gpus=cfg.num_gpus,
            device_map=device_map,
            context_window=cfg.context_window,
        )
    from kb_qa.llm.transformers_backend import TransformersBackend

    return TransformersBackend(
        path,
        name=name,
        device=cfg.device,
        dtype=cfg.dtype,
        quantization=cfg.quantization,
        num_gpus=cfg.num_gpus,
        device_map=cfg.device_map,
        max_memory=cfg.max_memory,
        lora=cfg.lora,
        trust_remote_code=cfg.trust_remote_code,
        context_window=cfg.context_window,
    )


def build_llm(settings: Settings, backend: ChatBackend | None = None) -> ChatLLM:
    """The LangChain LLM over the configured backend, with the configured generation defaults."""
    cfg = settings.llm
    return ChatLLM(
        backend=backend or build_backend(settings),
        gate=ConcurrencyGate(cfg.max_concurrent, cfg.max_queue),
        system_prompt=cfg.system_prompt,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        repetition_penalty=cfg.repetition_penalty,
        seed=cfg.seed,
    )
