"""Hybrid retrieval over one or more knowledge bases: dense (FAISS) + keyword (BM25), fused.

**What a score means.** Every passage carries ``score``: the cosine similarity, under the embedding
model, of the question and the passage's best chunk, whichever method found it. That is the one
number ``score_threshold`` is compared with: a chunk whose cosine is below the threshold is never
returned, by any method. The order is decided by ``relevance`` (below), and optionally by a
cross-encoder reranker.

**Methods.** ``dense``: FAISS cosine. ``bm25``: the keyword index (jieba + English stemming; see
:mod:`vector_store.keyword_index`). ``hybrid`` (default): both, fused. Each method proposes its
``candidates`` best chunks per knowledge base; the exact cosine and BM25 of every proposed chunk are
then computed, so a chunk proposed by one method is not penalised for being absent from the other's
list.

**In parallel.** The keyword search needs only the question's words, so with ``parallel_keyword``
(the default) each knowledge base's keyword search starts on a worker thread before the question is
embedded, and runs while the embedding and the dense search do; the dense candidates' BM25 is looked
up meanwhile, the keyword candidates' cosines once both lists are in. On PostgreSQL the keyword
search runs in the server, on another core: at 1M chunks it is the longest step, and overlapping it
took the hybrid path from 60 ms p50 (in turn, torch on two threads) to 40 ms (overlapped, torch on
one thread: ``embedding.threads``; two spin against the server's work and lose the gain;
docs/benchmarks.md, "Scale-out", run 4). Results are the same either way.

**Fusion.** ``weighted`` (default): each signal is min-max normalised over its own candidate list
(the best chunk gets 1, the ``candidates``-th 0, anything below 0), then
``relevance = dense_weight * dense + (1 - dense_weight) * bm25``. Unlike reciprocal-rank fusion it
keeps how far apart the scores are: a passage that wins clearly on keywords and is merely good on
meaning still wins. ``rrf``: ``sum 1 / (rrf_k + rank)`` over the two lists. With several knowledge
bases, each signal's lists are merged before normalising and ranking (cosines are comparable across
knowledge bases; BM25's idf differs by corpus, which is close enough in practice and far better than
normalising each knowledge base on its own, which would lift a knowledge base's best weak match to
1). docs/evaluation.md has the measurements behind the defaults.

**Passages.** Chunks of the same piece (page) of a document that overlap or are neighbours are
merged into one passage, duplicate texts are dropped, and with ``expand_chars`` each passage grows
by its neighbouring chunks (next first, then previous) while it stays within that many characters,
as langchain-ChatGLM's ``chunk_conent`` did. ``top_k`` counts passages.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from kb_qa.domain import EXPAND_CHARS, SCORE, TOP_K, SearchHit
from kb_qa.embeddings import TextEmbeddings
from kb_qa.errors import BadRequest, ConfigError
from kb_qa.hf import offline_and_quiet
from kb_qa.knowledge_base import KnowledgeBaseService
from kb_qa.placement import resolve_device
from kb_qa.settings import RetrievalSettings
from kb_qa.storage import available
from vector_store import StoredChunk
from vector_store.contract import ChunkStore, ScoredChunk

log = logging.getLogger(__name__)

Method = Literal["hybrid", "dense", "bm25"]
Fusion = Literal["weighted", "rrf"]
# threads running keyword searches beside the embedding, shared by all requests (a search still queued
# when its request needs it is run by the request itself)
KEYWORD_WORKERS = 4


@dataclass(frozen=True)
class RetrievalOptions:
    """How one search is done; defaults come from the ``retrieval`` settings, requests override."""

    top_k: int = 4
    score_threshold: float = 0.0
    method: Method = "hybrid"
    fusion: Fusion = "weighted"
    dense_weight: float = 0.5
    candidates: int = 50
    rrf_k: int = 60
    expand_chars: int = 0
    rerank: bool = True
    documents: tuple[str, ...] | None = None

    @classmethod
    def from_settings(cls, settings: RetrievalSettings) -> RetrievalOptions:
        return cls(
            top_k=settings.top_k,
            score_threshold=settings.score_threshold,
            method=settings.method,
            fusion=settings.fusion,
            dense_weight=settings.dense_weight,
            candidates=settings.candidates,
            rrf_k=settings.rrf_k,
            expand_chars=settings.expand_chars,
        )

    def override(self, **changes: Any) -> RetrievalOptions:
        """A copy with the given (non-None) values; ``documents`` may be any iterable of names."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "documents" in changes:
            changes["documents"] = tuple(changes["documents"])
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown retrieval options: {sorted(unknown)}")
        options = replace(self, **changes)
        if options.top_k not in TOP_K:
            raise BadRequest(f"top_k must be between {TOP_K.low:g} and {TOP_K.high:g}, not {options.top_k}")
        if options.score_threshold not in SCORE:
            raise BadRequest(
                f"score_threshold is a cosine similarity and must lie in [{SCORE.low:g}, {SCORE.high:g}], "
                f"not {options.score_threshold}"
            )
        if options.expand_chars not in EXPAND_CHARS:
            raise BadRequest(f"expand_chars must lie in [0, {EXPAND_CHARS.high:g}], not {options.expand_chars}")
        if options.method not in ("hybrid", "dense", "bm25"):
            raise BadRequest(f"method must be hybrid, dense or bm25, not {options.method!r}")
        return options


