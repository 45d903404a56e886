"""Ingest real corpora from ../shared/data: every file ingests or fails alone with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb_qa.services import Services
from loaders import LoadError, load_file

pytestmark = [pytest.mark.integration, pytest.mark.shared_data, pytest.mark.slow]

ALLOWED_REASONS = (
    "encrypted", "malformed", "empty", "unsupported", "no_text_layer", "missing_parser", "suspicious", "unreadable",
)  # fmt: skip


def example_files(corpus: Path) -> tuple[Path, list[Path]]:
    folder = corpus / "unstructured-example-docs" / "example-docs"
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.parts))
    return folder, files


def test_every_example_doc_is_read_or_refused_with_its_reason(
    services: Services, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All 216 files through the loaders and the splitter, as ingestion runs them: each yields
    chunks or a LoadError with a reason a user can act on; nothing else escapes.

    OCR is switched off for this pass (it took ~90 % of the time: a few scanned pages and photos at
    tens of seconds each): those files go through their parsers and end as ``no_text_layer``. OCR
    itself runs in the sample below (through the service, embedding included) and in the loader
    unit tests."""
    import loaders.ocr
    import loaders.pdf

    monkeypatch.setattr(loaders.ocr, "ocr_available", lambda: False)
    monkeypatch.setattr(loaders.pdf, "ocr_available", lambda: False)
    _, files = example_files(corpus)
    splitter = services.knowledge_bases.splitter
    reasons: dict[str, str] = {}
    for path in files:
        try:
            chunks = splitter.split_documents(load_file(path))
        except LoadError as exc:
            reasons[path.name] = exc.reason
            continue
        if not chunks:
            reasons[path.name] = "empty"
    assert set(reasons.values()) <= set(ALLOWED_REASONS), reasons
    assert reasons["password_protected.xlsx"] == "encrypted"
    assert reasons["password.pdf"] == "encrypted"
    assert reasons["empty.txt"] == "empty"
    assert len(files) - len(reasons) >= 0.75 * len(files)


def test_a_sample_of_them_ingests_or_fails_alone_and_loses_nothing(
    services: Services, corpus: Path, samples_copy: Path
) -> None:
    """Through the knowledge-base service, embedding included: a sample of one file in eight
    plus the known failures, added to a knowledge base that already holds a document."""
    folder, files = example_files(corpus)
    known_failures = {"password_protected.xlsx", "password.pdf", "empty.txt"}
    ocr = {"jpn-vert.jpeg"}  # a photo of text: OCR through the service
    sample = sorted({*files[::8], *(p for p in files if p.name in known_failures | ocr)})
    kb = services.knowledge_bases
    kb.create("examples")
    kb.add_files("examples", [samples_copy / "employee-handbook.md"])
    kept = kb.get("examples").chunk_count
    report = kb.add_files("examples", sample)
    assert len(report.outcomes) == len(sample)
    for outcome in report.failed:
        assert outcome.error and outcome.error.startswith(ALLOWED_REASONS), outcome
    records = {r.path: r for r in kb.files("examples")}
    assert len(records) == len(sample) + 1
    failed = {k: r for k, r in records.items() if r.status == "failed"}
    assert {o.path for o in report.failed} == set(failed)
    assert all(r.error for r in failed.values())
    reasons = {k.rsplit("/", 1)[-1]: (r.error or "").split(":")[0] for k, r in failed.items()}
    assert {reasons[name] for name in known_failures} == {"encrypted", "empty"}
    assert len(records) - len(failed) >= 0.8 * len(sample)
    # what was there before is still there and still found
    assert kb.get("examples").chunk_count > kept
    hits = services.retriever.retrieve(
        "How often must passwords be changed?", ["examples"], top_k=1, documents=["employee-handbook.md"]
    )
    assert "every 90 days" in hits[0].text
    assert folder.is_dir()


def test_chinese_laws_answer_chinese_questions(services: Services, corpus: Path) -> None:
    kb = services.knowledge_bases
    kb.create("laws")
    report = kb.rebuild("laws", corpus / "zh-laws")
    assert not report.failed
    hits = services.retriever.retrieve("劳动合同试用期最长不得超过多久？", ["laws"], top_k=5)
    assert any("试用期" in h.text for h in hits)
    assert any("劳动合同法" in h.document for h in hits)
