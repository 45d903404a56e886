"""The evaluation harness: retrieval quality and answer quality on a question set.

A set is a folder in the layout of ``../shared/data/eval/*`` (BEIR-style, plus the SQuAD fields):

- ``corpus.jsonl``: ``{"_id", "title", "text"}`` per passage;
- ``queries.jsonl``: ``{"_id", "text", "answers", "gold_doc", "article"}`` per question
  (``answers`` and ``article`` are needed only for answers and article-level retrieval);
- ``qrels/*.tsv``: ``query-id  corpus-id  score`` with a header line (default: ``gold_doc``);
- ``docs/<article>.txt``: the articles the passages come from (article level);
- ``queries_unanswerable.jsonl`` (optional): questions the documents cannot answer.

Metrics, as their authors define them:

- **hit@k**: a relevant passage is among the first k; **MRR@10**: mean of 1/rank of the first
  relevant passage (0 beyond 10); **nDCG@10** with binary relevance.
- **Article level**: the docs are ingested through the normal pipeline; a hit is a returned
  passage that contains a gold answer and overlaps the gold passage's characters.
- **SQuAD EM/F1** (English): lowercase, drop punctuation and the articles a/an/the, collapse white
  space; EM = equal; F1 = overlap of the token bags; the best over the gold answers; mean x 100.
- **CMRC 2018 EM/F1** (Chinese): each CJK character is a token, other runs are words; punctuation
  removed; F1 from the longest common contiguous substring; EM = equal; best over the golds.
"""

from __future__ import annotations

import json
import math
import re
import string
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kb_qa.domain import SearchHit
from kb_qa.errors import BadRequest, DocumentRejected, KbQaError
from kb_qa.retrieval import RetrievalOptions, Retriever
from vector_store import FaissStore

METHODS = ("dense", "bm25", "hybrid")
CUTOFFS = (1, 5, 10)


# ------------------------------------------------------------------ the set
@dataclass
class Query:
    id: str
    text: str
    answers: list[str] = field(default_factory=list)
    gold_doc: str = ""
    article: str = ""


@dataclass
class EvalSet:
    name: str
    folder: Path
    corpus: list[dict[str, str]]
    queries: list[Query]
    qrels: dict[str, set[str]]
    unanswerable: list[Query]

    @property
    def chinese(self) -> bool:
        sample = "".join(q.text for q in self.queries[:50])
        return sum(is_cjk(ch) for ch in sample) > len(sample) * 0.2


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _queries(records: Iterable[dict[str, Any]]) -> list[Query]:
    return [
        Query(
            str(r["_id"]),
            str(r.get("text") or "").strip(),
            list(r.get("answers") or []),
            str(r.get("gold_doc") or ""),
            str(r.get("article") or ""),
        )
        for r in records
        if str(r.get("text") or "").strip()  # a few sets carry empty questions; they test nothing
    ]


