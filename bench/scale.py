"""Scale-out figures: the PostgreSQL + pgvector store against the folder store (FAISS + BM25 files).

    .venv/bin/python bench/scale.py [--sizes 100000] [--queries 200] [--ingest] [--no-exact-timings]

Every comparison runs in one run, on one machine, one after the other (never side by side: two busy
processes on 2 cores distort each other), against a real PostgreSQL 18.6 + pgvector 0.8.6 started by
this script (kb_qa/pgserver.py, the server of `kb-qa db start`).

- **Store writes at N chunks** (``--sizes``): the synthetic chunks of bench/query.py — real sentences
  of the squad-dev and cmrc2018-trial passages recombined, vectors mixed from the real model's
  vectors of those passages plus noise (so the geometry is the real model's; say so when quoting) —
  written in documents of 100 chunks, saved every 10,000 chunks; chunks/s of the store alone.
  With ``--bulk`` PostgreSQL is filled without its HNSW index, which is built once afterwards
  (``PostgresStore.bulk_load``, timed on its own); ``--shared-buffers`` gives the server more memory
  than `kb-qa db start`'s 256 MB (both recorded in the result).
- **Search at N chunks**: real questions of both sets; the whole retrieval path (embed the question,
  dense + BM25, fusion, passages; hybrid, top 4), p50 / p99, also with ``parallel_keyword`` off; the
  folder store exact, PostgreSQL with HNSW (``ef_search`` 100) and exact; medians of the dense and the
  keyword step alone.
- **HNSW recall@10** against exact search, the same real question vectors.
- **Keyword search within a budget** (``--budget-sweep``, PostgreSQL): keyword recall against reading
  every posting, the hybrid top 10 against the exact one, and the time, per ``keyword_budget``; the
  whole path with torch on 1 or 2 threads and the keyword search beside the embedding
  (``retrieval.parallel_keyword``) or after it.
- **Memory**: the resident memory of a process that loads the embedding model, opens the store and
  answers 50 questions — what an API process holds for its index (the folder store keeps every
  vector, text and posting in memory; PostgreSQL keeps them in the server).
- **Replicas**: search throughput (questions/s, all processes together) of 1 and of 2 processes
  querying the PostgreSQL store at once (each with its own model and pool; the retrieval path above),
  with torch's default threads, with ``OMP_WAIT_POLICY=PASSIVE`` and with one thread per process.
- **Ingestion** (``--ingest``): the real pipeline (read, split, embed, store) on the squad-dev and
  cmrc2018-trial article files into a knowledge base on each storage, chunks/s.

Writes docs/benchmarks/scale.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import git_revision, machine, memory_mb, require_shared, save_result
from bench.query import SETS, overlap_at_10, passages_and_vectors, run_round, synthetic_documents
from kb_qa.pgserver import LocalPostgres
from kb_qa.retrieval import RetrievalOptions, Retriever
from kb_qa.services import build_embeddings, build_services, embedding_threads
from kb_qa.settings import load_settings
from vector_store import FaissStore
from vector_store.contract import ChunkStore
from vector_store.pg_store import PostgresStore, connect_pool

SAVE_EVERY = 10_000
# torch's threads on PostgreSQL storage by default (embedding.threads null)
PG_THREADS = embedding_threads(load_settings(environ={}, overrides={"storage": {"backend": "postgres"}}))


def questions(shared: Path, count: int) -> list[str]:
    found: list[str] = []
    for name in SETS:
        lines = (shared / "eval" / name / "queries.jsonl").read_text(encoding="utf-8").splitlines()
        found += [q["text"] for q in (json.loads(line) for line in lines if line) if q["text"].strip()]
    rng = np.random.default_rng(1)
    return [found[i] for i in rng.permutation(len(found))[:count]]


def fill(store: ChunkStore, size: int, texts: list[str], vectors: np.ndarray) -> float:
    """Write ``size`` synthetic chunks; chunks per second."""
    started = time.perf_counter()
    written = 0
    for doc, chunk_texts, metadatas, mixed in synthetic_documents(size, texts, vectors):
        store.add(doc, chunk_texts, metadatas, mixed)
        written += len(chunk_texts)
        if written % SAVE_EVERY == 0:
            store.save()
            print(f"    {written} chunks, {written / (time.perf_counter() - started):.0f} chunks/s", flush=True)
    store.save()
    return written / (time.perf_counter() - started)


def timings(
    retriever: Retriever, store: ChunkStore, queries: list[str], options: RetrievalOptions, threads: int | None = None
) -> dict[str, Any]:
    """The whole path (p50, p99, mean), also with ``parallel_keyword`` off, with torch on ``threads``
    (None: its default); medians of the dense and the keyword step alone."""
    with torch_threads(threads):
        whole = run_round(retriever, store, queries, options)
        whole["in_turn"] = in_turn(retriever, store, queries, options)
    dense, keyword = [], []
    vectors = retriever.embeddings.encode_queries(queries[:100])
    for query, vector in zip(queries[:100], vectors, strict=True):
        t0 = time.perf_counter()
        store.search(vector, options.candidates)
        t1 = time.perf_counter()
        store.keyword_search(query, options.candidates)
        t2 = time.perf_counter()
        dense.append((t1 - t0) * 1000)
        keyword.append((t2 - t1) * 1000)
    return {
        **whole,
        "torch_threads": threads or torch.get_num_threads(),
        "dense_median_ms": round(statistics.median(dense), 2),
        "bm25_median_ms": round(statistics.median(keyword), 2),
    }


def ef_sweep(
    pool: Any, dim: int, retriever: Retriever, queries: list[str], query_vectors: np.ndarray,
    options: RetrievalOptions, values: list[int],
) -> dict[str, Any]:  # fmt: skip
    """HNSW ``ef_search`` against recall@10 and time: exact top 10 once per question, then for each
    value the recall, the dense step alone and the whole path (hybrid and dense-only)."""
    exact = PostgresStore(pool, "bench", dim, exact=True)
    truth = [{h.chunk.id for h in exact.search(v, 10)} for v in query_vectors]
    dense_only = options.override(method="dense")
    out: dict[str, Any] = {}
    for ef in values:
        store = PostgresStore(pool, "bench", dim, ef_search=ef)
        times, shared = [], 0
        for vector, expected in zip(query_vectors, truth, strict=True):
            started = time.perf_counter()
            found = store.search(vector, 10)
            times.append((time.perf_counter() - started) * 1000)
            shared += len(expected & {h.chunk.id for h in found})
        out[str(ef)] = {
            "recall_at_10": round(shared / (10 * len(truth)), 4),
            "dense_median_ms": round(statistics.median(times), 2),
            "hybrid": run_round(retriever, store, queries, options),
            "dense": run_round(retriever, store, queries, dense_only),
        }
        print(f"    ef_search {ef}: {out[str(ef)]}", flush=True)
    return out


def budget_sweep(
    pool: Any, dim: int, retriever: Retriever, queries: list[str], options: RetrievalOptions,
    budgets: list[int], ef_search: int,
) -> dict[str, Any]:  # fmt: skip
    """Keyword search within a postings budget (``keyword_budget``, 0: every posting) against recall
    and time. References, once per question: the exact keyword top ``candidates`` (every posting
    read) and the exact hybrid top 10 (dense by a full scan, keywords exhaustive). For each budget:
    keyword recall (a returned chunk counts when it scores at least the exact list's last one, as
    ann-benchmarks counts ties), the keyword step alone, the hybrid top 10's recall against the
    exact one (HNSW at ``ef_search`` included) and the whole hybrid path's p50 / p99 (top-k as set):
    ``hybrid`` as PostgreSQL storage runs it by default (torch on 1 thread, the keyword search beside the
    embedding and the dense search), ``paths`` every combination of 1 or 2 threads and in parallel or in turn."""
    n = options.candidates
    exact = PostgresStore(pool, "bench", dim, exact=True, keyword_budget=0)
    keyword_truth = [exact.keyword_search(q, n) for q in queries]
    top10 = options.override(top_k=10)
    started = time.perf_counter()
    hybrid_truth = [{h.chunk_id for h in retriever.search_stores(q, {"bench": exact}, top10)} for q in queries]
    print(f"    exact hybrid references: {time.perf_counter() - started:.0f} s", flush=True)
    out: dict[str, Any] = {}
    for budget in budgets:
        store = PostgresStore(pool, "bench", dim, ef_search=ef_search, keyword_budget=budget)
        times, found, wanted, shared = [], 0, 0, 0
        for query, expected, reference in zip(queries, keyword_truth, hybrid_truth, strict=True):
            began = time.perf_counter()
            hits = store.keyword_search(query, n)
            times.append((time.perf_counter() - began) * 1000)
            if expected:
                found += min(len(expected), sum(1 for h in hits if h.score >= expected[-1].score - 1e-4))
                wanted += len(expected)
            shared += len(reference & {h.chunk_id for h in retriever.search_stores(query, {"bench": store}, top10)})
        out[str(budget)] = {
            "keyword_recall_at_candidates": round(found / max(wanted, 1), 4),
            "keyword_median_ms": round(statistics.median(times), 2),
            "hybrid_recall_at_10": round(shared / max(sum(len(r) for r in hybrid_truth), 1), 4),
            "paths": paths(retriever, store, queries, options),
        }
        out[str(budget)]["hybrid"] = out[str(budget)]["paths"][f"{PG_THREADS} thread(s), parallel"]
        print(f"    keyword_budget {budget}: {out[str(budget)]}", flush=True)
    return out


def in_turn(retriever: Retriever, store: ChunkStore, queries: list[str], options: RetrievalOptions) -> dict[str, Any]:
    """:func:`run_round` with ``parallel_keyword`` off: the keyword search after the embedding and the
    dense search instead of beside them."""
    retriever.parallel_keyword = False
    try:
        return run_round(retriever, store, queries, options)
    finally:
        retriever.parallel_keyword = True


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's CPU threads for the block (None: as they are), as ``embedding.threads`` sets them."""
    saved = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def paths(retriever: Retriever, store: ChunkStore, queries: list[str], options: RetrievalOptions) -> dict[str, Any]:
    """The whole hybrid path with torch on 1 and on 2 threads, the keyword search beside the embedding
    and the dense search (``parallel_keyword``) and after them: p50 / p99 of each, one after the other."""
    out: dict[str, Any] = {}
    for threads in (1, 2):
        with torch_threads(threads):
            out[f"{threads} thread(s), parallel"] = run_round(retriever, store, queries, options)
            out[f"{threads} thread(s), in turn"] = in_turn(retriever, store, queries, options)
    return out


