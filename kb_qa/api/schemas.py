"""Request and response bodies of the HTTP API (every field is described in /docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path as PathParam
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from kb_qa.domain import EXPAND_CHARS, MAX_HISTORY_MESSAGES, MAX_MESSAGE_CHARS, MAX_QUESTION_CHARS, SCORE, TOP_K
from kb_qa.registry import MAX_NAME_LENGTH, NAME_PATTERN


def _json_integer(value: Any) -> Any:
    """JSON's integers: 9 and 9.0 (JSON Schema counts both as integers), never true or "9"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# integer fields of requests: strict (no strings, no booleans) but 9.0 is 9, as JSON Schema has it;
# the bounds sit inside the Annotated so that the schema shows them as minimum/maximum
TopKInt = Annotated[int, Field(**TOP_K.bounds), BeforeValidator(_json_integer)]
ExpandInt = Annotated[int, Field(**EXPAND_CHARS.bounds), BeforeValidator(_json_integer)]
TokensInt = Annotated[int, Field(ge=1, le=32768), BeforeValidator(_json_integer)]

KB_NAME_RULE = "Letters, digits, Chinese characters, '_', '-', '.'; starting with a letter or digit; at most 64."
NAME_RULES: dict[str, Any] = {
    "min_length": 1,
    "max_length": MAX_NAME_LENGTH,
    "pattern": NAME_PATTERN,
    "description": KB_NAME_RULE,
}
KbNameField = Annotated[str, Field(**NAME_RULES)]  # a knowledge-base name in a body
KbName = Annotated[str, PathParam(**NAME_RULES)]  # ... in a path


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as declared: 0 is not false


class KnowledgeBaseCreate(_Body):
    name: KbNameField
    description: str = Field("", description="Free text shown in listings.")
    embedding_model: str | None = Field(
        None, description="Must be the server's embedding model (embedding.model) when given; see GET /ready."
    )


class KnowledgeBaseOut(BaseModel):
    name: str = Field(description="The knowledge base's name.")
    description: str = Field(description="Free text.")
    embedding_model: str = Field(description="The embedding model that built it (queries must use the same).")
    dimension: int = Field(description="Vector dimension of that model.")
    created_at: str = Field(description="ISO 8601 creation time (UTC).")
    document_count: int = Field(description="Documents registered (indexed or failed).")
    chunk_count: int = Field(description="Chunks in the index.")


class DocumentOut(BaseModel):
    path: str = Field(description="The document's name in the knowledge base (its key).")
    size: int = Field(description="Bytes.")
    sha256: str = Field(description="Content hash; the same content uploaded again adds nothing.")
    loader: str = Field(description="The loader that read it.")
    chunk_count: int = Field(description="Chunks in the index.")
    status: str = Field(description="indexed or failed.")
    error: str | None = Field(description="Why it failed (reason: detail), when it did.")
    updated_at: str = Field(description="ISO 8601 time of the last change (UTC).")


class FileResult(BaseModel):
    file: str = Field(description="The uploaded file's (sanitised) name.")
    action: str = Field(description="added, updated, unchanged or failed.")
    chunks: int = Field(0, description="Chunks indexed for it.")
    error: str | None = Field(None, description="Why it failed.")


class UploadOut(BaseModel):
    knowledge_base: str = Field(description="The knowledge base the files went into.")
    files: list[FileResult] = Field(description="One result per uploaded file, in upload order.")
    seconds: float = Field(description="Time spent indexing.")


class SearchRequest(_Body):
    query: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="The question or keywords.")
    top_k: TopKInt | None = Field(None, description="Passages to return (default retrieval.top_k).")
    score_threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description="Minimum cosine similarity of question and passage (default from settings)."
    )
    method: Literal["hybrid", "dense", "bm25"] | None = Field(None, description="Retrieval method (default hybrid).")
    documents: list[str] | None = Field(None, description="Only search these documents (names as listed).")
    expand_chars: ExpandInt | None = Field(None, description="Grow passages with neighbours up to this size.")


class Passage(BaseModel):
    kb: str = Field(description="Knowledge base.")
    document: str = Field(description="Document name.")
    page: int | None = Field(description="Page (PDF, slides), if any.")
    heading: str = Field(description="Heading path of the passage's section.")
    chunk_id: int = Field(description="Id of the best-matching chunk.")
    chunk_ids: list[int] = Field(description="Every chunk merged into the passage.")
    score: float = Field(description="Cosine similarity of question and passage, in [-1, 1]; higher is closer.")
    relevance: float | None = Field(description="The rank signal of the method (fused score for hybrid).")
    text: str = Field(description="The passage.")
    start: int = Field(description="Character offset of the passage in its page/section.")
    end: int = Field(description="End offset (exclusive).")


class SearchOut(BaseModel):
    query: str = Field(description="The query as searched.")
    passages: list[Passage] = Field(description="Best first; neighbouring chunks merged, duplicates dropped.")