def load_set(folder: Path) -> EvalSet:
    """Read a question set (see the module's description for the layout).

    :raises DocumentRejected: naming what is missing or malformed.
    """
    folder = folder.expanduser()
    for needed in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / needed).is_file():
            raise DocumentRejected(f"{folder} is not an evaluation set: {needed} is missing")
    try:
        corpus = [
            {"_id": str(r["_id"]), "title": str(r.get("title") or ""), "text": str(r["text"])}
            for r in _jsonl(folder / "corpus.jsonl")
        ]
        queries = _queries(_jsonl(folder / "queries.jsonl"))
        unanswerable_path = folder / "queries_unanswerable.jsonl"
        unanswerable = _queries(_jsonl(unanswerable_path)) if unanswerable_path.is_file() else []
    except (json.JSONDecodeError, KeyError) as exc:
        raise DocumentRejected(f"{folder}: a line is not a valid record ({exc})") from exc
    qrels: dict[str, set[str]] = {}
    for path in sorted((folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []:
        for line in path.read_text(encoding="utf-8").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 2 and (len(parts) < 3 or float(parts[2] or 0) > 0):
                qrels.setdefault(parts[0], set()).add(parts[1])
    for query in queries:
        if query.id not in qrels and query.gold_doc:
            qrels[query.id] = {query.gold_doc}
    return EvalSet(folder.name, folder, corpus, queries, qrels, unanswerable)


# ---------------------------------------------------------------- metrics
def rank_of(ranked: Sequence[str], relevant: set[str]) -> int | None:
    """1-based rank of the first relevant item, or None."""
    return next((i for i, item in enumerate(ranked, 1) if item in relevant), None)


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1 / math.log2(i + 1) for i, item in enumerate(ranked[:k], 1) if item in relevant)
    ideal = sum(1 / math.log2(i + 1) for i in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal if ideal else 0.0


def ranking_metrics(ranks: Sequence[int | None], ndcgs: Sequence[float]) -> dict[str, float]:
    """hit@1/5/10, MRR@10 and nDCG@10 from the first-relevant ranks and per-query nDCGs."""
    n = len(ranks) or 1
    out = {f"hit@{k}": sum(1 for r in ranks if r is not None and r <= k) / n for k in CUTOFFS}
    out["mrr@10"] = sum(1 / r for r in ranks if r is not None and r <= 10) / n
    out["ndcg@10"] = sum(ndcgs) / n
    return {k: round(v, 4) for k, v in out.items()}


def is_cjk(ch: str) -> bool:
    code = ord(ch)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF or code >= 0x20000


_PUNCT_EN = set(string.punctuation)


def squad_normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT_EN)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_em(prediction: str, golds: Sequence[str]) -> float:
    return max((float(squad_normalize(prediction) == squad_normalize(g)) for g in golds), default=0.0)


def squad_f1(prediction: str, golds: Sequence[str]) -> float:
    def f1(gold: str) -> float:
        pred_tokens, gold_tokens = squad_normalize(prediction).split(), squad_normalize(gold).split()
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if not pred_tokens or not gold_tokens:
            return float(pred_tokens == gold_tokens)
        if common == 0:
            return 0.0
        precision, recall = common / len(pred_tokens), common / len(gold_tokens)
        return 2 * precision * recall / (precision + recall)

    return max((f1(g) for g in golds), default=0.0)


_CMRC_PUNCT = set(
    "-:_*^/\\~`+=，。：？！“”；’《》……·、「」（）－～『』" + string.punctuation
)  # the CMRC 2018 script's list, plus ASCII


def cmrc_tokens(text: str) -> list[str]:
    """CMRC 2018's mixed segmentation: CJK characters one by one, other runs as words, no punctuation."""
    tokens: list[str] = []
    buffer = ""
    for ch in unicodedata.normalize("NFKC", text).lower().strip():
        if is_cjk(ch) or ch in _CMRC_PUNCT or ch.isspace():
            if buffer:
                tokens.append(buffer)
                buffer = ""
            if is_cjk(ch):
                tokens.append(ch)
        else:
            buffer += ch
    if buffer:
        tokens.append(buffer)
    return tokens


def _longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def cmrc_em(prediction: str, golds: Sequence[str]) -> float:
    pred = "".join(cmrc_tokens(prediction))
    return max((float(pred == "".join(cmrc_tokens(g))) for g in golds), default=0.0)


def cmrc_f1(prediction: str, golds: Sequence[str]) -> float:
    def f1(gold: str) -> float:
        pred_tokens, gold_tokens = cmrc_tokens(prediction), cmrc_tokens(gold)
        common = _longest_common_substring(pred_tokens, gold_tokens)
        if common == 0:
            return 0.0
        precision, recall = common / len(pred_tokens), common / len(gold_tokens)
        return 2 * precision * recall / (precision + recall)

    return max((f1(g) for g in golds), default=0.0)


def contains_answer(text: str, golds: Sequence[str]) -> bool:
    """A gold answer appears in ``text`` (compared after each metric's normalisation)."""
    squad_text, cmrc_text = squad_normalize(text), "".join(cmrc_tokens(text))
    for gold in golds:
        squad_gold, cmrc_gold = squad_normalize(gold), "".join(cmrc_tokens(gold))
        if (squad_gold and squad_gold in squad_text) or (cmrc_gold and cmrc_gold in cmrc_text):
            return True
    return False


# ------------------------------------------------------- retrieval: passages
@dataclass
class RetrievalResult:
    set: str
    level: str
    queries: int
    methods: dict[str, dict[str, float]]
    seconds: float
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "level": self.level,
            "queries": self.queries,
            "methods": self.methods,
            "seconds": round(self.seconds, 1),
            "settings": self.settings,
        }

    def markdown(self) -> str:
        header = "| method | hit@1 | hit@5 | hit@10 | MRR@10 | nDCG@10 |\n|---|---|---|---|---|---|\n"
        rows = "".join(
            f"| {name} | {m['hit@1']:.3f} | {m['hit@5']:.3f} | {m['hit@10']:.3f} | {m['mrr@10']:.3f} "
            f"| {m['ndcg@10']:.3f} |\n"
            for name, m in self.methods.items()
        )
        return f"**{self.set}**, {self.level} level, {self.queries} questions\n\n{header}{rows}"


