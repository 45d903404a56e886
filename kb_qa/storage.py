"""Where knowledge bases keep their indexes: a folder per knowledge base, or one PostgreSQL database.

The knowledge-base service (:mod:`kb_qa.knowledge_base`) writes and reads through a
:class:`Storage`: it opens stores (:class:`vector_store.contract.ChunkStore`), takes a knowledge
base's writer lock, and reads the live generation and the record committed with it. Both kinds keep
the same commit protocol: the store's generation carries the registry rows that belong to it, the
registry takes them after, and whoever sees the registry behind brings it forward.

- :class:`FolderStorage` (``storage.backend: folder``, the default): ``<root>/<kb>/vector_store``
  (FAISS + BM25 generations), a file lock per knowledge base, the SQLite registry.
- :class:`PostgresStorage` (``storage.backend: postgres``): :class:`vector_store.pg_store.PostgresStore`
  in one database with the registry (:class:`kb_qa.registry.PgRegistry`), an advisory lock per
  knowledge base, so any number of API processes on any machines can share it. Copies of uploaded
  files stay under the knowledge-base root, which replicas must share (a network file system or a
  volume mounted on each; see README "Scaling out").
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from kb_qa.domain import KnowledgeBaseInfo
from kb_qa.errors import StorageUnavailable
from vector_store import FaissStore, IndexOptions, StoreError, WriterLock
from vector_store.contract import ChunkStore, StoreUnavailable
from vector_store.faiss_store import current_generation, read_commit
from vector_store.pg_store import DEFAULT_KEYWORD_BUDGET


@contextmanager
def available() -> Iterator[None]:
    """A store's server away for now (:class:`~vector_store.contract.StoreUnavailable`) as kb-qa's
    :class:`~kb_qa.errors.StorageUnavailable`: 503 with Retry-After in the API, one line in the CLI,
    an error event in a stream, a tool error over MCP."""
    try:
        yield
    except StoreUnavailable as exc:
        raise StorageUnavailable(f"{exc}; try again shortly") from exc


class Storage(Protocol):
    kind: str

    def lock(self, name: str, timeout: float) -> AbstractContextManager[None]:
        """The knowledge base's writer lock; :class:`vector_store.StoreBusy` after ``timeout`` seconds."""
        ...

    def open(self, info: KnowledgeBaseInfo) -> ChunkStore:
        """The live store of ``info`` (:class:`vector_store.StoreError` when it cannot be read)."""
        ...

    def empty(self, info: KnowledgeBaseInfo) -> ChunkStore:
        """A store with nothing in it, that replaces whatever is stored for ``info`` when saved."""
        ...

    def drop(self, name: str) -> None:
        """Remove the index of ``name`` (not its registry rows)."""
        ...

    def generation(self, name: str) -> int:
        """The live generation of ``name``'s index (0: none)."""
        ...

    def identity(self, name: str) -> tuple[object, ...]:
        """Equal only while no writer has switched ``name``'s generation (a reader's cache key)."""
        ...

    def read_commit(self, name: str, generation: int) -> Any:
        """The record saved with ``generation`` (``None``: none, or no longer the live one)."""
        ...

    def scratch(self, dim: int) -> AbstractContextManager[ChunkStore]:
        """A temporary store of this kind, removed afterwards (the evaluation's passage store)."""
        ...


