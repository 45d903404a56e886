"""Evidence highlights: how often the top highlighted sentence holds a gold answer, per signal weight.

For questions of both dev sets, the passages are retrieved as the chain retrieves them (top_k 4),
and the evidence finder highlights them for the question (what the sources event shows before the
answer exists). Among questions whose passages hold a gold answer, the share whose best-scoring
highlighted sentence holds one, for meaning weights 0 (keywords only) to 1 (cosine only). No chat
model is involved, so hundreds of questions take a minute.

    .venv/bin/python bench/evidence.py [--limit 300]

Writes docs/evaluation/evidence.json; docs/evaluation.md quotes the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, git_revision
from kb_qa.evaluation import build_article_kb, contains_answer, load_set, spread
from kb_qa.evidence import EvidenceFinder, top_highlight
from kb_qa.services import build_services
from kb_qa.settings import PROJECT_DIR, load_settings

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--root", type=Path, default=PROJECT_DIR / ".cache" / "bench-eval")
    args = parser.parse_args()
    services = build_services(load_settings(overrides={"paths": {"kb_root": str(args.root)}}))
    finder = EvidenceFinder(services.embeddings)
    report: dict[str, Any] = {"revision": git_revision(), "limit": args.limit, "results": {}}
    for name in ("cmrc2018-trial", "squad-dev"):
        data = load_set(SHARED / "eval" / name)
        kb = name.replace(".", "-")
        build_article_kb(services.knowledge_bases, data, kb)
        hits = dict.fromkeys(WEIGHTS, 0)
        found = 0
        for query in spread([q for q in data.queries if q.answers], args.limit):
            passages = [h.text for h in services.retriever.retrieve(query.text, [kb], top_k=4)]
            if not any(contains_answer(p, query.answers) for p in passages):
                continue
            found += 1
            for weight in WEIGHTS:
                best = top_highlight(finder.find(passages, query.text, meaning_weight=weight))
                if best is not None:
                    index, highlight = best
                    hits[weight] += contains_answer(passages[index][highlight.start : highlight.end], query.answers)
        shares = {str(w): round(h / found, 3) for w, h in hits.items()}
        report["results"][name] = {"questions_with_gold_in_sources": found, "top_highlight_has_gold": shares}
        print(name, report["results"][name], flush=True)
    out = PROJECT_DIR / "docs" / "evaluation" / "evidence.json"
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print("| meaning weight | " + " | ".join(report["results"]) + " |")
    print("|---|" + "---|" * len(report["results"]))
    for w in WEIGHTS:
        cells = " | ".join(f"{r['top_highlight_has_gold'][str(w)]:.3f}" for r in report["results"].values())
        print(f"| {w} | {cells} |")


if __name__ == "__main__":
    main()
