"""Knowledge-base chunks in PostgreSQL with pgvector: the scale-out implementation of the store contract.

**Tables** (schema versioned by :func:`migrate`; every name starts with ``kbqa_``):

- ``kbqa_stores``: one row per store (a knowledge base's index): its dimension, next chunk id,
  generation and commit record, and the BM25 statistics (chunk count, total length);
- ``kbqa_chunks``: ``(store_id, id)``, document, text, metadata (jsonb), ``embedding vector``
  (unit length), and the chunk's BM25 length;
- ``kbqa_postings``: ``(store_id, term, chunk_id)`` with the term's frequency in the chunk and the
  chunk's length (copied, so scoring reads postings only);
- ``kbqa_terms``: ``(store_id, term)`` with its document frequency.

**Dense search.** One HNSW index per store, partial (``WHERE store_id = N``) on
``embedding::vector(dim)`` with cosine distance, so each knowledge base has its own graph and its own
dimension. pgvector 0.8's iterative index scans (``hnsw.iterative_scan = relaxed_order``) keep
filtered searches (some documents only) returning k rows; results are re-sorted by exact cosine.
``exact=True`` turns index scans off: the store's rows are scanned and ranked exactly (tests, the
quality comparison). The score is ``1 - cosine distance``: the cosine similarity, as in the folder store.

**Keyword search.** BM25 in SQL with exactly the folder store's analyzer, applied here in Python
(jieba search mode + Snowball, :func:`vector_store.keyword_index.tokenize`, as RAGFlow and MaxKB do
it in the application) and its parameters (k1 1.2, b 0.75, Lucene's idf over the store's chunk
count). A postings table rather than a sparse vector or ``tsvector``: it keeps tf, document
frequency and length exact, so scores equal the folder store's (to float rounding), and a query
reads only the postings of its own terms.

Reading every posting of every question term costs ~65 ms at 1M chunks (a common term of a long
question is in ~50,000 of them, and PostgreSQL's hash aggregate takes ~250 ns a posting). So a
search reads whole posting lists **rarest term first**, up to ``keyword_budget`` postings (the
list that crosses the budget is still read whole): the chunks found there are ranked by what those
terms give them, and the best ``keyword_budget / 5`` (at least ``4 k``) are scored exactly over all
the question's terms (the common terms' postings looked up per chunk, through the primary key).
The common terms weigh least in BM25 (idf), so a chunk that reaches the top without any of the rare
ones is rare. Exact (the folder store's results) whenever every list is read: when the question's
terms but its most common one are in fewer than ``keyword_budget`` chunks together — every question
of the evaluation sets (bench/keyword_parity.py); beyond, measured like HNSW's recall (bench/scale.py
``--budget-sweep``). ``keyword_budget=0`` reads every posting. (Tried first: per-term
*champion lists* of the highest-impact postings, Manning et al. §7.1.3 — at 1M chunks keyword
recall@50 0.59 for 8.6 ms, 0.71 for 14 ms: the best chunks hold every term once, at a middling
length, never at the head of any one list.) When every list fits, the plain query runs (one
lookup of the terms' frequencies decides).

**Writes.** A writer's ``add``/``delete`` run inside one open transaction on one connection (the
writer's reads see them); ``save`` bumps the generation with the commit record and commits, so
readers see all of a write or none of it, and a writer killed part-way leaves nothing (PostgreSQL
rolls its transaction back). ``discard`` rolls back. Writers are serialised by the caller (an
advisory lock, :class:`PgWriterLock`); the row lock on ``kbqa_stores`` taken by the first write
would serialise them anyway.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from vector_store.contract import ScoredChunk, StoredChunk, StoreError, StoreUnavailable, normalise
from vector_store.keyword_index import K1, B, tokenize
from vector_store.locking import StoreBusy

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
MIN_PGVECTOR = (0, 8, 0)  # iterative index scans
DEFAULT_KEYWORD_BUDGET = 30_000  # postings a keyword search reads whole (bench/scale.py --budget-sweep)

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE kbqa_stores (
        id serial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        dim integer NOT NULL,
        next_id bigint NOT NULL DEFAULT 0,
        generation bigint NOT NULL DEFAULT 0,
        commit jsonb,
        n_chunks bigint NOT NULL DEFAULT 0,
        total_length bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE kbqa_chunks (
        store_id integer NOT NULL REFERENCES kbqa_stores(id) ON DELETE CASCADE,
        id bigint NOT NULL,
        doc text NOT NULL,
        text text NOT NULL,
        metadata jsonb NOT NULL,
        embedding vector NOT NULL,
        length integer NOT NULL,
        PRIMARY KEY (store_id, id)
    );
    CREATE INDEX kbqa_chunks_doc ON kbqa_chunks (store_id, doc);
    CREATE TABLE kbqa_postings (
        store_id integer NOT NULL,
        term text NOT NULL,
        chunk_id bigint NOT NULL,
        tf real NOT NULL,
        length integer NOT NULL,
        -- covering: a query's postings come from the index alone (3x faster, measured), once vacuumed
        PRIMARY KEY (store_id, term, chunk_id) INCLUDE (tf, length)
    );
    CREATE INDEX kbqa_postings_chunk ON kbqa_postings (store_id, chunk_id);
    CREATE TABLE kbqa_terms (
        store_id integer NOT NULL,
        term text NOT NULL,
        df integer NOT NULL,
        PRIMARY KEY (store_id, term)
    );
    -- the registry (kb_qa.registry.PgRegistry): kept in the same schema so one version covers it all
    CREATE TABLE kbqa_knowledge_bases (
        name text PRIMARY KEY,
        description text NOT NULL DEFAULT '',
        embedding_model text NOT NULL,
        dimension integer NOT NULL,
        created_at text NOT NULL,
        source_dir text,
        generation bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE kbqa_documents (
        kb text NOT NULL REFERENCES kbqa_knowledge_bases(name) ON DELETE CASCADE,
        path text NOT NULL,
        source text NOT NULL,
        sha256 text NOT NULL,
        size bigint NOT NULL,
        mtime double precision NOT NULL,
        loader text NOT NULL,
        chunk_count integer NOT NULL,
        status text NOT NULL,
        error text,
        updated_at text NOT NULL,
        PRIMARY KEY (kb, path)
    );
    """,
    2: """
    -- background jobs (kb_qa.api.jobs.PgJobStore): visible from every replica, kept across restarts
    CREATE TABLE kbqa_jobs (
        id text PRIMARY KEY,
        kind text NOT NULL,
        knowledge_base text NOT NULL,
        status text NOT NULL,
        total integer NOT NULL DEFAULT 0,
        done integer NOT NULL DEFAULT 0,
        current text NOT NULL DEFAULT '',
        phase text NOT NULL DEFAULT '',
        report jsonb,
        error jsonb,
        created_at double precision NOT NULL,
        finished_at double precision,
        owner text NOT NULL
    );
    CREATE INDEX kbqa_jobs_created ON kbqa_jobs (created_at DESC);
    """,
}