class FolderStorage:
    """FAISS + BM25 generations in ``<root>/<kb>/vector_store`` (see the module's description)."""

    kind = "folder"

    def __init__(self, root: Path, options: IndexOptions | None = None) -> None:
        self.root = root
        self.options = options or IndexOptions()

    def store_dir(self, name: str) -> Path:
        return self.root / name / "vector_store"

    def lock(self, name: str, timeout: float) -> AbstractContextManager[None]:
        return WriterLock(self.root / name / ".write.lock", timeout=timeout).hold()

    def open(self, info: KnowledgeBaseInfo) -> FaissStore:
        return FaissStore.open(self.store_dir(info.name), info.dimension, self.options)

    def empty(self, info: KnowledgeBaseInfo) -> FaissStore:
        return FaissStore(self.store_dir(info.name), info.dimension, self.options)

    def drop(self, name: str) -> None:
        shutil.rmtree(self.store_dir(name), ignore_errors=True)

    def generation(self, name: str) -> int:
        try:
            return current_generation(self.store_dir(name))
        except StoreError:  # damaged: opening the store says what is wrong
            return 0

    def identity(self, name: str) -> tuple[object, ...]:
        """(generation, inode, modification time in ns) of the CURRENT pointer: a knowledge base deleted
        and re-created counts its generations from 1 again, and the pointer's identity tells."""
        directory = self.store_dir(name)
        try:
            stat = (directory / "CURRENT").stat()
        except FileNotFoundError:
            return (0, 0, 0)
        return (self.generation(name), stat.st_ino, stat.st_mtime_ns)

    def read_commit(self, name: str, generation: int) -> Any:
        return read_commit(self.store_dir(name), generation)

    @contextmanager
    def scratch(self, dim: int) -> Iterator[ChunkStore]:
        with tempfile.TemporaryDirectory() as tmp:
            yield FaissStore(Path(tmp), dim, self.options)


class PostgresStorage:
    """Stores, registry and writer locks in one PostgreSQL database (see the module's description).

    :param pool: a pool from :func:`vector_store.pg_store.connect_pool`.
    :param exact: exact dense search instead of HNSW.
    :param ef_search: HNSW candidates per search.
    :param keyword_budget: postings a keyword search reads whole, rarest term first (0: all).
    """

    kind = "postgres"

    def __init__(
        self, pool: Any, *, exact: bool = False, ef_search: int = 100, keyword_budget: int = DEFAULT_KEYWORD_BUDGET
    ) -> None:
        self.pool = pool
        self.exact = exact
        self.ef_search = ef_search
        self.keyword_budget = keyword_budget

    def _store(self, name: str, dim: int) -> ChunkStore:
        from vector_store.pg_store import PostgresStore

        return PostgresStore(
            self.pool, name, dim, exact=self.exact, ef_search=self.ef_search, keyword_budget=self.keyword_budget
        )

    def lock(self, name: str, timeout: float) -> AbstractContextManager[None]:
        from vector_store.pg_store import PgWriterLock

        return PgWriterLock(self.pool, name, timeout).hold()

    def open(self, info: KnowledgeBaseInfo) -> ChunkStore:
        return self._store(info.name, info.dimension)

    def empty(self, info: KnowledgeBaseInfo) -> ChunkStore:
        self.drop(info.name)  # only called under the writer lock, for a leftover of a deleted knowledge base
        return self.open(info)

    def drop(self, name: str) -> None:
        from vector_store.pg_store import PostgresStore

        with available():
            PostgresStore.drop(self.pool, name)

    def _current(self, name: str) -> tuple[int, int, Any]:
        from vector_store.pg_store import unavailable

        with available(), unavailable(), self.pool.connection() as conn:
            row = conn.execute("SELECT id, generation, commit FROM kbqa_stores WHERE name = %s", (name,)).fetchone()
        return (int(row[0]), int(row[1]), row[2]) if row else (0, 0, None)

    def generation(self, name: str) -> int:
        return self._current(name)[1]

    def identity(self, name: str) -> tuple[object, ...]:
        store_id, generation, _ = self._current(name)
        return (store_id, generation)

    def read_commit(self, name: str, generation: int) -> Any:
        _, live, commit = self._current(name)
        return commit if live == generation else None

    @contextmanager
    def scratch(self, dim: int) -> Iterator[ChunkStore]:
        from vector_store.pg_store import PostgresStore

        name = f".scratch-{uuid.uuid4().hex}"  # no knowledge base can have a name starting with "."
        store = self._store(name, dim)
        try:
            yield store
        finally:
            store.discard()
            PostgresStore.drop(self.pool, name)
