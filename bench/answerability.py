"""Can the model tell whether the passages hold the answer? An answerability probe, measured.

For each question (squad-dev answerable and unanswerable, cmrc2018-trial answerable) the chain's
own retrieval and prompt are built; instead of the answer instruction the user turn ends with a
yes/no question ("Do the passages above state the answer to the question?") and the probability
the model gives "yes" (vs "no") for its first token is read from llama.cpp's logits. The prompt
shares its whole prefix (system, passages, question) with the answer prompt, so in the chain the
check costs only the few tokens of the check instruction plus one forward step.

Reports P(yes) per group, the ROC AUC (answerable vs unanswerable on squad-dev) and, for each
cut-off, the share of unanswerable questions declined and of answerable ones wrongly declined.

    .venv/bin/python bench/answerability.py --limit 40 --unanswerable 40
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, git_revision, machine, model_arguments, model_services
from kb_qa.evaluation import build_article_kb, load_set, spread
from kb_qa.settings import PROJECT_DIR

CHECKS = {
    "en": "Do the passages above state the answer to this question? Reply with yes or no only.",
    "zh": "上面的段落是否写明了这个问题的答案？只回答“是”或“否”。",
}
OUT = PROJECT_DIR / "docs" / "evaluation" / "answerability.json"


def p_yes(llm: Any, messages: list[dict[str, str]], language: str) -> float:
    """P(yes) / (P(yes) + P(no)) for the model's first token."""
    import numpy as np

    from kb_qa.llm.llamacpp_backend import llama_cpp_module

    llama_cpp = llama_cpp_module()
    backend = llm.backend
    llama = backend.llama
    tokens = backend.prompt_tokens(messages)
    gen = llama.generate(tokens, temp=0.0, top_k=1)
    next(gen)
    ptr = llama_cpp.llama_get_logits_ith(llama._ctx.ctx, -1)
    logits = np.ctypeslib.as_array(ptr, shape=(llama.n_vocab(),)).astype(np.float64)
    gen.close()
    words = (("是", "有"), ("否", "不", "没")) if language == "zh" else (("yes", "Yes", "YES"), ("no", "No", "NO"))

    def mass(options: tuple[str, ...]) -> float:
        ids = {llama.tokenize(w.encode(), add_bos=False, special=False)[0] for w in options}
        top = logits.max()
        return float(sum(math.exp(logits[i] - top) for i in ids))

    yes, no = mass(words[0]), mass(words[1])
    return yes / (yes + no)


def passage_probe(llm: Any, qa: Any, question: str, knowledge_base: str, language: str) -> float:
    """P(yes) for the chain's own prompt up to the question (retrieval, the shipped passage layout)
    followed by CHECKS[language] instead of the answer instruction; 0 when nothing is retrieved."""
    prompts = qa.prompts[language]
    hits = qa.retriever.retrieve(question, [knowledge_base])
    if not hits:
        return 0.0
    context = "\n\n".join(qa._passage_text(prompts, i, h) for i, h in enumerate(hits, 1))
    grounded = prompts.grounded.format(context=context, question=question)
    head = grounded[: grounded.index(question) + len(question)]
    return p_yes(llm, llm.messages(f"{head}\n\n{CHECKS[language]}", [], prompts.system), language)


def auc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg)) if pos and neg else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arguments(parser, OUT)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--unanswerable", type=int, default=40)
    args = parser.parse_args()
    llm, services = model_services(args.root, args.model)
    qa = services.qa
    report: dict[str, Any] = {"machine": machine(), "revision": git_revision(), "model": args.model, "groups": {}}
    for name in ("squad-dev", "cmrc2018-trial"):
        data = load_set(SHARED / "eval" / name)
        build_article_kb(services.knowledge_bases, data, name)
        groups = {f"{name} answerable": spread([q for q in data.queries if q.answers], args.limit)}
        if data.unanswerable:
            groups[f"{name} unanswerable"] = spread(data.unanswerable, args.unanswerable)
        for label, queries in groups.items():
            values = []
            started = time.perf_counter()
            for query in queries:
                language = "zh" if data.chinese else "en"
                values.append(round(passage_probe(llm, qa, query.text, name, language), 4))
            report["groups"][label] = {"p_yes": values, "seconds": round(time.perf_counter() - started, 1)}
            print(label, f"median {sorted(values)[len(values) // 2]:.3f}", flush=True)
            args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    squad_a = report["groups"]["squad-dev answerable"]["p_yes"]
    squad_u = report["groups"]["squad-dev unanswerable"]["p_yes"]
    cmrc_a = report["groups"]["cmrc2018-trial answerable"]["p_yes"]
    report["auc_squad"] = round(auc(squad_a, squad_u), 3)
    rows = []
    for cut in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        rows.append({
            "cut": cut,
            "squad_unanswerable_declined": round(sum(v < cut for v in squad_u) / len(squad_u), 3),
            "squad_answerable_declined": round(sum(v < cut for v in squad_a) / len(squad_a), 3),
            "cmrc_answerable_declined": round(sum(v < cut for v in cmrc_a) / len(cmrc_a), 3),
        })  # fmt: skip
    report["cuts"] = rows
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print("AUC squad", report["auc_squad"])
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
