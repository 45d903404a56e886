"""Question sets on disk: the layout of ../shared/data/eval/* (see the package docstring)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kb_qa.errors import DocumentRejected
from kb_qa.evaluation.metrics import is_cjk


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