Progress = Callable[[str, int, int], None]


def _no_progress(label: str, done: int, total: int) -> None:
    pass


def passage_store(data: EvalSet, retriever: Retriever, folder: Path, progress: Progress = _no_progress) -> FaissStore:
    """One store holding every corpus passage as its own document (title as the heading line)."""
    texts = [f"{p['title'].replace('_', ' ')}\n{p['text']}" if p["title"] else p["text"] for p in data.corpus]
    vectors = []
    step = 256
    for start in range(0, len(texts), step):
        vectors.append(retriever.embeddings.encode_passages(texts[start : start + step]))
        progress("embedding passages", min(start + step, len(texts)), len(texts))
    matrix = np.vstack(vectors) if vectors else np.zeros((0, retriever.embeddings.dimension), np.float32)
    store = FaissStore(folder, matrix.shape[1])
    for i, passage in enumerate(data.corpus):
        store.add(passage["_id"], [passage["text"]], [{"ordinal": 0}], matrix[i : i + 1], keyword_texts=[texts[i]])
    return store


def evaluate_retrieval(
    data: EvalSet,
    retriever: Retriever,
    *,
    methods: Sequence[str] = METHODS,
    level: str = "passage",
    knowledge_base: str | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
    progress: Progress = _no_progress,
) -> RetrievalResult:
    """Rank passages for every question with each method and score the rankings.

    :param level: ``passage`` (the corpus, one passage per document) or ``article`` (the
        knowledge base ``knowledge_base``, built from the set's docs/ folder by the caller).
    :param variants: instead of ``methods``, named sets of retrieval options to compare, e.g.
        ``{"rrf": {"fusion": "rrf"}}`` (bench/fusion.py sweeps the fusion settings this way).
    """
    started = time.perf_counter()
    queries = [q for q in data.queries if q.id in data.qrels]
    if not queries:
        raise DocumentRejected(f"{data.folder}: no question has a relevance judgement")
    vectors = retriever.embeddings.encode_queries([q.text for q in queries])
    options = retriever.options(top_k=10, score_threshold=-1.0, expand_chars=0, rerank=False)
    runs = {name: options.override(**changes) for name, changes in (variants or {}).items()} or {
        method: options.override(method=method) for method in methods
    }
    if level == "passage":
        with tempfile.TemporaryDirectory() as tmp:
            stores = {"eval": passage_store(data, retriever, Path(tmp), progress)}
            results = _rank_all(data, queries, vectors, stores, retriever, runs, _passage_judge, progress)
    elif level == "article":
        if knowledge_base is None:
            raise ValueError("article level needs the knowledge base built from docs/")
        stores = {knowledge_base: retriever.knowledge_bases.reader(knowledge_base)}
        judge = ArticleJudge(data)
        results = _rank_all(data, queries, vectors, stores, retriever, runs, judge, progress)
    else:
        raise BadRequest(f"level must be passage or article, not {level!r}")
    settings = {
        "embedding_model": retriever.embeddings.name,
        "fusion": options.fusion,
        "dense_weight": options.dense_weight,
        "candidates": options.candidates,
    }
    return RetrievalResult(data.name, level, len(queries), results, time.perf_counter() - started, settings)


