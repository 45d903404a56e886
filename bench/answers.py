"""Answer quality per model: the model's own ceiling (the gold passage alone) next to the whole chain.

For each model (bundled names) and dev set (cmrc2018-trial, squad-dev), with the shipped prompts
(configs/prompts) and greedy decoding, the same questions are answered twice:

- **ceiling**: the model is handed the gold passage alone (``evaluate_answers(context="gold")``);
- **chain**: retrieval over the set's articles, then the prompt and the model, as a user gets it.

Reported per set and model: answers containing a gold answer (both), the chain / ceiling ratio,
answerable questions wrongly declined, squad-dev's unanswerable questions declined (chain only),
the top evidence highlight holding a gold answer, and seconds per answer. This table decides the
default model (docs/evaluation.md). Writes docs/evaluation/answers.json after every step.

    .venv/bin/python bench/answers.py --limit 200 --unanswerable 100
    .venv/bin/python bench/answers.py --models Qwen2.5-Coder-0.5B-Instruct --limit 60
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, git_revision, machine
from kb_qa.evaluation import build_article_kb, evaluate_answers, load_set
from kb_qa.llm.factory import build_llm
from kb_qa.services import build_services
from kb_qa.settings import PROJECT_DIR, load_settings

SETS = ("cmrc2018-trial", "squad-dev")
OUT = PROJECT_DIR / "docs" / "evaluation" / "answers.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="Qwen2.5-Coder-1.5B-Instruct,Qwen2.5-Coder-0.5B-Instruct")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--limit", type=int, default=200, help="answerable questions per set")
    parser.add_argument("--unanswerable", type=int, default=100, help="unanswerable questions (squad-dev)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--root", type=Path, default=PROJECT_DIR / ".cache" / "bench-eval", help="scratch KB root")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    report: dict[str, Any] = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    report.update({"machine": machine(), "revision": git_revision(), "limit": args.limit,
                   "unanswerable": args.unanswerable, "prompts": "configs/prompts"})  # fmt: skip
    report.setdefault("results", {})
    for model in args.models.split(","):
        settings = load_settings(overrides={"paths": {"kb_root": str(args.root)}, "llm": {"model": model}})
        llm = build_llm(settings)
        services = build_services(settings, llm=lambda llm=llm: llm)  # type: ignore[misc]
        for name in args.sets.split(","):
            data = load_set(SHARED / "eval" / name)
            kb = name.replace(".", "-")
            build_article_kb(services.knowledge_bases, data, kb)
            row: dict[str, Any] = {}
            for context in ("gold", "retrieved"):
                started = time.perf_counter()
                result = evaluate_answers(
                    data, services.qa, kb, limit=args.limit, unanswerable_limit=args.unanswerable,
                    generation={"max_new_tokens": args.max_tokens}, context=context,
                )  # fmt: skip
                seconds = round(time.perf_counter() - started, 1)
                row[context] = {"answered": result.answered, "unanswerable": result.unanswerable,
                                "examples": result.examples, "seconds": seconds}  # fmt: skip
                print(f"{model} {name} {context}: {json.dumps(result.answered)} {json.dumps(result.unanswerable)}",
                      flush=True)  # fmt: skip
                report["results"].setdefault(model, {})[name] = row
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| set | model | ceiling: contains gold | chain: contains gold | chain / ceiling | answerable wrongly "
        "declined (chain) | unanswerable declined | top highlight has gold | s/answer (chain) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, sets in report["results"].items():
        for name, row in sets.items():
            gold, chain = row.get("gold", {}).get("answered"), row.get("retrieved", {}).get("answered")
            if not gold or not chain:
                continue
            unans = row["retrieved"]["unanswerable"]
            ratio = chain["contains"] / gold["contains"] if gold["contains"] else float("nan")
            declined = f"{unans['declined']:.3f} ({int(unans['questions'])})" if unans.get("questions") else "—"
            lines.append(
                f"| {name} ({int(chain['questions'])}) | {model} | {gold['contains']:.3f} | {chain['contains']:.3f} "
                f"| {ratio:.2f} | {chain['declined']:.3f} | {declined} | {chain['highlight']:.3f} "
                f"| {chain['seconds_per_answer']:.1f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
