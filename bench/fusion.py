"""How the hybrid fusion settings were chosen: a sweep at passage level on both evaluation sets.

    .venv/bin/python bench/fusion.py [--sets squad-dev cmrc2018-trial]

Runs the evaluation harness (kb_qa/evaluation/, passage level, the default embedding model) with
dense alone, BM25 alone, reciprocal-rank fusion (k = 60 and 10) and weighted min-max fusion over a
range of dense weights and candidate-list lengths, all on the same embedded corpus and questions.
Writes docs/benchmarks/fusion.json; the chosen defaults are in configs/settings.yaml (retrieval).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import git_revision, machine, require_shared, save_result
from kb_qa.evaluation import evaluate_retrieval, load_set
from kb_qa.retrieval import RetrievalOptions, Retriever
from kb_qa.services import build_embeddings
from kb_qa.settings import load_settings

VARIANTS: dict[str, dict[str, Any]] = {
    "dense": {"method": "dense"},
    "bm25": {"method": "bm25"},
    "rrf k=60": {"fusion": "rrf", "rrf_k": 60},
    "rrf k=10": {"fusion": "rrf", "rrf_k": 10},
    **{
        f"weighted w={w} n=50": {"fusion": "weighted", "dense_weight": w, "candidates": 50}
        for w in (0.3, 0.4, 0.5, 0.6, 0.7)
    },
    **{f"weighted w=0.5 n={n}": {"fusion": "weighted", "dense_weight": 0.5, "candidates": n} for n in (10, 20, 100)},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["squad-dev", "cmrc2018-trial"])
    args = parser.parse_args()
    shared = require_shared()
    settings = load_settings()
    embeddings = build_embeddings(settings)
    retriever = Retriever(None, embeddings, RetrievalOptions.from_settings(settings.retrieval))  # type: ignore[arg-type]
    results = {}
    for name in args.sets:
        data = load_set(shared / "eval" / name)
        result = evaluate_retrieval(data, retriever, variants=VARIANTS)
        results[name] = result.methods
        print(f"\n{name} ({result.queries} questions)")
        print(f"{'variant':<22} hit@1  hit@5  MRR@10")
        for variant, m in result.methods.items():
            print(f"{variant:<22} {m['hit@1']:.3f}  {m['hit@5']:.3f}  {m['mrr@10']:.3f}")
    path = save_result("fusion", {"machine": machine(), "revision": git_revision(), "results": results})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
