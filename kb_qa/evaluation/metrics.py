"""Pure metrics: ranking (hit@k, MRR, nDCG) and answers (SQuAD and CMRC 2018 EM/F1, contains-gold)."""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

CUTOFFS = (1, 5, 10)  # hit@k for these k


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
