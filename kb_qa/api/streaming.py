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

from kb_qa.chain import QAChain
from kb_qa.errors import Busy, KbQaError
from kb_qa.events import ChainEvent, Delta, Error, Final, Sources
from kb_qa.services import Services

log = logging.getLogger(__name__)


def next_event(events: Iterator[ChainEvent]) -> ChainEvent | None:
    return next(events, None)


async def first_event(events: Iterator[ChainEvent]) -> ChainEvent | None:
    """The first event, computed on a worker thread (retrieval errors surface here)."""
    return await anyio.to_thread.run_sync(next_event, events)


def drain(events: Iterator[ChainEvent], first: ChainEvent | None) -> dict[str, Any]:
    """The final answer record, consuming the rest of the events."""
    return QAChain.final_record(itertools.chain([first] if first is not None else [], events))


def sse_line(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def sse_frame(event: ChainEvent | Error) -> str:
    """One event as an SSE frame: ``sources``, ``delta`` (``{"text"}``), ``done`` (the answer), ``error``."""
    match event:
        case Sources(query=query, sources=sources):
            return sse_line("sources", {"query": query, "sources": sources})
        case Delta(text=text):
            return sse_line("delta", {"text": text})
        case Final(answer=answer):
            return sse_line("done", answer)
        case Error(code=code, message=message):
            return sse_line("error", {"code": code, "message": message})
    raise TypeError(f"not a chain event: {event!r}")


async def sse(events: Iterator[ChainEvent], first: ChainEvent | None) -> AsyncIterator[str]:
    """SSE frames: ``sources``, ``delta`` (``{"text"}``), then ``done`` (the answer) or ``error``.

    A cancelled request waits for the step in progress (one token) before closing the generator,
    so it is never closed while running.
    """
    event = first
    try:
        while event is not None:
            yield sse_frame(event)
            event = await anyio.to_thread.run_sync(next_event, events)
    except KbQaError as exc:
        yield sse_frame(Error(exc.code, str(exc)))
    except Exception:
        log.exception("generation failed part-way")
        yield sse_frame(Error("internal", "generation failed; the server log has the details"))
    finally:
        close = getattr(events, "close", None)
        if close is not None:  # a client that went away stops its generation
            close()


def refuse_when_full(services: Services) -> None:
    """Once a stream has started a full queue could only be an error event: refuse it before."""
    if services.qa.busy():
        raise Busy("the model is busy (its queue is full); try again shortly")
