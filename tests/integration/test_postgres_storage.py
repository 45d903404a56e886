"""Knowledge bases on PostgreSQL storage (storage.backend: postgres): the real embedding model, a real
PostgreSQL 18 + pgvector server, the sample handbook. Results must equal the folder store's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kb_qa.errors import Busy, KnowledgeBaseNotFound, StorageUnavailable
from kb_qa.services import Services, build_services
from tests.conftest import postgres_settings
from tests.helpers import ANY_SCORE

pytestmark = pytest.mark.integration

QUESTIONS = [
    "年假没休完可以顺延吗？",
    "Who approves an expense above CNY 5,000?",
    "省会城市出差住宿每晚上限多少钱？",
    "How often must passwords be changed?",
    "试用期多长时间？",
]


def build(services: Services, folder: Path) -> None:
    services.knowledge_bases.create("hb", "handbook")
    report = services.knowledge_bases.rebuild("hb", folder)
    assert not report.failed, report.failed


def answers(services: Services, method: str = "hybrid") -> list[list[tuple[str, str, float]]]:
    out = []
    for question in QUESTIONS:
        hits = services.retriever.retrieve(question, ["hb"], top_k=4, method=method)
        out.append([(h.document, h.text, round(h.score, 4)) for h in hits])
    return out


def test_the_handbook_on_postgres_answers_as_on_folders(
    services: Services, pg_services: Services, samples_copy: Path
) -> None:
    build(services, samples_copy)
    build(pg_services, samples_copy)
    folder_kb, pg_kb = services.knowledge_bases, pg_services.knowledge_bases
    assert [(r.path, r.chunk_count, r.status) for r in pg_kb.files("hb")] == [
        (r.path, r.chunk_count, r.status) for r in folder_kb.files("hb")
    ]
    assert pg_kb.get("hb").chunk_count == folder_kb.get("hb").chunk_count > 0
    for method in ("hybrid", "dense", "bm25"):
        assert answers(pg_services, method) == answers(services, method), method
    first = pg_services.retriever.retrieve("年假没休完可以顺延吗？", ["hb"], top_k=1)[0]
    assert first.document == "员工手册.md" and "顺延5天" in first.text
    # nothing of the knowledge base is in its folder but the copies of the files
    assert not (pg_kb.kb_dir("hb") / "vector_store").exists()
    assert not (pg_kb.root / "registry.sqlite3").exists()


def test_storage_settings_reach_the_store(tmp_path: Path, embeddings: object, pg_url: str, samples_copy: Path) -> None:
    """`storage.ef_search` and `storage.keyword_budget` are what the knowledge base's store searches with;
    a budget of one posting still finds the handbook's answer by keywords, with its exact score.
    `retrieval.parallel_keyword: false` searches one step after the other, with the same results."""
    settings = postgres_settings(tmp_path / "kb", pg_url, storage={"backend": "postgres", "url": pg_url,
                                                                   "ef_search": 40, "keyword_budget": 1},
                                 retrieval={**ANY_SCORE["retrieval"], "parallel_keyword": False})  # fmt: skip
    services = build_services(settings, embeddings=embeddings)  # type: ignore[arg-type]
    try:
        build(services, samples_copy)
        store = services.knowledge_bases.reader("hb")
        assert (store.ef_search, store.keyword_budget) == (40, 1)  # type: ignore[attr-defined]
        assert services.retriever.parallel_keyword is False
        in_turn = answers(services)
        services.retriever.parallel_keyword = True
        assert answers(services) == in_turn
        question = "年假没休完可以顺延吗？"
        hit = services.retriever.retrieve(question, ["hb"], top_k=1, method="bm25")[0]
        assert hit.document == "员工手册.md" and "顺延5天" in hit.text
        every_posting = type(store)(store.pool, "hb", store.dim, keyword_budget=0)  # type: ignore[call-arg,attr-defined]
        top, reference = store.keyword_search(question, 1)[0], every_posting.keyword_search(question, 1)[0]
        assert (top.chunk.id, round(top.score, 4)) == (reference.chunk.id, round(reference.score, 4))
        assert top.chunk.id == hit.chunk_id
    finally:
        services.close()


def test_changes_removals_and_deletion(pg_services: Services, samples_copy: Path) -> None:
    kb = pg_services.knowledge_bases
    build(pg_services, samples_copy)
    before = {r.path: r.chunk_count for r in kb.files("hb")}
    (samples_copy / "employee-handbook.md").write_text(
        "# Handbook\n\n## Parking\n\nStaff park on level B2; the gate code changes every month.\n", encoding="utf-8"
    )
    (samples_copy / "员工手册.md").unlink()
    report = kb.rebuild("hb")
    assert {o.path: o.action for o in report.outcomes if o.action != "unchanged"} == {
        "employee-handbook.md": "updated",
        "员工手册.md": "removed",
    }
    files = {r.path: r.chunk_count for r in kb.files("hb")}
    assert "员工手册.md" not in files and files["employee-handbook.md"] == 1
    assert sum(files.values()) == kb.get("hb").chunk_count == len(kb.reader("hb"))
    assert sum(before.values()) > sum(files.values())
    hits = pg_services.retriever.retrieve("Where do staff park?", ["hb"], top_k=1)
    assert "level B2" in hits[0].text
    assert kb.remove_files("hb", ["benefits-福利.xlsx"]) == ["benefits-福利.xlsx"]
    assert "benefits-福利.xlsx" not in kb.reader("hb").documents()
    kb.delete("hb")
    with pytest.raises(KnowledgeBaseNotFound):
        kb.get("hb")
    with kb.storage.pool.connection() as conn:  # type: ignore[attr-defined]
        assert conn.execute("SELECT count(*) FROM kbqa_chunks").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM kbqa_stores").fetchone()[0] == 0


def test_two_processes_on_one_database_see_each_others_writes(
    pg_services: Services, pg_url: str, embeddings: object, samples_copy: Path, tmp_path: Path
) -> None:
    """Two services on one database (as two API replicas: the same root folder for the copies of files)."""
    settings = postgres_settings(pg_services.settings.kb_root, pg_url)
    other = build_services(settings, embeddings=embeddings)  # type: ignore[arg-type]
    try:
        build(pg_services, samples_copy)
        assert [i.name for i in other.knowledge_bases.list_all()] == ["hb"]
        assert other.retriever.retrieve("试用期多长时间？", ["hb"], top_k=1)[0].document == "onboarding-入职指南.pdf"
        extra = tmp_path / "parking.md"
        extra.write_text("# Parking\n\nVisitors park in bay 7 and sign in at the front desk.\n", encoding="utf-8")
        pg_services.retriever.retrieve("visitors", ["hb"])  # the first one has its reader cached ...
        other.knowledge_bases.add_files("hb", [extra])  # ... when the second one writes
        hits = pg_services.retriever.retrieve("Where do visitors park?", ["hb"], top_k=1)
        assert hits[0].document == "parking.md" and "bay 7" in hits[0].text
        assert "parking.md" in {r.path for r in pg_services.knowledge_bases.files("hb")}
        # one writer per knowledge base across them
        pg_services.knowledge_bases.lock_timeout = 0.2
        with other.knowledge_bases.storage.lock("hb", 5), pytest.raises(Busy):
            pg_services.knowledge_bases.remove_files("hb", ["parking.md"])
        assert pg_services.knowledge_bases.remove_files("hb", ["parking.md"]) == ["parking.md"]
        assert "parking.md" not in other.knowledge_bases.reader("hb").documents()
    finally:
        other.close()


def test_a_registry_left_behind_by_a_killed_writer_catches_up(
    pg_services: Services, samples_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's generation is saved, then the process dies before the registry rows are written:
    the next reader brings the registry in line from the commit record (the folder store's protocol)."""
    kb = pg_services.knowledge_bases
    kb.create("hb")

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the process stops between the two steps of the commit

    monkeypatch.setattr(kb.registry, "apply", killed)
    with pytest.raises(KeyboardInterrupt):
        kb.rebuild("hb", samples_copy)
    monkeypatch.undo()
    assert kb.registry.documents("hb") == []  # behind ...
    assert len(kb.files("hb")) == 5  # ... and caught up by the first reader
    assert kb.get("hb").chunk_count == len(kb.reader("hb"))


