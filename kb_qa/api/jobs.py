"""Background jobs (rebuilding a knowledge base) with progress that clients poll at ``/jobs/{id}``.

With folder storage the jobs live in the process that runs them. With PostgreSQL storage they also
live in the database (:class:`PgJobStore`): any replica shows any job's progress, finished jobs
survive restarts, and a job whose process died is found out and marked failed (each process holds
an advisory lock for as long as it lives; a job whose owner's lock can be taken has no owner left).
"""

from __future__ import annotations

import contextvars
import copy
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from kb_qa.domain import IngestReport
from kb_qa.errors import KbQaError
from vector_store.contract import StoreUnavailable
from vector_store.pg_store import unavailable

log = logging.getLogger(__name__)

KEEP_FINISHED = 100


@dataclass
class Job:
    """One job; it is also the progress sink the knowledge-base service reports to."""

    id: str
    kind: str
    knowledge_base: str
    status: str = "queued"  # queued | running | done | failed
    total: int = 0
    done: int = 0
    current: str = ""
    phase: str = ""  # what the job is doing now, e.g. "indexing 30 files"
    report: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    changed: Callable[[Job], None] | None = field(default=None, repr=False, compare=False)

    def start(self, total: int, description: str) -> None:
        self.total, self.done, self.phase = total, 0, description
        self._changed()

    def advance(self, step: int = 1, info: str = "") -> None:
        self.done += step
        self.current = info
        self._changed()

    def _changed(self) -> None:
        if self.changed is not None:
            self.changed(self)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "changed"}


class JobStore(Protocol):
    """Where jobs are kept beyond this process (see the module's description)."""

    def save(self, job: Job) -> None: ...

    def get(self, job_id: str) -> Job | None: ...

    def recent(self, limit: int) -> list[Job]: ...

    def close(self) -> None: ...


class JobRunner:
    """Runs jobs on one worker thread (writes to a knowledge base are serialised anyway).

    :param store: keeps the jobs beyond this process too (set when the storage is PostgreSQL).
    :param save_every: seconds between progress writes to ``store`` while a job runs.
    """

    def __init__(self, store: JobStore | None = None, save_every: float = 0.5) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbqa-job")
        self.store = store
        self.save_every = save_every
        self._saved_at: dict[str, float] = {}

    def _save(self, job: Job, *, force: bool = False) -> None:
        if self.store is None:
            return
        now = time.monotonic()
        if not force and now - self._saved_at.get(job.id, 0.0) < self.save_every:
            return
        self._saved_at[job.id] = now
        try:
            self.store.save(job)
        except (KbQaError, StoreUnavailable) as exc:  # the database is away for a moment: the job goes on
            log.warning("job %s: progress not saved (%s)", job.id, exc)

    def submit(self, kind: str, knowledge_base: str, work: Callable[[Job], IngestReport]) -> Job:
        job = Job(uuid.uuid4().hex[:16], kind, knowledge_base)
        job.changed = self._save
        self._save(job, force=True)
        with self._lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.finished_at is not None]
            for old in sorted(finished, key=lambda j: j.finished_at or 0)[:-KEEP_FINISHED]:
                del self._jobs[old.id]
        # the job runs as the request that started it (its key is who the audit log names)
        self._pool.submit(contextvars.copy_context().run, self._run, job, work)
        return job

    def _run(self, job: Job, work: Callable[[Job], IngestReport]) -> None:
        job.status = "running"
        self._save(job, force=True)
        try:
            job.report = work(job).to_dict()
            job.status = "done"
        except KbQaError as exc:
            job.error = {"code": exc.code, "message": str(exc)}
            job.status = "failed"
        except Exception as exc:  # noqa: BLE001 - a job must end with a status, whatever happened
            job.error = {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}
            job.status = "failed"
        finally:
            job.finished_at = time.time()
            self._save(job, force=True)
            self._saved_at.pop(job.id, None)

    def get(self, job_id: str) -> Job | None:
        local = self._jobs.get(job_id)
        if local is not None or self.store is None:
            return local
        return self.store.get(job_id)

    def all(self) -> list[Job]:
        jobs = dict(self._jobs)
        if self.store is not None:
            for job in self.store.recent(KEEP_FINISHED):
                jobs.setdefault(job.id, job)
        return sorted(jobs.values(), key=lambda j: j.created_at, reverse=True)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.store is not None:
            self.store.close()


_COLUMNS = ("id", "kind", "knowledge_base", "status", "total", "done", "current", "phase", "report", "error",
            "created_at", "finished_at")  # fmt: skip


class PgJobStore:
    """Jobs in the ``kbqa_jobs`` table (see the module's description).

    :param pool: the storage's connection pool.
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # held for this process's life: while it is, this process's jobs have an owner
        self._life_cm = pool.connection()
        self._life = self._life_cm.__enter__()
        self._life.execute("SELECT pg_advisory_lock(hashtext(%s))", (_owner_key(self.owner),))

    def save(self, job: Job) -> None:
        from psycopg.types.json import Jsonb

        values = [getattr(job, c) for c in _COLUMNS]
        values[8] = Jsonb(job.report) if job.report is not None else None
        values[9] = Jsonb(job.error) if job.error is not None else None
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[3:])
        with unavailable(), self.pool.connection() as conn:
            conn.execute(
                f"INSERT INTO kbqa_jobs ({', '.join(_COLUMNS)}, owner) VALUES ({', '.join(['%s'] * len(_COLUMNS))}, "
                f"%s) ON CONFLICT (id) DO UPDATE SET {updates}",
                (*values, self.owner),
            )

    def _rows(self, where: str, params: tuple[Any, ...]) -> list[Job]:
        with unavailable(), self.pool.connection() as conn:
            rows = conn.execute(f"SELECT {', '.join(_COLUMNS)}, owner FROM kbqa_jobs {where}", params).fetchall()
            jobs = []
            for row in rows:
                job = Job(*row[: len(_COLUMNS)])
                owner = row[-1]
                if job.status in ("queued", "running") and owner != self.owner and _owner_gone(conn, owner):
                    job.status, job.finished_at = "failed", time.time()
                    job.error = {"code": "interrupted", "message": "the process running this job stopped before it "
                                 "ended (a crash or a restart); start it again"}  # fmt: skip
                    self.save(job)
                jobs.append(job)
        return jobs

    def get(self, job_id: str) -> Job | None:
        found = self._rows("WHERE id = %s", (job_id,))
        return found[0] if found else None

    def recent(self, limit: int) -> list[Job]:
        return self._rows("ORDER BY created_at DESC LIMIT %s", (limit,))

    def close(self) -> None:
        with suppress(Exception):  # closing: the lock goes with the connection anyway
            self._life.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_owner_key(self.owner),))
        self._life_cm.__exit__(None, None, None)


def _owner_key(owner: str) -> str:
    return f"kbqa:jobs:{owner}"


def _owner_gone(conn: Any, owner: str) -> bool:
    """Whether the process ``owner`` has died (its life lock is free)."""
    key = _owner_key(owner)
    if conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
        return True
    return False
