"""Files read in parser processes (loaders/isolation.py): a parser that hangs, runs out of memory
or crashes fails its file alone with its reason; the other files of the same import are indexed and
the next import works. The broken parsers are the STAND-INS of tests/standin_parsers.py; the
embedding model, the pipeline and the processes are real."""

from __future__ import annotations

from pathlib import Path

import pytest

import loaders
from kb_qa.services import Services, build_services
from tests.standin_parsers import crashing_parser, greedy_parser, hanging_parser

pytestmark = pytest.mark.integration


@pytest.fixture()
def isolated(services: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    settings = services.settings.model_copy(
        update={"ingest": services.settings.ingest.model_copy(
            update={"isolate_parsers": True, "parser_timeout_s": 5.0, "parser_memory_mb": 1024}
        )}
    )  # fmt: skip
    for suffix, parser in ((".hang", hanging_parser), (".greedy", greedy_parser), (".crash", crashing_parser)):
        monkeypatch.setitem(loaders.LOADERS, suffix, (parser, f"stand-in{suffix}"))
    return build_services(settings, embeddings=services.embeddings)


def test_a_parser_that_hangs_eats_memory_or_crashes_fails_its_file_alone(
    isolated: Services, samples_copy: Path, tmp_path: Path
) -> None:
    kb = isolated.knowledge_bases
    kb.create("hb")
    bad = []
    for suffix in (".hang", ".greedy", ".crash"):
        path = tmp_path / f"crafted{suffix}"
        path.write_bytes(b"crafted")
        bad.append(path)
    report = kb.add_files("hb", [samples_copy / "employee-handbook.md", *bad, samples_copy / "员工手册.md"])
    outcomes = {o.path: o for o in report.outcomes}
    assert outcomes["employee-handbook.md"].action == "added" and outcomes["员工手册.md"].action == "added"
    assert outcomes["crafted.hang"].reason == "timeout" and "parser_timeout_s" in str(outcomes["crafted.hang"].error)
    assert outcomes["crafted.greedy"].reason == "too_large"
    assert "parser_memory_mb" in str(outcomes["crafted.greedy"].error)
    assert outcomes["crafted.crash"].reason == "crashed" and "SIGSEGV" in str(outcomes["crafted.crash"].error)
    listed = {r.path: r for r in kb.files("hb")}
    assert listed["crafted.crash"].status == "failed" and listed["employee-handbook.md"].status == "indexed"
    # the next import gets fresh processes
    again = kb.add_files("hb", [samples_copy / "差旅管理办法.docx", samples_copy / "benefits-福利.xlsx"])
    assert [o.action for o in again.outcomes] == ["added", "added"]
    hits = isolated.retriever.retrieve("年假可以顺延吗？", ["hb"], score_threshold=0.0)
    assert hits[0].document == "员工手册.md"


def test_chunks_read_in_a_parser_process_equal_those_read_in_this_one(
    services: Services, isolated: Services, samples_copy: Path
) -> None:
    services.knowledge_bases.create("here")
    isolated.knowledge_bases.create("there")
    services.knowledge_bases.rebuild("here", samples_copy)
    isolated.knowledge_bases.rebuild("there", samples_copy)
    here, there = services.knowledge_bases.reader("here"), isolated.knowledge_bases.reader("there")
    assert here.documents() == there.documents() and len(here.documents()) == 5
    for doc in here.documents():
        assert [(c.text, c.metadata) for c in here.chunks_of(doc)] == [
            (c.text, c.metadata) for c in there.chunks_of(doc)
        ]


def test_the_command_line_reads_files_in_parser_processes(tmp_path: Path) -> None:
    """``python main.py`` as a user runs it: the parser processes import main.py again, which must not
    run the command a second time (it did, and the import waited on its own lock)."""
    import json
    import os
    import subprocess
    import sys

    from kb_qa.settings import PROJECT_DIR
    from tests.helpers import SAMPLES

    env = {**os.environ, "KBQA_KB_ROOT": str(tmp_path / "kb"), "KBQA_INGEST__PARSER_TIMEOUT_S": "60"}
    for args in (["kb", "create", "hb"], ["kb", "add", "hb", str(SAMPLES / "员工手册.md"), "--json"]):
        done = subprocess.run([sys.executable, str(PROJECT_DIR / "main.py"), *args], env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    assert [f["action"] for f in json.loads(done.stdout)["files"]] == ["added"]