Judge = Callable[[Query, set[str], Sequence[SearchHit]], list[str]]


def _passage_judge(query: Query, relevant: set[str], hits: Sequence[SearchHit]) -> list[str]:
    return [hit.document for hit in hits]


class ArticleJudge:
    """Marks a hit relevant when it contains a gold answer and overlaps the gold passage."""

    def __init__(self, data: EvalSet) -> None:
        from loaders import load_file

        self.spans: dict[str, tuple[str, object, int, int]] = {}
        passages = {p["_id"]: p for p in data.corpus}
        files = sorted((data.folder / "docs").rglob("*.txt")) if (data.folder / "docs").is_dir() else []
        keys = {path: path.relative_to(data.folder / "docs").as_posix() for path in files}
        loaded: dict[Path, list[Any]] = {}
        for query in data.queries:
            gold = passages.get(query.gold_doc)
            if gold is None or query.gold_doc in self.spans:
                continue
            text = gold["text"].strip()
            # the article's file first (file names replace characters such as "·" and spaces with "_"),
            # then every file: the passage itself says where it is
            safe = re.sub(r"[\s·/\\:*?\"<>|]", "_", query.article)
            ordered = sorted(files, key=lambda path: path.stem not in (query.article, safe))
            for path in ordered:
                if path not in loaded:
                    loaded[path] = load_file(path)
                found = next(((p, p.page_content.find(text)) for p in loaded[path] if text in p.page_content), None)
                if found is not None:
                    piece, at = found
                    self.spans[query.gold_doc] = (keys[path], piece.metadata.get("page"), at, at + len(text))
                    break

    def __call__(self, query: Query, relevant: set[str], hits: Sequence[SearchHit]) -> list[str]:
        span = self.spans.get(query.gold_doc)
        labels = []
        for hit in hits:
            good = (
                span is not None
                and hit.document == span[0]
                and hit.page == span[1]
                and hit.start < span[3]
                and hit.end > span[2]
                and contains_answer(hit.text, query.answers)
            )
            first = good and query.gold_doc not in labels  # a second passage on the same span counts once
            labels.append(query.gold_doc if first else f"{hit.document}#{hit.chunk_id}")
        return labels


def _rank_all(
    data: EvalSet,
    queries: Sequence[Query],
    vectors: np.ndarray,
    stores: dict[str, FaissStore],
    retriever: Retriever,
    runs: dict[str, RetrievalOptions],
    judge: Judge,
    progress: Progress,
) -> dict[str, dict[str, float]]:
    results = {}
    for method, method_options in runs.items():
        ranks: list[int | None] = []
        ndcgs: list[float] = []
        for i, query in enumerate(queries):
            relevant = data.qrels[query.id]
            hits = retriever.search_stores(query.text, stores, method_options, vector=vectors[i])
            ranked = judge(query, relevant, hits)
            ranks.append(rank_of(ranked, relevant))
            ndcgs.append(ndcg_at(ranked, relevant))
            if i % 200 == 0 or i == len(queries) - 1:
                progress(f"ranking ({method})", i + 1, len(queries))
        results[method] = ranking_metrics(ranks, ndcgs)
    return results


# ------------------------------------------------------------------ articles
def build_article_kb(knowledge_bases: Any, data: EvalSet, name: str, progress: Any = None) -> None:
    """Ingest the set's docs/ folder into knowledge base ``name`` through the normal pipeline."""
    docs = data.folder / "docs"
    if not docs.is_dir():
        raise DocumentRejected(f"{data.folder} has no docs/ folder for article-level evaluation")
    try:
        knowledge_bases.get(name)
    except KbQaError:
        knowledge_bases.create(name, f"evaluation set {data.name}")
    report = knowledge_bases.rebuild(name, docs, progress=progress)
    if report.failed:
        failed = ", ".join(f"{o.path} ({o.error})" for o in report.failed[:3])
        raise DocumentRejected(f"{len(report.failed)} file(s) of {docs} could not be ingested: {failed}")


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
    examples: list[dict[str, Any]]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "model": self.model,
            "answered": self.answered,
            "unanswerable": self.unanswerable,
            "seconds": round(self.seconds, 1),
            "settings": self.settings,
            "examples": self.examples,
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