class Reranker:
    """A sentence-transformers ``CrossEncoder`` from a local folder, loaded on first use."""

    def __init__(self, folder: Path, device: str = "auto", batch_size: int = 16) -> None:
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"retrieval.reranker: {folder} is not a cross-encoder folder (no config.json); "
                "point it at a local sentence-transformers CrossEncoder, or leave it empty"
            )
        self.folder = folder
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.folder.name

    def scores(self, query: str, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            if self._model is None:
                from sentence_transformers import CrossEncoder

                offline_and_quiet()
                device = resolve_device(self.device, section="embedding")
                self._model = CrossEncoder(str(self.folder), device=device)
        if not texts:
            return np.zeros(0, np.float32)
        pairs = [(query, text) for text in texts]
        return np.asarray(self._model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False), np.float32)


@dataclass
class _Candidate:
    kb: str
    chunk: StoredChunk
    cosine: float
    bm25: float
    dense_rank: int | None = None
    bm25_rank: int | None = None
    dense_norm: float = 0.0
    bm25_norm: float = 0.0
    relevance: float = 0.0
    rerank: float | None = None


@dataclass
class _Passage:
    kb: str
    doc: str
    piece: object
    best: _Candidate
    chunks: dict[int, StoredChunk] = field(default_factory=dict)  # ordinal -> chunk
    hits: list[_Candidate] = field(default_factory=list)

    def touches(self, kb: str, chunk: StoredChunk) -> bool:
        if kb != self.kb or chunk.doc != self.doc or _piece(chunk) != self.piece:
            return False
        ordinal = _ordinal(chunk)
        return min(self.chunks) - 1 <= ordinal <= max(self.chunks) + 1

    def text(self) -> str:
        return join_chunks(c for _, c in sorted(self.chunks.items()))

    def to_hit(self) -> SearchHit:
        ordered = [c for _, c in sorted(self.chunks.items())]
        best = self.best
        meta = best.chunk.metadata
        return SearchHit(
            kb=self.kb,
            document=self.doc,
            chunk_id=best.chunk.id,
            score=round(max(h.cosine for h in self.hits), 6),
            text=self.text(),
            page=meta.get("page"),
            heading=meta.get("heading") or "",
            ordinal=_ordinal(ordered[0]),
            start=int(ordered[0].metadata.get("start", 0)),
            end=max(int(c.metadata.get("end", 0)) for c in ordered),
            relevance=round(best.relevance, 6),
            keyword_score=round(best.bm25, 6),
            rerank_score=None if best.rerank is None else round(best.rerank, 6),
            chunk_ids=[c.id for c in ordered],
        )


def join_chunks(chunks: Iterable[StoredChunk]) -> str:
    """The text of consecutive chunks of one piece (in order), their overlaps counted once."""
    parts: list[str] = []
    end = None
    for chunk in chunks:
        start, stop = int(chunk.metadata.get("start", 0)), int(chunk.metadata.get("end", 0))
        if end is None:
            parts.append(chunk.text)
        elif stop <= end:
            continue
        elif start < end:
            parts.append(chunk.text[end - start :])
        else:
            parts.append("\n" + chunk.text)
        end = stop if end is None else max(end, stop)
    return "".join(parts)


