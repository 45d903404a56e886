"""The OpenAI-compatible routes (``/v1``); the translation lives in :mod:`kb_qa.api.openai_compat`."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from kb_qa.api import openai_compat
from kb_qa.api.deps import Read, Svc
from kb_qa.api.schemas import STREAMS, OpenAIErrorOut, error_responses
from kb_qa.api.streaming import drain, first_event, next_event, refuse_when_full

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"], responses=error_responses(OpenAIErrorOut))


@router.get("/models", dependencies=[Read], summary="The chat model, and each knowledge base as kb:<name>")
def v1_models(services: Svc) -> dict[str, Any]:
    return openai_compat.models_payload(services)


@router.post("/chat/completions", dependencies=[Read], responses=STREAMS,
             summary="Chat completions; model kb:<name> answers from that knowledge base")  # fmt: skip
async def v1_chat(body: openai_compat.ChatCompletionRequest, services: Svc) -> Any:
    question, arguments = await anyio.to_thread.run_sync(openai_compat.chat_arguments, body, services)
    if body.stream:
        refuse_when_full(services)
    events = services.qa.stream(question, **arguments)
    first = await first_event(events)
    if not body.stream:
        answer = await anyio.to_thread.run_sync(drain, events, first)
        return await anyio.to_thread.run_sync(openai_compat.completion, body.model, answer, services)
    return StreamingResponse(openai_compat.stream_chunks(body.model, events, first, next_event),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})  # fmt: skip


@router.post("/embeddings", dependencies=[Read], summary="Embeddings with the configured model (float or base64)")
def v1_embeddings(body: openai_compat.EmbeddingRequest, services: Svc) -> dict[str, Any]:
    return openai_compat.embeddings_payload(body, services)
