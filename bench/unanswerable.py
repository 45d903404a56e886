"""Can what retrieval sees tell SQuAD 2.0's unanswerable questions from answerable ones?

The fourth method measured for issue 11's "unanswerable questions declined" target (after prompts,
the score threshold and the model's own yes/no probe, bench/answerability.py). For every squad-dev
question, answerable (5,665) and unanswerable (2,647), the chain's retrieval (hybrid, top_k 4) runs
and the features below are read from the question and its passages; no model is called.

- ``s1``, ``s_gap``: the best passage's cosine and its lead over the second;
- ``cov_top``, ``cov_all``: the idf-weighted share of the question's keywords (the BM25 analyzer's
  terms) found in the best passage / in all four;
- ``cov_sent``, ``cov_top_sent``: the same share for the best single sentence (of all four passages /
  of the best one) — SQuAD 2.0's unanswerable questions swap an entity or a word of the sentence
  that would answer them;
- ``rare_missing_top``, ``rare_missing_all``: rare keywords (idf > 2.5) of the question missing
  from the best passage / from all four;
- ``num_missing_top``, ``caps_missing_top``: numbers and capitalised words of the question missing
  from the best passage;
- ``neg``: the question has a negation word (an artefact of how the set was written, reported to
  show how much a classifier leans on it);
- ``n_tokens``: the question's keyword count.

Reports each feature's ROC AUC alone, then a logistic regression and a gradient-boosted classifier
trained and scored by 5-fold cross-validation on the set itself (the most favourable case: a
product would have to train on its own users' questions), with and without ``neg``; and for each,
the share of unanswerable questions declined when 10 % (and 5 %) of the answerable ones are.

    .venv/bin/python bench/unanswerable.py
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, git_revision, machine
from kb_qa.evaluation import build_article_kb, load_set
from kb_qa.evidence import sentences
from kb_qa.services import build_services
from kb_qa.settings import PROJECT_DIR, load_settings
from vector_store.keyword_index import tokenize

OUT = PROJECT_DIR / "docs" / "evaluation" / "unanswerable.json"
NEGATION = re.compile(r"\b(not|never|no|n't|none|without|nothing|fail|failed)\b", re.IGNORECASE)
CAPITALISED = re.compile(r"(?<!^)(?<![.?!] )\b[A-Z][a-z]+")
RARE_IDF = 2.5


class Features:
    """The features of one question and its retrieved passages (see the module's description)."""

    def __init__(self, corpus: list[str]) -> None:
        df: dict[str, int] = {}
        for text in corpus:
            for term in set(tokenize(text)):
                df[term] = df.get(term, 0) + 1
        self.df, self.n = df, len(corpus)

    def idf(self, term: str) -> float:
        return math.log((self.n + 1) / (self.df.get(term, 0) + 0.5))

    def __call__(self, question: str, passages: list[str], scores: list[float]) -> dict[str, float]:
        terms = list(dict.fromkeys(tokenize(question)))
        weights = {t: self.idf(t) for t in terms}
        total = sum(weights.values())

        def coverage(text: str) -> float:
            present = set(tokenize(text))
            return sum(w for t, w in weights.items() if t in present) / total if total else 0.0

        top = passages[0] if passages else ""
        every = " ".join(passages)
        all_sentences = [p[a:b] for p in passages for a, b in sentences(p)]
        top_sentences = [top[a:b] for a, b in sentences(top)]
        rare = [t for t, w in weights.items() if w > RARE_IDF]
        in_top, in_all = set(tokenize(top)), set(tokenize(every))
        return {
            "s1": scores[0] if scores else 0.0,
            "s_gap": scores[0] - scores[1] if len(scores) > 1 else 0.0,
            "cov_top": coverage(top),
            "cov_all": coverage(every),
            "cov_sent": max(map(coverage, all_sentences), default=0.0),
            "cov_top_sent": max(map(coverage, top_sentences), default=0.0),
            "rare_missing_top": sum(t not in in_top for t in rare),
            "rare_missing_all": sum(t not in in_all for t in rare),
            "num_missing_top": sum(n not in top for n in re.findall(r"\d+", question)),
            "caps_missing_top": sum(c not in top for c in CAPITALISED.findall(question)),
            "neg": float(bool(NEGATION.search(question))),
            "n_tokens": len(terms),
        }


def declined_at(p_answerable: Any, p_unanswerable: Any, share: float) -> float:
    """Unanswerable questions declined when the cut declines ``share`` of the answerable ones."""
    import numpy as np

    cut = np.quantile(p_answerable, 1 - share)
    return round(float((p_unanswerable > cut).mean()), 3)


def evaluate(rows: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    names = list(rows["answerable"][0])
    x = np.array([[r[k] for k in names] for r in rows["answerable"] + rows["unanswerable"]], dtype=float)
    y = np.array([0] * len(rows["answerable"]) + [1] * len(rows["unanswerable"]))
    alone = {}
    for i, name in enumerate(names):
        auc = float(roc_auc_score(y, x[:, i]))
        alone[name] = {
            "auc": round(max(auc, 1 - auc), 3),
            "higher_when": "unanswerable" if auc >= 0.5 else "answerable",
            "mean_answerable": round(float(x[y == 0, i].mean()), 3),
            "mean_unanswerable": round(float(x[y == 1, i].mean()), 3),
        }
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    models = {
        "logistic regression": lambda: LogisticRegression(max_iter=2000),
        "gradient boosting": lambda: HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0),
    }
    combined = []
    for label, make in models.items():
        for without in ((), ("neg",)):
            keep = [i for i, n in enumerate(names) if n not in without]
            p = cross_val_predict(make(), x[:, keep], y, cv=folds, method="predict_proba")[:, 1]
            combined.append({
                "classifier": label,
                "features": "all" if not without else "all but " + ", ".join(without),
                "auc": round(float(roc_auc_score(y, p)), 3),
                "declined_at_10pct": declined_at(p[y == 0], p[y == 1], 0.10),
                "declined_at_5pct": declined_at(p[y == 0], p[y == 1], 0.05),
            })  # fmt: skip
    return {"alone": alone, "combined": combined}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=PROJECT_DIR / ".cache" / "bench-eval")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    settings = load_settings(overrides={"paths": {"kb_root": str(args.root)}})
    services = build_services(settings)
    data = load_set(SHARED / "eval" / "squad-dev")
    build_article_kb(services.knowledge_bases, data, data.name)
    features = Features([c["text"] for c in data.corpus])
    rows: dict[str, list[dict[str, float]]] = {"answerable": [], "unanswerable": []}
    started = time.perf_counter()
    groups = {"answerable": [q for q in data.queries if q.answers], "unanswerable": data.unanswerable}
    for label, queries in groups.items():
        for i, query in enumerate(queries, 1):
            hits = services.qa.retriever.retrieve(query.text, [data.name], score_threshold=0.0)
            rows[label].append(features(query.text, [h.text for h in hits], [h.score for h in hits]))
            if i % 1000 == 0:
                print(f"{label}: {i}/{len(queries)}", flush=True)
    report = {"machine": machine(), "revision": git_revision(), "set": data.name,
              "questions": {k: len(v) for k, v in rows.items()}, "seconds": round(time.perf_counter() - started, 1),
              **evaluate(rows)}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    for name, row in report["alone"].items():
        print(f"{name:18s} AUC {row['auc']:.3f} (higher when {row['higher_when']})")
    for row in report["combined"]:
        print(row)


if __name__ == "__main__":
    main()