@dataclass(frozen=True)
class DocumentPiece:
    """One piece (page, slide, sheet, section) of an indexed document, as the index holds it."""

    page: int | None
    heading: str
    text: str


def document_pieces(store: ChunkStore, doc: str) -> list[DocumentPiece]:
    """The indexed text of ``doc``, piece by piece in reading order (chunks joined, overlaps once)."""
    pieces: dict[object, list[StoredChunk]] = {}
    with available():
        chunks = store.chunks_of(doc)
    for chunk in chunks:
        pieces.setdefault(_piece(chunk), []).append(chunk)
    out = []
    for chunks in pieces.values():
        chunks.sort(key=_ordinal)
        meta = chunks[0].metadata
        out.append(DocumentPiece(meta.get("page"), meta.get("heading") or "", join_chunks(chunks)))
    return out


def _ordinal(chunk: StoredChunk) -> int:
    return int(chunk.metadata.get("ordinal", 0))


def _piece(chunk: StoredChunk) -> object:
    meta = chunk.metadata
    return meta["piece"] if "piece" in meta else meta.get("page")  # stores written before "piece"


def _bounds(best_first: Sequence[float], wanted: int) -> tuple[float, float]:
    """(low, high) to normalise a signal by: its best score and its ``wanted``-th best.

    A shorter list (a small knowledge base, few keyword matches) means everything the method could
    find is in it; then the floor is 0 for BM25 (callers pass ``0``-terminated lists) and the worst
    listed cosine for dense.
    """
    if not best_first:
        return 0.0, 1.0
    return float(best_first[min(wanted, len(best_first)) - 1]), float(best_first[0])


def _normalised(value: float, bounds: tuple[float, float]) -> float:
    low, high = bounds
    if high > low:
        return max(0.0, (value - low) / (high - low))
    return 1.0 if value >= high and value > 0 else 0.0  # one distinct score: the listed ones are the best


