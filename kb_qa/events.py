"""The events of one answer, as :meth:`kb_qa.chain.QAChain.stream` yields them.

``Sources`` once (before any text: the passages with their evidence highlights), ``Delta`` for each
piece of the answer, then ``Final`` (the whole answer record). ``Error`` is what the HTTP adapters
send when the chain fails part-way (:mod:`kb_qa.api.streaming`). Every consumer — the SSE route, the
OpenAI stream, the CLI, the benchmarks — matches on these types instead of reading dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sources:
    query: str  # what retrieval searched for (a follow-up rewritten to stand alone)
    sources: list[dict[str, Any]]  # :class:`kb_qa.chain.Source` as dicts, numbered as in the prompt


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Final:
    answer: dict[str, Any]  # :meth:`kb_qa.chain.Answer.to_dict`


@dataclass(frozen=True)
class Error:
    code: str
    message: str


ChainEvent = Sources | Delta | Final
