"""A write killed at the instant its index generation becomes live, before the registry commits:
the next open brings the registry in line from the generation, without a rebuild.

Each round runs one real write (the CLI's service: real loaders, the real embedding model, FAISS,
SQLite) in a child process that SIGKILLs itself the moment ``CURRENT`` names the new generation and
the registry is about to take it — the worst instant, hit every time instead of by luck. Then this
process opens the knowledge base as the server and the CLI do and checks that the listing and the
index agree, that the write's effect is what both show, and that the next write works.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kb_qa.services import Services
from kb_qa.settings import PROJECT_DIR

pytestmark = pytest.mark.integration

# the child: one operation through KnowledgeBaseService, killed inside its commit after the store's
# save (CURRENT switched) and before the registry's transaction
CHILD = """
import os, signal, sys
from pathlib import Path
from kb_qa.registry import Registry
from kb_qa.services import build_services
from kb_qa.settings import load_settings

root, operation, argument = sys.argv[1], sys.argv[2], sys.argv[3]
real_apply = Registry.apply

def apply_then_die(self, upserts, deletes=(), generation=None):
    if generation is not None:
        current = (Path(root) / "hb" / "vector_store" / "CURRENT").read_text().strip()
        assert int(current) == generation[1], (current, generation)  # the new generation is live
        os.kill(os.getpid(), signal.SIGKILL)
    return real_apply(self, upserts, deletes, generation)

Registry.apply = apply_then_die
kb = build_services(load_settings(environ={}, overrides={"paths": {"kb_root": root}})).knowledge_bases
if operation == "add":
    kb.add_files("hb", [Path(argument)])
elif operation == "remove":
    kb.remove_files("hb", [argument])
elif operation == "rebuild":
    kb.rebuild("hb", Path(argument))
elif operation == "recreate":
    kb.rebuild("hb", recreate=True)
"""


def killed(root: Path, operation: str, argument: str = "") -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), operation, argument],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]


def agreement(services: Services) -> dict[str, int]:
    """The knowledge base as a fresh process sees it: listing and index agree; indexed documents."""
    from kb_qa.services import build_services

    fresh = build_services(services.settings, embeddings=services.embeddings).knowledge_bases
    listed = {r.path: r for r in fresh.files("hb")}
    store = fresh.reader("hb").documents()
    indexed = {path: r.chunk_count for path, r in listed.items() if r.status == "indexed"}
    assert indexed == store  # every listed document is searchable, and nothing unlisted is
    assert fresh.get("hb").chunk_count == sum(r.chunk_count for r in listed.values())
    return indexed


def test_a_write_killed_as_its_generation_goes_live_leaves_listing_and_index_agreeing(
    services: Services, samples_copy: Path, tmp_path: Path
) -> None:
    root = services.settings.kb_root
    folder = tmp_path / "folder"
    shutil.copytree(samples_copy, folder)
    services.knowledge_bases.create("hb")
    services.knowledge_bases.rebuild("hb", folder)
    before = agreement(services)
    assert len(before) == 5

    extra = tmp_path / "policy-extra.md"
    extra.write_text("# Parking\n\nEmployees park in garage B; visitors register at reception.\n", encoding="utf-8")
    killed(root, "add", str(extra))  # a new document
    assert set(agreement(services)) == set(before) | {"policy-extra.md"}
    hits = services.retriever.retrieve("Where do employees park?", ["hb"], method="bm25", score_threshold=0.0)
    assert hits[0].document == "policy-extra.md"

    killed(root, "remove", "policy-extra.md")  # a removal
    assert set(agreement(services)) == set(before)

    (folder / "employee-handbook.md").write_text("# Handbook\n\nThe office opens at 8:30.\n", encoding="utf-8")
    (folder / "员工手册.md").unlink()
    killed(root, "rebuild", str(folder))  # a changed file and a deleted one in one run
    after = agreement(services)
    assert set(after) == set(before) - {"员工手册.md"} and after["employee-handbook.md"] == 1

    killed(root, "recreate")  # everything re-embedded from scratch
    assert agreement(services) == after

    # and the next write, in this process, completes and agrees
    report = services.knowledge_bases.add_files("hb", [extra])
    assert [o.action for o in report.outcomes] == ["added"]
    assert set(agreement(services)) == set(after) | {"policy-extra.md"}


def test_a_deletion_killed_part_way_leaves_nothing_to_a_new_knowledge_base_of_that_name(
    services: Services, samples_copy: Path
) -> None:
    kb = services.knowledge_bases
    kb.create("hb")
    kb.add_files("hb", [samples_copy])
    kb.registry.delete_kb("hb")  # the deletion's first step; killed before the folders went
    assert kb.store_dir("hb").is_dir() and any(kb.content_dir("hb").iterdir())
    kb.create("hb")
    assert kb.files("hb") == [] and kb.reader("hb").documents() == {}
    assert not kb.rebuild("hb").outcomes  # the old copies of files are gone too


def test_a_reader_leaves_a_live_writers_commit_to_the_writer(services: Services, samples_copy: Path) -> None:
    """Between a live writer's save and its registry commit, readers do not "repair" anything (the
    writer is about to); once no writer holds the lock, a registry left behind is caught up."""
    from vector_store import FaissStore, WriterLock

    kb = services.knowledge_bases
    kb.create("hb")
    kb.add_files("hb", [samples_copy / "employee-handbook.md"])
    created = kb.get("hb").created_at
    with WriterLock(kb.kb_dir("hb") / ".write.lock", timeout=5).hold():  # a writer in its commit
        store = FaissStore.open(kb.store_dir("hb"), 384)
        store.delete("employee-handbook.md")
        store.save(commit={"created_at": created, "documents": []})  # live; the registry not yet told
        assert [r.path for r in kb.files("hb")] == ["employee-handbook.md"]  # left to the writer
        assert kb.get("hb").generation == store.generation - 1
    assert kb.files("hb") == [] and kb.get("hb").generation == store.generation  # the writer died: caught up
