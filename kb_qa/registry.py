"""The SQLite registry of knowledge bases and their documents.

One database file under the knowledge-base root. Each call opens its own connection (SQLite
connections are not shared between threads); WAL mode lets readers work while one writes.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import astuple
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kb_qa.domain import DocumentRecord, KnowledgeBaseInfo
from kb_qa.errors import InvalidName, KnowledgeBaseExists, KnowledgeBaseNotFound, StorageError, StorageUnavailable

MAX_NAME_LENGTH = 64
NAME_PATTERN = r"^[\w\u4e00-\u9fff][\w\u4e00-\u9fff.\-]*$"  # also the API schema's (a JSON Schema pattern)
_NAME = re.compile(NAME_PATTERN[1:-1])  # fullmatch: "$" would let a trailing newline in

_SCHEMA = """
CREATE TABLE IF NOT EXISTS knowledge_bases (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    embedding_model TEXT NOT NULL,
    dimension INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    source_dir TEXT,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS documents (
    kb TEXT NOT NULL REFERENCES knowledge_bases(name) ON DELETE CASCADE,
    path TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    loader TEXT NOT NULL,
    chunk_count INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kb, path)
);
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid knowledge-base name.

    :raises InvalidName: naming the rule it breaks.
    """
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"knowledge-base name must be 1 to {MAX_NAME_LENGTH} characters")
    if not _NAME.fullmatch(name):  # no separators; "." and ".." cannot start a name
        raise InvalidName(
            f"invalid knowledge-base name {name!r}: use letters, digits, Chinese characters, '_', '-' and '.', "
            "starting with a letter or digit"
        )
    return name


def disk_full(folder: Path) -> bool:
    """Whether the file system holding ``folder`` has (next to) no space left."""
    try:
        return shutil.disk_usage(folder).free < 1024 * 1024
    except OSError:
        return False


def _registry_problem(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "full" in text or disk_full(path.parent):
        return (
            f"the disk holding {path.parent} is full ({text}); free some space and run it again "
            "(what is stored is intact, and reading still works)"
        )
    if "readonly" in text or "read-only" in text:
        return f"the registry {path} is read-only ({text}); run as a user who may write the knowledge-base root"
    if "not a database" in text or "malformed" in text:
        return (
            f"the registry {path} is damaged ({text}); move it away, then `kb-qa kb create NAME` and "
            "`kb-qa kb rebuild NAME --dir FOLDER` rebuild each knowledge base from its files"
        )
    return f"the registry {path} cannot be used ({text})"


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a registry written by an earlier version up to this schema."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(knowledge_bases)")}
    if "generation" not in columns:
        db.execute("ALTER TABLE knowledge_bases ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")


class Registry:
    """Knowledge bases and documents in ``path`` (an SQLite file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False

    @contextmanager
    def _connect(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction. ``write=False`` (reads): when the disk is full SQLite
        cannot even set up a reader of a WAL database, so a read falls back to opening the file as
        immutable — on a full disk nobody can be writing it."""
        if not write and self.path.exists() and disk_full(self.path.parent):
            try:
                connection = sqlite3.connect(f"file:{self.path}?immutable=1", uri=True)
            except sqlite3.Error as exc:
                raise StorageError(_registry_problem(self.path, exc)) from exc
            connection.row_factory = sqlite3.Row
            try:
                yield connection
            except sqlite3.DatabaseError as exc:
                raise StorageError(_registry_problem(self.path, exc)) from exc
            finally:
                connection.close()
            return
        root = self.path.parent
        if not self._ready:
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"the knowledge-base root {root} is not a usable folder ({exc.strerror or exc}); "
                    "point --root (or paths.kb_root, KBQA_KB_ROOT) at a folder"
                ) from exc
        try:
            connection = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the registry {self.path} ({exc}); check the folder's permissions") from exc
        connection.row_factory = sqlite3.Row
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            if not self._ready:
                tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables < {"knowledge_bases", "documents"}:  # writes only where something is missing
                    connection.execute("PRAGMA journal_mode = WAL")
                    connection.executescript(_SCHEMA)
                _migrate(connection)
                self._ready = True
            with connection:  # one transaction, committed on success
                yield connection
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.IntegrityError):
                raise  # a constraint: the caller says what it means
            raise StorageError(_registry_problem(self.path, exc)) from exc
        finally:
            connection.close()

    # ------------------------------------------------------- knowledge bases
    def create_kb(self, name: str, description: str, embedding_model: str, dimension: int) -> KnowledgeBaseInfo:
        validate_name(name)
        # to the microsecond: it is also the knowledge base's identity (a writer that waited on one
        # that was deleted and re-created under the same name must tell them apart)
        created = datetime.now(UTC).isoformat(timespec="microseconds")
        info = KnowledgeBaseInfo(name, description, embedding_model, dimension, created)
        with self._connect() as db:
            try:
                db.execute(
                    "INSERT INTO knowledge_bases (name, description, embedding_model, dimension, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name, description, embedding_model, dimension, info.created_at),
                )
            except sqlite3.IntegrityError as exc:
                raise KnowledgeBaseExists(f"knowledge base '{name}' already exists") from exc
        return info

    def get_kb(self, name: str) -> KnowledgeBaseInfo:
        validate_name(name)
        with self._connect(write=False) as db:
            row = db.execute(
                "SELECT k.*, COUNT(d.path) AS document_count, COALESCE(SUM(d.chunk_count), 0) AS chunk_count "
                "FROM knowledge_bases k LEFT JOIN documents d ON d.kb = k.name WHERE k.name = ? GROUP BY k.name",
                (name,),
            ).fetchone()
        if row is None:
            raise KnowledgeBaseNotFound(f"knowledge base '{name}' does not exist (see `kb-qa kb list`)")
        return KnowledgeBaseInfo(**dict(row))

    def list_kbs(self) -> list[KnowledgeBaseInfo]:
        with self._connect(write=False) as db:
            rows = db.execute(
                "SELECT k.*, COUNT(d.path) AS document_count, COALESCE(SUM(d.chunk_count), 0) AS chunk_count "
                "FROM knowledge_bases k LEFT JOIN documents d ON d.kb = k.name GROUP BY k.name ORDER BY k.name"
            ).fetchall()
        return [KnowledgeBaseInfo(**dict(r)) for r in rows]

    def delete_kb(self, name: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM knowledge_bases WHERE name = ?", (name,))

    def set_source_dir(self, name: str, source_dir: str | None) -> None:
        with self._connect() as db:
            db.execute("UPDATE knowledge_bases SET source_dir = ? WHERE name = ?", (source_dir, name))

    # ------------------------------------------------------------- documents
    def documents(self, kb: str) -> list[DocumentRecord]:
        with self._connect(write=False) as db:
            rows = db.execute("SELECT * FROM documents WHERE kb = ? ORDER BY path", (kb,)).fetchall()
        return [DocumentRecord(**dict(r)) for r in rows]

    def apply(
        self,
        upserts: Iterable[DocumentRecord],
        deletes: Iterable[tuple[str, str]] = (),
        generation: tuple[str, int] | None = None,
    ) -> None:
        """Write document rows and remove ``(kb, path)`` rows in one transaction.

        :param generation: ``(kb, n)``: the rows now describe index generation ``n`` of ``kb``.
        """
        with self._connect() as db:
            db.executemany("DELETE FROM documents WHERE kb = ? AND path = ?", list(deletes))
            _insert(db, upserts)
            if generation is not None:
                db.execute("UPDATE knowledge_bases SET generation = ? WHERE name = ?", (generation[1], generation[0]))

    def reconcile(self, kb: str, created_at: str, generation: int, rows: Iterable[DocumentRecord]) -> bool:
        """Make ``kb``'s document rows exactly ``rows``, as index generation ``generation`` recorded
        them, unless the registry already describes that generation or a later one (or the knowledge
        base was deleted or re-created meanwhile). One transaction; whether anything changed."""
        with self._connect() as db:
            found = db.execute(
                "SELECT generation FROM knowledge_bases WHERE name = ? AND created_at = ?", (kb, created_at)
            ).fetchone()
            if found is None or found[0] >= generation:
                return False
            db.execute("DELETE FROM documents WHERE kb = ?", (kb,))
            _insert(db, rows)
            db.execute("UPDATE knowledge_bases SET generation = ? WHERE name = ?", (generation, kb))
            return True

    def clear_documents(self, kb: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM documents WHERE kb = ?", (kb,))
            db.execute("UPDATE knowledge_bases SET generation = 0 WHERE name = ?", (kb,))


def _insert(db: sqlite3.Connection, rows: Iterable[DocumentRecord]) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO documents (kb, path, source, sha256, size, mtime, loader, chunk_count, "
        "status, error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [_values(r) for r in rows],
    )


def _values(r: DocumentRecord) -> tuple[Any, ...]:
    """A document row's values in the column order both registries insert them."""
    return astuple(r)


_PG_COUNTS = (
    "SELECT k.name, k.description, k.embedding_model, k.dimension, k.created_at, k.source_dir, k.generation, "
    "count(d.path) AS document_count, coalesce(sum(d.chunk_count), 0) AS chunk_count "
    "FROM kbqa_knowledge_bases k LEFT JOIN kbqa_documents d ON d.kb = k.name"
)
_PG_INSERT = (
    "INSERT INTO kbqa_documents (kb, path, source, sha256, size, mtime, loader, chunk_count, status, error, "
    "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (kb, path) DO UPDATE SET "
    "source = excluded.source, sha256 = excluded.sha256, size = excluded.size, mtime = excluded.mtime, "
    "loader = excluded.loader, chunk_count = excluded.chunk_count, status = excluded.status, "
    "error = excluded.error, updated_at = excluded.updated_at"
)


class PgRegistry:
    """The registry in PostgreSQL (``storage.backend: postgres``): the same rows and methods as
    :class:`Registry`, in the tables ``kbqa_knowledge_bases`` and ``kbqa_documents`` of the database
    that holds the stores (:mod:`vector_store.pg_store` migrates them).

    :param pool: a pool from :func:`vector_store.pg_store.connect_pool`.
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        import psycopg

        try:
            with self.pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"the registry's database cannot be reached ({exc}); try again shortly") from exc

    def create_kb(self, name: str, description: str, embedding_model: str, dimension: int) -> KnowledgeBaseInfo:
        import psycopg

        validate_name(name)
        created = datetime.now(UTC).isoformat(timespec="microseconds")
        info = KnowledgeBaseInfo(name, description, embedding_model, dimension, created)
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO kbqa_knowledge_bases (name, description, embedding_model, dimension, created_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (name, description, embedding_model, dimension, created),
                )
        except psycopg.errors.UniqueViolation as exc:
            raise KnowledgeBaseExists(f"knowledge base '{name}' already exists") from exc
        return info

    def get_kb(self, name: str) -> KnowledgeBaseInfo:
        validate_name(name)
        with self._tx() as db:
            row = db.execute(f"{_PG_COUNTS} WHERE k.name = %s GROUP BY k.name", (name,)).fetchone()
        if row is None:
            raise KnowledgeBaseNotFound(f"knowledge base '{name}' does not exist (see `kb-qa kb list`)")
        return _pg_info(row)

    def list_kbs(self) -> list[KnowledgeBaseInfo]:
        with self._tx() as db:
            rows = db.execute(f"{_PG_COUNTS} GROUP BY k.name ORDER BY k.name").fetchall()
        return [_pg_info(r) for r in rows]

    def delete_kb(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM kbqa_knowledge_bases WHERE name = %s", (name,))

    def set_source_dir(self, name: str, source_dir: str | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE kbqa_knowledge_bases SET source_dir = %s WHERE name = %s", (source_dir, name))

    def documents(self, kb: str) -> list[DocumentRecord]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT kb, path, source, sha256, size, mtime, loader, chunk_count, status, error, updated_at "
                "FROM kbqa_documents WHERE kb = %s ORDER BY path",
                (kb,),
            ).fetchall()
        return [DocumentRecord(*r) for r in rows]

    def apply(
        self,
        upserts: Iterable[DocumentRecord],
        deletes: Iterable[tuple[str, str]] = (),
        generation: tuple[str, int] | None = None,
    ) -> None:
        with self._tx() as db:
            with db.cursor() as cur:
                cur.executemany("DELETE FROM kbqa_documents WHERE kb = %s AND path = %s", list(deletes))
                cur.executemany(_PG_INSERT, [_values(r) for r in upserts])
            if generation is not None:
                db.execute(
                    "UPDATE kbqa_knowledge_bases SET generation = %s WHERE name = %s", (generation[1], generation[0])
                )

    def reconcile(self, kb: str, created_at: str, generation: int, rows: Iterable[DocumentRecord]) -> bool:
        with self._tx() as db:
            found = db.execute(
                "SELECT generation FROM kbqa_knowledge_bases WHERE name = %s AND created_at = %s FOR UPDATE",
                (kb, created_at),
            ).fetchone()
            if found is None or found[0] >= generation:
                return False
            db.execute("DELETE FROM kbqa_documents WHERE kb = %s", (kb,))
            with db.cursor() as cur:
                cur.executemany(_PG_INSERT, [_values(r) for r in rows])
            db.execute("UPDATE kbqa_knowledge_bases SET generation = %s WHERE name = %s", (generation, kb))
            return True

    def clear_documents(self, kb: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM kbqa_documents WHERE kb = %s", (kb,))
            db.execute("UPDATE kbqa_knowledge_bases SET generation = 0 WHERE name = %s", (kb,))


def _pg_info(row: Any) -> KnowledgeBaseInfo:
    name, description, model, dimension, created, source_dir, generation, documents, chunks = row
    return KnowledgeBaseInfo(name, description, model, int(dimension), created, source_dir, int(documents),
                             int(chunks), int(generation))  # fmt: skip
