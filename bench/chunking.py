"""Chunk-size sweep on the shared QA sets: how the splitter defaults were chosen.

    .venv/bin/python bench/chunking.py [--queries 600]

For each (chunk_size, chunk_overlap) it builds a knowledge base from the article-level docs/ of
../shared/data/eval/squad-dev and cmrc2018-trial with the default model and measures hit@1 and
hit@5 (a top-k chunk contains a gold answer), hit within a fixed prompt budget of 2,400 characters
(k = 2400 // chunk_size chunks: bigger chunks contain answers more often, but a prompt holds fewer
of them), and the number of chunks (the embedding cost).
Writes docs/benchmarks/chunking.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import contains_answer, git_revision, load_queries, machine, require_shared, save_result
from kb_qa.services import build_embeddings, build_services
from kb_qa.settings import load_settings

CONFIGS = [(250, 50), (400, 60), (600, 90), (800, 120)]
BUDGET = 2400  # characters of passages a prompt can afford; k = BUDGET // chunk_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=600, help="questions per set (default 600)")
    args = parser.parse_args()
    shared = require_shared()
    embeddings = build_embeddings(load_settings(environ={}))
    rows = []
    with tempfile.TemporaryDirectory(prefix="kbqa-chunking-") as tmp:
        for size, overlap in CONFIGS:
            settings = load_settings(
                environ={},
                overrides={
                    "paths": {"kb_root": f"{tmp}/{size}"},
                    "splitter": {"chunk_size": size, "chunk_overlap": overlap},
                },
            )
            services = build_services(settings, embeddings=embeddings)
            kb = services.knowledge_bases
            for set_name in ("squad-dev", "cmrc2018-trial"):
                set_dir = shared / "eval" / set_name
                kb.create(set_name)
                started = time.perf_counter()
                report = kb.rebuild(set_name, set_dir / "docs")
                seconds = time.perf_counter() - started
                queries = load_queries(set_dir, args.queries)
                budget_k = max(1, BUDGET // size)
                hit1 = hit5 = hit_budget = 0
                for q in queries:
                    found = services.retriever.retrieve(q["text"], [set_name], top_k=max(5, budget_k), method="dense")
                    hit1 += bool(found) and contains_answer(found[0].text, q["answers"])
                    hit5 += any(contains_answer(h.text, q["answers"]) for h in found[:5])
                    hit_budget += any(contains_answer(h.text, q["answers"]) for h in found[:budget_k])
                row = {
                    "set": set_name,
                    "chunk_size": size,
                    "chunk_overlap": overlap,
                    "chunks": report.embedded_chunks,
                    "ingest_seconds": round(seconds, 1),
                    "hit@1": round(hit1 / len(queries), 4),
                    "hit@5": round(hit5 / len(queries), 4),
                    "budget_k": budget_k,
                    f"hit@{BUDGET}chars": round(hit_budget / len(queries), 4),
                    "queries": len(queries),
                }
                rows.append(row)
                print(row, flush=True)
    path = save_result("chunking", {"machine": machine(), "revision": git_revision(), "rows": rows})
    print(f"written {path}")


if __name__ == "__main__":
    main()
