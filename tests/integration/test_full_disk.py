"""A full disk, for real: the knowledge-base root on a small tmpfs that the test fills up. A write
fails with one line and leaves nothing half-written; every read command keeps working; once space is
freed the same write succeeds. Needs root (to mount the tmpfs); skipped elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb_qa.cli import app
from kb_qa.embeddings import SentenceTransformerEmbeddings
from tests.helpers import SAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 60_000) -> Path:
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with filler.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, free - leave)
    return filler


def test_a_full_disk_fails_the_write_cleanly_and_reading_goes_on(
    small_disk: Path, embeddings: SentenceTransformerEmbeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kb_qa.services as services

    monkeypatch.setattr(services, "build_embeddings", lambda settings: embeddings)
    monkeypatch.setenv("KBQA_KB_ROOT", str(small_disk / "kb"))
    cli = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = cli.invoke(app, list(args))
        return result.exit_code, result.output

    assert run("kb", "create", "hb")[0] == 0
    assert run("kb", "add", "hb", str(SAMPLES / "employee-handbook.md"), str(SAMPLES / "员工手册.md"))[0] == 0
    store = small_disk / "kb" / "hb" / "vector_store"
    before = sorted(p.name for p in store.iterdir())
    filler = fill(small_disk)

    code, output = run("kb", "add", "hb", str(SAMPLES / "差旅管理办法.docx"), str(SAMPLES / "benefits-福利.xlsx"))
    assert code == 2 and "No space left on device" in output and "Traceback" not in output
    assert sorted(p.name for p in store.iterdir()) == before  # no half-written generation
    content = small_disk / "kb" / "hb" / "content"
    assert sorted(p.name for p in content.iterdir()) == ["employee-handbook.md", "员工手册.md"]  # copies removed

    # every read command keeps working on the full disk
    code, output = run("kb", "list", "--json")
    assert code == 0 and '"chunk_count": 15' in output
    code, output = run("kb", "files", "hb", "--json")
    assert code == 0 and "员工手册.md" in output and "差旅管理办法.docx" not in output
    code, output = run("kb", "search", "hb", "年假可以顺延吗？", "-k", "1")
    assert code == 0 and "员工手册.md" in output

    filler.unlink()  # space again: the same write succeeds
    code, output = run("kb", "add", "hb", str(SAMPLES / "差旅管理办法.docx"), str(SAMPLES / "benefits-福利.xlsx"))
    assert code == 0, output
    code, output = run("kb", "files", "hb", "--json")
    assert "差旅管理办法.docx" in output and "benefits-福利.xlsx" in output
