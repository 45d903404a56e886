"""Hybrid retrieval on a real knowledge base with the real embedding model and real FAISS + BM25."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from kb_qa.domain import SearchHit
from kb_qa.embeddings import SentenceTransformerEmbeddings
from kb_qa.errors import BadRequest, ConfigError
from kb_qa.retrieval import KEYWORD_WORKERS, KnowledgeBaseRetriever, Reranker, RetrievalOptions
from kb_qa.services import Services, build_services
from kb_qa.settings import load_settings
from loaders import load_file

pytestmark = pytest.mark.integration

EN = "How often must passwords be changed?"
ZH = "年假没休完可以顺延到明年吗？"


@pytest.fixture()
def hb(services: Services, samples_copy: Path) -> Services:
    services.knowledge_bases.create("hb")
    assert not services.knowledge_bases.rebuild("hb", samples_copy).failed
    return services


def retrieve(services: Services, query: str, kbs: tuple[str, ...] = ("hb",), **options: object) -> list[SearchHit]:
    return services.retriever.retrieve(query, list(kbs), **options)


def test_hybrid_finds_chinese_and_english_passages_with_cosine_scores(hb: Services) -> None:
    en = retrieve(hb, EN, top_k=3)
    assert en[0].document == "employee-handbook.md" and "every 90 days" in en[0].text
    zh = retrieve(hb, ZH, top_k=3)
    assert zh[0].document == "员工手册.md" and "顺延5天" in zh[0].text
    # the score is the cosine of question and chunk under the embedding model, whatever the method
    store = hb.knowledge_bases.reader("hb")
    query = hb.embeddings.encode_queries([EN])[0]
    for method in ("hybrid", "dense", "bm25"):
        for hit in retrieve(hb, EN, top_k=4, method=method):
            expected = float(store.similarities(query, [hit.chunk_id])[0])
            assert hit.score == pytest.approx(expected, abs=1e-5)
    # hybrid relevance is the fused score in [0, 1], best first
    relevances = [h.relevance for h in en]
    assert relevances == sorted(relevances, reverse=True) and all(0 <= r <= 1 for r in relevances)


def test_fusion_weights_span_dense_and_bm25(hb: Services) -> None:
    def order(**options: object) -> list[int]:
        return [h.chunk_id for h in retrieve(hb, "差旅住宿报销标准", top_k=6, **options)]

    assert order(method="hybrid", dense_weight=1.0) == order(method="dense")
    assert order(method="hybrid", dense_weight=0.0) == order(method="bm25")
    rrf = retrieve(hb, ZH, top_k=5, fusion="rrf")
    assert all(h.relevance is not None and 0 < h.relevance <= 2 / 61 + 1e-6 for h in rrf)
    assert rrf[0].document == "员工手册.md"


def test_threshold_has_one_meaning_for_every_method(hb: Services) -> None:
    best = retrieve(hb, ZH, top_k=1)[0].score
    for method in ("hybrid", "dense", "bm25"):
        kept = retrieve(hb, ZH, top_k=20, method=method, score_threshold=0.85)
        assert all(h.score >= 0.85 for h in kept)
        everything = retrieve(hb, ZH, top_k=20, method=method)
        assert {h.chunk_id for h in everything if h.score >= 0.85} >= {h.chunk_id for h in kept}
        assert retrieve(hb, ZH, top_k=5, method=method, score_threshold=min(1.0, best + 1e-4)) == []
    with pytest.raises(BadRequest, match="score_threshold"):
        retrieve(hb, ZH, score_threshold=3.0)


def test_document_filter_and_several_knowledge_bases(hb: Services, samples_copy: Path) -> None:
    for method in ("hybrid", "bm25", "dense"):
        hits = retrieve(hb, "年假 annual leave", top_k=5, method=method, documents=["employee-handbook.md"])
        assert hits and {h.document for h in hits} == {"employee-handbook.md"}
        assert retrieve(hb, "年假 annual leave", method=method, documents=["no-such-file.md"]) == []
    english_only = samples_copy.parent / "english"
    english_only.mkdir()
    shutil.copy(samples_copy / "employee-handbook.md", english_only / "handbook-copy.md")
    hb.knowledge_bases.create("en")
    hb.knowledge_bases.rebuild("en", english_only)
    both = retrieve(hb, EN, ("hb", "en"), top_k=6)
    # the same text lives in both knowledge bases: it is shown once
    texts = [h.text for h in both]
    assert len(texts) == len(set(texts))
    assert "every 90 days" in both[0].text
    assert {h.kb for h in retrieve(hb, ZH, ("hb", "en"), top_k=3)} == {"hb"}


def test_passages_never_overlap_and_expand_to_their_neighbours(hb: Services, samples_copy: Path) -> None:
    hits = retrieve(hb, "员工 公司 规定", top_k=20)
    for i, a in enumerate(hits):
        for b in hits[i + 1 :]:
            assert not set(a.chunk_ids) & set(b.chunk_ids)
            if (a.kb, a.document, a.page) == (b.kb, b.document, b.page) and a.heading == b.heading:
                assert a.end <= b.start or b.end <= a.start
    # a long plain-text document is one piece of many chunks; a hit grows into its neighbours
    paragraphs = [
        f"Section {i}. The {name} team meets on {day} to review item {i}; its notes are kept for {i + 2} years."
        for i, (name, day) in enumerate(
            zip(
                ["finance", "design", "legal", "support", "research", "sales", "security", "facilities"],
                ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Monday", "Tuesday", "Wednesday"],
                strict=True,
            )
        )
    ]
    (samples_copy / "meetings.txt").write_text("\n\n".join(p * 3 for p in paragraphs), encoding="utf-8")
    hb.knowledge_bases.rebuild("hb")
    question = "When does the legal team meet?"
    plain = retrieve(hb, question, top_k=1, documents=["meetings.txt"])[0]
    wide = retrieve(hb, question, top_k=1, documents=["meetings.txt"], expand_chars=1000)[0]
    assert "legal" in plain.text
    assert len(wide.chunk_ids) > 1 and plain.chunk_id in wide.chunk_ids
    assert plain.text in wide.text and len(plain.text) < len(wide.text) <= 1000
    # the merged passage is an exact slice of the loaded document
    text = load_file(samples_copy / "meetings.txt")[0].page_content
    assert " ".join(text[wide.start : wide.end].split()) == " ".join(wide.text.split())


def test_the_keyword_index_follows_the_knowledge_base(hb: Services, samples_copy: Path) -> None:
    handbook = samples_copy / "employee-handbook.md"
    handbook.write_text(handbook.read_text(encoding="utf-8").replace("every 90 days", "every 75 days"), "utf-8")
    hb.knowledge_bases.rebuild("hb")
    found = " ".join(h.text for h in retrieve(hb, "75 days", top_k=3, method="bm25"))
    assert "every 75 days" in found and "every 90 days" not in found
    hb.knowledge_bases.remove_files("hb", ["employee-handbook.md"])
    assert all(h.document != "employee-handbook.md" for h in retrieve(hb, "passwords", top_k=10, method="bm25"))
    store_dir = hb.knowledge_bases.store_dir("hb")
    generation = (store_dir / "CURRENT").read_text().strip()
    assert (store_dir / f"keywords.{generation}.npz").is_file()


def test_langchain_retriever_interface(hb: Services) -> None:
    retriever = KnowledgeBaseRetriever(engine=hb.retriever, knowledge_bases=["hb"], options={"top_k": 2})
    docs = retriever.invoke(EN)
    assert len(docs) == 2 and "every 90 days" in docs[0].page_content
    assert docs[0].metadata["document"] == "employee-handbook.md" and -1 <= docs[0].metadata["score"] <= 1
    assert len(retriever.invoke(EN, top_k=4)) == 4


def _tiny_cross_encoder(folder: Path, words: list[str]) -> Path:
    """A randomly initialised one-layer BERT cross-encoder with a word vocabulary, saved as a folder."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
    (folder / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        num_labels=1, max_position_embeddings=512,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_cross_encoder_reranker_from_a_local_folder(
    kb_root: Path, embeddings: SentenceTransformerEmbeddings, samples_copy: Path, tmp_path: Path
) -> None:
    words = (samples_copy / "employee-handbook.md").read_text(encoding="utf-8").lower().split()
    folder = _tiny_cross_encoder(tmp_path / "reranker", words)
    settings = load_settings(
        environ={},
        overrides={"paths": {"kb_root": str(kb_root)}, "retrieval": {"reranker": str(folder), "score_threshold": 0.0}},
    )
    services = build_services(settings, embeddings=embeddings)
    assert services.retriever.reranker is not None
    services.knowledge_bases.create("hb")
    services.knowledge_bases.rebuild("hb", samples_copy)
    hits = services.retriever.retrieve(EN, ["hb"], top_k=5)
    scores = [h.rerank_score for h in hits]
    assert all(s is not None for s in scores) and scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    from sentence_transformers import CrossEncoder

    independent = CrossEncoder(str(folder), device="cpu").predict([(EN, h.text) for h in hits])
    assert np.allclose(independent, scores, atol=1e-4)
    # a request can turn the reranker off
    off = services.retriever.retrieve(EN, ["hb"], top_k=5, rerank=False)
    assert all(h.rerank_score is None for h in off)
    with pytest.raises(ConfigError, match="not a cross-encoder folder"):
        Reranker(tmp_path)


def test_options_are_validated() -> None:
    options = RetrievalOptions()
    with pytest.raises(BadRequest, match="top_k"):
        options.override(top_k=0)
    with pytest.raises(BadRequest, match="method"):
        options.override(method="magic")
    with pytest.raises(TypeError, match="unknown retrieval options"):
        options.override(colour="red")
    assert options.override(documents=["a"], top_k=None).documents == ("a",)


class _Watched:
    """A real store whose keyword search signals when it starts (everything else passes through)."""

    def __init__(self, store: object, started: threading.Event) -> None:
        self._store = store
        self._started = started
        self.keyword_threads: list[str] = []

    def keyword_search(self, *args: object, **kwargs: object) -> object:
        self.keyword_threads.append(threading.current_thread().name)
        self._started.set()
        return self._store.keyword_search(*args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def test_keyword_search_runs_while_the_question_is_embedded(hb: Services, samples_copy: Path) -> None:
    hb.knowledge_bases.create("other")
    # a passage of its own (not a copy of one in hb, which duplicate removal would fold into hb's)
    (samples_copy / "假期问答.md").write_text(
        "# 假期问答\n\n问：年假没休完可以顺延到明年吗？答：可以，未休完的年假可顺延到明年第一季度使用。\n",
        encoding="utf-8",
    )
    assert not hb.knowledge_bases.add_files("other", [samples_copy / "假期问答.md"]).failed
    retriever = hb.retriever
    started = {kb: threading.Event() for kb in ("hb", "other")}
    stores = {kb: _Watched(hb.knowledge_bases.reader(kb), started[kb]) for kb in started}
    embeddings = retriever.embeddings
    waited: list[bool] = []

    class Embeddings:  # the real model, which first waits for both keyword searches to begin
        def encode_queries(self, texts: list[str]) -> np.ndarray:
            waited.append(all(event.wait(10) for event in started.values()))
            return embeddings.encode_queries(texts)

    options = retriever.options(top_k=5)
    try:
        retriever.embeddings = Embeddings()  # type: ignore[assignment]
        overlapped = retriever.search_stores(ZH, stores, options)  # type: ignore[arg-type]
    finally:
        retriever.embeddings = embeddings
    assert waited == [True]  # the keyword searches started before the embedding finished
    assert all(w.keyword_threads and w.keyword_threads[0].startswith("kbqa-keyword") for w in stores.values())
    # the same passages, scores and order as one step after the other, for every method and filter
    for overrides in ({}, {"method": "bm25"}, {"method": "dense"}, {"fusion": "rrf"}, {"documents": ("员工手册.md",)}):
        opts = retriever.options(top_k=5, **overrides)
        retriever.parallel_keyword = True
        together = retriever.search_stores(ZH, stores, opts)  # type: ignore[arg-type]
        retriever.parallel_keyword = False
        try:
            in_turn = retriever.search_stores(ZH, stores, opts)  # type: ignore[arg-type]
        finally:
            retriever.parallel_keyword = True
        assert [(h.kb, h.chunk_id, h.score, h.relevance) for h in together] == [
            (h.kb, h.chunk_id, h.score, h.relevance) for h in in_turn
        ], overrides
    again = retriever.search_stores(ZH, stores, options)  # type: ignore[arg-type]
    assert [(h.kb, h.chunk_id) for h in overlapped] == [(h.kb, h.chunk_id) for h in again]
    assert {h.kb for h in again} == {"hb", "other"}  # both knowledge bases searched
    # every worker busy with other requests: the search does not wait in their queue, it runs its own
    busy = threading.Event()
    assert retriever._workers is not None
    blockers = [retriever._workers.submit(busy.wait, 30) for _ in range(KEYWORD_WORKERS)]
    try:
        queued = retriever.search_stores(ZH, stores, options)  # type: ignore[arg-type]
        assert all(w.keyword_threads[-1] == threading.current_thread().name for w in stores.values())
    finally:
        busy.set()
    assert all(b.result(10) for b in blockers)
    assert [(h.kb, h.chunk_id, h.score) for h in queued] == [(h.kb, h.chunk_id, h.score) for h in again]
