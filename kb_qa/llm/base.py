"""What every LLM backend provides, and the pieces they share (messages, stop strings, cancellation).

A backend streams text deltas for a list of role messages. It holds no conversation state: the
whole history comes with every call. ``stream`` runs generation off the calling thread where the
backend computes locally, and stops promptly when ``cancel`` is set or the iterator is closed.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kb_qa.errors import KbQaError

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}
ROLES = ("system", "user", "assistant")


class InvalidHistory(KbQaError):
    """Chat history that is neither role messages nor ``[[question, answer], …]`` pairs."""

    code = "invalid_history"


@dataclass
class GenerationParams:
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.05
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def normalize_history(history: object) -> list[Message]:
    """Role messages from either form of history.

    Accepts ``[{"role", "content"}, …]`` and langchain-ChatGLM's ``[[question, answer], …]``
    (an answer may be empty or None for a question not yet answered).

    :raises InvalidHistory: naming what is wrong.
    """
    if history is None:
        return []
    if not isinstance(history, Sequence) or isinstance(history, (str, bytes)):
        raise InvalidHistory("history must be a list of {role, content} messages or [question, answer] pairs")
    messages: list[Message] = []
    for index, item in enumerate(history):
        if isinstance(item, dict):
            role, content = item.get("role"), item.get("content")
            if role not in ROLES or not isinstance(content, str):
                raise InvalidHistory(f"history[{index}] needs a role in {ROLES} and a string content")
            messages.append({"role": str(role), "content": content})
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            question, answer = item
            if not isinstance(question, str) or not (answer is None or isinstance(answer, str)):
                raise InvalidHistory(f"history[{index}] must be a [question, answer] pair of strings")
            messages.append({"role": "user", "content": question})
            if answer:
                messages.append({"role": "assistant", "content": answer})
        else:
            raise InvalidHistory(
                f"history[{index}] is neither a {{role, content}} message nor a [question, answer] pair"
            )
    return messages


def to_pairs(messages: Sequence[Message]) -> tuple[str, list[tuple[str, str]], str]:
    """Split role messages into (system prompt, [(question, answer), …], final question).

    The form ChatGLM's ``chat``/``stream_chat`` take. The last message must come from the user.
    """
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    if not turns or turns[-1]["role"] != "user":
        raise InvalidHistory("the last message must be the user's question")
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for message in turns[:-1]:
        if message["role"] == "user":
            if pending is not None:
                pairs.append((pending, ""))
            pending = message["content"]
        else:
            pairs.append((pending or "", message["content"]))
            pending = None
    if pending is not None:
        pairs.append((pending, ""))
    return system, pairs, turns[-1]["content"]


class StopFilter:
    """Cut a stream of text deltas at the first stop string, holding back only what might start one."""

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = [s for s in stop if s]
        self._buffer = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Text that is safe to emit now ('' once a stop string was seen)."""
        if self.stopped:
            return ""
        if not self.stop:
            return delta
        self._buffer += delta
        cut = min((i for i in (self._buffer.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._buffer = self._buffer[:cut], ""
            return out
        # hold back only the longest tail that could still grow into a stop string
        keep = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(self._buffer)), keep, -1):
                if self._buffer.endswith(stop[:size]):
                    keep = size
                    break
        out, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep :]
        return out

    def flush(self) -> str:
        out, self._buffer = ("" if self.stopped else self._buffer), ""
        return out


class ChatBackend(ABC):
    """A loaded chat model.

    :ivar name: the model's name as reported to clients.
    """

    name: str = "model"

    @abstractmethod
    def stream(self, messages: list[Message], params: GenerationParams, cancel: threading.Event) -> Iterator[str]:
        """Yield text deltas of the answer to ``messages`` (never the prompt)."""

    def load(self) -> ChatBackend:
        """Load the model now (a warm-up) instead of on the first prompt; a no-op for served models."""
        return self

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's own tokenizer."""

    @property
    @abstractmethod
    def context_window(self) -> int:
        """The most tokens prompt plus answer may take."""

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "context_window": self.context_window}