def _spread(items: Sequence[Query], limit: int) -> list[Query]:
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
    progress: Progress = _no_progress,
) -> AnswerResult:
    """Ask ``limit`` answerable (and up to ``unanswerable_limit``, default ``limit``, unanswerable)
    questions and score the answers.

    EM/F1 use SQuAD's definition for an English set and CMRC 2018's for a Chinese one.
    ``context="gold"`` hands the model the gold passage alone instead of retrieving (the model's own
    ceiling); unanswerable questions have no gold passage and are then skipped.
    ``highlight``: of the questions whose sources hold a gold answer, the share whose top evidence
    highlight (the best-scoring sentence over all sources) contains one.
    """
    if context not in CONTEXTS:
        raise BadRequest(f"context must be one of {list(CONTEXTS)}, not {context!r}")
    started = time.perf_counter()
    chinese = data.chinese
    em, f1 = (cmrc_em, cmrc_f1) if chinese else (squad_em, squad_f1)
    generation = {"temperature": 0.0, "max_new_tokens": 96, **(generation or {})}
    answerable = [q for q in data.queries if q.answers]
    if not answerable:
        raise DocumentRejected(f"{data.folder}: no question has gold answers")
    totals: dict[str, float] = {"em": 0.0, "f1": 0.0, "contains": 0.0, "retrieved": 0.0, "declined": 0.0}
    highlighted = 0
    examples: list[dict[str, Any]] = []
    model = ""
    chosen = _spread(answerable, limit)
    answer_seconds = 0.0
    for i, query in enumerate(chosen):
        asked = time.perf_counter()
        if context == "gold":
            answer = qa.ask(query.text, mode="kb", generation=generation, passages=[gold_passage(data, query, qa)])
        else:
            answer = qa.ask(query.text, mode="kb", knowledge_bases=[knowledge_base], generation=generation,
                            retrieval=retrieval)  # fmt: skip
        answer_seconds += time.perf_counter() - asked
        model = answer.models.get("llm", model)
        no_answer = qa.prompts[answer.language].no_answer
        totals["em"] += em(answer.answer, query.answers)
        totals["f1"] += f1(answer.answer, query.answers)
        totals["contains"] += contains_answer(answer.answer, query.answers)
        found = any(contains_answer(s.text, query.answers) for s in answer.sources)
        totals["retrieved"] += found
        totals["declined"] += answer.declined or declines(answer.answer, no_answer)
        if found:
            highlighted += contains_answer(_top_highlight_text(answer.sources), query.answers)
        if len(examples) < 5:
            examples.append({"question": query.text, "gold": query.answers, "answer": answer.answer})
        progress("answering", i + 1, len(chosen))
    n = len(chosen)
    answered = {k: round(v / n * (100 if k in ("em", "f1") else 1), 3) for k, v in totals.items()}
    answered["questions"] = n
    answered["highlight"] = round(highlighted / totals["retrieved"], 3) if totals["retrieved"] else 0.0
    answered["seconds_per_answer"] = round(answer_seconds / n, 2)
    unanswerable: dict[str, float] = {"questions": 0}
    u_limit = limit if unanswerable_limit is None else unanswerable_limit
    if data.unanswerable and context == "retrieved" and u_limit > 0:
        refused = by_threshold = 0
        chosen_u = _spread(data.unanswerable, u_limit)
        for i, query in enumerate(chosen_u):
            answer = qa.ask(query.text, mode="kb", knowledge_bases=[knowledge_base], generation=generation,
                            retrieval=retrieval)  # fmt: skip
            no_answer = qa.prompts[answer.language].no_answer
            refused += answer.declined or declines(answer.answer, no_answer)
            by_threshold += answer.declined
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
    }
    return AnswerResult(data.name, answered, unanswerable, model, time.perf_counter() - started, examples, settings)
