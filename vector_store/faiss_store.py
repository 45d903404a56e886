"""A FAISS store for the chunks of one knowledge base.

**Scores.** Vectors are L2-normalised before they are added and before a search, and the index
ranks by inner product, so every score is the cosine similarity of query and chunk: it lies in
[-1, 1], higher is better, and 1 means the same direction. This is the only place that defines
the score; the retriever, the CLI and the API pass it through unchanged.

**Keywords.** Every store carries a BM25 :class:`~vector_store.keyword_index.KeywordIndex` over the
same chunks, updated by the same ``add``/``delete`` calls and saved in the same generation.

**Approximate search.** With ``IndexOptions(kind="ivf")`` and at least ``ivf_min_chunks`` chunks, a
FAISS ``IndexIVFFlat`` (inner product, ``nlist = 4 * sqrt(N)`` lists, ``nprobe`` searched) answers
unfiltered dense searches; it is kept beside the exact index, updated by the same adds and deletes,
retrained when the store has grown fourfold since it was trained, and saved as ``ann.N.faiss``.
Filtered searches, similarities and everything else use the exact index, so scores stay exact
cosines; only which chunks are proposed can differ (bench/query.py measures how often).

**Files.** ``<dir>/CURRENT`` names the live generation ``N``; ``index.N.faiss`` holds the vectors,
``chunks.N.jsonl`` the chunk records (a header line, then one JSON object per chunk) and
``keywords.N.npz`` the keyword index, ``commit.N.json`` (optional) what the registry must say about
this generation (the knowledge base's one commit point, see :mod:`kb_qa.knowledge_base`). A save
writes generation ``N+1`` beside the old one (write, fsync, rename), then replaces ``CURRENT`` the
same way. A crash at any point leaves ``CURRENT`` naming a complete generation, and a reader that
opens the store never sees a half-written one. The generation before the live one is kept, so a
reader that read ``CURRENT`` just before a save can still open what it named.

Writers serialise through :class:`vector_store.locking.WriterLock`; this class is not thread-safe
for concurrent writes on its own.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vector_store.contract import ScoredChunk, StoredChunk, StoreError, normalise
from vector_store.keyword_index import KeywordIndex

log = logging.getLogger(__name__)

_FORMAT = 1


@dataclass(frozen=True)
class IndexOptions:
    """How dense search is done: ``flat`` (exact) or ``ivf`` (approximate, for large stores)."""

    kind: str = "flat"
    nprobe: int = 16
    ivf_min_chunks: int = 20000


_normalise = normalise


def _fsync_write(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_generation(directory: Path) -> int:
    """The live generation of the store in ``directory`` (0: none yet).

    :raises StoreError: when ``CURRENT`` is damaged.
    """
    try:
        text = (directory / "CURRENT").read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"{directory}/CURRENT cannot be read ({exc})") from exc
    if not text.isdigit():
        raise StoreError(f"{directory}/CURRENT is damaged ({text[:20]!r})")
    return int(text)


def read_commit(directory: Path, generation: int) -> Any:
    """The record :meth:`FaissStore.save` kept with ``generation`` (``None``: none was, or no generation).

    :raises StoreError: when it is there but damaged.
    """
    path = directory / f"commit.{generation}.json"
    if generation == 0 or not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path} is damaged: {exc}") from exc


class FaissStore:
    """Chunks and their vectors, added and deleted by document.

    :param directory: where the generations live (created on the first save).
    :param dim: the vector dimension.
    """

    def __init__(self, directory: Path, dim: int, options: IndexOptions | None = None) -> None:
        import faiss

        self.directory = directory
        self.dim = dim
        self.options = options or IndexOptions()
        self._ann: Any = None  # the IVF index, when configured and trained
        self._ann_trained_on = 0
        self.generation = 0
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._chunks: dict[int, StoredChunk] = {}
        self._by_doc: dict[str, list[int]] = {}
        self._next_id = 0
        self._dirty = False
        self.keywords = KeywordIndex()

    # ---------------------------------------------------------------- reading
    @classmethod
    def open(cls, directory: Path, dim: int, options: IndexOptions | None = None) -> FaissStore:
        """Open the live generation in ``directory``, or an empty store when there is none.

        :raises StoreError: when the files are damaged or hold another dimension.
        """
        store = cls(directory, dim, options)
        for _attempt in range(5):
            generation = store._current_generation()
            if generation is None:
                return store
            try:
                store._load(generation)
                return store
            except FileNotFoundError:
                continue  # a writer moved on between reading CURRENT and opening; read it again
        raise StoreError(f"{directory}: the generation named by CURRENT keeps disappearing")

    def _current_generation(self) -> int | None:
        return current_generation(self.directory) or None

    def _load(self, generation: int) -> None:
        import faiss

        index_path = self.directory / f"index.{generation}.faiss"
        chunks_path = self.directory / f"chunks.{generation}.jsonl"
        try:
            with chunks_path.open(encoding="utf-8") as handle:
                header = json.loads(handle.readline())
                if header.get("format") != _FORMAT:
                    raise StoreError(f"{chunks_path}: unknown format {header.get('format')}")
                if header["dim"] != self.dim:
                    raise StoreError(f"{self.directory} holds {header['dim']}-d vectors, not {self.dim}-d")
                chunks = [StoredChunk(**json.loads(line)) for line in handle if line.strip()]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # truncated or edited: JSON, fields
            raise StoreError(f"{chunks_path} is damaged ({exc})") from exc
        if not index_path.exists():
            raise FileNotFoundError(index_path)
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise StoreError(f"{index_path} is damaged: {exc}") from exc
        if index.ntotal != len(chunks):
            raise StoreError(f"{index_path} holds {index.ntotal} vectors for {len(chunks)} chunks")
        self._index = index
        self._chunks = {c.id: c for c in chunks}
        self._by_doc = {}
        for chunk in chunks:
            self._by_doc.setdefault(chunk.doc, []).append(chunk.id)
        keywords_path = self.directory / f"keywords.{generation}.npz"
        if keywords_path.exists():
            try:
                self.keywords = KeywordIndex.load(keywords_path)
            except (OSError, ValueError, KeyError) as exc:
                raise StoreError(f"{keywords_path} is damaged: {exc}") from exc
        else:  # written before keyword search existed: index the stored texts once
            log.info("building the keyword index of %s (%d chunks)", self.directory, len(chunks))
            self.keywords = KeywordIndex()
            for doc, ids in self._by_doc.items():
                self.keywords.add(doc, ids, [self._chunks[i].text for i in ids])
        self._next_id = int(header["next_id"])
        self.generation = generation
        self._dirty = False
        ann_path = self.directory / f"ann.{generation}.faiss"
        if self.options.kind == "ivf" and ann_path.exists():
            try:
                self._ann = faiss.read_index(str(ann_path))
            except RuntimeError as exc:
                raise StoreError(f"{ann_path} is damaged: {exc}") from exc
            self._ann_trained_on = self._ann.ntotal
            self._ann.nprobe = self.options.nprobe
        self._refresh_ann()

    def __len__(self) -> int:
        return len(self._chunks)

    def documents(self) -> dict[str, int]:
        """Each document key with its number of chunks."""
        return {doc: len(ids) for doc, ids in self._by_doc.items()}

    def chunks_of(self, doc: str) -> list[StoredChunk]:
        return [self._chunks[i] for i in self._by_doc.get(doc, [])]

    def chunk_ids(self, doc: str) -> list[int]:
        return list(self._by_doc.get(doc, []))

    def get(self, chunk_id: int) -> StoredChunk | None:
        return self._chunks.get(chunk_id)

    def get_many(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        return {i: self._chunks[i] for i in ids if i in self._chunks}

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self._index.reconstruct_batch(np.asarray(ids, dtype=np.int64)), np.float32)

    def search(self, vector: np.ndarray, k: int, docs: Iterable[str] | None = None) -> list[ScoredChunk]:
        """The ``k`` chunks closest to ``vector`` by cosine similarity, best first.

        :param docs: when given, only chunks of these documents are considered.
        """
        import faiss

        if not self._chunks or k <= 0:
            return []
        query = _normalise(vector)
        if query.shape[1] != self.dim:
            raise StoreError(f"query has {query.shape[1]} dimensions, the store {self.dim}")
        index, params = self._index, None
        if docs is not None:
            ids = np.array([i for d in docs for i in self._by_doc.get(d, [])], dtype=np.int64)
            if ids.size == 0:
                return []
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(ids))  # type: ignore[call-arg]
            k = min(k, int(ids.size))
        elif self._ann is not None:
            index = self._ann  # unfiltered searches may go through the IVF index; filtered ones stay exact
        k = min(k, len(self._chunks))
        scores, labels = index.search(query, k, params=params)
        return [
            ScoredChunk(self._chunks[int(label)], float(score))
            for score, label in zip(scores[0], labels[0], strict=True)
            if label >= 0
        ]

    def similarities(self, vector: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        """The cosine similarity of ``vector`` to each of the chunks ``ids`` (in that order)."""
        if not len(ids):
            return np.zeros(0, np.float32)
        query = _normalise(vector)[0]
        known = [i for i in ids if i in self._chunks]
        if len(known) < len(ids):  # unknown ids score 0 (the contract), FAISS would raise
            out = np.zeros(len(ids), np.float32)
            if known:
                by_id = dict(zip(known, self.similarities(vector, known), strict=True))
                out[:] = [by_id.get(i, 0.0) for i in ids]
            return out
        stored = self._index.reconstruct_batch(np.asarray(ids, dtype=np.int64))
        return stored @ query

    def keyword_search(self, query: str, k: int, docs: Iterable[str] | None = None) -> list[ScoredChunk]:
        """The ``k`` best chunks for ``query`` by BM25, best first (scores are BM25, not similarities)."""
        ids = None if docs is None else [i for d in docs for i in self._by_doc.get(d, [])]
        return [ScoredChunk(self._chunks[i], score) for i, score in self.keywords.search(query, k, ids)]

    def keyword_scores(self, query: str, ids: Sequence[int]) -> np.ndarray:
        """The BM25 score of each chunk of ``ids`` for ``query`` (0 where no term matches)."""
        _, scores = self.keywords.scores(query)
        return self.keywords.lookup(list(ids), scores)

    # ---------------------------------------------------------------- writing
    def add(
        self,
        doc: str,
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
        vectors: np.ndarray,
        keyword_texts: Sequence[str] | None = None,
    ) -> list[int]:
        """Replace document ``doc``'s chunks with these; returns the new chunk ids.

        :param keyword_texts: what the keyword index sees for each chunk (default: ``texts``), e.g.
            the text with its heading path in front.
        """
        if not len(texts) == len(metadatas) == len(vectors):
            raise ValueError("texts, metadatas and vectors must have the same length")
        matrix = _normalise(vectors) if len(texts) else np.zeros((0, self.dim), np.float32)
        if matrix.shape[1] != self.dim:
            raise StoreError(f"vectors have {matrix.shape[1]} dimensions, the store {self.dim}")
        self.delete(doc)
        ids = np.arange(self._next_id, self._next_id + len(texts), dtype=np.int64)
        self._next_id += len(texts)
        if len(ids):
            self._index.add_with_ids(matrix, ids)
            if self._ann is not None:
                self._ann.add_with_ids(matrix, ids)
        for chunk_id, text, meta in zip(ids.tolist(), texts, metadatas, strict=True):
            self._chunks[chunk_id] = StoredChunk(chunk_id, doc, text, dict(meta))
        if len(ids):
            self._by_doc[doc] = ids.tolist()
            self.keywords.add(doc, ids.tolist(), keyword_texts if keyword_texts is not None else texts)
        self._dirty = True
        return ids.tolist()

    def delete(self, doc: str) -> int:
        """Remove document ``doc``'s chunks; returns how many were removed."""
        import faiss

        ids = self._by_doc.pop(doc, [])
        if ids:
            self._index.remove_ids(faiss.IDSelectorBatch(np.array(ids, dtype=np.int64)))
            if self._ann is not None:
                self._ann.remove_ids(faiss.IDSelectorBatch(np.array(ids, dtype=np.int64)))
            for chunk_id in ids:
                del self._chunks[chunk_id]
            self.keywords.delete(doc)
            self._dirty = True
        return len(ids)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def discard(self) -> None:
        """Drop unsaved writes: back to the generation last opened or saved."""
        if not self._dirty:
            return
        fresh = FaissStore.open(self.directory, self.dim, self.options) if self.generation else None
        fresh = fresh or FaissStore(self.directory, self.dim, self.options)
        self.__dict__.update(fresh.__dict__)

    def save(self, commit: Any = None) -> None:
        """Write a new generation atomically and make it the live one.

        :param commit: a JSON-serialisable record saved with the generation (``commit.N.json``,
            written before ``CURRENT`` switches; :meth:`read_commit`): what whoever keeps books
            about this store — the knowledge-base registry — must say once this generation is live.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        generation = self.generation + 1
        try:
            self._write_generation(generation, commit)
        except BaseException:
            # a full disk (or anything else) part-way: nothing of the new generation stays behind,
            # and CURRENT still names the previous one
            if current_generation(self.directory) != generation:
                self._remove_generation(generation)
            raise
        self.generation = generation
        self._dirty = False
        self._remove_old(keep={generation, generation - 1})

    def _remove_generation(self, generation: int) -> None:
        for path in self.directory.iterdir():
            parts = path.name.split(".")
            if path.name.endswith(".tmp") or (len(parts) == 3 and parts[1] == str(generation)):
                path.unlink(missing_ok=True)

    def _write_generation(self, generation: int, commit: Any) -> None:
        import faiss

        index_path = self.directory / f"index.{generation}.faiss"
        chunks_path = self.directory / f"chunks.{generation}.jsonl"

        def write_chunks(tmp: Path) -> None:
            with tmp.open("w", encoding="utf-8") as handle:
                header = {"format": _FORMAT, "dim": self.dim, "next_id": self._next_id, "count": len(self._chunks)}
                handle.write(json.dumps(header) + "\n")
                for chunk in self._chunks.values():
                    record = {"id": chunk.id, "doc": chunk.doc, "text": chunk.text, "metadata": chunk.metadata}
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")

        _fsync_write(chunks_path, write_chunks)
        _fsync_write(index_path, lambda tmp: faiss.write_index(self._index, str(tmp)))
        keywords = self.keywords.to_bytes()
        _fsync_write(self.directory / f"keywords.{generation}.npz", lambda tmp: tmp.write_bytes(keywords))
        self._refresh_ann()
        if self._ann is not None:
            _fsync_write(self.directory / f"ann.{generation}.faiss", lambda tmp: faiss.write_index(self._ann, str(tmp)))
        if commit is not None:
            text = json.dumps(commit, ensure_ascii=False)
            _fsync_write(self.directory / f"commit.{generation}.json", lambda t: t.write_text(text, encoding="utf-8"))
        _fsync_write(self.directory / "CURRENT", lambda tmp: tmp.write_text(f"{generation}\n", encoding="ascii"))
        _fsync_dir(self.directory)

    def read_commit(self) -> Any:
        """The record saved with the open generation by :meth:`save` (``None``: none was, or no generation)."""
        return read_commit(self.directory, self.generation)

    def _refresh_ann(self) -> None:
        """Train (or drop) the IVF index as the options and the store's size call for."""
        import faiss

        n = len(self._chunks)
        if self.options.kind != "ivf" or n < self.options.ivf_min_chunks:
            self._ann, self._ann_trained_on = None, 0
            return
        if self._ann is not None and n <= 4 * self._ann_trained_on:
            return
        flat = faiss.downcast_index(self._index.index)
        vectors = flat.reconstruct_n(0, flat.ntotal)
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        nlist = int(min(65536, max(16, 4 * np.sqrt(n))))
        ann = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors[np.random.default_rng(0).permutation(len(vectors))[: nlist * 64]]
        log.info("training an IVF index with %d lists on %d of %d vectors", nlist, len(sample), n)
        ann.train(sample)
        ann.add_with_ids(vectors, ids)
        ann.nprobe = self.options.nprobe
        self._ann, self._ann_trained_on = ann, n

    @property
    def approximate(self) -> bool:
        """Whether unfiltered dense searches go through the IVF index."""
        return self._ann is not None

    def _remove_old(self, keep: set[int]) -> None:
        for path in self.directory.iterdir():
            parts = path.name.split(".")
            kinds = ("index", "chunks", "keywords", "ann", "commit")
            generation_file = len(parts) == 3 and parts[0] in kinds and parts[1].isdigit()
            if (generation_file and int(parts[1]) not in keep) or path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
