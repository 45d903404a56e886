"""The LangChain ``LLM`` that answers with a local (or served) chat model.

It follows the LangChain contract: ``_call``, ``_stream``, ``_llm_type`` and
``_identifying_params``; it honours ``stop`` strings exactly (the text ends before the first one);
its output never contains the prompt; and it keeps no conversation state: history comes with each
call as the ``history`` keyword (role messages or langchain-ChatGLM's ``[[question, answer], …]``)
and goes through the model's own chat format.

One loaded model serves every caller. :class:`ConcurrencyGate` admits ``max_concurrent``
generations at a time and lets at most ``max_queue`` more wait; past that a call fails at once with
:class:`~kb_qa.errors.Busy`. Generation happens on worker threads (the async methods inherited from
LangChain run the sync stream in an executor), and a consumer that stops reading, or closes the
stream, stops the generation within a token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import GenerationChunk
from pydantic import ConfigDict, Field

from kb_qa.errors import Busy
from kb_qa.llm.base import ChatBackend, GenerationParams, Message, StopFilter, normalize_history


class ConcurrencyGate:
    """At most ``max_concurrent`` holders; at most ``max_queue`` waiters; everyone else gets Busy."""

    def __init__(self, max_concurrent: int = 1, max_queue: int = 8) -> None:
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._waiting = 0
        self._active = 0
        self._max_concurrent = max_concurrent
        self._max_queue = max_queue
        self._lock = threading.Lock()

    def __enter__(self) -> ConcurrencyGate:
        if not self._slots.acquire(blocking=False):
            with self._lock:
                if self._waiting >= self._max_queue:
                    raise Busy(f"the model is busy ({self._max_queue} requests already waiting); try again shortly")
                self._waiting += 1
            try:
                self._slots.acquire()
            finally:
                with self._lock:
                    self._waiting -= 1
        with self._lock:
            self._active += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._active -= 1
        self._slots.release()

    @property
    def full(self) -> bool:
        """Whether a new caller would be turned away now (every slot taken and the queue full)."""
        with self._lock:
            return self._active >= self._max_concurrent and self._waiting >= self._max_queue

    @property
    def waiting(self) -> int:
        return self._waiting


class ChatLLM(LLM):
    """A chat model behind LangChain's ``LLM`` interface.

    ``invoke(question, history=[...], system="...")``; generation settings may be overridden per
    call as keywords (``max_new_tokens``, ``temperature``, ``top_p``, ``repetition_penalty``, ``seed``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: ChatBackend = Field(exclude=True)
    gate: ConcurrencyGate = Field(default_factory=ConcurrencyGate, exclude=True)
    system_prompt: str = ""
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.05
    seed: int | None = None

    @property
    def _llm_type(self) -> str:
        return "kb-qa-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.backend.name,
            "backend": type(self.backend).__name__,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
        }

    def params(self, stop: list[str] | None = None, **overrides: Any) -> GenerationParams:
        values = {
            key: overrides[key] if overrides.get(key) is not None else getattr(self, key)
            for key in ("max_new_tokens", "temperature", "top_p", "repetition_penalty")
        }
        seed = overrides.get("seed", self.seed)
        return GenerationParams(**values, seed=seed, stop=list(stop or []))

    def messages(self, prompt: str, history: object = None, system: str | None = None) -> list[Message]:
        """The role messages for one call: system prompt, history, then the prompt as the user's turn."""
        system = self.system_prompt if system is None else system
        messages: list[Message] = [{"role": "system", "content": system}] if system else []
        messages += [m for m in normalize_history(history) if m["role"] != "system" or not system]
        messages.append({"role": "user", "content": prompt})
        return messages

    def stream_text(
        self,
        messages: list[Message],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Text deltas for ``messages``, cut at the first stop string; holds a gate slot while running."""
        cancel = cancel or threading.Event()
        with self.gate:
            stop = StopFilter(params.stop)
            stream = self.backend.stream(messages, params, cancel)
            try:
                for delta in stream:
                    text = stop.feed(delta)
                    if text:
                        yield text
                    if stop.stopped:
                        break
                tail = stop.flush()
                if tail:
                    yield tail
            finally:
                cancel.set()
                close = getattr(stream, "close", None)
                if close is not None:
                    close()

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        messages = self.messages(prompt, kwargs.pop("history", None), kwargs.pop("system", None))
        for text in self.stream_text(messages, self.params(stop, **kwargs)):
            chunk = GenerationChunk(text=text)
            if run_manager is not None:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return "".join(chunk.text for chunk in self._stream(prompt, stop, run_manager, **kwargs))
