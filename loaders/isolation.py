"""Parsers in their own processes: a parser that crashes, hangs or eats memory fails its file alone.

Reading a file means running third-party parsers (pypdf, python-docx, openpyxl, lxml, onnxruntime
for OCR) on bytes anyone may have uploaded. In the server's own process a segfault in a C library
would take the server down, a parser stuck in a loop would hold an ingestion worker forever and a
file built to inflate would take the machine's memory. So with :class:`Isolation` enabled (the
default, ``ingest.isolate_parsers``) every file is read and split in a **parser process**:

- its address space is capped (``RLIMIT_AS`` = ``ingest.parser_memory_mb``): running out is a
  ``MemoryError`` there, and the file fails with ``too_large`` naming the setting;
- each file has ``ingest.parser_timeout_s`` seconds: past that the process is killed and the file
  fails with ``timeout``;
- a process that dies (a signal, an abort in C code) fails its file with ``crashed``;
- in every case the next file gets a fresh process and the caller never stops.

Processes are started with ``spawn`` (a fork of a process running torch's threads is unsafe), on
first use, and kept: one pool per set of limits for the whole process, as many processes as files
read at once (``ingest.workers``). What travels is the function and its arguments out and the
chunks back, pickled; bench/ingest.py measures what that costs.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from loaders.base import LoadError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Isolation:
    """How files are read: in parser processes (``enabled``) with these limits, or in this process."""

    enabled: bool = True
    memory_mb: int = 4096
    timeout_s: float = 600.0


def _serve(connection: Connection, memory_bytes: int) -> None:
    """A parser process: run what arrives, send back ``("ok", result)`` or ``("error", exception)``
    (``("last", exception)`` when it ends after this one)."""
    import resource

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    while True:
        try:
            function, args = connection.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", function(*args))
        except MemoryError:
            limit = memory_bytes // (1024 * 1024)
            # a process that ran out of memory is not trusted with the next file: it ends, and says so
            connection.send(("last", LoadError("too_large", f"reading it needed more than {limit} MB of memory "
                                               "(ingest.parser_memory_mb)")))  # fmt: skip
            return
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            reply = ("error", exc)
        try:
            connection.send(reply)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
            connection.send(("error", LoadError("malformed", f"{type(exc).__name__}: {exc}")))


class ParserProcess:
    """One parser process, started on first use and again after it was killed or died."""

    def __init__(self, isolation: Isolation) -> None:
        self.isolation = isolation
        self._process: Any = None
        self._connection: Connection | None = None

    def _start(self) -> Connection:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve, args=(theirs, self.isolation.memory_mb * 1024 * 1024), name="kbqa-parser", daemon=True
        )
        process.start()
        theirs.close()
        self._process, self._connection = process, ours
        return ours

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in the parser process.

        :raises LoadError: ``timeout``, ``crashed`` or ``too_large`` as the module says; any
            exception the function raised, as it raised it.
        """
        connection = self._connection if self._process is not None and self._process.is_alive() else None
        connection = connection or self._start()
        try:
            connection.send((function, args))
        except OSError:  # it died since it was last used (killed from outside): a fresh one takes the file
            self.stop()
            connection = self._start()
            connection.send((function, args))
        if not connection.poll(self.isolation.timeout_s):
            self.stop()
            raise LoadError("timeout", f"reading it took longer than {self.isolation.timeout_s:g} s "
                            "(ingest.parser_timeout_s)")  # fmt: skip
        try:
            status, value = connection.recv()
        except (EOFError, OSError):
            code = None
            if self._process is not None:
                self._process.join(5)  # reaped, its exit status tells how it died
                code = self._process.exitcode
            self.stop()
            raise LoadError("crashed", f"the parser process died ({_describe(code)})") from None
        if status == "ok":
            return value
        if status == "last":
            self.stop()
        raise value

    def stop(self) -> None:
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if connection is not None:
            connection.close()
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(5)


def _describe(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


class ParserPool:
    """Parser processes shared by every caller with the same limits (see :func:`pool_for`)."""

    def __init__(self, isolation: Isolation, size: int) -> None:
        self.isolation = isolation
        self._idle: queue.Queue[ParserProcess] = queue.Queue()
        self._all: list[ParserProcess] = []
        self._lock = threading.Lock()
        self.grow(size)

    def grow(self, size: int) -> None:
        with self._lock:
            while len(self._all) < size:
                process = ParserProcess(self.isolation)
                self._all.append(process)
                self._idle.put(process)

    def run(self, function: Callable[..., T], *args: Any) -> T:
        process = self._idle.get()
        try:
            return process.run(function, *args)
        finally:
            self._idle.put(process)

    def stop(self) -> None:
        for process in self._all:
            process.stop()


_POOLS: dict[Isolation, ParserPool] = {}
_POOLS_LOCK = threading.Lock()


def pool_for(isolation: Isolation, size: int) -> ParserPool:
    """The process-wide pool for these limits, with at least ``size`` processes."""
    with _POOLS_LOCK:
        pool = _POOLS.get(isolation)
        if pool is None:
            pool = _POOLS[isolation] = ParserPool(isolation, size)
        else:
            pool.grow(size)
        return pool


@atexit.register
def _stop_all() -> None:
    for pool in list(_POOLS.values()):
        pool.stop()
