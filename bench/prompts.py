"""Prompt sweep: each prompt variant in bench/prompt_variants/ through the whole chain on both dev sets.

For every variant (a folder with en.yaml and zh.yaml) and set (cmrc2018-trial, squad-dev) the same
questions go through retrieval, the variant's prompt and the chat model (greedy), and the harness
scores them (kb_qa.evaluation.evaluate_answers): answers containing a gold answer, answerable
questions wrongly declined, squad's unanswerable questions declined, seconds per answer. The
knowledge bases are built once (incrementally) under --root and shared by every variant and the model
is loaded once. Results go to docs/evaluation/prompts-<model>.json after every step, and a markdown
table is printed at the end.

    .venv/bin/python bench/prompts.py --model Qwen2.5-Coder-0.5B-Instruct --limit 30 --unanswerable 20
    .venv/bin/python bench/prompts.py --context gold --variants baseline,own_words
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED
from kb_qa.chain import QAChain
from kb_qa.evaluation import build_article_kb, evaluate_answers, load_set
from kb_qa.llm.factory import build_llm
from kb_qa.services import build_services
from kb_qa.settings import PROJECT_DIR, load_settings

VARIANTS = PROJECT_DIR / "bench" / "prompt_variants"
SETS = ("cmrc2018-trial", "squad-dev")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="llm.model (default: the configured one)")
    parser.add_argument("--variants", default="", help="comma-separated variant folders (default: all)")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--limit", type=int, default=30, help="answerable questions per set")
    parser.add_argument("--unanswerable", type=int, default=20, help="unanswerable questions (squad-dev)")
    parser.add_argument("--context", choices=("retrieved", "gold"), default="retrieved")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--top-k", type=int, default=None, help="retrieval.top_k (default: the configured one)")
    parser.add_argument("--root", type=Path, default=PROJECT_DIR / ".cache" / "bench-eval", help="scratch KB root")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    overrides: dict[str, Any] = {"paths": {"kb_root": str(args.root)}}
    if args.model:
        overrides["llm"] = {"model": args.model}
    settings = load_settings(overrides=overrides)
    services = build_services(settings)
    llm = build_llm(settings)
    names = [v for v in args.variants.split(",") if v] or sorted(p.name for p in VARIANTS.iterdir() if p.is_dir())
    model = llm.backend.name
    out = args.out or PROJECT_DIR / "docs" / "evaluation" / f"prompts-{args.context}-{model}.json"
    report: dict[str, Any] = {
        "model": model,
        "context": args.context,
        "limit": args.limit,
        "unanswerable": args.unanswerable,
        "top_k": args.top_k or settings.retrieval.top_k,
        "results": {},
    }
    sets = {}
    for name in args.sets.split(","):
        data = load_set(SHARED / "eval" / name)
        if args.context == "retrieved":
            started = time.perf_counter()
            build_article_kb(services.knowledge_bases, data, name.replace(".", "-"))
            print(f"{name}: knowledge base ready in {time.perf_counter() - started:.0f} s", flush=True)
        sets[name] = data
    retrieval = {"top_k": args.top_k} if args.top_k else None
    for variant in names:
        qa = QAChain(services.retriever, lambda: llm, VARIANTS / variant, rewrite_followups=False)
        for name, data in sets.items():
            result = evaluate_answers(
                data,
                qa,
                name.replace(".", "-"),
                limit=args.limit,
                unanswerable_limit=args.unanswerable,
                generation={"max_new_tokens": args.max_tokens},
                retrieval=retrieval,
                context=args.context,
            )
            row = {"answered": result.answered, "unanswerable": result.unanswerable, "examples": result.examples}
            report["results"].setdefault(variant, {})[name] = row
            u = result.unanswerable.get("declined")
            print(
                f"{variant:12} {name:15} contains {result.answered['contains']:.3f} "
                f"declined(answerable) {result.answered['declined']:.3f} "
                f"unanswerable declined {u if u is not None else '-'} "
                f"highlight {result.answered['highlight']:.3f} s/answer {result.answered['seconds_per_answer']:.2f}",
                flush=True,
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"{report['model']}, context {report['context']}, {report['limit']} answerable questions per set"
        f" (+{report['unanswerable']} unanswerable on squad-dev), top_k {report['top_k']}, greedy\n",
        "| variant | cmrc contains gold | cmrc wrongly declined | squad contains gold | squad wrongly declined "
        "| squad unanswerable declined | s/answer |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, sets in report["results"].items():
        cmrc = sets.get("cmrc2018-trial", {}).get("answered", {})
        squad = sets.get("squad-dev", {}).get("answered", {})
        unans = sets.get("squad-dev", {}).get("unanswerable", {})
        seconds = [s["answered"]["seconds_per_answer"] for s in sets.values()]
        lines.append(
            f"| {variant} | {cmrc.get('contains', float('nan')):.3f} | {cmrc.get('declined', float('nan')):.3f} "
            f"| {squad.get('contains', float('nan')):.3f} | {squad.get('declined', float('nan')):.3f} "
            f"| {unans.get('declined', float('nan')):.3f} | {sum(seconds) / max(1, len(seconds)):.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
