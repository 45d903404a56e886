"""Do the answerability checks measured so far add up? Every check the same questions have, combined.

bench/answer_check.py (after the answer: the four-passage probe, the answer's sentence, the sentence
with the proposed answer) and bench/answerability_sentence.py (before it: the question's sentence,
two wordings) stored P(yes) per question; the first 100 answerable and 100 unanswerable squad-dev
questions of answer_check's first run were also asked by answerability_sentence. This script joins
them by question id (no model runs) and fits a logistic regression over the checks' log-odds,
5-fold cross-validated, repeated with 20 shuffles: the cut-off is chosen in each training fold to
decline at most 10 % of its answerable questions, then applied to the held-out fold (and, as the
optimistic reading, the cut read off the held-out scores themselves at 10 %). Plus, for
comparison, three word-overlap features of the question against its sentence (the idf-weighted
share of the question's words missing from it, the rarest missing word, capitalised words and
numbers missing) — SQuAD 2.0's unanswerable questions are written to overlap their sentence.

    .venv/bin/python bench/answerability_combined.py
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, git_revision, machine
from kb_qa.settings import PROJECT_DIR

EVALUATION = PROJECT_DIR / "docs" / "evaluation"
OUT = EVALUATION / "answerability-combined.json"
CHECKS = {  # the model checks (P(yes) in the stored reports): what each is
    "passages": "the four-passage probe (after)",
    "sentence": "the answer's sentence (after)",
    "sentence+answer": "the answer's sentence with the proposed answer (after)",
    "q_answers": "the question's sentence, 'answer exactly' (before)",
    "q_states": "the question's sentence, 'state the answer' (before)",
}
COMBINATIONS = [
    ["passages", "sentence"],
    ["sentence", "q_answers"],
    ["passages", "sentence", "q_answers"],
    ["passages", "sentence", "q_answers", "q_states"],
    ["passages", "sentence", "sentence+answer", "q_answers", "q_states"],
    ["passages", "sentence", "q_answers", "missing_share", "rarest_missing", "names_missing"],
]
_STOP = set("the a an of in on at to for by with from and or is was were are be been what which who whom whose when "
            "where why how did does do that this these those as its it his her their".split())  # fmt: skip


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def rows(after: dict[str, Any], before: dict[str, Any], corpus: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per question both reports hold: ``unanswerable`` (the label) and every feature."""
    df: Counter[str] = Counter()
    for passage in corpus:
        df.update(set(_tokens(passage["text"])))
    idf = lambda w: math.log((len(corpus) + 1) / (df.get(w, 0) + 1))  # noqa: E731
    sentences = {r["id"]: r for g in ("squad-dev answerable", "squad-dev unanswerable")
                 for r in before["groups"][g]["records"]}  # fmt: skip
    out = []
    for group in ("answerable", "unanswerable"):
        for record in after["groups"][group]:
            pre = sentences.get(record["id"])
            if pre is None:
                continue
            words = [w for w in _tokens(record["question"]) if w not in _STOP]
            held = set(_tokens(pre["sentence"]))
            missing = [idf(w) for w in words if w not in held]
            names = re.findall(r"\b[A-Z][a-zA-Z0-9]+|\b\d+\b", record["question"])[1:]
            out.append({
                "id": record["id"], "unanswerable": group == "unanswerable",
                "passages": record["passages"], "sentence": record["sentence"],
                "sentence+answer": record["sentence+answer"], "q_answers": pre["answers"], "q_states": pre["states"],
                "missing_share": sum(missing) / (sum(idf(w) for w in words) or 1.0),
                "rarest_missing": max(missing, default=0.0),
                "names_missing": float(sum(w.lower() not in held for w in names)),
            })  # fmt: skip
    return out


def _log_odds(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def features(row: dict[str, Any], names: list[str]) -> list[float]:
    return [_log_odds(row[n]) if n in CHECKS else row[n] for n in names]


def cross_validated(data: list[dict[str, Any]], names: list[str], budget: float, repeats: int) -> dict[str, float]:
    """Mean over ``repeats`` shuffles of 5-fold cross-validation: ROC AUC, the unanswerable questions
    declined and the answerable ones declined, the cut-off chosen on each training fold."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    x = np.array([features(r, names) for r in data])
    y = np.array([r["unanswerable"] for r in data], dtype=int)
    aucs, declined, wrongly, at_budget = [], [], [], []
    for seed in range(repeats):
        scores, cuts = np.zeros(len(y)), np.zeros(len(y))
        for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
            model = LogisticRegression().fit(x[train], y[train])
            answerable = sorted(model.decision_function(x[train][y[train] == 0]), reverse=True)
            cuts[test] = answerable[int(budget * len(answerable))]  # decline above: at most budget of them
            scores[test] = model.decision_function(x[test])
        decline = scores > cuts
        aucs.append(roc_auc_score(y, scores))
        declined.append(decline[y == 1].mean())
        wrongly.append(decline[y == 0].mean())
        # the same out-of-fold scores with the cut read off them: exactly at the budget (optimistic cut)
        answerable = sorted(scores[y == 0], reverse=True)
        at_budget.append((scores[y == 1] > answerable[int(budget * len(answerable))]).mean())
    return {"auc": round(float(np.mean(aucs)), 3), "unanswerable_declined": round(float(np.mean(declined)), 3),
            "answerable_declined": round(float(np.mean(wrongly)), 3),
            "unanswerable_declined_at_budget": round(float(np.mean(at_budget)), 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--after", type=Path, default=EVALUATION / "answer-check.json")
    parser.add_argument("--before", type=Path, default=EVALUATION / "answerability-sentence.json")
    parser.add_argument("--budget", type=float, default=0.10, help="share of answerable questions a cut may decline")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from sklearn.metrics import roc_auc_score

    after = json.loads(args.after.read_text(encoding="utf-8"))
    before = json.loads(args.before.read_text(encoding="utf-8"))
    corpus = [json.loads(line) for line in (SHARED / "eval" / "squad-dev" / "corpus.jsonl").open(encoding="utf-8")]
    data = rows(after, before, corpus)
    labels = [r["unanswerable"] for r in data]
    single = {name: round(float(roc_auc_score(labels, [-features(r, [name])[0] if name in CHECKS else r[name]
                                                         for r in data])), 3)
              for name in [*CHECKS, "missing_share", "rarest_missing", "names_missing"]}  # fmt: skip
    combined = [
        {"features": names, **cross_validated(data, names, args.budget, args.repeats)} for names in COMBINATIONS
    ]
    report = {"machine": machine(), "revision": git_revision(), "after": str(args.after), "before": str(args.before),
              "questions": {"answerable": labels.count(False), "unanswerable": labels.count(True)},
              "budget": args.budget, "repeats": args.repeats, "single_auc": single, "combined": combined}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"{report['questions']} questions; ROC AUC of each feature alone:")
    for name, value in single.items():
        print(f"  {name:16} {value:.3f}")
    print(f"combined (logistic regression, 5-fold x {args.repeats}, cut at <= {args.budget:.0%} answerable declined):")
    for row in combined:
        print(f"  {' + '.join(row['features']):70} AUC {row['auc']:.3f}  unanswerable declined "
              f"{row['unanswerable_declined']:.3f}  answerable declined {row['answerable_declined']:.3f}  "
              f"(cut read off the held-out scores: {row['unanswerable_declined_at_budget']:.3f})")  # fmt: skip
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