class Retriever:
    """Finds passages for a question in one or more knowledge bases (see the module's description)."""

    def __init__(
        self,
        knowledge_bases: KnowledgeBaseService,
        embeddings: TextEmbeddings,
        defaults: RetrievalOptions | None = None,
        reranker: Reranker | None = None,
        rerank_candidates: int = 20,
        parallel_keyword: bool = True,
    ) -> None:
        self.knowledge_bases = knowledge_bases
        self.embeddings = embeddings
        self.defaults = defaults or RetrievalOptions()
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        self.parallel_keyword = parallel_keyword
        self._workers: ThreadPoolExecutor | None = None
        self._workers_lock = threading.Lock()

    def options(self, **overrides: Any) -> RetrievalOptions:
        return self.defaults.override(**overrides)

    def retrieve(self, query: str, knowledge_bases: Sequence[str], **overrides: Any) -> list[SearchHit]:
        """The best passages for ``query`` across ``knowledge_bases``, best first.

        :param overrides: any :class:`RetrievalOptions` field (``top_k``, ``score_threshold``,
            ``method``, ``documents``, ...).
        :raises KnowledgeBaseNotFound: for an unknown knowledge base.
        """
        if not query.strip():
            raise BadRequest("the question is empty")
        if not knowledge_bases:
            raise BadRequest("name at least one knowledge base")
        options = self.options(**overrides)
        stores = {name: self.knowledge_bases.reader(name) for name in dict.fromkeys(knowledge_bases)}
        return self.search_stores(query, stores, options)

    def search_stores(
        self,
        query: str,
        stores: Mapping[str, ChunkStore],
        options: RetrievalOptions,
        vector: np.ndarray | None = None,
    ) -> list[SearchHit]:
        """:meth:`retrieve` over already opened stores (the evaluation harness builds its own).

        :param vector: the query's embedding, when the caller has already computed it.
        """
        with available():  # a database away for now: kb-qa's temporary error, wherever this runs
            keyword = self._keyword_searches(query, stores, options)
            try:
                if vector is None:
                    vector = self.embeddings.encode_queries([query])[0]
                return self._search(query, vector, stores, options, keyword)
            finally:
                for job in keyword.values():
                    job.cancel()  # only those not started yet: a failure elsewhere leaves no work queued

    def _keyword_searches(
        self, query: str, stores: Mapping[str, ChunkStore], options: RetrievalOptions
    ) -> dict[str, Future[list[ScoredChunk]]]:
        """Each store's keyword search, started on worker threads so that it runs while the question
        is embedded and the dense search runs (see the module's description); empty when the method
        needs none or ``parallel_keyword`` is off (then :meth:`_candidates` runs them in turn)."""
        if not self.parallel_keyword or options.method == "dense" or not stores:
            return {}
        with self._workers_lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(KEYWORD_WORKERS, thread_name_prefix="kbqa-keyword")
            workers = self._workers
        docs = list(options.documents) if options.documents is not None else None
        n = options.candidates
        return {kb: workers.submit(store.keyword_search, query, n, docs) for kb, store in stores.items()}

    def _search(
        self,
        query: str,
        vector: np.ndarray,
        stores: Mapping[str, ChunkStore],
        options: RetrievalOptions,
        keyword: Mapping[str, Future[list[ScoredChunk]]],
    ) -> list[SearchHit]:
        candidates = self._candidates(query, vector, stores, options, keyword)
        candidates = [c for c in candidates if c.cosine >= options.score_threshold]
        candidates.sort(key=lambda c: (-c.relevance, -c.cosine, c.kb, c.chunk.id))
        if self.reranker is not None and options.rerank and candidates:
            head = candidates[: max(options.top_k, self.rerank_candidates)]
            scores = self.reranker.scores(query, [c.chunk.text for c in head])
            for candidate, score in zip(head, scores, strict=True):
                candidate.rerank = float(score)
            candidates = sorted(head, key=lambda c: -(c.rerank or 0.0))
        passages = self._passages(candidates, options.top_k)
        if options.expand_chars > 0:
            passages = self._expand(passages, stores, options.expand_chars)
        return [p.to_hit() for p in passages]

    # ------------------------------------------------------------ candidates
    def _candidates(
        self,
        query: str,
        vector: np.ndarray,
        stores: Mapping[str, ChunkStore],
        options: RetrievalOptions,
        started: Mapping[str, Future[list[ScoredChunk]]],
    ) -> list[_Candidate]:
        n = options.candidates
        use_dense = options.method in ("dense", "hybrid")
        use_bm25 = options.method in ("bm25", "hybrid")
        pool: list[_Candidate] = []
        dense_scores: list[float] = []
        keyword_scores: list[float] = []
        keyword_ranks: list[tuple[float, _Candidate]] = []
        for kb, store in stores.items():
            docs = list(options.documents) if options.documents is not None else None
            dense = store.search(vector, n, docs=docs) if use_dense else []
            dense_scores += [h.score for h in dense]
            by_id: dict[int, _Candidate] = {}
            for hit in dense:
                by_id[hit.chunk.id] = _Candidate(kb, hit.chunk, hit.score, 0.0, dense_rank=0)
            if use_bm25 and by_id:  # the dense candidates' exact BM25, while the keyword search may still run
                exact = store.keyword_scores(query, list(by_id))
                for candidate, score in zip(by_id.values(), exact, strict=True):
                    candidate.bm25 = float(score)
            keyword: list[ScoredChunk] = []
            if use_bm25:
                # a search still queued behind other requests' is withdrawn and run here instead of waited for
                job = started.get(kb)
                running = job if job is not None and not job.cancel() else None
                keyword = running.result() if running is not None else store.keyword_search(query, n, docs=docs)
            keyword_scores += [hit.score for hit in keyword]
            missing = [hit for hit in keyword if hit.chunk.id not in by_id]
            cosines = store.similarities(vector, [hit.chunk.id for hit in missing])
            for hit, cosine in zip(missing, cosines, strict=True):
                by_id[hit.chunk.id] = _Candidate(kb, hit.chunk, float(cosine), hit.score)
            for hit in keyword:  # keyword scores are exact BM25 (the store contract)
                keyword_ranks.append((hit.score, by_id[hit.chunk.id]))
            pool += by_id.values()
        # one list per signal across knowledge bases: one normalisation, one ranking. Cosines are
        # comparable across knowledge bases; BM25's idf depends on each corpus, close enough in practice
        dense_bounds = _bounds(sorted(dense_scores, reverse=True), n)
        keyword_bounds = _bounds([*sorted(keyword_scores, reverse=True), 0.0], n)
        ranked = sorted((c for c in pool if c.dense_rank is not None), key=lambda c: -c.cosine)
        for rank, candidate in enumerate(ranked, 1):
            candidate.dense_rank = rank if rank <= n else None
        for rank, (_, candidate) in enumerate(sorted(keyword_ranks, key=lambda pair: -pair[0]), 1):
            candidate.bm25_rank = rank if rank <= n else None
        for candidate in pool:
            candidate.dense_norm = _normalised(candidate.cosine, dense_bounds) if use_dense else 0.0
            candidate.bm25_norm = _normalised(candidate.bm25, keyword_bounds) if use_bm25 else 0.0
        for candidate in pool:
            candidate.relevance = self._relevance(candidate, options)
        return pool

    @staticmethod
    def _relevance(c: _Candidate, options: RetrievalOptions) -> float:
        if options.method == "dense":
            return c.cosine
        if options.method == "bm25":
            return c.bm25_norm
        if options.fusion == "rrf":
            return sum(1.0 / (options.rrf_k + r) for r in (c.dense_rank, c.bm25_rank) if r is not None)
        return options.dense_weight * c.dense_norm + (1 - options.dense_weight) * c.bm25_norm

    # -------------------------------------------------------------- passages
    @staticmethod
    def _passages(candidates: list[_Candidate], top_k: int) -> list[_Passage]:
        passages: list[_Passage] = []
        seen_texts: set[str] = set()
        for candidate in candidates:
            if len(passages) == top_k:
                break  # lower-ranked chunks neither add passages nor grow the chosen ones
            chunk = candidate.chunk
            owner = next((p for p in passages if p.touches(candidate.kb, chunk)), None)
            if owner is not None:
                owner.chunks[_ordinal(chunk)] = chunk
                owner.hits.append(candidate)
                continue
            text_key = chunk.text.strip()
            if text_key in seen_texts:
                continue  # the same text from another file (or knowledge base) is shown once
            seen_texts.add(text_key)
            passages.append(
                _Passage(candidate.kb, chunk.doc, _piece(chunk), candidate, {_ordinal(chunk): chunk}, [candidate])
            )
        return _merge_touching(passages)

    @staticmethod
    def _expand(passages: list[_Passage], stores: Mapping[str, ChunkStore], limit: int) -> list[_Passage]:
        for passage in passages:
            neighbours = {
                _ordinal(c): c for c in stores[passage.kb].chunks_of(passage.doc) if _piece(c) == passage.piece
            }
            grown = True
            while grown:
                grown = False
                for ordinal in (max(passage.chunks) + 1, min(passage.chunks) - 1):
                    chunk = neighbours.get(ordinal)
                    if chunk is None:
                        continue
                    trial = dict(passage.chunks)
                    trial[ordinal] = chunk
                    if len(replace(passage, chunks=trial).text()) <= limit:
                        passage.chunks = trial
                        grown = True
        return _merge_touching(passages)


