"""Can the model tell an answer the passages support from a plausible one they do not? Measured.

The fifth method tried for issue 11's "unanswerable questions declined" target (after prompts, the
score threshold, the yes/no probe over the four passages of bench/answerability.py and the
retrieval-feature classifiers of bench/unanswerable.py). SQuAD 2.0's unanswerable questions are
written against one sentence (an entity swapped, a negation added); four passages may be too much
for a small model to check that in, one sentence may not. So the chain answers first, as it does
for a user, and then the model is asked about that answer's evidence alone: the sentence the
sources' top evidence highlight marks for the answer (kb_qa/evidence.py), the question and (in
one of the two wordings) the proposed answer. P(yes) is read from the first token's logits, as in
bench/answerability.py. For the same questions the passage probe of bench/answerability.py is
measured too, side by side.

Reports, per check, the ROC AUC (squad-dev answerable vs unanswerable) and the share of unanswerable
questions declined when the cut-off declines at most 10 % (and 5 %) of the answerable ones.

    .venv/bin/python bench/answer_check.py --limit 100 --unanswerable 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.answerability import CHECKS as PASSAGE_CHECKS
from bench.answerability import auc, p_yes, passage_probe
from bench.common import SHARED, git_revision, machine, model_arguments, model_services
from kb_qa.evaluation import build_article_kb, contains_answer, declines, load_set, spread
from kb_qa.evaluation.answers import _top_highlight_text
from kb_qa.settings import PROJECT_DIR

SENTENCE_CHECKS = {
    "sentence": "Sentence: {sentence}\n\nQuestion: {question}\n\n"
    "Does this sentence answer exactly this question? Reply with yes or no only.",
    "sentence+answer": "Sentence: {sentence}\n\nQuestion: {question}\n\nProposed answer: {answer}\n\n"
    "Does the sentence say that the proposed answer is the answer to exactly this question? "
    "Reply with yes or no only.",
}
OUT = PROJECT_DIR / "docs" / "evaluation" / "answer-check.json"


def declined_at(answerable: list[float], unanswerable: list[float], budget: float) -> tuple[float, float]:
    """The highest cut-off (decline when P(yes) < cut) that declines at most ``budget`` of the answerable
    questions, and the share of unanswerable ones it declines."""
    best = (0.0, 0.0)
    for cut in sorted(set(answerable + unanswerable + [1.0])):
        if sum(v < cut for v in answerable) / len(answerable) <= budget:
            best = (cut, sum(v < cut for v in unanswerable) / len(unanswerable))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arguments(parser, OUT)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--unanswerable", type=int, default=100)
    parser.add_argument("--exclude", type=Path, help="an earlier report: ask other questions than it did (held out)")
    parser.add_argument("--cut", type=float, action="append", default=[],
                        help="also report what this cut-off (chosen on an earlier run) declines")  # fmt: skip
    args = parser.parse_args()
    excluded: set[str] = set()
    if args.exclude:
        earlier = json.loads(args.exclude.read_text(encoding="utf-8"))
        excluded = {r["id"] for records in earlier["groups"].values() for r in records}
    llm, services = model_services(args.root, args.model)
    qa = services.qa
    name = "squad-dev"
    data = load_set(SHARED / "eval" / name)
    build_article_kb(services.knowledge_bases, data, name)
    prompts = qa.prompts["en"]
    checks = ["passages", *SENTENCE_CHECKS]
    report: dict[str, Any] = {
        "machine": machine(),
        "revision": git_revision(),
        "model": args.model,
        "set": name,
        "checks": {"passages": PASSAGE_CHECKS["en"], **SENTENCE_CHECKS},
        "excluded": str(args.exclude) if args.exclude else None,
        "groups": {},
    }
    started_all = time.perf_counter()
    groups = {
        "answerable": spread([q for q in data.queries if q.answers and q.id not in excluded], args.limit),
        "unanswerable": spread([q for q in data.unanswerable if q.id not in excluded], args.unanswerable),
    }
    for label, queries in groups.items():
        records = []
        for i, query in enumerate(queries):
            answer = qa.ask(query.text, mode="kb", knowledge_bases=[name],
                            generation={"temperature": 0.0, "max_new_tokens": 96})  # fmt: skip
            declined = bool(answer.declined or declines(answer.answer, prompts.no_answer))
            record: dict[str, Any] = {"id": query.id, "question": query.text, "answer": answer.answer,
                                      "declined": declined}  # fmt: skip
            if query.answers:
                record["contains"] = contains_answer(answer.answer, query.answers)
            sentence = _top_highlight_text(answer.sources)
            record["sentence"] = sentence
            if record["declined"] or not answer.sources:
                record.update(dict.fromkeys(checks, 0.0))  # declined already: every check declines it too
            else:
                record["passages"] = round(passage_probe(llm, qa, query.text, name, "en"), 4)
                for check, template in SENTENCE_CHECKS.items():
                    user = template.format(sentence=sentence, question=query.text, answer=answer.answer.strip())
                    record[check] = round(p_yes(llm, llm.messages(user, [], prompts.system), "en"), 4)
            records.append(record)
            print(label, i + 1, len(queries), {c: record[c] for c in checks}, flush=True)
        report["groups"][label] = records
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    report["seconds"] = round(time.perf_counter() - started_all, 1)
    summary = {}
    for check in checks:
        a = [r[check] for r in report["groups"]["answerable"]]
        u = [r[check] for r in report["groups"]["unanswerable"]]
        row: dict[str, float] = {"auc": round(auc(a, u), 3)}
        for budget in (0.05, 0.10):
            cut, declined = declined_at(a, u, budget)
            row[f"cut@{budget:.2f}"] = round(cut, 4)
            row[f"unanswerable_declined@{budget:.2f}"] = round(declined, 3)
        for cut in args.cut:
            row[f"at {cut}: answerable declined"] = round(sum(v < cut for v in a) / len(a), 3)
            row[f"at {cut}: unanswerable declined"] = round(sum(v < cut for v in u) / len(u), 3)
        summary[check] = row
        print(check, row, flush=True)
    report["summary"] = summary
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