def _child(kind: str, where: str, dim: int, queries: list[str], result: Any) -> None:
    """In a fresh process: the model, the store, 50 questions; resident memory before and after."""
    settings = load_settings()
    embeddings = build_embeddings(settings)
    embeddings.warm_up()
    retriever = Retriever(None, embeddings, RetrievalOptions.from_settings(settings.retrieval))  # type: ignore[arg-type]
    options = retriever.options(top_k=4)
    retriever.search_stores("warm up", {}, options)
    before = memory_mb()
    pool = None
    if kind == "folder":
        store: ChunkStore = FaissStore.open(Path(where), dim)
    else:
        pool = connect_pool(where, max_size=2)
        store = PostgresStore(pool, "bench", dim)
    started = time.perf_counter()
    for query in queries:
        retriever.search_stores(query, {"bench": store}, options)
    seconds = time.perf_counter() - started
    result.put(
        {
            "rss_before_store_mb": round(before, 1),
            "rss_mb": round(memory_mb(), 1),
            "peak_mb": round(memory_mb("VmHWM"), 1),
            "questions_per_s": round(len(queries) / seconds, 2),
        }
    )
    if pool is not None:
        pool.close()


def in_processes(
    count: int, kind: str, where: str, dim: int, queries: list[str], env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Run :func:`_child` in ``count`` fresh processes at once (``env``: set for them, e.g. torch's threads)."""
    import os

    context = multiprocessing.get_context("spawn")
    result = context.Queue()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        processes = [context.Process(target=_child, args=(kind, where, dim, queries, result)) for _ in range(count)]
        for process in processes:
            process.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out = [result.get(timeout=1800) for _ in processes]
    for process in processes:
        process.join()
    return out


# torch's OpenMP threads spin while they wait: two busy processes on 2 cores collapse unless they
# sleep instead (PASSIVE) or each keeps to one thread
REPLICA_SETUPS = {
    "default threads": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread each": {"OMP_NUM_THREADS": "1"},
}


def ingestion(shared: Path, url: str, root: Path) -> dict[str, Any]:
    files = [shared / "eval" / name / "docs" for name in SETS]
    figures = {}
    for backend in ("folder", "postgres"):
        settings = load_settings(overrides={"paths": {"kb_root": str(root / backend)},
                                            "storage": {"backend": backend, "url": url}})  # fmt: skip
        services = build_services(settings)
        services.embeddings.warm_up()
        services.knowledge_bases.create("ingest")
        started = time.perf_counter()
        report = services.knowledge_bases.add_files("ingest", files)
        seconds = time.perf_counter() - started
        chunks = services.knowledge_bases.get("ingest").chunk_count
        figures[backend] = {"files": len(report.outcomes), "chunks": chunks, "seconds": round(seconds, 1),
                            "chunks_per_s": round(chunks / seconds, 1)}  # fmt: skip
        print(f"  ingestion {backend}: {chunks} chunks in {seconds:.1f} s", flush=True)
        services.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest", action="store_true", help="also the real pipeline on the sets' article files")
    parser.add_argument(
        "--no-exact-timings",
        action="store_true",
        help="skip PostgreSQL's exact-scan timings and the folder-vs-exact check (large sizes)",
    )
    parser.add_argument(
        "--bulk",
        action="store_true",
        help="fill PostgreSQL without the HNSW index and build it once afterwards (PostgresStore.bulk_load); "
        "the build time is its own figure",
    )
    parser.add_argument("--shared-buffers", default="256MB",
                        help="the server's shared_buffers (default: what `kb-qa db start` sets)")  # fmt: skip
    parser.add_argument("--ef-sweep", type=int, nargs="*", default=[],
                        help="HNSW ef_search values to measure recall@10 and time at (PostgreSQL)")  # fmt: skip
    parser.add_argument("--budget-sweep", type=int, nargs="*", default=[],
                        help="keyword_budget values (0: every posting) to measure keyword and hybrid recall and "
                        "time at (PostgreSQL), with --budget-ef-search")  # fmt: skip
    parser.add_argument("--budget-ef-search", type=int, default=100, help="ef_search for --budget-sweep")
    parser.add_argument("--postgres-only", action="store_true",
                        help="fill and measure PostgreSQL alone (with --ef-sweep: the sweep only)")  # fmt: skip
    parser.add_argument("--maintenance-work-mem", default="1GB", help="memory for the --bulk index build")
    parser.add_argument("--out", help="the result's name under docs/benchmarks (default: from the sizes)")
    args = parser.parse_args()
    if (args.out and not re.fullmatch(r"[\w.-]+", args.out)) or (args.out or "").endswith(".json"):
        # checked now: the result is written after the whole run (once, minutes later, a path lost it)
        parser.error(f"--out is a name for docs/benchmarks/NAME.json, e.g. scale-100000-rerun, not {args.out!r}")
    shared = require_shared()
    settings = load_settings()
    embeddings = build_embeddings(settings)
    embeddings.warm_up()
    retriever = Retriever(None, embeddings, RetrievalOptions.from_settings(settings.retrieval))  # type: ignore[arg-type]
    options = retriever.options(top_k=4)
    texts, vectors = passages_and_vectors(shared, embeddings)
    queries = questions(shared, args.queries)
    query_vectors = embeddings.encode_queries(queries)
    dim = vectors.shape[1]
    results: dict[str, Any] = {"machine": machine(), "revision": git_revision(), "queries": len(queries),
                               "method": options.method, "top_k": options.top_k, "sizes": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="kbqa-scale-") as tmp:
        server = LocalPostgres(Path(tmp) / "postgres")
        server.start()
        if args.shared_buffers != "256MB":
            import psycopg

            with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
                conn.execute(f"ALTER SYSTEM SET shared_buffers = '{args.shared_buffers}'")
            server.stop()
            server.start()
        results["server"] = {"shared_buffers": args.shared_buffers, "bulk": args.bulk,
                             "maintenance_work_mem": args.maintenance_work_mem if args.bulk else None}  # fmt: skip
        try:
            for size in args.sizes:
                print(f"{size} chunks", flush=True)
                url = server.create_database(f"scale{size}")
                pool = connect_pool(url, max_size=4)
                folder_dir = Path(tmp) / f"folder-{size}"
                figures: dict[str, Any] = {}
                if not args.postgres_only:
                    print("  folder store: writing", flush=True)
                    figures["folder_write_chunks_per_s"] = round(
                        fill(FaissStore(folder_dir, dim), size, texts, vectors)
                    )
                print("  postgres store: writing", flush=True)
                pg = PostgresStore(pool, "bench", dim)
                if args.bulk:
                    with pg.bulk_load(args.maintenance_work_mem):  # the index is built when the block ends
                        figures["postgres_write_chunks_per_s_without_index"] = round(fill(pg, size, texts, vectors))
                        build_started = time.perf_counter()
                        print("  postgres store: building the HNSW index", flush=True)
                    figures["postgres_index_build_s"] = round(time.perf_counter() - build_started, 1)
                else:
                    figures["postgres_write_chunks_per_s"] = round(fill(pg, size, texts, vectors))
                with pool.connection() as conn:
                    conn.execute("VACUUM ANALYZE")
                    figures["postgres_database_mb"] = round(
                        conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20
                    )
                exact = PostgresStore(pool, "bench", dim, exact=True)
                if args.ef_sweep:
                    print("  ef_search sweep", flush=True)
                    figures["ef_search_sweep"] = ef_sweep(pool, dim, retriever, queries, query_vectors, options,
                                                          args.ef_sweep)  # fmt: skip
                if args.budget_sweep:
                    print(f"  keyword_budget sweep (ef_search {args.budget_ef_search})", flush=True)
                    swept = budget_sweep(pool, dim, retriever, queries, options, args.budget_sweep,
                                         args.budget_ef_search)  # fmt: skip
                    figures["keyword_budget_sweep"] = {"ef_search": args.budget_ef_search,
                                                       "candidates": options.candidates, "budgets": swept}  # fmt: skip
                if args.postgres_only:
                    pool.close()
                    results["sizes"][str(size)] = figures
                    print(json.dumps(figures, indent=2), flush=True)
                    continue
                folder = FaissStore.open(folder_dir, dim)
                print("  search timings", flush=True)
                figures["search"] = {  # each store with torch's threads as embedding.threads gives it by default
                    "folder (exact)": timings(retriever, folder, queries, options),
                    "postgres (HNSW)": timings(retriever, pg, queries, options, PG_THREADS),
                }
                if not args.no_exact_timings:  # a full scan per question: seconds each at 1M chunks
                    figures["search"]["postgres (exact)"] = timings(retriever, exact, queries, options, PG_THREADS)
                figures["hnsw_recall_at_10"] = round(overlap_at_10(exact, pg, query_vectors), 4)
                if not args.no_exact_timings:
                    figures["folder_recall_at_10_of_postgres_exact"] = round(
                        overlap_at_10(exact, folder, query_vectors), 4
                    )
                del folder
                pool.close()
                print("  memory (a fresh process each)", flush=True)
                figures["memory"] = {
                    "folder": in_processes(1, "folder", str(folder_dir), dim, queries[:50])[0],
                    "postgres": in_processes(1, "postgres", url, dim, queries[:50])[0],
                }
                print("  replicas", flush=True)
                figures["replicas_questions_per_s"] = {}
                for setup, env in REPLICA_SETUPS.items():
                    one = in_processes(1, "postgres", url, dim, queries, env)
                    two = in_processes(2, "postgres", url, dim, queries, env)
                    figures["replicas_questions_per_s"][setup] = {
                        "1": round(sum(r["questions_per_s"] for r in one), 2),
                        "2": round(sum(r["questions_per_s"] for r in two), 2),
                    }
                    print(f"    {setup}: {figures['replicas_questions_per_s'][setup]}", flush=True)
                results["sizes"][str(size)] = figures
                print(json.dumps(figures, indent=2), flush=True)
            if args.ingest:
                url = server.create_database("ingest")
                results["ingestion"] = ingestion(shared, url, Path(tmp) / "ingest")
        finally:
            server.stop("immediate")
    name = "scale" if args.sizes == [100000] else f"scale-{'-'.join(map(str, args.sizes))}"
    path = save_result(args.out or name + ("-postgres" if args.postgres_only else ""), results)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
