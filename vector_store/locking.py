"""One writer at a time per knowledge base, across threads and processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from filelock import FileLock, Timeout


class StoreBusy(Exception):
    """Another writer held the lock for longer than the timeout."""


class WriterLock:
    """An exclusive lock on ``path`` (an OS file lock plus a thread lock).

    The file lock keeps other processes out; the thread lock keeps other threads of this process
    out even on platforms where file locks are per process.
    """

    _thread_locks: ClassVar[dict[str, threading.Lock]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path, timeout: float = 600.0) -> None:
        self.path = path
        self.timeout = timeout

    def _thread_lock(self) -> threading.Lock:
        key = str(self.path.resolve())
        with self._registry_lock:
            return self._thread_locks.setdefault(key, threading.Lock())

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block.

        :raises StoreBusy: when it cannot be had within ``timeout`` seconds.
        """
        thread_lock = self._thread_lock()
        if not thread_lock.acquire(timeout=self.timeout if self.timeout >= 0 else -1):
            raise StoreBusy(f"{self.path} is held by another writer")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            file_lock = FileLock(str(self.path), timeout=self.timeout)
            try:
                file_lock.acquire()
            except Timeout as exc:
                raise StoreBusy(f"{self.path} is held by another process") from exc
            try:
                yield
            finally:
                file_lock.release()
        finally:
            thread_lock.release()
