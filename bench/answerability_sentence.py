"""Before answering: does the best sentence the sources hold answer the question? Measured.

bench/answer_check.py found that the model, shown one sentence instead of four passages, tells
SQuAD 2.0's answerable questions from its unanswerable ones better (ROC AUC 0.78 vs 0.72). There the
sentence was the one the *answer* is highlighted in, so the check could only run after the answer
was streamed. Here the sentence is the sources' top evidence highlight for the *question* (what the
Sources event shows before generation), so the check can run before the model answers and decline
at once, as the score threshold does. No answer is generated.

Questions: squad-dev answerable and unanswerable (the cut-off is chosen on the even-numbered ones
and scored on the odd-numbered ones, so the figure is held out), cmrc2018-trial answerable (every
answerable question declined there is a wrongly declined one). P(yes) from the first token's
logits, as in bench/answerability.py.

    .venv/bin/python bench/answerability_sentence.py --limit 200 --unanswerable 200 --cmrc 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.answer_check import declined_at
from bench.answerability import auc, p_yes
from bench.common import SHARED, git_revision, machine, model_arguments, model_services
from kb_qa.evaluation import build_article_kb, contains_answer, load_set, spread
from kb_qa.evaluation.answers import _top_highlight_text
from kb_qa.settings import PROJECT_DIR

CHECKS = {
    "en": {
        "answers": "Sentence: {sentence}\n\nQuestion: {question}\n\n"
        "Does this sentence answer exactly this question? Reply with yes or no only.",
        "states": "Sentence: {sentence}\n\nQuestion: {question}\n\n"
        "Does the sentence state the answer to this question? Reply with yes or no only.",
    },
    "zh": {
        "answers": "句子：{sentence}\n\n问题：{question}\n\n这个句子是否回答了这个问题？只回答“是”或“否”。",
        "states": "句子：{sentence}\n\n问题：{question}\n\n这个句子是否写明了这个问题的答案？只回答“是”或“否”。",
    },
}
OUT = PROJECT_DIR / "docs" / "evaluation" / "answerability-sentence.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arguments(parser, OUT)
    parser.add_argument("--limit", type=int, default=200, help="squad-dev answerable questions")
    parser.add_argument("--unanswerable", type=int, default=200, help="squad-dev unanswerable questions")
    parser.add_argument("--cmrc", type=int, default=200, help="cmrc2018-trial answerable questions")
    args = parser.parse_args()
    llm, services = model_services(args.root, args.model)
    qa = services.qa
    report: dict[str, Any] = {"machine": machine(), "revision": git_revision(), "model": args.model,
                              "checks": CHECKS, "groups": {}}  # fmt: skip
    started_all = time.perf_counter()
    plan = [("squad-dev", "answerable", args.limit), ("squad-dev", "unanswerable", args.unanswerable),
            ("cmrc2018-trial", "answerable", args.cmrc)]  # fmt: skip
    for name, kind, count in plan:
        data = load_set(SHARED / "eval" / name)
        build_article_kb(services.knowledge_bases, data, name)
        language = "zh" if data.chinese else "en"
        prompts = qa.prompts[language]
        pool = [q for q in data.queries if q.answers] if kind == "answerable" else data.unanswerable
        records = []
        started = time.perf_counter()
        for i, query in enumerate(spread(pool, count)):
            # the Sources event's passages and highlights, as a search request gets them
            found = qa.ask(query.text, mode="search", knowledge_bases=[name])
            sentence = _top_highlight_text(found.sources)
            record: dict[str, Any] = {"id": query.id, "question": query.text, "passages": len(found.sources),
                                      "sentence": sentence}  # fmt: skip
            if query.answers:
                record["sentence_has_gold"] = contains_answer(sentence, query.answers)
            for check, template in CHECKS[language].items():
                if not sentence:  # the threshold left no passage: declined already
                    record[check] = 0.0
                    continue
                user = template.format(sentence=sentence.strip(), question=query.text)
                record[check] = round(p_yes(llm, llm.messages(user, [], prompts.system), language), 4)
            records.append(record)
            print(name, kind, i + 1, {c: record[c] for c in CHECKS[language]}, flush=True)
        report["groups"][f"{name} {kind}"] = {"records": records, "seconds": round(time.perf_counter() - started, 1)}
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    report["seconds"] = round(time.perf_counter() - started_all, 1)
    squad_a = report["groups"]["squad-dev answerable"]["records"]
    squad_u = report["groups"]["squad-dev unanswerable"]["records"]
    cmrc_a = report["groups"]["cmrc2018-trial answerable"]["records"]
    summary: dict[str, Any] = {}
    for check in CHECKS["en"]:
        a = [r[check] for r in squad_a]
        u = [r[check] for r in squad_u]
        row: dict[str, Any] = {"auc": round(auc(a, u), 3), "auc_held_out": round(auc(a[1::2], u[1::2]), 3)}
        for budget in (0.05, 0.10):
            cut, in_sample = declined_at(a[0::2], u[0::2], budget)  # chosen on the even-numbered questions
            row[f"@{budget:.2f}"] = {
                "cut": round(cut, 4),
                "chosen_on: unanswerable declined": round(in_sample, 3),
                "held_out: unanswerable declined": round(sum(v < cut for v in u[1::2]) / len(u[1::2]), 3),
                "held_out: answerable declined": round(sum(v < cut for v in a[1::2]) / len(a[1::2]), 3),
                "cmrc answerable declined": round(sum(r[check] < cut for r in cmrc_a) / len(cmrc_a), 3),
            }
        summary[check] = row
        print(check, json.dumps(row), flush=True)
    report["summary"] = summary
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
