"""Answer quality: the model's ceiling (the gold passage alone) and the whole chain."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from kb_qa.domain import SearchHit
from kb_qa.errors import BadRequest, DocumentRejected
from kb_qa.evaluation.dataset import EvalSet, Query
from kb_qa.evaluation.metrics import cmrc_em, cmrc_f1, contains_answer, squad_em, squad_f1
from kb_qa.evaluation.provenance import run_revision
from kb_qa.evaluation.retrieval_eval import Progress, _no_progress

# ------------------------------------------------------------------- answers
_DECLINES = (
    "cannot find", "can't find", "could not find", "couldn't find", "not mentioned", "no information",
    "does not say", "doesn't say", "not provided", "not stated", "unable to answer", "cannot answer",
    "无法回答", "找不到", "没有提到", "未提及", "没有相关", "无相关", "不知道",
)  # fmt: skip


def declines(text: str, no_answer: str) -> bool:
    """The answer says the knowledge base does not hold the answer (the configured text, or a usual phrase)."""
    lowered = text.lower()
    return no_answer.strip().lower() in lowered or any(phrase in lowered for phrase in _DECLINES)


@dataclass
class AnswerResult:
    set: str
    answered: dict[str, float]
    unanswerable: dict[str, float]
    model: str
    seconds: float
    settings: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def examples(self) -> list[dict[str, Any]]:
        """The first five answerable questions' question, gold answers and answer."""
        answerable = [r for r in self.records if r["gold"]][:5]
        return [{k: r[k] for k in ("question", "gold", "answer")} for r in answerable]

    def to_dict(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "model": self.model,
            "answered": self.answered,
            "unanswerable": self.unanswerable,
            "seconds": round(self.seconds, 1),
            "settings": self.settings,
            "examples": self.examples,
            "questions": self.records,
        }

    def markdown(self) -> str:
        a = self.answered
        context = self.settings.get("context", "retrieved")
        lines = [
            f"**{self.set}**, answers by {self.model}, {int(a.get('questions', 0))} questions, "
            f"context: {'the gold passage alone' if context == 'gold' else 'retrieved passages'}\n",
            "| EM | F1 | contains gold | gold in sources | declined (answerable) | top highlight has gold | s/answer |",
            "|---|---|---|---|---|---|---|",
            f"| {a['em']:.1f} | {a['f1']:.1f} | {a['contains']:.3f} | {a['retrieved']:.3f} | {a['declined']:.3f} "
            f"| {a.get('highlight', 0.0):.3f} | {a.get('seconds_per_answer', 0.0):.2f} |",
        ]
        if self.unanswerable.get("questions"):
            u = self.unanswerable
            lines += [
                "",
                f"unanswerable questions: {int(u['questions'])}, correctly declined {u['declined']:.3f} "
                f"(by the score threshold, without the model: {u['declined_by_threshold']:.3f})",
            ]
        return "\n".join(lines) + "\n"


def spread(items: Sequence[Query], limit: int) -> list[Query]:
    """``limit`` items spread evenly over the list (so every article is represented)."""
    if limit >= len(items):
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


CONTEXTS = ("retrieved", "gold")


def gold_passage(data: EvalSet, query: Query, qa: Any) -> SearchHit:
    """The question's gold passage as a source (its cosine to the question under the embedding model)."""
    record = next((c for c in data.corpus if c["_id"] == query.gold_doc), None)
    if record is None:
        raise DocumentRejected(f"{data.folder}: gold passage {query.gold_doc!r} of {query.id} is not in the corpus")
    text = record["text"]
    embeddings = qa.retriever.embeddings
    score = float(embeddings.encode_queries([query.text])[0] @ embeddings.encode_passages([text])[0])
    return SearchHit(kb="gold", document=record.get("title") or record["_id"], chunk_id=0, score=score, text=text,
                     page=None, heading="", ordinal=0, start=0, end=len(text))  # fmt: skip


def _top_highlight_text(sources: Sequence[Any]) -> str:
    best: tuple[float, str] | None = None
    for source in sources:
        for h in source.highlights:
            if best is None or h["score"] > best[0]:
                best = (h["score"], source.text[h["start"] : h["end"]])
    return best[1] if best else ""