class PostgresUnavailable(StoreUnavailable):
    """The database cannot be reached (down, restarting, or the URL is wrong)."""


def _vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.8g}" for x in vector.tolist()) + "]"


def _hnsw_index(store_id: int, dim: int) -> str:
    """One store's partial HNSW index: its own graph and dimension (cosine)."""
    return (
        f"CREATE INDEX kbqa_chunks_hnsw_{store_id} ON kbqa_chunks USING hnsw "
        f"((embedding::vector({dim})) vector_cosine_ops) WHERE store_id = {store_id}"
    )


def connect_pool(url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0) -> Any:
    """A psycopg connection pool on ``url``, opened and checked (schema migrated, pgvector present).

    :raises PostgresUnavailable: naming the URL (without its password) when it cannot connect.
    """
    try:
        import psycopg
        from psycopg_pool import ConnectionPool
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise StoreError("storage.backend postgres needs psycopg: pip install 'kb-qa[postgres]'") from exc
    try:  # one plain connection first: its error says why (the pool's only says it timed out)
        psycopg.connect(url, connect_timeout=max(1, int(timeout))).close()
    except psycopg.Error as exc:
        raise PostgresUnavailable(
            f"cannot connect to PostgreSQL at {redact(url)} ({_reason(exc)}); check storage.url "
            "(KBQA_STORAGE__URL) and that the server is running (`kb-qa db start` runs a local one)"
        ) from exc
    pool = ConnectionPool(url, min_size=min_size, max_size=max_size, timeout=timeout, open=False,
                          kwargs={"autocommit": True}, check=ConnectionPool.check_connection)  # fmt: skip
    try:
        pool.open(wait=True, timeout=timeout)
    except Exception as exc:  # psycopg_pool.PoolTimeout, OperationalError
        pool.close()
        raise PostgresUnavailable(
            f"cannot connect to PostgreSQL at {redact(url)} ({_reason(exc)}); check storage.url "
            "(KBQA_STORAGE__URL) and that the server is running (`kb-qa db start` runs a local one)"
        ) from exc
    try:
        migrate(pool)
    except psycopg.Error:
        pool.close()
        raise
    return pool


