"""The store contract (vector_store/contract.py), checked the same way on both stores: the folder
store (FAISS + BM25 files) and the PostgreSQL store (pgvector + BM25 in SQL) on a real server.
Where both hold the same chunks, they must give the same answers (scores to float rounding)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vector_store import FaissStore
from vector_store.contract import ChunkStore, StoreError
from vector_store.pg_store import PostgresStore, connect_pool

pytestmark = pytest.mark.integration

DIM = 16
WORDS = (
    "annual leave policy carry over expense approval manager director travel hotel budget password "
    "年假 顺延 次年 报销 审批 经理 差旅 住宿 标准 密码 更换 试用期 考核"
).split()


@pytest.fixture()
def pool(pg_url: str) -> Iterator[object]:
    pool = connect_pool(pg_url)
    yield pool
    pool.close()


@pytest.fixture(params=["folder", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """Opens the store of one kind by name (a second call opens the same store again, as a reader)."""
    if request.param == "folder":
        yield lambda name="kb", exact=True: FaissStore.open(tmp_path / name, DIM)
        return
    pool = connect_pool(request.getfixturevalue("pg_url"))
    yield lambda name="kb", exact=True: PostgresStore(pool, name, DIM, exact=exact)
    pool.close()


def corpus(seed: int = 0, docs: int = 12, per_doc: int = 4) -> list[tuple[str, list[str], np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for d in range(docs):
        texts = [" ".join(rng.choice(WORDS, int(rng.integers(4, 14)))) for _ in range(per_doc)]
        out.append((f"doc-{d:02d}.md", texts, rng.normal(size=(per_doc, DIM)).astype(np.float32)))
    return out


def fill(store: ChunkStore, data: list[tuple[str, list[str], np.ndarray]]) -> None:
    for doc, texts, vectors in data:
        store.add(doc, texts, [{"ordinal": i, "page": None} for i in range(len(texts))], vectors)


def test_the_contract(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    assert isinstance(store, ChunkStore)
    assert len(store) == 0 and store.generation == 0 and store.documents() == {}
    data = corpus()
    fill(store, data)
    assert store.dirty
    assert store.documents() == {doc: 4 for doc, _, _ in data}  # the writer sees its own writes
    assert make_store().documents() == {}  # a reader does not, before the save
    store.save(commit={"created_at": "x", "documents": []})
    assert not store.dirty and store.generation == 1
    reader = make_store()
    assert reader.generation == 1 and reader.read_commit() == {"created_at": "x", "documents": []}
    assert len(reader) == 48 and reader.documents() == {doc: 4 for doc, _, _ in data}

    chunks = reader.chunks_of("doc-03.md")
    assert sorted(c.metadata["ordinal"] for c in chunks) == [0, 1, 2, 3]
    assert {c.text for c in chunks} == set(data[3][1])
    assert reader.chunks_of("nope") == []
    ids = [c.id for c in chunks]
    assert set(reader.get_many([*ids, 10**9])) == set(ids)

    # dense: exact cosines, best first, a document filter honoured
    query = np.random.default_rng(7).normal(size=DIM)
    hits = reader.search(query, 5)
    assert len(hits) == 5 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    sims = reader.similarities(query, [h.chunk.id for h in hits] + [10**9])
    assert np.allclose(sims[:5], [h.score for h in hits], atol=1e-5) and sims[5] == 0
    only = reader.search(query, 5, docs=["doc-01.md", "doc-02.md"])
    assert len(only) == 5 and {h.chunk.doc for h in only} <= {"doc-01.md", "doc-02.md"}
    assert reader.search(query, 5, docs=[]) == []

    # keywords: BM25, zero scores left out, a filter honoured, exact scores for given ids
    found = reader.keyword_search("年假 顺延 expense", 6)
    assert found and all(h.score > 0 for h in found)
    assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)
    exact = reader.keyword_scores("年假 顺延 expense", [h.chunk.id for h in found] + [10**9])
    assert np.allclose(exact[:-1], [h.score for h in found], rtol=1e-5) and exact[-1] == 0
    assert reader.keyword_search("zzz-nothing", 5) == []
    filtered = reader.keyword_search("年假 顺延 expense", 6, docs=["doc-05.md"])
    assert {h.chunk.doc for h in filtered} <= {"doc-05.md"}

    # replace one document, delete another, discard a third change
    writer = make_store()
    new_ids = writer.add("doc-00.md", ["年假 最多 顺延 五天"], [{"ordinal": 0}], np.ones((1, DIM), np.float32))
    assert writer.delete("doc-01.md") == 4 and writer.delete("doc-01.md") == 0
    writer.save()
    writer.delete("doc-02.md")
    writer.discard()
    after = make_store()
    assert after.generation == 2 and after.read_commit() is None
    assert after.documents()["doc-00.md"] == 1 and "doc-01.md" not in after.documents()
    assert after.documents()["doc-02.md"] == 4
    assert not set(new_ids) & set(ids)  # ids are never reused
    assert after.search(np.ones(DIM), 1)[0].chunk.id == new_ids[0]
    assert after.search(np.ones(DIM), 1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_wrong_dimension_is_refused(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    with pytest.raises(StoreError, match="dimensions"):
        store.add("a", ["x"], [{}], np.ones((1, DIM + 1), np.float32))
    store.discard()
    fill(store, corpus(docs=1))
    store.save()
    with pytest.raises(StoreError, match="dimensions"):
        store.search(np.ones(DIM + 1), 3)


def test_both_stores_give_the_same_answers(tmp_path: Path, pool: object) -> None:
    data = corpus(seed=3, docs=30, per_doc=5)
    folder = FaissStore(tmp_path / "f", DIM)
    postgres = PostgresStore(pool, "same", DIM, exact=True)
    for store in (folder, postgres):
        fill(store, data)
        store.delete("doc-07.md")
        store.save()
    rng = np.random.default_rng(11)
    for _ in range(20):
        vector = rng.normal(size=DIM)
        a, b = folder.search(vector, 8), postgres.search(vector, 8)
        assert [h.chunk.id for h in a] == [h.chunk.id for h in b]
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
        text = " ".join(rng.choice(WORDS, 3))
        ka, kb = folder.keyword_search(text, 8), postgres.keyword_search(text, 8)
        assert np.allclose([h.score for h in ka], [h.score for h in kb], rtol=1e-4), text
        # the same chunks, except where float rounding reorders equal scores at the cut
        assert len({h.chunk.id for h in ka} ^ {h.chunk.id for h in kb}) <= 2, text
        ids = [h.chunk.id for h in ka]
        assert np.allclose(folder.keyword_scores(text, ids), postgres.keyword_scores(text, ids), rtol=1e-4)


def test_postgres_hnsw_search_filtered_still_returns_k(pool: object) -> None:
    """pgvector's iterative index scan: a filter that keeps few rows still gets k of them."""
    store = PostgresStore(pool, "hnsw", DIM, exact=False)
    data = corpus(seed=5, docs=60, per_doc=5)
    fill(store, data)
    store.save()
    query = np.random.default_rng(2).normal(size=DIM)
    hits = store.search(query, 5, docs=["doc-41.md", "doc-42.md"])
    assert len(hits) == 5 and {h.chunk.doc for h in hits} <= {"doc-41.md", "doc-42.md"}
    exact = PostgresStore(pool, "hnsw", DIM, exact=True).search(query, 5, docs=["doc-41.md", "doc-42.md"])
    assert [h.chunk.id for h in hits] == [h.chunk.id for h in exact]


