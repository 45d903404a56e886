"""Ingest real corpora from ../shared/data: every file ingests or fails alone with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb_qa.services import Services

pytestmark = [pytest.mark.integration, pytest.mark.shared_data, pytest.mark.slow]

ALLOWED_REASONS = ("encrypted", "malformed", "empty", "unsupported", "no_text_layer", "missing_parser")


def test_every_example_doc_ingests_or_fails_alone(services: Services, corpus: Path, samples_copy: Path) -> None:
    kb = services.knowledge_bases
    kb.create("examples")
    kb.add_files("examples", [samples_copy / "employee-handbook.md"])
    kept = kb.get("examples").chunk_count
    folder = corpus / "unstructured-example-docs" / "example-docs"
    report = kb.add_files("examples", [folder])
    files = [p for p in folder.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.parts)]
    assert len(report.outcomes) == len(files)
    for outcome in report.failed:
        assert outcome.error and outcome.error.startswith(ALLOWED_REASONS), outcome
    records = {r.path: r for r in kb.files("examples")}
    assert len(records) == len(files) + 1
    failed = {k: r for k, r in records.items() if r.status == "failed"}
    assert {o.path for o in report.failed} == set(failed)
    assert all(r.error for r in failed.values())
    # the clear cases carry the reason a user needs
    reasons = {k.rsplit("/", 1)[-1]: (r.error or "").split(":")[0] for k, r in failed.items()}
    assert reasons["password_protected.xlsx"] == "encrypted"
    assert reasons["password.pdf"] == "encrypted"
    assert reasons["empty.txt"] == "empty"
    indexed = len(records) - len(failed)
    assert indexed >= 0.85 * len(files)
    # what was there before is still there and still found
    assert kb.get("examples").chunk_count > kept
    hits = services.retriever.retrieve(
        "How often must passwords be changed?", ["examples"], top_k=1, documents=["employee-handbook.md"]
    )
    assert "every 90 days" in hits[0].text


def test_chinese_laws_answer_chinese_questions(services: Services, corpus: Path) -> None:
    kb = services.knowledge_bases
    kb.create("laws")
    report = kb.rebuild("laws", corpus / "zh-laws")
    assert not report.failed
    hits = services.retriever.retrieve("劳动合同试用期最长不得超过多久？", ["laws"], top_k=5)
    assert any("试用期" in h.text for h in hits)
    assert any("劳动合同法" in h.document for h in hits)