@contextmanager
def unavailable() -> Iterator[None]:
    """psycopg's connection failures (and an exhausted pool) as :class:`PostgresUnavailable`."""
    import psycopg

    try:
        yield
    except psycopg.OperationalError as exc:
        raise PostgresUnavailable(f"the PostgreSQL connection failed ({_reason(exc)})") from exc
    except Exception as exc:
        if type(exc).__name__ == "PoolTimeout":
            raise PostgresUnavailable(f"no PostgreSQL connection free or reachable ({exc})") from exc
        raise


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__ or exc
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def migrate(pool: Any) -> int:
    """Bring the database up to :data:`SCHEMA_VERSION` (under an advisory lock: replicas may start
    together); returns the version. Checks pgvector's presence and version.

    :raises StoreError: pgvector missing or too old, naming the fix.
    """
    with pool.connection() as conn:
        available = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        if available is None:
            raise StoreError(
                "the PostgreSQL server has no pgvector extension; install it (e.g. the postgresql-NN-pgvector "
                "package, or the pgvector/pgvector image) or use `kb-qa db start`"
            )
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('kbqa:schema'))")
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            installed = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
            if _version(installed) < MIN_PGVECTOR:
                raise StoreError(
                    f"pgvector {installed} is too old (0.8.0 or newer is needed for filtered HNSW searches); "
                    "run `ALTER EXTENSION vector UPDATE` after installing a newer pgvector"
                )
            conn.execute("CREATE TABLE IF NOT EXISTS kbqa_schema (version integer NOT NULL)")
            row = conn.execute("SELECT version FROM kbqa_schema").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the database's kb-qa schema is version {version}, newer than this kb-qa knows "
                    f"({SCHEMA_VERSION}); upgrade kb-qa"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                conn.execute(_MIGRATIONS[target])
                log.info("kb-qa schema migrated to version %d", target)
            if row is None:
                conn.execute("INSERT INTO kbqa_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
            else:
                conn.execute("UPDATE kbqa_schema SET version = %s", (SCHEMA_VERSION,))
    return SCHEMA_VERSION


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


class PostgresStore:
    """One knowledge base's chunks in PostgreSQL (see the module's description).

    :param pool: a pool from :func:`connect_pool`.
    :param name: the store's name (the knowledge base's).
    :param dim: the vector dimension.
    :param exact: rank dense searches exactly (no HNSW).
    :param ef_search: HNSW candidates per search (``hnsw.ef_search``; at least k).
    :param keyword_budget: postings a keyword search reads whole, rarest term first (0: every
        posting; see the module's description).
    """

    def __init__(
        self,
        pool: Any,
        name: str,
        dim: int,
        *,
        exact: bool = False,
        ef_search: int = 100,
        keyword_budget: int = DEFAULT_KEYWORD_BUDGET,
    ) -> None:
        self.pool = pool
        self.name = name
        self.dim = dim
        self.exact = exact
        self.ef_search = ef_search
        self.keyword_budget = keyword_budget
        self._writer: Any = None  # the connection holding the open write transaction
        self._writer_cm: Any = None
        self._lock = threading.RLock()
        self.store_id, self.generation = self._ensure()

    # ------------------------------------------------------------ plumbing
    @contextmanager
    def _conn(self) -> Iterator[Any]:
        """The writer's connection while a write is open (its reads see its writes), else a pooled one."""
        with self._lock:
            writer = self._writer
        if writer is not None:
            with self._writing() as conn:
                yield conn
            return
        with unavailable(), self.pool.connection() as conn:
            yield conn

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        """The connection of the open write transaction (begun on first use); losing the connection
        ends the write (the server rolls it back) and raises :class:`PostgresUnavailable`."""
        try:
            with unavailable():
                with self._lock:
                    if self._writer is None:
                        self._writer_cm = self.pool.connection()
                        self._writer = None
                        conn = self._writer_cm.__enter__()
                        conn.execute("BEGIN")
                        self._writer = conn
                yield self._writer
        except PostgresUnavailable:
            self._end_write(commit=False, quiet=True)
            raise

    def _end_write(self, commit: bool, quiet: bool = False) -> None:
        with self._lock:
            conn, cm = self._writer, self._writer_cm
            self._writer = self._writer_cm = None
        if cm is None:
            return
        try:
            if conn is not None:
                with unavailable():
                    conn.execute("COMMIT" if commit else "ROLLBACK")
        except PostgresUnavailable:
            if not quiet:
                raise
        finally:
            cm.__exit__(None, None, None)

    def _ensure(self) -> tuple[int, int]:
        """The store's id and generation, creating its row and HNSW index the first time."""
        select = "SELECT id, dim, generation FROM kbqa_stores WHERE name = %s"
        with self._conn() as conn:
            row = conn.execute(select, (self.name,)).fetchone()
            if row is None:
                with conn.transaction():  # only the process whose insert wins creates the index
                    created = conn.execute(
                        "INSERT INTO kbqa_stores (name, dim) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING "
                        "RETURNING id",
                        (self.name, self.dim),
                    ).fetchone()
                    if created is not None:
                        conn.execute(_hnsw_index(int(created[0]), int(self.dim)))
                row = conn.execute(select, (self.name,)).fetchone()
        if row[1] != self.dim:
            raise StoreError(f"store '{self.name}' holds {row[1]}-d vectors, not {self.dim}-d")
        return int(row[0]), int(row[2])

    @contextmanager
    def bulk_load(self, maintenance_work_mem: str = "1GB") -> Iterator[None]:
        """Load many chunks without keeping the HNSW graph up to date, then build it once.

        pgvector's own advice for a first load: inserting into a large graph gets slower as it
        outgrows the server's memory (measured here: 523 chunks/s at 100k, 229 at 470k), while one
        build afterwards reads each vector once. Meanwhile this store's dense searches are exact
        scans (right, slower). The build holds a SHARE lock on ``kbqa_chunks``: writes to every
        knowledge base wait for it (reads go on) — for loading a new store or a benchmark, not for
        a live service's uploads. Writes inside must be saved (committed) before the block ends.
        """
        if self.dirty:
            raise StoreError("bulk_load: save or discard the open write first")
        with unavailable(), self.pool.connection() as conn:
            conn.execute(f"DROP INDEX IF EXISTS kbqa_chunks_hnsw_{self.store_id}")
        try:
            yield
        finally:
            if self.dirty:
                self.discard()
            with unavailable(), self.pool.connection() as conn, conn.transaction():
                conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,))
                conn.execute(_hnsw_index(self.store_id, int(self.dim)))

    @classmethod
    def drop(cls, pool: Any, name: str) -> None:
        """Remove the store ``name`` and everything in it (nothing when there is none)."""
        with unavailable(), pool.connection() as conn, conn.transaction():
            row = conn.execute("SELECT id FROM kbqa_stores WHERE name = %s", (name,)).fetchone()
            if row is None:
                return
            store_id = int(row[0])
            conn.execute(f"DROP INDEX IF EXISTS kbqa_chunks_hnsw_{store_id}")
            conn.execute("DELETE FROM kbqa_postings WHERE store_id = %s", (store_id,))
            conn.execute("DELETE FROM kbqa_terms WHERE store_id = %s", (store_id,))
            conn.execute("DELETE FROM kbqa_stores WHERE id = %s", (store_id,))  # chunks cascade

    # ------------------------------------------------------------ reading
    def __len__(self) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT n_chunks FROM kbqa_stores WHERE id = %s", (self.store_id,)).fetchone()
        return int(row[0]) if row else 0

    def documents(self) -> dict[str, int]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT doc, count(*) FROM kbqa_chunks WHERE store_id = %s GROUP BY doc", (self.store_id,)
            ).fetchall()
        return {doc: int(n) for doc, n in rows}

    def chunks_of(self, doc: str) -> list[StoredChunk]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id, doc, text, metadata FROM kbqa_chunks WHERE store_id = %s AND doc = %s ORDER BY id",
                (self.store_id, doc),
            ).fetchall()
        return [StoredChunk(int(i), d, t, m) for i, d, t, m in rows]

    def get(self, chunk_id: int) -> StoredChunk | None:
        return self.get_many([chunk_id]).get(chunk_id)

    def get_many(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not len(ids):
            return {}
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id, doc, text, metadata FROM kbqa_chunks WHERE store_id = %s AND id = ANY(%s)",
                (self.store_id, [int(i) for i in ids]),
            ).fetchall()
        return {int(i): StoredChunk(int(i), d, t, m) for i, d, t, m in rows}

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id, embedding::text FROM kbqa_chunks WHERE store_id = %s AND id = ANY(%s)",
                (self.store_id, [int(i) for i in ids]),
            ).fetchall()
        found = {int(i): text for i, text in rows}
        missing = [i for i in ids if int(i) not in found]
        if missing:
            raise StoreError(f"store '{self.name}' has no chunk {missing[0]}")
        return np.array([json.loads(found[int(i)]) for i in ids], np.float32)

    def search(self, vector: np.ndarray, k: int, docs: Iterable[str] | None = None) -> list[ScoredChunk]:
        if k <= 0:
            return []
        query = normalise(vector)
        if query.shape[1] != self.dim:
            raise StoreError(f"query has {query.shape[1]} dimensions, the store {self.dim}")
        literal = _vector_literal(query[0])
        doc_list = None if docs is None else list(docs)
        if doc_list is not None and not doc_list:
            return []
        where = "" if doc_list is None else " AND doc = ANY(%(docs)s)"
        sql = (  # the store id and dimension are integers of ours, inlined so the partial index matches
            f"SELECT id, doc, text, metadata, embedding::vector({self.dim}) <=> %(q)s::vector({self.dim}) AS distance "
            f"FROM kbqa_chunks WHERE store_id = {self.store_id}{where} "
            f"ORDER BY embedding::vector({self.dim}) <=> %(q)s::vector({self.dim}) LIMIT %(k)s"
        )
        with self._conn() as conn, conn.transaction():
            if self.exact:
                conn.execute("SET LOCAL enable_indexscan = off")
            else:
                conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                conn.execute(f"SET LOCAL hnsw.ef_search = {max(int(self.ef_search), int(k))}")
            rows = conn.execute(sql, {"q": literal, "k": int(k), "docs": doc_list}).fetchall()
        hits = [ScoredChunk(StoredChunk(int(i), d, t, m), 1.0 - float(dist)) for i, d, t, m, dist in rows]
        hits.sort(key=lambda h: (-h.score, h.chunk.id))  # relaxed order: exact order restored here
        return hits

    def similarities(self, vector: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        if not len(ids):
            return np.zeros(0, np.float32)
        literal = _vector_literal(normalise(vector)[0])
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT id, 1 - (embedding::vector({self.dim}) <=> %s::vector({self.dim})) FROM kbqa_chunks "
                "WHERE store_id = %s AND id = ANY(%s)",
                (literal, self.store_id, [int(i) for i in ids]),
            ).fetchall()
        found = {int(i): float(s) for i, s in rows}
        return np.array([found.get(int(i), 0.0) for i in ids], np.float32)

    def _bm25(
        self, query: str, *, k: int | None = None, ids: Sequence[int] | None = None, docs: list[str] | None = None
    ) -> list[tuple[int, float]]:
        terms = Counter(tokenize(query))
        if not terms:
            return []
        params: dict[str, Any] = {"store": self.store_id, "terms": list(terms), "counts": list(terms.values()),
                                  "k1": K1, "b": B}  # fmt: skip
        stats = (
            "s AS (SELECT n_chunks::float8 AS n, total_length::float8 / greatest(n_chunks, 1) AS avgdl "
            "FROM kbqa_stores WHERE id = %(store)s)"
        )
        rare, dfs = self._rare_terms(list(terms)) if k is not None and ids is None and docs is None else (None, None)
        if dfs is not None:
            # the terms' document frequencies were just read to choose the rare terms: the weights use
            # them rather than reading kbqa_terms again
            known = sorted(dfs)
            params.update(terms=known, counts=[terms[t] for t in known], dfs=[dfs[t] for t in known])
            source = "unnest(%(terms)s::text[], %(counts)s::int[], %(dfs)s::int[]) AS t(term, repeat, df)"
        else:
            source = (
                "(SELECT t.term, t.repeat, w.df FROM unnest(%(terms)s::text[], %(counts)s::int[]) AS t(term, repeat) "
                " JOIN kbqa_terms w ON w.store_id = %(store)s AND w.term = t.term AND w.df > 0) AS t"
            )
        prefix = (
            f"WITH {stats}, "
            f"q AS (SELECT t.term, t.repeat * ln(1 + (s.n - t.df + 0.5) / (t.df + 0.5)) AS weight FROM {source}, s)"
        )
        score = (
            "sum(q.weight * p.tf * (%(k1)s + 1) / "
            "    (p.tf + %(k1)s * (1 - %(b)s + %(b)s * p.length / greatest(s.avgdl, 1e-9))))"
        )
        if k is not None and rare is not None:
            # the rarest terms' whole lists up to the budget; their best chunks scored over every term
            params.update(k=int(k), rare=rare, shortlist=max(self.keyword_budget // 5, 4 * int(k)))
            sql = (
                f"{prefix}, "
                f"c AS (SELECT p.chunk_id, {score} AS partial FROM q "
                "      JOIN kbqa_postings p ON p.store_id = %(store)s AND p.term = q.term, s "
                "      WHERE q.term = ANY(%(rare)s) "
                "      GROUP BY p.chunk_id ORDER BY partial DESC, p.chunk_id LIMIT %(shortlist)s) "
                f"SELECT p.chunk_id, {score} AS score FROM c CROSS JOIN q "
                "JOIN kbqa_postings p ON p.store_id = %(store)s AND p.term = q.term AND p.chunk_id = c.chunk_id, s "
                "GROUP BY p.chunk_id ORDER BY score DESC, p.chunk_id LIMIT %(k)s"
            )
        else:
            filters = ""
            if ids is not None:
                filters += " AND p.chunk_id = ANY(%(ids)s)"
                params["ids"] = [int(i) for i in ids]
            if docs is not None:
                filters += (
                    " AND p.chunk_id IN (SELECT id FROM kbqa_chunks WHERE store_id = %(store)s AND doc = ANY(%(docs)s))"
                )
                params["docs"] = docs
            limit = ""
            if k is not None:
                limit = " ORDER BY score DESC, p.chunk_id LIMIT %(k)s"
                params["k"] = int(k)
            sql = (
                f"{prefix} SELECT p.chunk_id, {score} AS score "
                "FROM q JOIN kbqa_postings p ON p.store_id = %(store)s AND p.term = q.term, s "
                f"WHERE true{filters} GROUP BY p.chunk_id{limit}"
            )
        with self._conn() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [(int(i), float(score)) for i, score in rows if score > 0]

    def _rare_terms(self, terms: list[str]) -> tuple[list[str] | None, dict[str, int] | None]:
        """The terms whose lists a search within the budget reads whole: rarest first, while fewer
        than ``keyword_budget`` postings are read before each; None when that is every term (then
        every posting is read: the same result, without scoring the best chunks twice). With them,
        the document frequency of every term the store holds (None: no budget, nothing read)."""
        if self.keyword_budget <= 0:
            return None, None
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT term, df FROM kbqa_terms WHERE store_id = %s AND term = ANY(%s) AND df > 0",
                (self.store_id, terms),
            ).fetchall()
        dfs = {str(term): int(df) for term, df in rows}
        rare: list[str] = []
        read = 0
        for term, df in sorted(dfs.items(), key=lambda row: (row[1], row[0])):
            if read >= self.keyword_budget:
                return rare, dfs
            rare.append(term)
            read += df
        return None, dfs

    def keyword_search(self, query: str, k: int, docs: Iterable[str] | None = None) -> list[ScoredChunk]:
        if k <= 0:
            return []
        doc_list = None if docs is None else list(docs)
        if doc_list is not None and not doc_list:
            return []
        scored = self._bm25(query, k=k, docs=doc_list)
        chunks = self.get_many([i for i, _ in scored])
        return [ScoredChunk(chunks[i], s) for i, s in scored if i in chunks]

    def keyword_scores(self, query: str, ids: Sequence[int]) -> np.ndarray:
        if not len(ids):
            return np.zeros(0, np.float32)
        found = dict(self._bm25(query, ids=ids))
        return np.array([found.get(int(i), 0.0) for i in ids], np.float32)

    def read_commit(self) -> Any:
        with self._conn() as conn:
            row = conn.execute("SELECT commit FROM kbqa_stores WHERE id = %s", (self.store_id,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------ writing
    def add(
        self,
        doc: str,
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
        vectors: np.ndarray,
        keyword_texts: Sequence[str] | None = None,
    ) -> list[int]:
        if not len(texts) == len(metadatas) == len(vectors):
            raise ValueError("texts, metadatas and vectors must have the same length")
        matrix = normalise(vectors) if len(texts) else np.zeros((0, self.dim), np.float32)
        if matrix.shape[1] != self.dim:
            raise StoreError(f"vectors have {matrix.shape[1]} dimensions, the store {self.dim}")
        analysed = [Counter(tokenize(t)) for t in (keyword_texts if keyword_texts is not None else texts)]
        self.delete(doc)
        if not len(texts):
            return []
        with self._writing() as conn:
            return self._insert(conn, doc, texts, metadatas, matrix, analysed)

    def _insert(
        self,
        conn: Any,
        doc: str,
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
        matrix: np.ndarray,
        analysed: list[Counter[str]],
    ) -> list[int]:
        first = conn.execute(
            "UPDATE kbqa_stores SET next_id = next_id + %s, n_chunks = n_chunks + %s, total_length = total_length + %s "
            "WHERE id = %s RETURNING next_id - %s",
            (len(texts), len(texts), sum(sum(c.values()) for c in analysed), self.store_id, len(texts)),
        ).fetchone()[0]
        ids = list(range(int(first), int(first) + len(texts)))
        with conn.cursor() as cur:
            with cur.copy("COPY kbqa_chunks (store_id, id, doc, text, metadata, embedding, length) FROM STDIN") as copy:
                for chunk_id, text, meta, row, counts in zip(ids, texts, metadatas, matrix, analysed, strict=True):
                    copy.write_row((self.store_id, chunk_id, doc, text, json.dumps(meta, ensure_ascii=False),
                                    _vector_literal(row), sum(counts.values())))  # fmt: skip
            with cur.copy("COPY kbqa_postings (store_id, term, chunk_id, tf, length) FROM STDIN") as copy:
                for chunk_id, counts in zip(ids, analysed, strict=True):
                    length = sum(counts.values())
                    for term, tf in counts.items():
                        copy.write_row((self.store_id, term, chunk_id, float(tf), length))
        df = Counter(term for counts in analysed for term in counts)
        conn.execute(
            "INSERT INTO kbqa_terms (store_id, term, df) SELECT %s, t, d FROM unnest(%s::text[], %s::int[]) AS x(t, d) "
            "ON CONFLICT (store_id, term) DO UPDATE SET df = kbqa_terms.df + excluded.df",
            (self.store_id, list(df), list(df.values())),
        )
        return ids

    def delete(self, doc: str) -> int:
        with self._writing() as conn:
            return self._remove(conn, doc)

    def _remove(self, conn: Any, doc: str) -> int:
        removed = conn.execute(
            "DELETE FROM kbqa_chunks WHERE store_id = %s AND doc = %s RETURNING id, length", (self.store_id, doc)
        ).fetchall()
        if not removed:
            return 0
        ids = [int(i) for i, _ in removed]
        conn.execute(
            "WITH gone AS (DELETE FROM kbqa_postings WHERE store_id = %s AND chunk_id = ANY(%s) RETURNING term), "
            "c AS (SELECT term, count(*) AS n FROM gone GROUP BY term) "
            "UPDATE kbqa_terms w SET df = w.df - c.n FROM c WHERE w.store_id = %s AND w.term = c.term",
            (self.store_id, ids, self.store_id),
        )
        conn.execute("DELETE FROM kbqa_terms WHERE store_id = %s AND df <= 0", (self.store_id,))
        conn.execute(
            "UPDATE kbqa_stores SET n_chunks = n_chunks - %s, total_length = total_length - %s WHERE id = %s",
            (len(removed), sum(int(n) for _, n in removed), self.store_id),
        )
        return len(removed)

    @property
    def dirty(self) -> bool:
        return self._writer is not None

    def save(self, commit: Any = None) -> None:
        with self._writing() as conn:
            row = conn.execute(
                "UPDATE kbqa_stores SET generation = generation + 1, commit = %s WHERE id = %s RETURNING generation",
                (None if commit is None else json.dumps(commit, ensure_ascii=False), self.store_id),
            ).fetchone()
        self._end_write(commit=True)
        self.generation = int(row[0])

    def discard(self) -> None:
        self._end_write(commit=False)

    def close(self) -> None:
        """Roll back an unsaved write and return its connection."""
        self.discard()


class PgWriterLock:
    """One writer per knowledge base across processes and replicas: a session advisory lock, held on
    its own pooled connection for the ``with`` block (released when the block ends or the holder dies)."""

    def __init__(self, pool: Any, name: str, timeout: float = 600.0) -> None:
        self.pool = pool
        self.name = name
        self.timeout = timeout

    @contextmanager
    def hold(self) -> Iterator[None]:
        import time

        key = f"kbqa:kb:{self.name}"
        with unavailable(), self.pool.connection() as conn:
            deadline = time.monotonic() + max(self.timeout, 0)
            delay = 0.02
            while not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
                if time.monotonic() >= deadline:
                    raise StoreBusy(f"knowledge base '{self.name}' is being written by another process")
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