def test_postgres_write_is_invisible_until_saved_and_gone_when_the_writer_dies(pool: object, pg_url: str) -> None:
    import psycopg

    writer = PostgresStore(pool, "kb", DIM)
    writer.add("a.md", ["one", "two"], [{}, {}], np.ones((2, DIM), np.float32))
    reader = PostgresStore(pool, "kb", DIM)
    assert reader.documents() == {} and len(reader) == 0
    # the writer's connection dies (a killed process): PostgreSQL rolls its transaction back
    backend_pid = writer._writer.info.backend_pid  # type: ignore[union-attr]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid,))
    with pytest.raises(StoreError):
        writer.save()
    assert reader.documents() == {} and reader.generation == 0
    again = PostgresStore(pool, "kb", DIM)
    again.add("a.md", ["one"], [{}], np.ones((1, DIM), np.float32))
    again.save()
    assert reader.documents() == {"a.md": 1} and len(reader) == 1


def test_postgres_writer_lock_serialises_across_connections(pool: object) -> None:
    from vector_store import StoreBusy
    from vector_store.pg_store import PgWriterLock

    events = []
    with PgWriterLock(pool, "kb", timeout=5).hold():
        with pytest.raises(StoreBusy), PgWriterLock(pool, "kb", timeout=0.2).hold():
            pass
        with PgWriterLock(pool, "other", timeout=0).hold():  # another knowledge base: free
            events.append("other")

        def wait() -> None:
            with PgWriterLock(pool, "kb", timeout=10).hold():
                events.append("second")

        thread = threading.Thread(target=wait)
        thread.start()
        thread.join(0.3)
        events.append("first done")
    thread.join(10)
    assert events == ["other", "first done", "second"]


