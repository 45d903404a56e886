"""Background jobs (rebuilding a knowledge base) with progress that clients poll at ``/jobs/{id}``."""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from kb_qa.domain import IngestReport
from kb_qa.errors import KbQaError

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

    def start(self, total: int, description: str) -> None:
        self.total, self.done, self.phase = total, 0, description

    def advance(self, step: int = 1, info: str = "") -> None:
        self.done += step
        self.current = info

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobRunner:
    """Runs jobs on one worker thread (writes to a knowledge base are serialised anyway)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbqa-job")

    def submit(self, kind: str, knowledge_base: str, work: Callable[[Job], IngestReport]) -> Job:
        job = Job(uuid.uuid4().hex[:16], kind, knowledge_base)
        with self._lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.finished_at is not None]
            for old in sorted(finished, key=lambda j: j.finished_at or 0)[:-KEEP_FINISHED]:
                del self._jobs[old.id]
        # the job runs as the request that started it (its key is who the audit log names)
        self._pool.submit(contextvars.copy_context().run, self._run, job, work)
        return job

    @staticmethod
    def _run(job: Job, work: Callable[[Job], IngestReport]) -> None:
        job.status = "running"
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

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
