"""What start-up says when the PostgreSQL server cannot hold kb-qa's schema: no pgvector, a pgvector too
old, a schema newer than this kb-qa. The real server of the test suite has pgvector 0.8.6, so these
cases run against a STAND-IN connection that answers the three catalogue queries as such a server
would; everything else about the schema is tested on the real server (tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from vector_store.contract import StoreError
from vector_store.pg_store import SCHEMA_VERSION, migrate, redact


class _Result:
    def __init__(self, row: Any) -> None:
        self.row = row

    def fetchone(self) -> Any:
        return self.row


class StandInConnection:
    """Answers ``pg_available_extensions``, ``pg_extension`` and ``kbqa_schema`` like a given server."""

    def __init__(self, available: str | None, installed: str | None, schema: int | None) -> None:
        self.available, self.installed, self.schema = available, installed, schema
        self.executed: list[str] = []

    def execute(self, sql: str, params: Any = None) -> _Result:
        self.executed.append(sql)
        if "pg_available_extensions" in sql:
            return _Result(None if self.available is None else (self.available,))
        if "FROM pg_extension" in sql:
            return _Result((self.installed,))
        if "SELECT version FROM kbqa_schema" in sql:
            return _Result(None if self.schema is None else (self.schema,))
        return _Result(None)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield


class StandInPool:
    def __init__(self, connection: StandInConnection) -> None:
        self.conn = connection

    @contextmanager
    def connection(self) -> Iterator[StandInConnection]:
        yield self.conn


def test_a_server_without_pgvector_is_told_how_to_get_it() -> None:
    with pytest.raises(StoreError, match=r"no pgvector extension; install it .*kb-qa db start"):
        migrate(StandInPool(StandInConnection(None, None, None)))


def test_a_pgvector_too_old_for_filtered_hnsw_is_refused() -> None:
    with pytest.raises(StoreError, match=r"pgvector 0\.7\.4 is too old .*ALTER EXTENSION vector UPDATE"):
        migrate(StandInPool(StandInConnection("0.7.4", "0.7.4", None)))


def test_a_schema_newer_than_this_kb_qa_is_refused() -> None:
    with pytest.raises(StoreError, match="newer than this kb-qa knows"):
        migrate(StandInPool(StandInConnection("0.8.1", "0.8.1", SCHEMA_VERSION + 1)))


def test_a_fresh_database_gets_every_migration_in_order() -> None:
    connection = StandInConnection("0.8.1", "0.8.1", None)
    assert migrate(StandInPool(connection)) == SCHEMA_VERSION
    created = [sql for sql in connection.executed if "CREATE TABLE kbqa_" in sql]
    assert "kbqa_stores" in created[0] and "kbqa_jobs" in created[-1]
    assert any("INSERT INTO kbqa_schema" in sql for sql in connection.executed)


def test_passwords_never_leave_in_messages() -> None:
    assert redact("postgresql://kbqa:s3cret@db:5432/kb") == "postgresql://kbqa:***@db:5432/kb"
    assert redact("postgresql://db/kb") == "postgresql://db/kb"