def test_dropping_a_store_removes_everything(pool: object) -> None:
    store = PostgresStore(pool, "gone", DIM)
    fill(store, corpus(docs=3))
    store.save()
    PostgresStore.drop(pool, "gone")
    with pool.connection() as conn:  # type: ignore[attr-defined]
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("kbqa_stores", "kbqa_chunks", "kbqa_postings", "kbqa_terms")]  # fmt: skip
        indexes = conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'kbqa_chunks_hnsw_%'").fetchone()
    assert counts == [0, 0, 0, 0] and indexes[0] == 0
    fresh = PostgresStore(pool, "gone", DIM)
    assert fresh.generation == 0 and fresh.documents() == {}


def test_postgres_bulk_load_builds_the_index_once_and_searches_as_before(pool: object) -> None:
    data = corpus(seed=7, docs=30)
    store = PostgresStore(pool, "bulk", DIM)
    index = f"kbqa_chunks_hnsw_{store.store_id}"

    def has_index() -> bool:
        with pool.connection() as conn:  # type: ignore[attr-defined]
            return conn.execute("SELECT to_regclass(%s)", (index,)).fetchone()[0] is not None

    with store.bulk_load():
        assert not has_index()  # no graph to keep up while loading
        fill(store, data)
        store.save()
        exact = PostgresStore(pool, "bulk", DIM, exact=True)
        during = [[c.chunk.id for c in store.search(v, 5)] for _, _, vs in data[:5] for v in vs]
    assert has_index()
    after = [[c.chunk.id for c in store.search(v, 5)] for _, _, vs in data[:5] for v in vs]
    assert after == during == [[c.chunk.id for c in exact.search(v, 5)] for _, _, vs in data[:5] for v in vs]
    with pool.connection() as conn, conn.transaction():  # type: ignore[attr-defined]
        conn.execute("SET LOCAL enable_seqscan = off")  # a tiny table: ask whether the index can serve at all
        query = "[" + ",".join(["0.1"] * DIM) + "]"
        rows = conn.execute(
            f"EXPLAIN SELECT id FROM kbqa_chunks WHERE store_id = {store.store_id} "
            f"ORDER BY embedding::vector({DIM}) <=> %s::vector({DIM}) LIMIT 5",
            (query,),
        ).fetchall()
        plan = "\n".join(r[0] for r in rows)
    assert index in plan  # the rebuilt index serves the store's searches

    with pytest.raises(StoreError, match="save or discard"):
        store.add("open.md", ["x"], [{}], np.ones((1, DIM), np.float32))
        with store.bulk_load():
            pass
    store.discard()


def test_postgres_keyword_search_within_a_budget_reads_the_rarest_terms_and_scores_exactly(pool: object) -> None:
    """A small ``keyword_budget`` reads the rarest terms' postings whole and scores the chunks found
    there over every term: exact scores, the chunk that holds the rare term first; a budget that
    covers every list gives the exhaustive result."""
    data = corpus(seed=4, docs=40, per_doc=5)
    data.append(("rare.md", ["expense approval 顺延 zeppelin", "budget travel"], np.ones((2, DIM), np.float32)))
    writer = PostgresStore(pool, "budget", DIM)
    fill(writer, data)
    writer.save()
    full = PostgresStore(pool, "budget", DIM, keyword_budget=0)
    small = PostgresStore(pool, "budget", DIM, keyword_budget=5)
    ample = PostgresStore(pool, "budget", DIM, keyword_budget=100_000)
    rng = np.random.default_rng(8)
    for _ in range(15):
        text = " ".join(rng.choice(WORDS, 3))
        exact, covered = full.keyword_search(text, 8), ample.keyword_search(text, 8)
        # the same scores; the same chunks, except where float rounding reorders equal scores
        assert [round(h.score, 4) for h in covered] == [round(h.score, 4) for h in exact], text
        cut = round(exact[-1].score, 4)
        assert {h.chunk.id for h in covered if round(h.score, 4) > cut} == {
            h.chunk.id for h in exact if round(h.score, 4) > cut
        }, text
        within = small.keyword_search(text, 8)
        assert within, text
        scores = full.keyword_scores(text, [h.chunk.id for h in within])
        assert np.allclose([h.score for h in within], scores, rtol=1e-5), text  # exact scores
        assert [h.score for h in within] == sorted((h.score for h in within), reverse=True)
    # "zeppelin" is in one chunk: read first, that chunk tops the list with its full score
    best = small.keyword_search("expense approval budget zeppelin", 3)
    assert best[0].chunk.doc == "rare.md"
    assert [(h.chunk.id, round(h.score, 4)) for h in best[:1]] == [
        (h.chunk.id, round(h.score, 4)) for h in full.keyword_search("expense approval budget zeppelin", 1)
    ]
