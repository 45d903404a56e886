"""What ``retrieval.score_threshold`` does to answerable and unanswerable questions.

    .venv/bin/python bench/threshold.py [--set squad-dev]

On a set with ``queries_unanswerable.jsonl`` (SQuAD 2.0 style: questions written to look answerable
from the same articles), the best passage's score (the cosine under the default embedding model)
is computed for every answerable and every unanswerable question, at passage level. For a range of
thresholds it prints the share of unanswerable questions that would be declined without running
the model, and the share of answerable questions that would be wrongly declined.
Writes docs/benchmarks/threshold.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import git_revision, machine, require_shared, save_result
from kb_qa.evaluation import load_set, passage_store
from kb_qa.retrieval import RetrievalOptions, Retriever
from kb_qa.services import build_embeddings
from kb_qa.settings import load_settings
from vector_store import FaissStore

THRESHOLDS = (0.80, 0.82, 0.84, 0.85, 0.86, 0.87, 0.88, 0.90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="squad-dev")
    args = parser.parse_args()
    data = load_set(require_shared() / "eval" / args.set)
    if not data.unanswerable:
        raise SystemExit(f"{args.set} has no queries_unanswerable.jsonl")
    settings = load_settings()
    embeddings = build_embeddings(settings)
    retriever = Retriever(None, embeddings, RetrievalOptions.from_settings(settings.retrieval))  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        store = passage_store(data, retriever, FaissStore(Path(tmp), embeddings.dimension))
        best = {}
        for label, queries in (("answerable", data.queries), ("unanswerable", data.unanswerable)):
            vectors = embeddings.encode_queries([q.text for q in queries])
            best[label] = np.array([store.search(v, 1)[0].score for v in vectors])
    rows = []
    medians = {k: round(float(np.median(v)), 4) for k, v in best.items()}
    print(f"{args.set}: {len(best['answerable'])} answerable, {len(best['unanswerable'])} unanswerable questions")
    print(f"best-passage score: median answerable {medians['answerable']}, unanswerable {medians['unanswerable']}")
    print("threshold  unanswerable declined  answerable wrongly declined")
    for t in THRESHOLDS:
        row = {
            "threshold": t,
            "unanswerable_declined": round(float((best["unanswerable"] < t).mean()), 4),
            "answerable_declined": round(float((best["answerable"] < t).mean()), 4),
        }
        rows.append(row)
        print(f"{t:9.2f}  {row['unanswerable_declined']:22.3f}  {row['answerable_declined']:27.3f}")
    path = save_result(
        "threshold",
        {"machine": machine(), "revision": git_revision(), "set": args.set, "median_best_score": medians, "rows": rows},
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