def evaluate_answers(
    data: EvalSet,
    qa: Any,
    knowledge_base: str,
    *,
    limit: int = 50,
    generation: dict[str, Any] | None = None,
    retrieval: dict[str, Any] | None = None,
    context: str = "retrieved",
    unanswerable_limit: int | None = None,
    exclude: Collection[str] = (),
    progress: Progress = _no_progress,
) -> AnswerResult:
    """Ask ``limit`` answerable (and up to ``unanswerable_limit``, default ``limit``, unanswerable)
    questions and score the answers.

    EM/F1 use SQuAD's definition for an English set and CMRC 2018's for a Chinese one.
    ``context="gold"`` hands the model the gold passage alone instead of retrieving (the model's own
    ceiling); unanswerable questions have no gold passage and are then skipped.
    ``highlight``: of the questions whose sources hold a gold answer, the share whose top evidence
    highlight (the best-scoring sentence over all sources) contains one.
    ``records``: one per question asked (its answer, what was scored, and ``gold_source``, the number
    of the first source holding a gold answer), so a reader can see which questions failed and why.
    ``exclude``: question ids not to ask (those of an earlier run), so a second run measures other
    questions; the ``limit`` are then spread over the rest.
    """
    if context not in CONTEXTS:
        raise BadRequest(f"context must be one of {list(CONTEXTS)}, not {context!r}")
    started = time.perf_counter()
    revision = run_revision()  # now: the code that runs, whatever is committed meanwhile
    chinese = data.chinese
    em, f1 = (cmrc_em, cmrc_f1) if chinese else (squad_em, squad_f1)
    generation = {"temperature": 0.0, "max_new_tokens": 96, **(generation or {})}
    answerable = [q for q in data.queries if q.answers]
    if not answerable:
        raise DocumentRejected(f"{data.folder}: no question has gold answers")
    totals: dict[str, float] = {"em": 0.0, "f1": 0.0, "contains": 0.0, "retrieved": 0.0, "declined": 0.0}
    highlighted = 0
    records: list[dict[str, Any]] = []
    model = ""
    held_out = set(exclude)
    chosen = spread([q for q in answerable if q.id not in held_out], limit)
    if not chosen:
        raise BadRequest(f"{data.folder}: every answerable question is excluded; nothing left to ask")
    answer_seconds = 0.0
    for i, query in enumerate(chosen):
        asked = time.perf_counter()
        if context == "gold":
            answer = qa.ask(query.text, mode="kb", generation=generation, passages=[gold_passage(data, query, qa)])
        else:
            answer = qa.ask(query.text, mode="kb", knowledge_bases=[knowledge_base], generation=generation,
                            retrieval=retrieval)  # fmt: skip
        seconds = time.perf_counter() - asked
        answer_seconds += seconds
        model = answer.models.get("llm", model)
        no_answer = qa.prompts[answer.language].no_answer
        f1_score = f1(answer.answer, query.answers)
        record = {
            "id": query.id,
            "question": query.text,
            "gold": query.answers,
            "answer": answer.answer,
            "em": em(answer.answer, query.answers),
            "f1": round(f1_score, 3),
            "contains": contains_answer(answer.answer, query.answers),
            "gold_source": next(
                (n for n, s in enumerate(answer.sources, 1) if contains_answer(s.text, query.answers)), None
            ),
            "declined": bool(answer.declined or declines(answer.answer, no_answer)),
            "seconds": round(seconds, 2),
        }
        records.append(record)
        totals["em"] += record["em"]
        totals["f1"] += f1_score
        totals["contains"] += record["contains"]
        found = record["gold_source"] is not None
        totals["retrieved"] += found
        totals["declined"] += record["declined"]
        if found:
            record["highlight"] = contains_answer(_top_highlight_text(answer.sources), query.answers)
            highlighted += record["highlight"]
        progress("answering", i + 1, len(chosen))
    n = len(chosen)
    answered = {k: round(v / n * (100 if k in ("em", "f1") else 1), 3) for k, v in totals.items()}
    answered["questions"] = n
    answered["highlight"] = round(highlighted / totals["retrieved"], 3) if totals["retrieved"] else 0.0
    answered["seconds_per_answer"] = round(answer_seconds / n, 2)
    unanswerable: dict[str, float] = {"questions": 0}
    u_limit = limit if unanswerable_limit is None else unanswerable_limit
    asks_unanswerable = context == "retrieved" and u_limit > 0  # they have no gold passage for the ceiling
    chosen_u = spread([q for q in data.unanswerable if q.id not in held_out], u_limit) if asks_unanswerable else []
    if chosen_u:
        refused = by_threshold = 0
        for i, query in enumerate(chosen_u):
            answer = qa.ask(query.text, mode="kb", knowledge_bases=[knowledge_base], generation=generation,
                            retrieval=retrieval)  # fmt: skip
            no_answer = qa.prompts[answer.language].no_answer
            declined = bool(answer.declined or declines(answer.answer, no_answer))
            refused += declined
            by_threshold += answer.declined
            records.append({"id": query.id, "question": query.text, "gold": [], "answer": answer.answer,
                            "declined": declined, "declined_by_threshold": bool(answer.declined)})  # fmt: skip
            progress("unanswerable", i + 1, len(chosen_u))
        m = len(chosen_u)
        unanswerable = {
            "questions": m,
            "declined": round(refused / m, 3),
            "declined_by_threshold": round(by_threshold / m, 3),
        }
    settings = {
        "metric": "cmrc2018" if chinese else "squad",
        "context": context,
        "generation": generation,
        "retrieval": retrieval or {},
        # the prompt layout the answers were given, so two result files can be told apart
        "prompts_dir": str(getattr(qa, "prompts_dir", "")),
        "passage_order": getattr(qa, "passage_order", None),
        "revision": revision,
        "excluded": len(held_out),
    }
    return AnswerResult(data.name, answered, unanswerable, model, time.perf_counter() - started, settings, records)
