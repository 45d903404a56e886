"""The store contract: what the knowledge-base service and retrieval need from a store of chunks.

Two implementations: :class:`vector_store.faiss_store.FaissStore` (FAISS + BM25 files in a folder,
the embedded default) and :class:`vector_store.pg_store.PostgresStore` (PostgreSQL + pgvector, for
scale-out). Retrieval (:mod:`kb_qa.retrieval`) and the service (:mod:`kb_qa.knowledge_base`) speak
only this contract; ``tests/integration/test_store_contract.py`` runs one set of checks on both.

**Scores.** Dense scores are cosine similarities in [-1, 1] (vectors are normalised by the store);
keyword scores are Okapi BM25 with the analyzer and parameters of :mod:`vector_store.keyword_index`
(k1 1.2, b 0.75, Lucene's idf), computed over the store's whole chunk set.

**Writes.** ``add`` replaces one document's chunks, ``delete`` removes them; both are pending until
``save``, which makes all of them visible at once and moves ``generation`` forward by one (with
``commit``, a JSON record the service keeps beside the generation). The writer's own reads
(``documents``, ``chunks_of``, ``get``) see its pending writes; other readers see the last saved
state. ``discard`` drops pending writes. Writers are serialised by the caller (one per store).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class StoredChunk:
    id: int
    doc: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoredChunk:
    chunk: StoredChunk
    score: float  # cosine similarity (dense) or BM25 (keyword), higher is better


class StoreError(Exception):
    """The store cannot be used (damaged, built with another dimension, or unreachable)."""


class StoreUnavailable(StoreError):
    """The store's server cannot be reached for now (down, restarting); the same call may work later."""


@runtime_checkable
class ChunkStore(Protocol):
    """Chunks, their vectors and their keywords, written by document (see the module's description)."""

    dim: int
    generation: int

    def __len__(self) -> int: ...

    # --------------------------------------------------------------- reading
    def documents(self) -> dict[str, int]:
        """Each document key with its number of chunks."""
        ...

    def chunks_of(self, doc: str) -> list[StoredChunk]:
        """The chunks of ``doc`` (any order); empty for an unknown document."""
        ...

    def get_many(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        """The chunks with these ids that exist."""
        ...

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored (unit-length) vectors of chunks ``ids``, one row each, in that order (all must exist)."""
        ...

    def search(self, vector: np.ndarray, k: int, docs: Iterable[str] | None = None) -> list[ScoredChunk]:
        """The ``k`` chunks closest to ``vector`` by cosine, best first; ``docs``: only these documents."""
        ...

    def similarities(self, vector: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        """The exact cosine of ``vector`` and each chunk of ``ids`` (in that order; 0 for unknown ids)."""
        ...

    def keyword_search(self, query: str, k: int, docs: Iterable[str] | None = None) -> list[ScoredChunk]:
        """The ``k`` best chunks for ``query`` by BM25, best first (zero scores left out)."""
        ...

    def keyword_scores(self, query: str, ids: Sequence[int]) -> np.ndarray:
        """The BM25 score of each chunk of ``ids`` for ``query`` (in that order; 0 where no term matches)."""
        ...

    # --------------------------------------------------------------- writing
    def add(
        self,
        doc: str,
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
        vectors: np.ndarray,
        keyword_texts: Sequence[str] | None = None,
    ) -> list[int]:
        """Replace ``doc``'s chunks with these (``keyword_texts``: what BM25 sees; default ``texts``)."""
        ...

    def delete(self, doc: str) -> int:
        """Remove ``doc``'s chunks; how many there were."""
        ...

    @property
    def dirty(self) -> bool:
        """Whether there are writes not yet saved."""
        ...

    def save(self, commit: Any = None) -> None:
        """Make the pending writes visible at once, as the next generation (``commit`` kept with it)."""
        ...

    def discard(self) -> None:
        """Drop the pending writes (after a failure part-way)."""
        ...

    def read_commit(self) -> Any:
        """The ``commit`` record saved with the current generation (``None``: none)."""
        ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as contiguous float32."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms)
