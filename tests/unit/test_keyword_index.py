"""The BM25 keyword index: tokens, hand-computed scores, updates by document, persistence."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vector_store import FaissStore
from vector_store.keyword_index import K1, B, KeywordIndex, tokenize


def test_tokens_chinese_words_english_stems_no_function_words() -> None:
    zh = tokenize("劳动合同的试用期可以顺延到明年吗？")
    assert {"劳动", "合同", "劳动合同", "试用", "试用期", "顺延", "明年"} <= set(zh)  # search mode: words and parts
    assert "的" not in zh and "吗" not in zh and "？" not in zh
    assert tokenize("Passwords are CHANGED every 90 days") == ["password", "chang", "everi", "90", "day"]
    # full-width letters and digits are folded (NFKC) so they match their ASCII forms
    assert tokenize("ＡＰＩ　ｖ２") == tokenize("API v2")
    assert tokenize("the company's policy") == ["compani", "polici"]


def _bm25(query: list[str], docs: list[list[str]], target: int) -> float:
    """BM25 by the textbook formula, written out independently of the index."""
    n = len(docs)
    average = sum(len(d) for d in docs) / n
    score = 0.0
    for term in set(query):
        df = sum(1 for d in docs if term in d)
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        tf = docs[target].count(term)
        score += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * len(docs[target]) / average))
    return score


def test_scores_match_the_bm25_formula() -> None:
    texts = ["apple banana apple", "banana cherry", "cherry durian elderberry fig", "apple"]
    index = KeywordIndex(analyzer=str.split)
    for i, text in enumerate(texts):
        index.add(f"d{i}", [10 + i], [text])
    ids, scores = index.scores("apple cherry")
    assert ids.tolist() == [10, 11, 12, 13]
    docs = [t.split() for t in texts]
    expected = [_bm25(["apple", "cherry"], docs, i) for i in range(4)]
    assert np.allclose(scores, expected, rtol=1e-5)
    hits = index.search("apple cherry", 2)
    assert [h[0] for h in hits] == [10 + i for i in np.argsort(expected)[::-1][:2]]
    assert index.search("nothing here", 5) == []
    assert {i for i, _ in index.search("apple cherry", 10, ids=[11, 12, 13])} == {11, 12, 13}
    assert {i for i, _ in index.search("apple", 10, ids=[11, 12])} == set()


def test_delete_and_replace_by_document_settle_in_any_order() -> None:
    index = KeywordIndex(analyzer=str.split)
    index.add("a", [0, 1], ["red fox", "blue whale"])
    index.add("b", [2], ["red panda"])
    assert len(index) == 3  # settled
    index.add("c", [3], ["red kite"])
    index.delete("c")  # deleted while still pending
    index.delete("a")  # deleted after settling
    index.add("b", [4], ["green turtle"])  # replaced
    assert len(index) == 1
    assert index.search("red", 5) == []
    assert [i for i, _ in index.search("turtle", 5)] == [4]
    # statistics follow the live chunks only: one chunk left, so its idf is the single-document one
    _ids, scores = index.scores("turtle")
    assert scores[0] == pytest.approx(_bm25(["turtle"], [["green", "turtle"]], 0), rel=1e-5)
    assert index.lookup([4, 99], scores).tolist() == [pytest.approx(scores[0]), 0.0]


def test_round_trip_through_bytes(tmp_path: Path) -> None:
    index = KeywordIndex()
    index.add("zh", [0, 1], ["劳动合同的试用期最长不得超过六个月", "年假可以顺延到次年"])
    index.add("en", [2], ["Passwords are changed every 90 days"])
    index.delete("zh")
    index.add("zh", [3], ["试用期包含在劳动合同期限内"])
    path = tmp_path / "k.npz"
    index.save(path)
    loaded = KeywordIndex.load(path)
    for query in ("试用期多长", "password change", "年假"):
        assert loaded.search(query, 5) == index.search(query, 5)
    loaded.delete("en")
    assert loaded.search("password", 5) == []


def test_the_store_keeps_keywords_in_its_generations(tmp_path: Path) -> None:
    store = FaissStore(tmp_path, 4)
    vectors = np.eye(4, dtype=np.float32)
    store.add("a.md", ["alpha policy", "beta rules"], [{}, {}], vectors[:2])
    store.add("b.md", ["gamma alpha"], [{}], vectors[2:3], keyword_texts=["Heading\ngamma alpha"])
    store.save()
    reopened = FaissStore.open(tmp_path, 4)
    assert [h.chunk.doc for h in reopened.keyword_search("alpha", 5)] == [
        h.chunk.doc for h in store.keyword_search("alpha", 5)
    ]
    assert [h.chunk.doc for h in reopened.keyword_search("heading", 5)] == ["b.md"]
    assert [h.chunk.doc for h in reopened.keyword_search("alpha", 5, docs=["b.md"])] == ["b.md"]
    assert not reopened.keywords._stale  # loaded ready to search: a query rebuilds nothing
    # a store written before keywords existed gets its index built from the stored texts on open
    (tmp_path / f"keywords.{reopened.generation}.npz").unlink()
    legacy = FaissStore.open(tmp_path, 4)
    assert {h.chunk.doc for h in legacy.keyword_search("alpha", 5)} == {"a.md", "b.md"}
    sims = legacy.similarities(np.array([1, 0, 0, 0], np.float32), [0, 2])
    assert sims.tolist() == pytest.approx([1.0, 0.0])
