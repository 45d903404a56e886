"""The whole pipeline with the real default embedding model and a real FAISS index."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kb_qa.domain import SearchHit
from kb_qa.errors import DocumentNotFound, EmbeddingMismatch, InvalidName, KnowledgeBaseNotFound
from kb_qa.services import Services
from vector_store import FaissStore

pytestmark = pytest.mark.integration


def search(services: Services, query: str, **options: object) -> list[SearchHit]:
    """Dense search unless the test asks otherwise (the retriever's own tests cover fusion)."""
    return services.retriever.retrieve(query, ["hb"], **{"method": "dense", **options})


def build(services: Services, folder: Path, name: str = "hb") -> None:
    services.knowledge_bases.create(name, "handbook")
    report = services.knowledge_bases.rebuild(name, folder)
    assert not report.failed, report.failed


def test_chinese_and_english_questions_find_their_passages(services: Services, samples_copy: Path) -> None:
    build(services, samples_copy)
    zh = search(services, "年假没休完可以顺延到明年吗？", top_k=3)
    assert zh[0].document == "员工手册.md"
    assert "顺延5天" in zh[0].text
    assert zh[0].heading.endswith("年假")
    en = search(services, "How often must passwords be changed?", top_k=3)
    assert en[0].document == "employee-handbook.md"
    assert "every 90 days" in en[0].text
    pdf = search(services, "试用期多长时间？", top_k=3)
    assert any(h.document == "onboarding-入职指南.pdf" and h.page == 2 for h in pdf)
    table = search(services, "省会城市出差住宿每晚上限多少钱？", top_k=3)
    assert any("省会城市; 住宿上限（元/晚）: 450" in h.text for h in table)
    # scores are cosine similarities, best first
    assert all(-1.0 <= h.score <= 1.0 for h in zh)
    assert [h.score for h in zh] == sorted((h.score for h in zh), reverse=True)


def test_score_threshold_and_document_filter(services: Services, samples_copy: Path) -> None:
    build(services, samples_copy)
    assert search(services, "年假", top_k=5, score_threshold=0.9999) == []
    only_en = search(services, "年假", top_k=5, documents=["employee-handbook.md"])
    assert only_en and {h.document for h in only_en} == {"employee-handbook.md"}


def test_hits_point_at_exact_offsets_and_ordinals(services: Services, samples_copy: Path) -> None:
    build(services, samples_copy)
    store = services.knowledge_bases.reader("hb")
    chunks = store.chunks_of("employee-handbook.md")
    assert [c.metadata["ordinal"] for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.metadata["end"] - chunk.metadata["start"] == len(chunk.text)


def test_rebuilding_an_unchanged_folder_embeds_nothing(services: Services, samples_copy: Path) -> None:
    build(services, samples_copy)
    before = services.knowledge_bases.reader("hb").generation
    report = services.knowledge_bases.rebuild("hb")
    assert report.embedded_chunks == 0
    assert report.count("unchanged") == 5
    assert services.knowledge_bases.reader("hb").generation == before  # nothing was even saved


def test_changed_file_replaces_its_chunks_and_deleted_file_disappears(services: Services, samples_copy: Path) -> None:
    build(services, samples_copy)
    kb = services.knowledge_bases
    handbook = samples_copy / "employee-handbook.md"
    handbook.write_text(
        handbook.read_text(encoding="utf-8").replace("every 90 days", "every 60 days"), encoding="utf-8"
    )
    (samples_copy / "员工手册.md").unlink()
    report = kb.rebuild("hb")
    assert report.count("updated") == 1
    assert report.count("removed") == 1
    assert report.count("unchanged") == 3
    hits = search(services, "How often must passwords be changed?", top_k=10, method="hybrid")
    texts = " ".join(h.text for h in hits)
    assert "every 60 days" in texts and "every 90 days" not in texts
    assert all(h.document != "员工手册.md" for h in search(services, "年假顺延", top_k=20, method="hybrid"))
    records = {r.path: r for r in kb.files("hb")}
    assert "员工手册.md" not in records
    store = kb.reader("hb")
    assert store.documents() == {r.path: r.chunk_count for r in records.values()}


def test_adding_the_same_content_twice_adds_no_chunks(services: Services, samples_copy: Path) -> None:
    kb = services.knowledge_bases
    kb.create("hb")
    first = kb.add_files("hb", [samples_copy / "employee-handbook.md"])
    assert first.count("added") == 1
    again = kb.add_files("hb", [samples_copy / "employee-handbook.md"])
    assert again.count("unchanged") == 1
    assert again.embedded_chunks == 0
    assert kb.get("hb").chunk_count == first.embedded_chunks
    assert (kb.content_dir("hb") / "employee-handbook.md").is_file()
    kb.remove_files("hb", ["employee-handbook.md"])
    assert search(services, "passwords", top_k=5, method="hybrid") == []
    assert not (kb.content_dir("hb") / "employee-handbook.md").exists()
    with pytest.raises(DocumentNotFound):
        kb.remove_files("hb", ["nope.md"])


def test_a_broken_file_fails_alone_and_loses_nothing(services: Services, samples_copy: Path, tmp_path: Path) -> None:
    build(services, samples_copy)
    kb = services.knowledge_bases
    chunks_before = kb.get("hb").chunk_count
    (samples_copy / "broken.docx").write_bytes(b"PK\x03\x04 not a docx")
    (samples_copy / "notes.xyz").write_text("unsupported", encoding="utf-8")
    # a new version of a good file that is now broken keeps its previous chunks
    pdf = samples_copy / "onboarding-入职指南.pdf"
    pdf.write_bytes(b"%PDF-1.4 truncated")
    report = kb.rebuild("hb")
    failed = {o.path: o.error or "" for o in report.failed}
    assert set(failed) == {"broken.docx", "notes.xyz", "onboarding-入职指南.pdf"}
    assert failed["broken.docx"].startswith("malformed")
    assert failed["notes.xyz"].startswith("unsupported")
    assert "previous version" in failed["onboarding-入职指南.pdf"]
    assert kb.get("hb").chunk_count == chunks_before
    assert any(h.document == "onboarding-入职指南.pdf" for h in search(services, "试用期", top_k=5))
    records = {r.path: r for r in kb.files("hb")}
    assert records["broken.docx"].status == "failed"
    assert records["broken.docx"].error and "malformed" in records["broken.docx"].error


def test_recreate_rebuilds_from_scratch(services: Services, samples_copy: Path) -> None:
    build(services, samples_copy)
    kb = services.knowledge_bases
    count = kb.get("hb").chunk_count
    report = kb.rebuild("hb", recreate=True)
    assert report.count("added") == 5
    assert report.embedded_chunks == count
    assert kb.get("hb").chunk_count == count


def test_another_embedding_model_is_refused(services: Services, samples_copy: Path) -> None:
    build(services, samples_copy)
    kb = services.knowledge_bases
    kb.registry.delete_kb("hb")
    kb.registry.create_kb("hb", "", "all-MiniLM-L6-v2", 384)
    with pytest.raises(EmbeddingMismatch, match="--recreate"):
        search(services, "年假")
    with pytest.raises(EmbeddingMismatch):
        kb.rebuild("hb")


def test_delete_and_bad_names(services: Services, samples_copy: Path) -> None:
    build(services, samples_copy)
    kb = services.knowledge_bases
    kb.delete("hb")
    assert not kb.kb_dir("hb").exists()
    with pytest.raises(KnowledgeBaseNotFound):
        search(services, "x")
    with pytest.raises(InvalidName):
        kb.create("../escape")


def test_a_reader_sees_a_writers_new_generation(services: Services, samples_copy: Path) -> None:
    build(services, samples_copy)
    kb = services.knowledge_bases
    search(services, "年假")  # caches a reader
    other = FaissStore.open(kb.store_dir("hb"), 384)
    other.delete("员工手册.md")
    other.save()  # as another process would
    assert all(h.document != "员工手册.md" for h in search(services, "年假", top_k=10))


def test_a_knowledge_base_deleted_and_re_created_by_another_process_is_never_answered_stale(
    services: Services, samples_copy: Path
) -> None:
    """As the CLI would under a running server: another service on the same root deletes the
    knowledge base and builds it again from other files. Its generations count from 1 again."""
    from kb_qa.services import build_services

    build(services, samples_copy)
    assert any(h.document == "员工手册.md" for h in search(services, "年假", top_k=10))  # caches a reader
    cli = build_services(services.settings, embeddings=services.embeddings)
    cli.knowledge_bases.delete("hb")
    cli.knowledge_bases.create("hb")
    cli.knowledge_bases.add_files("hb", [samples_copy / "employee-handbook.md"])
    found = {h.document for h in search(services, "年假", top_k=10)} | {
        h.document for h in search(services, "How often must passwords be changed?", top_k=10)
    }
    assert found == {"employee-handbook.md"}  # the new knowledge base, nothing of the old one


def test_folder_keys_are_relative_paths(services: Services, tmp_path: Path, samples_copy: Path) -> None:
    nested = tmp_path / "tree" / "hr" / "policies"
    nested.mkdir(parents=True)
    shutil.copy(samples_copy / "员工手册.md", nested / "员工手册.md")
    (tmp_path / "tree" / ".hidden.md").write_text("secret", encoding="utf-8")
    build(services, tmp_path / "tree", name="tree")
    assert [r.path for r in services.knowledge_bases.files("tree")] == ["hr/policies/员工手册.md"]


def test_a_damaged_index_says_how_to_recover(services: Services, samples_copy: Path) -> None:
    from kb_qa.errors import KbQaError

    build(services, samples_copy)
    kb = services.knowledge_bases
    (kb.store_dir("hb") / "CURRENT").write_text("garbage", encoding="ascii")
    with pytest.raises(KbQaError, match="--recreate"):
        search(services, "年假")
    report = kb.rebuild("hb", recreate=True)
    assert report.count("added") == 5
    assert search(services, "年假", top_k=1)


@pytest.mark.parametrize("recreated", [False, True], ids=["deleted", "re-created"])
def test_a_write_waiting_on_a_deleted_knowledge_base_writes_nothing(
    services: Services, samples_copy: Path, recreated: bool
) -> None:
    import threading
    import time

    from kb_qa.errors import Conflict
    from vector_store import WriterLock

    kb = services.knowledge_bases
    kb.create("hb")
    outcome: list[BaseException | None] = []

    def upload() -> None:
        try:
            kb.add_files("hb", [samples_copy / "employee-handbook.md"])
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    with WriterLock(kb.kb_dir("hb") / ".write.lock", timeout=30).hold():  # a delete in progress holds it
        waiting = threading.Thread(target=upload)
        waiting.start()
        time.sleep(0.5)  # the upload has looked the knowledge base up and waits for the lock
        kb.registry.delete_kb("hb")
        shutil.rmtree(kb.kb_dir("hb") / "content", ignore_errors=True)
        if recreated:
            kb.create("hb")
    waiting.join(30)
    expected = Conflict if recreated else KnowledgeBaseNotFound
    assert isinstance(outcome[0], expected), outcome
    assert "while this request waited" in str(outcome[0])
    if recreated:  # the new knowledge base starts empty
        assert kb.files("hb") == [] and not any(kb.content_dir("hb").iterdir())
    else:
        with pytest.raises(KnowledgeBaseNotFound):
            kb.files("hb")
        assert not (kb.content_dir("hb")).exists()


def test_any_file_name_is_stored_safely_and_an_unreadable_file_fails_alone(
    services: Services, samples_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name with a newline once damaged the keyword index; an unreadable file stopped the command."""
    import kb_qa.ingest

    folder = samples_copy
    odd = folder / "line\nbreak 年假.md"
    odd.write_text("# 年假\n年假可以顺延到次年三月底。\n", encoding="utf-8")
    locked = folder / "locked.md"
    locked.write_text("secret", encoding="utf-8")
    real_hash = kb_qa.ingest.file_sha256

    def no_permission(path: Path) -> str:  # the tests run as root, whom chmod 000 does not stop
        if path.name == "locked.md":
            raise PermissionError(13, "Permission denied")
        return real_hash(path)

    monkeypatch.setattr(kb_qa.ingest, "file_sha256", no_permission)
    services.knowledge_bases.create("hb")
    report = services.knowledge_bases.rebuild("hb", folder)
    failed = {o.path: o for o in report.failed}
    assert set(failed) == {"locked.md"} and failed["locked.md"].reason == "unreadable"
    assert "Permission denied" in (failed["locked.md"].error or "")
    # a fresh process loads the keyword index and finds the document by its odd name
    from kb_qa.services import build_services

    fresh = build_services(services.settings, embeddings=services.embeddings)
    hits = fresh.retriever.retrieve("年假可以顺延到次年三月底", ["hb"], method="bm25", top_k=3)
    assert hits[0].document == "line\nbreak 年假.md"
    assert {r.path for r in fresh.knowledge_bases.files("hb")} >= {"line\nbreak 年假.md", "locked.md"}
