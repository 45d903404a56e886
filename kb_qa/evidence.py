"""Evidence highlights: the sentences of each source passage that best support an answer.

Computed locally, without the chat model, so a reader can check an answer at a glance even when
the model is wrong. Each passage is cut into sentences (the splitter's rules: 。！？； and .?!
without abbreviations, and line ends). Every sentence is scored against the answer (or, before
there is an answer, the question) by two signals:

- **meaning**: the cosine, under the embedding model, of the answer as a query and the sentence as
  a passage (e5's ``query: `` / ``passage: `` prefixes);
- **words**: the share of the answer's keywords (the BM25 analyzer: jieba words for Chinese,
  stemmed words for English, no stop words) that the sentence contains, each weighted by its
  rarity among the sentences at hand.

The two are mixed (``0.5 / 0.5`` by default; bench/evidence.py compares the weights) and
a passage's best sentence is highlighted, and its runner-up too when that scores within
``margin`` of it. With an answer, the question's keywords count too (at a third of the
weight): an answer like "Yes [1]." says little by itself.

Spans are character offsets into the passage text (``Source.text``), half-open.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from loaders.splitter import sentence_spans
from vector_store.keyword_index import tokenize

_CITATION = re.compile(r"\s*[\[【]\d{1,3}(?:\s*[,，、]\s*\d{1,3})*[\]】]")
MIN_SENTENCE_CHARS = 4
_CACHE = 2048
_PREPARED_CACHE = 16  # passage lists (about one per reply in flight)


class Encoder(Protocol):
    def encode_queries(self, texts: list[str]) -> np.ndarray: ...

    def encode_passages(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class Highlight:
    start: int
    end: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "score": round(self.score, 4)}


def strip_citations(text: str) -> str:
    return _CITATION.sub("", text).strip()


def sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans of a passage; pieces too short to stand alone join the one before."""
    spans = sentence_spans(text, 0, len(text))
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and end - start < MIN_SENTENCE_CHARS:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _keyword_overlap(target: dict[str, float], sentence_tokens: list[set[str]], idf: dict[str, float]) -> np.ndarray:
    total = sum(idf.get(t, 0.0) * w for t, w in target.items())
    if total <= 0:
        return np.zeros(len(sentence_tokens), dtype=np.float32)
    scores = [sum(idf.get(t, 0.0) * w for t, w in target.items() if t in tokens) / total for tokens in sentence_tokens]
    return np.asarray(scores, dtype=np.float32)


class EvidenceFinder:
    """Highlights for a list of passages, given an answer or a question.

    :param encoder: the embedding model (``encode_queries`` / ``encode_passages``).
    :param meaning_weight: weight of the cosine against the keyword share (0..1).
    :param margin: a second sentence is highlighted when it scores within this of the best.
    """

    def __init__(self, encoder: Encoder, *, meaning_weight: float = 0.5, margin: float = 0.03) -> None:
        self.encoder = encoder
        self.meaning_weight = meaning_weight
        self.margin = margin
        # sentence vectors, kept between the question's and the answer's highlights of one reply
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._prepared_cache: OrderedDict[
            tuple[str, ...], tuple[list[list[tuple[int, int]]], list[str], list[set[str]], dict[str, float]]
        ] = OrderedDict()
        self._lock = threading.Lock()

    def _sentence_vectors(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            fresh = self.encoder.encode_passages(missing)
            with self._lock:
                for text, vector in zip(missing, fresh, strict=True):
                    self._vectors[text] = vector
                while len(self._vectors) > _CACHE:
                    self._vectors.popitem(last=False)
        with self._lock:
            found = [self._vectors.get(t) for t in texts]
        if any(v is None for v in found):  # evicted meanwhile by another thread: compute directly
            return self.encoder.encode_passages(texts)
        return np.stack([v for v in found if v is not None])

    def _prepared(
        self, passages: tuple[str, ...]
    ) -> tuple[list[list[tuple[int, int]]], list[str], list[set[str]], dict[str, float]]:
        """The passages' sentences, their tokens and the tokens' idf: computed once per reply (the
        question's highlights, every citation the checker scores, the answer's highlights)."""
        with self._lock:
            found = self._prepared_cache.get(passages)
            if found is not None:
                self._prepared_cache.move_to_end(passages)
                return found
        cut = [sentences(p) for p in passages]
        flat = [p[s:e] for p, spans in zip(passages, cut, strict=True) for s, e in spans]
        sentence_tokens = [set(tokenize(s)) for s in flat]
        df: Counter[str] = Counter(t for tokens in sentence_tokens for t in tokens)
        n = len(flat)
        idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
        prepared = (cut, flat, sentence_tokens, idf)
        with self._lock:
            self._prepared_cache[passages] = prepared
            while len(self._prepared_cache) > _PREPARED_CACHE:
                self._prepared_cache.popitem(last=False)
        return prepared

    def signals(
        self, passages: Sequence[str], question: str, answer: str = ""
    ) -> tuple[list[list[tuple[int, int]]], np.ndarray, np.ndarray]:
        """Each passage's sentence spans, and for all sentences in order: (cosine, keyword share)."""
        cut, flat, sentence_tokens, idf = self._prepared(tuple(passages))
        if not flat:
            return cut, np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)
        target = strip_citations(answer) or question
        vectors = self._sentence_vectors(flat)
        query = self.encoder.encode_queries([target])[0]
        meaning = vectors @ query
        wanted: dict[str, float] = dict(Counter(tokenize(target)))
        if answer.strip() and target != question:
            for token in tokenize(question):
                wanted[token] = wanted.get(token, 0.0) + 1 / 3
        return cut, meaning, _keyword_overlap(wanted, sentence_tokens, idf)

    def scores(
        self, passages: Sequence[str], question: str, answer: str = "", *, meaning_weight: float | None = None
    ) -> tuple[list[list[tuple[int, int]]], np.ndarray]:
        """Each passage's sentence spans, and every sentence's mixed score (cosine and keyword share)."""
        cut, meaning, words = self.signals(passages, question, answer)
        weight = self.meaning_weight if meaning_weight is None else meaning_weight
        return cut, weight * meaning + (1 - weight) * words

    def find(
        self, passages: Sequence[str], question: str, answer: str = "", *, meaning_weight: float | None = None
    ) -> list[list[Highlight]]:
        """For each passage, its highlighted sentences (best first)."""
        cut, scores = self.scores(passages, question, answer, meaning_weight=meaning_weight)
        result: list[list[Highlight]] = []
        offset = 0
        for spans in cut:
            local = scores[offset : offset + len(spans)]
            offset += len(spans)
            if not spans:
                result.append([])
                continue
            order = np.argsort(-local, kind="stable")
            best = float(local[order[0]])
            chosen = [int(order[0])]
            if len(order) > 1 and best - float(local[order[1]]) <= self.margin:
                chosen.append(int(order[1]))
            result.append([Highlight(spans[i][0], spans[i][1], float(local[i])) for i in chosen])
        return result


