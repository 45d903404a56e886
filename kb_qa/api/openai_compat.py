"""The OpenAI-compatible API: ``/v1/models``, ``/v1/chat/completions``, ``/v1/embeddings``.

Tools written for OpenAI (the official ``openai`` SDK, LangChain's ``ChatOpenAI`` and
``OpenAIEmbeddings``) work when pointed at ``http://host:7861/v1``.

- **Models**: the chat model under its own name, and every knowledge base as ``kb:<name>``.
  Asking ``kb:<name>`` (or sending ``"knowledge_base": "<name>"`` / ``"knowledge_bases": [...]`` in
  the body) answers from that knowledge base; the passages come back in an extra ``sources`` field
  (of the response, or of the first streamed chunk).
- **Chat**: the last user message is the question, the earlier messages the history; ``stream``
  gives OpenAI's ``chat.completion.chunk`` events ending with ``data: [DONE]``.
- **Embeddings**: ``encoding_format`` ``float`` or ``base64`` (little-endian float32, which the
  ``openai`` SDK asks for by default); texts are embedded as passages, or as queries with the extra
  field ``"input_type": "query"`` (e5-style models embed the two differently).
- **Errors** use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

import anyio
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kb_qa.api import errors as api_errors
from kb_qa.api.errors import ApiError
from kb_qa.api.schemas import TokensInt, TopKInt
from kb_qa.domain import MAX_HISTORY_MESSAGES, MAX_MESSAGE_CHARS, MAX_QUESTION_CHARS, SCORE
from kb_qa.errors import KbQaError
from kb_qa.events import ChainEvent, Delta, Final, Sources

KB_PREFIX = "kb:"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None


NonEmpty = Annotated[str, Field(min_length=1)]


class ChatCompletionRequest(BaseModel):
    # OpenAI clients send fields we do not use (n, seed, ...); those we use have their declared types
    model_config = ConfigDict(extra="allow", strict=True)
    model: str = Field(description="The chat model's name, or kb:<knowledge base> to answer from one.")
    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=MAX_HISTORY_MESSAGES + 1,
        description="The conversation; the last user message is asked.",
    )
    stream: bool = Field(False, description="Stream chat.completion.chunk events.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 = greedy.")
    max_tokens: TokensInt | None = Field(None, description="Longest answer in tokens.")
    max_completion_tokens: TokensInt | None = Field(None, description="Same as max_tokens (newer clients).")
    knowledge_base: str | None = Field(None, description="Extra: answer from this knowledge base.")
    knowledge_bases: list[str] | None = Field(None, description="Extra: answer from these knowledge bases.")
    top_k: TopKInt | None = Field(None, description="Extra: passages given to the model.")
    score_threshold: float | None = Field(None, **SCORE.bounds, description="Extra: minimum cosine similarity.")


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    input: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1)] = Field(
        description="A text or a list of texts (token arrays are not accepted)."
    )
    model: str = Field("", description="Ignored: the configured embedding model is used (see /v1/models).")
    encoding_format: Literal["float", "base64"] = Field("float", description="float list or base64 float32.")
    input_type: Literal["passage", "query"] = Field("passage", description="Extra: embed as passages or queries.")


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def models_payload(services: Any) -> dict[str, Any]:
    created = int(time.time())
    # the model that answers, once loaded; else the configured name
    llm_name = services.qa.model_name() or services.settings.llm.model.rstrip("/").rsplit("/", 1)[-1]
    data = [{"id": llm_name, "object": "model", "created": created, "owned_by": "kb-qa"}]
    data += [
        {"id": f"{KB_PREFIX}{kb.name}", "object": "model", "created": created, "owned_by": "kb-qa knowledge base"}
        for kb in services.knowledge_bases.list_all()
    ]
    return {"object": "list", "data": data}


def chat_arguments(body: ChatCompletionRequest, services: Any) -> tuple[str, dict[str, Any]]:
    """(question, arguments for QAChain.stream) from an OpenAI request."""
    kbs = list(body.knowledge_bases or [])
    if body.knowledge_base:
        kbs.append(body.knowledge_base)
    if body.model.startswith(KB_PREFIX):
        kbs.append(body.model[len(KB_PREFIX) :])
    kbs = list(dict.fromkeys(kbs))
    for name in kbs:
        services.knowledge_bases.get(name)
    turns = [m for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise ApiError(400, "invalid_request", "the last message must come from the user")
    history = [{"role": m.role, "content": _text(m.content)} for m in turns[:-1]]
    question = _text(turns[-1].content)
    if len(question) > MAX_QUESTION_CHARS or any(len(m["content"]) > MAX_MESSAGE_CHARS for m in history):
        raise ApiError(
            400, "invalid_value", f"the question may have at most {MAX_QUESTION_CHARS} characters and each earlier "
            f"message at most {MAX_MESSAGE_CHARS}", param="messages",
        )  # fmt: skip
    return question, {
        "mode": "kb" if kbs else "chat",
        "knowledge_bases": kbs,
        "history": history,
        "retrieval": {"top_k": body.top_k, "score_threshold": body.score_threshold},
        "generation": {
            "temperature": body.temperature,
            "max_new_tokens": body.max_completion_tokens or body.max_tokens,
        },
    }


def completion(model: str, answer: dict[str, Any], services: Any) -> dict[str, Any]:
    count = services.qa.count_tokens if "llm" in answer["models"] else (lambda text: len(text.split()))
    completion_tokens = count(answer["answer"]) if answer["answer"] else 0
    prompt_tokens = count(answer["question"])
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer["answer"]}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "sources": answer["sources"],
    }


def _chunk(ident: str, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    body = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def stream_chunks(model: str, events: Iterator[ChainEvent], first: Any, advance: Any) -> AsyncIterator[str]:
    """OpenAI streaming: role (with the sources), content deltas, a stop chunk, ``[DONE]``."""
    ident = f"chatcmpl-{uuid.uuid4().hex}"
    event = first
    try:
        while event is not None:
            if isinstance(event, Sources):
                yield _chunk(ident, model, {"role": "assistant", "content": ""}, sources=event.sources)
            elif isinstance(event, Delta):
                yield _chunk(ident, model, {"content": event.text})
            elif isinstance(event, Final):
                yield _chunk(ident, model, {}, "stop")
            event = await anyio.to_thread.run_sync(advance, events)
    except KbQaError as exc:
        yield f"data: {json.dumps(api_errors.openai_error(exc.code, str(exc), api_errors.status_of(exc)))}\n\n"
    finally:
        close = getattr(events, "close", None)
        if close is not None:  # a client that went away stops its generation
            close()
    yield "data: [DONE]\n\n"


def embeddings_payload(body: EmbeddingRequest, services: Any) -> dict[str, Any]:
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts or any(not isinstance(t, str) or not t for t in texts):
        raise ApiError(
            400, "invalid_value", "input must be a non-empty string or a list of non-empty strings", param="input"
        )
    embeddings = services.embeddings
    vectors = embeddings.encode_queries(texts) if body.input_type == "query" else embeddings.encode_passages(texts)
    data = []
    for i, vector in enumerate(np.asarray(vectors, dtype="<f4")):
        as_base64 = body.encoding_format == "base64"
        value: Any = base64.b64encode(vector.tobytes()).decode() if as_base64 else vector.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(len(t.split()) for t in texts)
    return {"object": "list", "data": data, "model": embeddings.name, "usage": {"prompt_tokens": tokens,
            "total_tokens": tokens}}  # fmt: skip


__all__ = [
    "ChatCompletionRequest",
    "EmbeddingRequest",
    "chat_arguments",
    "completion",
    "embeddings_payload",
    "models_payload",
    "stream_chunks",
]
