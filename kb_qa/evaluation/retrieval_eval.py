"""Retrieval quality at passage and article level."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb_qa.domain import SearchHit
from kb_qa.errors import BadRequest, DocumentRejected, KbQaError
from kb_qa.evaluation.dataset import EvalSet, Query
from kb_qa.evaluation.metrics import contains_answer, ndcg_at, rank_of, ranking_metrics
from kb_qa.evaluation.provenance import run_revision
from kb_qa.retrieval import RetrievalOptions, Retriever
from vector_store.contract import ChunkStore

# ------------------------------------------------------- retrieval: passages
METHODS = ("dense", "bm25", "hybrid")


@dataclass
class RetrievalResult:
    set: str
    level: str
    queries: int
    methods: dict[str, dict[str, float]]
    seconds: float
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "level": self.level,
            "queries": self.queries,
            "methods": self.methods,
            "seconds": round(self.seconds, 1),
            "settings": self.settings,
        }

    def markdown(self) -> str:
        header = "| method | hit@1 | hit@5 | hit@10 | MRR@10 | nDCG@10 |\n|---|---|---|---|---|---|\n"
        rows = "".join(
            f"| {name} | {m['hit@1']:.3f} | {m['hit@5']:.3f} | {m['hit@10']:.3f} | {m['mrr@10']:.3f} "
            f"| {m['ndcg@10']:.3f} |\n"
            for name, m in self.methods.items()
        )
        return f"**{self.set}**, {self.level} level, {self.queries} questions\n\n{header}{rows}"


Progress = Callable[[str, int, int], None]


def _no_progress(label: str, done: int, total: int) -> None:
    pass


def passage_store(
    data: EvalSet, retriever: Retriever, store: ChunkStore, progress: Progress = _no_progress
) -> ChunkStore:
    """``store`` (empty) filled with every corpus passage as its own document (title as the heading line)."""
    texts = [f"{p['title'].replace('_', ' ')}\n{p['text']}" if p["title"] else p["text"] for p in data.corpus]
    vectors = []
    step = 256
    for start in range(0, len(texts), step):
        vectors.append(retriever.embeddings.encode_passages(texts[start : start + step]))
        progress("embedding passages", min(start + step, len(texts)), len(texts))
    matrix = np.vstack(vectors) if vectors else np.zeros((0, retriever.embeddings.dimension), np.float32)
    for i, passage in enumerate(data.corpus):
        store.add(passage["_id"], [passage["text"]], [{"ordinal": 0}], matrix[i : i + 1], keyword_texts=[texts[i]])
    store.save()
    return store


def evaluate_retrieval(
    data: EvalSet,
    retriever: Retriever,
    *,
    methods: Sequence[str] = METHODS,
    level: str = "passage",
    knowledge_base: str | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
    progress: Progress = _no_progress,
) -> RetrievalResult:
    """Rank passages for every question with each method and score the rankings.

    :param level: ``passage`` (the corpus, one passage per document) or ``article`` (the
        knowledge base ``knowledge_base``, built from the set's docs/ folder by the caller).
    :param variants: instead of ``methods``, named sets of retrieval options to compare, e.g.
        ``{"rrf": {"fusion": "rrf"}}`` (bench/fusion.py sweeps the fusion settings this way).
    """
    started = time.perf_counter()
    revision = run_revision()  # now: the code that runs, whatever is committed meanwhile
    queries = [q for q in data.queries if q.id in data.qrels]
    if not queries:
        raise DocumentRejected(f"{data.folder}: no question has a relevance judgement")
    vectors = retriever.embeddings.encode_queries([q.text for q in queries])
    options = retriever.options(top_k=10, score_threshold=-1.0, expand_chars=0, rerank=False)
    runs = {name: options.override(**changes) for name, changes in (variants or {}).items()} or {
        method: options.override(method=method) for method in methods
    }
    if level == "passage":
        with retriever.knowledge_bases.storage.scratch(retriever.embeddings.dimension) as scratch:
            stores = {"eval": passage_store(data, retriever, scratch, progress)}
            results = _rank_all(data, queries, vectors, stores, retriever, runs, _passage_judge, progress)
    elif level == "article":
        if knowledge_base is None:
            raise ValueError("article level needs the knowledge base built from docs/")
        stores = {knowledge_base: retriever.knowledge_bases.reader(knowledge_base)}
        judge = ArticleJudge(data)
        results = _rank_all(data, queries, vectors, stores, retriever, runs, judge, progress)
    else:
        raise BadRequest(f"level must be passage or article, not {level!r}")
    settings = {
        "embedding_model": retriever.embeddings.name,
        "fusion": options.fusion,
        "dense_weight": options.dense_weight,
        "candidates": options.candidates,
        "revision": revision,
    }
    return RetrievalResult(data.name, level, len(queries), results, time.perf_counter() - started, settings)


Judge = Callable[[Query, set[str], Sequence[SearchHit]], list[str]]


def _passage_judge(query: Query, relevant: set[str], hits: Sequence[SearchHit]) -> list[str]:
    return [hit.document for hit in hits]


class ArticleJudge:
    """Marks a hit relevant when it contains a gold answer and overlaps the gold passage."""

    def __init__(self, data: EvalSet) -> None:
        from loaders import load_file

        self.spans: dict[str, tuple[str, object, int, int]] = {}
        passages = {p["_id"]: p for p in data.corpus}
        files = sorted((data.folder / "docs").rglob("*.txt")) if (data.folder / "docs").is_dir() else []
        keys = {path: path.relative_to(data.folder / "docs").as_posix() for path in files}
        loaded: dict[Path, list[Any]] = {}
        for query in data.queries:
            gold = passages.get(query.gold_doc)
            if gold is None or query.gold_doc in self.spans:
                continue
            text = gold["text"].strip()
            # the article's file first (file names replace characters such as "·" and spaces with "_"),
            # then every file: the passage itself says where it is
            safe = re.sub(r"[\s·/\\:*?\"<>|]", "_", query.article)
            ordered = sorted(files, key=lambda path: path.stem not in (query.article, safe))
            for path in ordered:
                if path not in loaded:
                    loaded[path] = load_file(path)
                found = next(((p, p.page_content.find(text)) for p in loaded[path] if text in p.page_content), None)
                if found is not None:
                    piece, at = found
                    self.spans[query.gold_doc] = (keys[path], piece.metadata.get("page"), at, at + len(text))
                    break

    def __call__(self, query: Query, relevant: set[str], hits: Sequence[SearchHit]) -> list[str]:
        span = self.spans.get(query.gold_doc)
        labels = []
        for hit in hits:
            good = (
                span is not None
                and hit.document == span[0]
                and hit.page == span[1]
                and hit.start < span[3]
                and hit.end > span[2]
                and contains_answer(hit.text, query.answers)
            )
            first = good and query.gold_doc not in labels  # a second passage on the same span counts once
            labels.append(query.gold_doc if first else f"{hit.document}#{hit.chunk_id}")
        return labels


def _rank_all(
    data: EvalSet,
    queries: Sequence[Query],
    vectors: np.ndarray,
    stores: Mapping[str, ChunkStore],
    retriever: Retriever,
    runs: dict[str, RetrievalOptions],
    judge: Judge,
    progress: Progress,
) -> dict[str, dict[str, float]]:
    results = {}
    for method, method_options in runs.items():
        ranks: list[int | None] = []
        ndcgs: list[float] = []
        for i, query in enumerate(queries):
            relevant = data.qrels[query.id]
            hits = retriever.search_stores(query.text, stores, method_options, vector=vectors[i])
            ranked = judge(query, relevant, hits)
            ranks.append(rank_of(ranked, relevant))
            ndcgs.append(ndcg_at(ranked, relevant))
            if i % 200 == 0 or i == len(queries) - 1:
                progress(f"ranking ({method})", i + 1, len(queries))
        results[method] = ranking_metrics(ranks, ndcgs)
    return results


# ------------------------------------------------------------------ articles
def build_article_kb(knowledge_bases: Any, data: EvalSet, name: str, progress: Any = None) -> None:
    """Ingest the set's docs/ folder into knowledge base ``name`` through the normal pipeline."""
    docs = data.folder / "docs"
    if not docs.is_dir():
        raise DocumentRejected(f"{data.folder} has no docs/ folder for article-level evaluation")
    try:
        knowledge_bases.get(name)
    except KbQaError:
        knowledge_bases.create(name, f"evaluation set {data.name}")
    report = knowledge_bases.rebuild(name, docs, progress=progress)
    if report.failed:
        failed = ", ".join(f"{o.path} ({o.error})" for o in report.failed[:3])
        raise DocumentRejected(f"{len(report.failed)} file(s) of {docs} could not be ingested: {failed}")