class CitationChecker:
    """Checks each ``[n]`` of a streamed answer against the passages, as it arrives.

    Small models often write the right sentence and then cite the wrong passage number. Text is
    passed through unchanged except inside a citation: when ``[k]`` (or ``【k】``) is complete, the
    sentence it closes is scored against every passage (:class:`EvidenceFinder`'s mix of cosine and
    keyword share over each passage's best sentence); when passage ``k`` supports it less than the
    best passage by more than ``margin``, the number is replaced by the best passage's. Citations
    of numbers that do not exist are replaced the same way. What the stream yields is what the final
    record holds, so the streamed text and the record never disagree.
    """

    _OPEN = ("[", "【")

    def __init__(self, finder: EvidenceFinder, passages: Sequence[str], *, margin: float = 0.1) -> None:
        self.finder = finder
        self.passages = list(passages)
        self.margin = margin
        self._text = ""  # everything emitted so far
        self._held = ""
        self.changed: list[tuple[int, int]] = []  # (cited, replaced by)

    def feed(self, delta: str) -> str:
        out = []
        for ch in delta:
            if self._held:
                self._held += ch
                match = _ONE_CITATION.fullmatch(self._held)
                if match:
                    out.append(self._checked(match))
                    self._held = ""
                elif not _CITATION_PREFIX.fullmatch(self._held):
                    out.append(self._held)
                    self._text += self._held
                    self._held = ""
            elif ch in self._OPEN:
                self._held = ch
            else:
                out.append(ch)
                self._text += ch
        return "".join(out)

    def flush(self) -> str:
        held, self._held = self._held, ""
        self._text += held
        return held

    def _checked(self, match: re.Match[str]) -> str:
        cited = int(match.group(2))
        sentence = _last_sentence(self._text)
        number = cited
        if self.passages and sentence:
            support = self._support(sentence)
            best = int(np.argmax(support)) + 1
            own = support[cited - 1] if 1 <= cited <= len(self.passages) else -np.inf
            if best != cited and support[best - 1] - own > self.margin:
                number = best
                self.changed.append((cited, best))
        text = f"{match.group(1)}{number}{match.group(3)}"
        self._text += text
        return text

    def _support(self, sentence: str) -> np.ndarray:
        cut, scores = self.finder.scores(self.passages, sentence, sentence)
        best = []
        offset = 0
        for spans in cut:
            local = scores[offset : offset + len(spans)]
            offset += len(spans)
            best.append(float(local.max()) if len(local) else -1.0)
        return np.asarray(best)


_ONE_CITATION = re.compile(r"([\[【])(\d{1,3})([\]】])")
_CITATION_PREFIX = re.compile(r"[\[【]\d{0,3}")
_SENTENCE_END = re.compile(r"[。！？!?；;]|\.(?=\s)|\n")


def _last_sentence(text: str) -> str:
    """The sentence a citation at the end of ``text`` closes (earlier citations stripped)."""
    body = strip_citations(text).rstrip()
    ends = [m.end() for m in _SENTENCE_END.finditer(body[:-1])] if body else []
    return body[ends[-1] :].strip() if ends else body.strip()


def top_highlight(per_source: Sequence[Sequence[Highlight]]) -> tuple[int, Highlight] | None:
    """(source index, highlight) of the best-scoring highlight over all sources, or None."""
    best: tuple[int, Highlight] | None = None
    for index, highlights in enumerate(per_source):
        for highlight in highlights:
            if best is None or highlight.score > best[1].score:
                best = (index, highlight)
    return best
