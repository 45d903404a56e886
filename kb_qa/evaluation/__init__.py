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

from kb_qa.evaluation.answers import CONTEXTS, AnswerResult, declines, evaluate_answers, gold_passage, spread
from kb_qa.evaluation.dataset import EvalSet, Query, load_set
from kb_qa.evaluation.metrics import (
    CUTOFFS,
    cmrc_em,
    cmrc_f1,
    cmrc_tokens,
    contains_answer,
    is_cjk,
    ndcg_at,
    rank_of,
    ranking_metrics,
    squad_em,
    squad_f1,
    squad_normalize,
)
from kb_qa.evaluation.retrieval_eval import (
    METHODS,
    ArticleJudge,
    Judge,
    Progress,
    RetrievalResult,
    build_article_kb,
    evaluate_retrieval,
    passage_store,
)

__all__ = [
    "CONTEXTS",
    "CUTOFFS",
    "METHODS",
    "AnswerResult",
    "ArticleJudge",
    "EvalSet",
    "Judge",
    "Progress",
    "Query",
    "RetrievalResult",
    "build_article_kb",
    "cmrc_em",
    "cmrc_f1",
    "cmrc_tokens",
    "contains_answer",
    "declines",
    "evaluate_answers",
    "evaluate_retrieval",
    "gold_passage",
    "is_cjk",
    "load_set",
    "ndcg_at",
    "passage_store",
    "rank_of",
    "ranking_metrics",
    "spread",
    "squad_em",
    "squad_f1",
    "squad_normalize",
]