def _merge_touching(passages: list[_Passage]) -> list[_Passage]:
    """Merge passages of one piece whose chunks overlap or are neighbours (the better one absorbs)."""
    merged: list[_Passage] = []
    for passage in passages:
        owner = next(
            (
                m
                for m in merged
                if m.kb == passage.kb
                and m.doc == passage.doc
                and m.piece == passage.piece
                and min(m.chunks) - 1 <= max(passage.chunks)
                and min(passage.chunks) <= max(m.chunks) + 1
            ),
            None,
        )
        if owner is None:
            merged.append(passage)
        else:
            owner.chunks.update(passage.chunks)
            owner.hits += passage.hits
    return merged


class KnowledgeBaseRetriever(BaseRetriever):
    """LangChain's retriever interface over :class:`Retriever`.

    ``invoke(question)`` returns ``Document``s whose metadata is the :class:`SearchHit` (without the
    text); per-call options go as keywords: ``retriever.invoke(q, top_k=8, documents=["a.pdf"])``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Retriever = Field(exclude=True)
    knowledge_bases: list[str]
    options: dict[str, Any] = Field(default_factory=dict)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        hits = self.engine.retrieve(query, self.knowledge_bases, **{**self.options, **kwargs})
        return [hit_to_document(hit) for hit in hits]


def hit_to_document(hit: SearchHit) -> Document:
    meta = hit.to_dict()
    text = meta.pop("text")
    return Document(page_content=text, metadata=meta)
