"""Chain events over HTTP: the one adapter from :meth:`QAChain.stream` events to SSE frames.

The chain's generator is advanced on a worker thread, one event at a time, so the event loop never
blocks on retrieval or generation; the first event is taken before the response starts, so that
errors in retrieval (an unknown knowledge base, a bad option) still become ordinary HTTP errors.
OpenAI's stream chunks are built from the same events in :func:`kb_qa.api.openai_compat.stream_chunks`.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio

from kb_qa.api import errors as api_errors
from kb_qa.chain import QAChain
from kb_qa.errors import Busy, KbQaError
from kb_qa.services import Services

log = logging.getLogger(__name__)


def next_event(events: Iterator[dict[str, Any]]) -> Any:
    return next(events, None)


async def first_event(events: Iterator[dict[str, Any]]) -> Any:
    """The first event, computed on a worker thread (retrieval errors surface here)."""
    return await anyio.to_thread.run_sync(next_event, events)


def drain(events: Iterator[dict[str, Any]], first: Any) -> dict[str, Any]:
    """The final answer record, consuming the rest of the events."""
    return QAChain.final_record(itertools.chain([first] if first is not None else [], events))


def sse_line(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def sse(events: Iterator[dict[str, Any]], first: Any) -> AsyncIterator[str]:
    """SSE frames: ``sources``, ``delta`` (``{"text"}``), then ``done`` (the answer) or ``error``.

    A cancelled request waits for the step in progress (one token) before closing the generator,
    so it is never closed while running.
    """
    event = first
    try:
        while event is not None:
            kind = event["event"]
            if kind == "sources":
                yield sse_line("sources", {"query": event["query"], "sources": event["sources"]})
            elif kind == "delta":
                yield sse_line("delta", {"text": event["text"]})
            elif kind == "final":
                yield sse_line("done", event["answer"])
            event = await anyio.to_thread.run_sync(next_event, events)
    except KbQaError as exc:
        yield sse_line("error", api_errors.error_body(exc.code, str(exc))["error"])
    except Exception:
        log.exception("generation failed part-way")
        yield sse_line("error", {"code": "internal", "message": "generation failed; the server log has the details"})
    finally:
        close = getattr(events, "close", None)
        if close is not None:  # a client that went away stops its generation
            close()


def refuse_when_full(services: Services) -> None:
    """Once a stream has started a full queue could only be an error event: refuse it before."""
    if services.qa.busy():
        raise Busy("the model is busy (its queue is full); try again shortly")
