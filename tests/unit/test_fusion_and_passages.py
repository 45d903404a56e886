"""Score fusion and passage assembly in kb_qa/retrieval.py, on hand-made chunks (no model)."""

from __future__ import annotations

from kb_qa.retrieval import (
    RetrievalOptions,
    Retriever,
    _bounds,
    _Candidate,
    _merge_touching,
    _normalised,
    _Passage,
)
from vector_store import StoredChunk


def chunk(ordinal: int, text: str, *, doc: str = "a.md", start: int | None = None, page: int = 1) -> StoredChunk:
    begin = ordinal * 10 if start is None else start
    meta = {"ordinal": ordinal, "piece": page, "page": page, "start": begin, "end": begin + len(text)}
    return StoredChunk(id=ordinal + 100 * page, doc=doc, text=text, metadata=meta)


def candidate(c: StoredChunk, cosine: float = 0.8, kb: str = "kb") -> _Candidate:
    return _Candidate(kb=kb, chunk=c, cosine=cosine, bm25=0.0, relevance=cosine)


def test_bounds_and_normalisation() -> None:
    assert _bounds([9.0, 5.0, 1.0], wanted=2) == (5.0, 9.0)
    assert _bounds([9.0], wanted=5) == (9.0, 9.0) and _bounds([], wanted=3) == (0.0, 1.0)
    assert _normalised(7.0, (5.0, 9.0)) == 0.5 and _normalised(4.0, (5.0, 9.0)) == 0.0
    assert _normalised(9.0, (9.0, 9.0)) == 1.0  # one distinct score: the listed one is the best
    assert _normalised(0.0, (0.0, 0.0)) == 0.0


def test_weighted_and_rrf_fusion() -> None:
    c = _Candidate("kb", chunk(0, "x"), cosine=0.9, bm25=3.0, dense_rank=1, bm25_rank=3, dense_norm=1.0, bm25_norm=0.5)
    weighted = RetrievalOptions(method="hybrid", fusion="weighted", dense_weight=0.5)
    assert Retriever._relevance(c, weighted) == 0.75
    assert Retriever._relevance(c, RetrievalOptions(method="hybrid", fusion="weighted", dense_weight=0.8)) == 0.9
    rrf = RetrievalOptions(method="hybrid", fusion="rrf", rrf_k=60)
    assert abs(Retriever._relevance(c, rrf) - (1 / 61 + 1 / 63)) < 1e-12
    only_dense = _Candidate("kb", chunk(0, "x"), cosine=0.9, bm25=0.0, dense_rank=2)
    assert abs(Retriever._relevance(only_dense, rrf) - 1 / 62) < 1e-12  # missing from one list: no share of it
    assert Retriever._relevance(c, RetrievalOptions(method="dense")) == 0.9
    assert Retriever._relevance(c, RetrievalOptions(method="bm25")) == 0.5


def test_neighbouring_chunks_become_one_passage_and_overlaps_are_not_repeated() -> None:
    first = chunk(0, "年假按工龄计算，", start=0)
    second = chunk(1, "按工龄计算，满一年享受五天。", start=2)  # overlaps the first by 6 characters
    far = chunk(5, "报销需要发票。", start=200)
    passages = Retriever._passages([candidate(first, 0.9), candidate(far, 0.8), candidate(second, 0.7)], top_k=3)
    assert len(passages) == 2
    assert passages[0].text() == "年假按工龄计算，满一年享受五天。"
    hit = passages[0].to_hit()
    assert hit.chunk_ids == [first.id, second.id] and hit.score == 0.9 and hit.start == 0
    assert passages[1].text() == "报销需要发票。"


def test_duplicate_texts_from_other_files_are_shown_once_and_top_k_counts_passages() -> None:
    same = [chunk(0, "Passwords change every 90 days.", doc=d) for d in ("a.md", "b.md")]
    other = chunk(3, "Laptops are encrypted.", doc="c.md")
    passages = Retriever._passages([candidate(same[0]), candidate(same[1]), candidate(other)], top_k=5)
    assert [p.doc for p in passages] == ["a.md", "c.md"]
    assert len(Retriever._passages([candidate(c) for c in (*same, other)], top_k=1)) == 1


def test_other_pages_and_knowledge_bases_do_not_merge() -> None:
    page1, page2 = chunk(0, "end of page one", page=1), chunk(1, "start of page two", page=2)
    passages = Retriever._passages([candidate(page1), candidate(page2)], top_k=5)
    assert len(passages) == 2
    a = _Passage("kb1", "a.md", 1, candidate(page1), {0: page1}, [])
    b = _Passage("kb2", "a.md", 1, candidate(page1), {1: chunk(1, "next")}, [])
    assert len(_merge_touching([a, b])) == 2
    c = _Passage("kb1", "a.md", 1, candidate(page1), {1: chunk(1, "next")}, [])
    merged = _merge_touching([a, c])
    assert len(merged) == 1 and sorted(merged[0].chunks) == [0, 1]
