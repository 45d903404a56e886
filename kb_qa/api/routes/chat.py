"""Grounded chat: a whole answer, or its events as SSE."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from kb_qa.api.deps import Read, Svc
from kb_qa.api.schemas import STREAMS, ChatOut, ChatRequest, ErrorOut, error_responses, history_value
from kb_qa.api.streaming import drain, first_event, refuse_when_full, sse

router = APIRouter(tags=["chat"], responses=error_responses(ErrorOut))


@router.post("/chat", dependencies=[Read], response_model=ChatOut, responses=STREAMS,
             summary="Answer from knowledge bases (or plain chat), with sources; stream=true for SSE")  # fmt: skip
async def chat(body: ChatRequest, services: Svc) -> Any:
    kbs = list(dict.fromkeys([*body.knowledge_bases, *([body.knowledge_base] if body.knowledge_base else [])]))
    for name in kbs:  # unknown knowledge bases fail before any streaming starts
        await anyio.to_thread.run_sync(services.knowledge_bases.get, name)
    arguments: dict[str, Any] = {
        "mode": body.mode or ("kb" if kbs else "chat"),
        "knowledge_bases": kbs,
        "history": history_value(body.history),
        "retrieval": {"top_k": body.top_k, "score_threshold": body.score_threshold, "documents": body.documents},
        "generation": {"temperature": body.temperature, "max_new_tokens": body.max_tokens},
    }
    if body.stream and arguments["mode"] != "search":
        refuse_when_full(services)
    events = services.qa.stream(body.question, **arguments)
    first = await first_event(events)  # retrieval errors become HTTP errors here
    if not body.stream:
        return await anyio.to_thread.run_sync(drain, events, first)
    return StreamingResponse(sse(events, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