def test_a_lost_database_is_a_clear_temporary_error(pg_services: Services, samples_copy: Path, pg_url: str) -> None:
    import psycopg

    build(pg_services, samples_copy)
    name = pg_url.rsplit("/", 1)[1]
    admin = pg_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:  # every connection of the pool is cut
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    # the pool checks connections before handing them out: the next request works again
    assert pg_services.retriever.retrieve("试用期多长时间？", ["hb"], top_k=1)
    pool = pg_services.knowledge_bases.storage.pool  # type: ignore[attr-defined]
    pool.close()
    with pytest.raises(StorageUnavailable, match="try again"):
        pg_services.knowledge_bases.files("hb")


def test_moving_between_folders_and_postgres_keeps_every_answer(
    services: Services, pg_url: str, embeddings: object, samples_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kb-qa kb migrate`: nothing re-embedded, the same counts and the same search results, both ways."""
    folder = services
    pg = build_services(postgres_settings(folder.settings.kb_root, pg_url), embeddings=embeddings)  # type: ignore[arg-type]
    try:
        build(folder, samples_copy)
        before = answers(folder)
        counts = (folder.knowledge_bases.get("hb").document_count, folder.knowledge_bases.get("hb").chunk_count)
        embedded = []
        monkeypatch.setattr(folder.embeddings, "encode_passages", lambda texts: embedded.append(texts))
        info = folder.knowledge_bases.move_to("hb", pg.knowledge_bases)
        assert (info.document_count, info.chunk_count) == counts and not embedded
        assert folder.knowledge_bases.list_all() == [] and not (folder.knowledge_bases.store_dir("hb")).exists()
        assert answers(pg) == before
        # the copies of files stayed and belong to the moved knowledge base: a re-index reads them
        assert pg.knowledge_bases.files("hb")[0].source.startswith(str(samples_copy))
        # back again, interrupted after the copy was committed: running it again finishes the move
        original_forget = pg.knowledge_bases._forget
        monkeypatch.setattr(pg.knowledge_bases, "_forget", lambda name: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            pg.knowledge_bases.move_to("hb", folder.knowledge_bases)
        monkeypatch.setattr(pg.knowledge_bases, "_forget", original_forget)
        assert [i.name for i in pg.knowledge_bases.list_all()] == ["hb"]  # both hold it for now
        info = pg.knowledge_bases.move_to("hb", folder.knowledge_bases)
        assert (info.document_count, info.chunk_count) == counts and pg.knowledge_bases.list_all() == []
        assert answers(folder) == before
        # a different knowledge base of the same name in the target is never overwritten
        pg.knowledge_bases.create("hb")
        from kb_qa.errors import KnowledgeBaseExists

        with pytest.raises(KnowledgeBaseExists, match="delete it there first"):
            folder.knowledge_bases.move_to("hb", pg.knowledge_bases)
        assert answers(folder) == before
    finally:
        pg.close()


def test_postgres_restarted_under_load(pg_services: Services, samples_copy: Path, postgres: object) -> None:
    """Searches keep coming while the server restarts: any caught by the shutdown fails with the clean,
    temporary error (503 in the API), the rest wait for a connection; once it is back every search
    succeeds on new connections, and nothing stored is lost."""
    import threading

    build(pg_services, samples_copy)
    outcomes: list[str] = []
    stop = threading.Event()

    def searches() -> None:
        while not stop.is_set():
            try:
                hits = pg_services.retriever.retrieve("试用期多长时间？", ["hb"], top_k=1)
                outcomes.append("ok" if hits and hits[0].document == "onboarding-入职指南.pdf" else "wrong")
            except StorageUnavailable:
                outcomes.append("unavailable")
            time.sleep(0.02)

    thread = threading.Thread(target=searches)
    thread.start()
    time.sleep(1.0)
    postgres.stop("fast")  # type: ignore[attr-defined]
    time.sleep(1.0)
    postgres.start()  # type: ignore[attr-defined]
    restarted = len(outcomes)
    deadline = time.monotonic() + 30
    while outcomes[-1:] != ["ok"] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert thread.is_alive()  # no error other than the clean one escaped the searches
    stop.set()
    thread.join(10)
    # a request caught by the shutdown fails cleanly; others wait for a connection and succeed
    assert set(outcomes) <= {"ok", "unavailable"} and restarted > 0
    assert outcomes[-5:] == ["ok"] * 5, outcomes[-10:]
    assert pg_services.knowledge_bases.get("hb").document_count == 5


def test_the_api_answers_503_with_retry_after_while_the_database_is_away(
    pg_services: Services, samples_copy: Path, postgres: object
) -> None:
    from fastapi.testclient import TestClient

    from kb_qa.api import create_app

    build(pg_services, samples_copy)
    app = create_app(pg_services.settings, services=pg_services, load_models=False)
    with TestClient(app) as client:
        assert client.get("/knowledge_bases/hb/documents").status_code == 200
        postgres.stop("fast")  # type: ignore[attr-defined]
        try:
            pool = pg_services.knowledge_bases.storage.pool  # type: ignore[attr-defined]
            pool.timeout = 1.0  # no waiting for a server that is away
            for path in ("/knowledge_bases", "/knowledge_bases/hb/documents"):
                response = client.get(path)
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == "5"
                body = response.json()["error"]
                assert body["code"] == "storage_unavailable" and "try again" in body["message"]
            search = client.post("/knowledge_bases/hb/search", json={"query": "试用期多长时间？"})
            assert search.status_code == 503 and search.json()["error"]["code"] == "storage_unavailable"
        finally:
            postgres.start()  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while client.get("/knowledge_bases/hb/documents").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert len(client.get("/knowledge_bases/hb/documents").json()) == 5
