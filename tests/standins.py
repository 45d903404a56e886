"""STAND-INS for the fast test tier: an embedding model and a chat model that need no weights.

They exist only so that the API's contracts (routes, statuses, error bodies, streaming frames,
uploads, jobs) can be tested in seconds. Everything that depends on what a model computes is
tested with the real models in the other tiers (tests/integration, tests/api, tests/e2e).

- :class:`StandInEmbeddings`: hashed character bigrams and words, L2-normalised (a keyword
  matcher wearing an embedding model's interface): enough for a passage about passwords to be
  found by a question about passwords.
- :class:`StandInChatBackend`: answers with the first sentence of the first passage in its
  prompt, cited as [1], word by word; without passages it says so.
"""

from __future__ import annotations

import itertools
import re
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kb_qa.embeddings import SentenceTransformerEmbeddings
from kb_qa.llm.base import ChatBackend, GenerationParams, Message

DIMENSION = 256


class StandInEmbeddings(SentenceTransformerEmbeddings):
    """A STAND-IN embedding model: hashed features, no weights."""

    def __init__(self) -> None:
        super().__init__(Path("stand-in"), name="stand-in-hashing-embeddings", query_prefix="", passage_prefix="")
        self.device, self.precision = "cpu", "fp32"

    def warm_up(self) -> None:
        return None

    @property
    def dimension(self) -> int:
        return DIMENSION

    def _encode(self, texts: list[str], prefix: str) -> np.ndarray:
        vectors = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        for row, text in enumerate(texts):
            lowered = text.lower()
            features = re.findall(r"[a-z0-9]+", lowered)
            cjk = [c for c in lowered if "\u4e00" <= c <= "\u9fff"]
            features += [a + b for a, b in itertools.pairwise(cjk)]
            for feature in features:
                vectors[row, zlib.crc32(feature.encode()) % DIMENSION] += 1.0
            norm = float(np.linalg.norm(vectors[row]))
            vectors[row] = vectors[row] / norm if norm else vectors[row]
            if not norm:
                vectors[row, 0] = 1.0
        return vectors


class StandInChatBackend(ChatBackend):
    """A STAND-IN chat model: quotes the first passage of its prompt and cites it."""

    name = "stand-in-chat-model"

    def __init__(self) -> None:
        self.prompts: list[list[Message]] = []

    def stream(self, messages: list[Message], params: GenerationParams, cancel: threading.Event) -> Iterator[str]:
        self.prompts.append(messages)
        prompt = messages[-1]["content"]
        found = re.search(r"\[1\][^\n]*\n(.+?)(?:[.。!?！？]|\n|$)", prompt)
        answer = f"{found.group(1).strip()} [1]" if found else "I have no passages to answer from."
        for index, word in enumerate(answer.split(" ")[: params.max_new_tokens]):
            if cancel.is_set():
                return
            yield word if index == 0 else " " + word

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 3)

    @property
    def context_window(self) -> int:
        return 8192