PairText = Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]
# langchain-ChatGLM's history entry [question, answer] (the answer may be null where not yet given)
Pair = Annotated[list[PairText], Field(min_length=2, max_length=2)]
OpenPair = Annotated[list[PairText | None], Field(min_length=2, max_length=2)]


class Message(BaseModel):
    role: Literal["system", "user", "assistant"] = Field(description="Who said it.")
    content: str = Field(max_length=MAX_MESSAGE_CHARS, description="What was said.")


class ChatRequest(_Body):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="The question.")
    knowledge_bases: list[str] = Field(
        default_factory=list, description="Answer from these knowledge bases; none = plain chat with the model."
    )
    knowledge_base: str | None = Field(None, description="Shorthand for one knowledge base.")
    mode: Literal["kb", "search", "chat"] | None = Field(
        None, description="kb (grounded), search (passages only, no model) or chat; default kb with knowledge bases."
    )
    history: list[Message] | list[OpenPair] = Field(
        max_length=MAX_HISTORY_MESSAGES,
        default_factory=list,
        description="Earlier turns: [{role, content}] or langchain-ChatGLM's [[question, answer]].",
    )
    top_k: TopKInt | None = Field(None, description="Passages given to the model.")
    score_threshold: float | None = Field(None, **SCORE.bounds, description="Minimum cosine similarity.")
    documents: list[str] | None = Field(None, description="Only use these documents.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 = greedy.")
    max_tokens: TokensInt | None = Field(None, description="Longest answer in tokens.")
    stream: bool = Field(False, description="Server-Sent Events: sources, then text deltas, then done.")


class Highlight(BaseModel):
    start: int = Field(description="Start of the sentence in the passage's text (a character offset).")
    end: int = Field(description="End of the sentence (exclusive).")
    score: float = Field(description="How well it supports the answer: 0.5 x cosine + 0.5 x keyword share.")


class Source(Passage):
    """A passage the model was given, numbered as in its prompt."""

    number: int = Field(description="The [n] the answer cites it by.")
    cited: bool = Field(description="Whether the answer cites [number].")
    highlights: list[Highlight] = Field(
        default_factory=list,
        description="Evidence: the sentence(s) of text that best support the answer, best first, computed locally "
        "(embedding model + keyword overlap); in the streamed sources event, before the answer exists, they "
        "follow the question.",
    )


class ChatOut(BaseModel):
    question: str = Field(description="The question as asked.")
    answer: str = Field(description="The answer (empty in search mode).")
    mode: str = Field(description="kb, search or chat.")
    sources: list[Source] = Field(description="The passages the model was given, numbered as in the prompt.")
    query: str = Field(description="What retrieval searched for (a follow-up rewritten to stand alone).")
    declined: bool = Field(description="True when no passage passed the threshold and the model was not asked.")
    language: str = Field(description="The prompt language used (zh or en).")
    timings: dict[str, float] = Field(
        description="Milliseconds: retrieval_ms, generation_ms, first_token_ms, total_ms."
    )
    models: dict[str, str] = Field(description="The embedding model and, when it ran, the chat model.")
    notes: list[str] = Field(description="What was dropped to fit the context window, and similar remarks.")


def history_value(history: Any) -> list[Any]:
    """The history as plain lists/dicts for the chain (which checks its shape)."""
    return [m.model_dump() if isinstance(m, BaseModel) else m for m in history]


class ErrorDetail(BaseModel):
    code: str = Field(description="What went wrong, for programs: kb_not_found, invalid_request, too_large, ...")
    message: str = Field(description="What went wrong and what to do, for people.")


class ErrorOut(BaseModel):
    """Every error of the native routes."""

    error: ErrorDetail


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, ...")
    param: str | None = None
    code: str | None = None


class OpenAIErrorOut(BaseModel):
    """Every error under /v1, in OpenAI's shape."""

    error: OpenAIErrorDetail


_STATUS_TEXT = {
    400: "A value is missing, unknown or out of range",
    401: "No API key, or an unknown one",
    403: "The key may not do this",
    404: "No such knowledge base, document, job or route",
    405: "The route does not take this method",
    409: "In conflict with what exists (a name taken, another embedding model, changed while waiting)",
    413: "The request body or a file is too large",
    415: "Unsupported file type",
    422: "The request does not match the schema, or a file cannot be read",
    429: "The model's queue is full; retry after Retry-After seconds",
    500: "A fault on the server's side; the server log has the details",
    503: "Models not loaded or not configured; retry after Retry-After seconds",
}


# a route that answers JSON, or server-sent events when the request sets stream
STREAMS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {}}}, "description": "JSON, or server-sent events with stream"}
}


def error_responses(model: type[BaseModel] = ErrorOut) -> dict[int | str, dict[str, Any]]:
    """The error statuses every route may answer, for its OpenAPI ``responses``."""
    return {status: {"model": model, "description": text} for status, text in _STATUS_TEXT.items()}
