"""Keyword search at the default ``storage.keyword_budget`` against reading every posting, on the
evaluation sets' passages: is it exact on knowledge bases of that size?

    .venv/bin/python bench/keyword_parity.py

Each set's passages go into a PostgreSQL store (one chunk each; random vectors: only keyword search
is compared), and every question's keyword top 10 is asked of it twice: at the default budget and
with every posting read. Counts the identical lists (ids and scores to 4 decimals) and names the
others. A real PostgreSQL 18.6 + pgvector 0.8.6 is started by this script. Writes
docs/benchmarks/keyword_parity.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import git_revision, machine, require_shared, save_result
from bench.query import SETS
from kb_qa.pgserver import LocalPostgres
from vector_store.pg_store import DEFAULT_KEYWORD_BUDGET, PostgresStore, connect_pool


def _lines(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    shared = require_shared() / "eval"
    results: dict[str, Any] = {"machine": machine(), "revision": git_revision(), "budget": DEFAULT_KEYWORD_BUDGET,
                               "sets": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="kbqa-keyword-") as tmp:
        server = LocalPostgres(Path(tmp) / "postgres")
        server.start()
        try:
            for name in SETS:
                texts, questions = _lines(shared / name / "corpus.jsonl"), _lines(shared / name / "queries.jsonl")
                pool = connect_pool(server.create_database(name.replace("-", "_")))
                store = PostgresStore(pool, "kb", 8)
                vectors = np.random.default_rng(0).normal(size=(len(texts), 8)).astype(np.float32)
                for start in range(0, len(texts), 100):
                    part = texts[start : start + 100]
                    store.add(f"doc-{start}", part, [{}] * len(part), vectors[start : start + 100])
                store.save()
                every = PostgresStore(pool, "kb", 8, keyword_budget=0)
                differing = []
                for question in questions:
                    budget = [(h.chunk.id, round(h.score, 4)) for h in store.keyword_search(question, 10)]
                    full = [(h.chunk.id, round(h.score, 4)) for h in every.keyword_search(question, 10)]
                    if budget != full:
                        differing.append({"question": question, "budget": budget, "every_posting": full})
                same = len(questions) - len(differing)
                results["sets"][name] = {"passages": len(texts), "questions": len(questions), "identical": same,
                                         "differing": differing}  # fmt: skip
                print(f"{name}: {same} of {len(questions)} identical", flush=True)
                pool.close()
        finally:
            server.stop("immediate")
    print(f"written: {save_result('keyword_parity', results)}")


if __name__ == "__main__":
    main()
