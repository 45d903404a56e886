"""A persisted BM25 keyword index over the chunks of one knowledge base.

**Tokens.** :func:`tokenize` lowercases (after NFKC), cuts Chinese runs with jieba's search mode
(words plus the shorter words inside long ones), splits other text into word tokens, stems English
words (Snowball) and drops a short list of function words in both languages. Queries and chunks go
through the same function.

**Scores.** Okapi BM25 with Lucene's idf, ``ln(1 + (N - df + 0.5) / (df + 0.5))``, ``k1 = 1.2`` and
``b = 0.75``. A BM25 score is unbounded and only comparable within one index and one query; the
retriever turns it into a rank signal and never shows it as a similarity.

**Updates.** Chunks are added and deleted by document, like the FAISS store. The postings are kept
as flat numpy arrays sorted by term (one slice per term); additions and deletions are gathered and
merged in one vectorised pass before the next search or save, so a query never rebuilds anything.
:class:`vector_store.faiss_store.FaissStore` saves the index inside its generations
(``keywords.N.npz``), so the vectors, the chunks and the keywords always switch together.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

K1 = 1.2
B = 0.75
MAX_TOKEN_CHARS = 40

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
_RUNS = re.compile(rf"([{_CJK}]+)|([^\W_{_CJK}]+(?:['’][^\W_{_CJK}]+)?)", re.UNICODE)

# function words that carry no topic in questions or passages (kept short on purpose: BM25's idf
# already discounts common words; these are the ones frequent enough to add noise)
_STOP_EN = frozenset(
    """a an and are as at be been being but by can could did do does for from had has have how i if in
    into is it its of on or s that the their them there these they this those to was were what when
    where which who whom whose why will with would you your""".split()
)
_STOP_ZH = frozenset(
    """的 了 是 在 和 与 及 或 也 都 就 而 之 其 以 于 为 被 把 对 从 向 由 这 那 这个 那个 这些 那些 哪 哪个 哪些
    什么 怎么 怎样 如何 为什么 多少 几 谁 吗 呢 吧 啊 么 有 没有 个 中 上 下 等 即 则 所 该 是否 请问""".split()
)

_jieba_lock = threading.Lock()
_jieba_ready = False


def _jieba() -> object:
    global _jieba_ready
    import jieba

    if not _jieba_ready:
        with _jieba_lock:
            if not _jieba_ready:
                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _jieba_ready = True
    return jieba


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return str(_stemmer().stemWord(word))


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import snowballstemmer

    return snowballstemmer.stemmer("english")


def tokenize(text: str) -> list[str]:
    """The BM25 terms of ``text`` (see the module's description)."""
    text = unicodedata.normalize("NFKC", text).lower()
    tokens: list[str] = []
    jieba = None
    for match in _RUNS.finditer(text):
        cjk, word = match.groups()
        if cjk:
            jieba = jieba or _jieba()
            for piece in jieba.cut_for_search(cjk):  # type: ignore[attr-defined]
                if piece not in _STOP_ZH:
                    tokens.append(piece)
        elif word not in _STOP_EN and len(word) <= MAX_TOKEN_CHARS:
            word = word.replace("’", "'")
            if word.endswith("'s"):
                word = word[:-2]
            tokens.append(_stem(word) if word.isascii() and word.isalpha() else word)
    return tokens


class KeywordIndex:
    """BM25 over chunks, added and deleted by document; thread-safe for readers and one writer."""

    def __init__(self, analyzer: Callable[[str], list[str]] = tokenize) -> None:
        self.analyzer = analyzer
        self._lock = threading.RLock()
        self._vocab: dict[str, int] = {}
        self._terms: list[str] = []
        self._ids = np.zeros(0, np.int64)  # chunk id per row
        self._lengths = np.zeros(0, np.float32)  # tokens per row
        self._alive = np.zeros(0, bool)
        self._offsets = np.zeros(1, np.int64)  # postings of term t: [offsets[t], offsets[t + 1])
        self._rows = np.zeros(0, np.int32)
        self._tf = np.zeros(0, np.float32)
        self._weights = np.zeros(0, np.float32)  # the BM25 tf part of each posting
        self._order = np.zeros(0, np.int64)  # rows sorted by chunk id
        self._by_doc: dict[str, np.ndarray] = {}
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (row, term, tf)
        self._pending_ids: list[int] = []
        self._pending_lengths: list[int] = []
        self._stale = False
        self._last: tuple[str, np.ndarray] | None = None  # the last query's scores (retrieval asks twice)

    # ---------------------------------------------------------------- writing
    def add(self, doc: str, ids: Sequence[int], texts: Sequence[str]) -> None:
        """Replace ``doc``'s chunks with these."""
        analysed = [Counter(self.analyzer(text)) for text in texts]
        with self._lock:
            self.delete(doc)
            start = len(self._ids) + len(self._pending_ids)
            rows = []
            for offset, (chunk_id, counts) in enumerate(zip(ids, analysed, strict=True)):
                row = start + offset
                rows.append(row)
                terms = np.fromiter((self._term_id(t) for t in counts), np.int32, len(counts))
                tfs = np.fromiter(counts.values(), np.float32, len(counts))
                self._pending.append((np.full(len(counts), row, np.int32), terms, tfs))
                self._pending_ids.append(int(chunk_id))
                self._pending_lengths.append(sum(counts.values()))
            if rows:
                self._by_doc[doc] = np.array(rows, np.int64)
            self._stale = True

    def delete(self, doc: str) -> int:
        with self._lock:
            rows = self._by_doc.pop(doc, None)
            if rows is None:
                return 0
            settled = rows[rows < len(self._alive)]
            self._alive[settled] = False
            for row in rows[rows >= len(self._alive)]:  # a pending row is dropped when it settles
                self._pending_lengths[int(row) - len(self._alive)] = -1
            self._stale = True
            return len(rows)

    def _term_id(self, term: str) -> int:
        found = self._vocab.get(term)
        if found is None:
            found = self._vocab[term] = len(self._terms)
            self._terms.append(term)
        return found

    def _settle(self) -> None:
        """Merge pending additions and drop deleted rows (one vectorised pass)."""
        if not self._stale:
            return
        counts = np.diff(self._offsets)
        terms = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        rows, tfs = self._rows, self._tf
        lengths = np.array(self._pending_lengths, np.float32)
        alive = np.concatenate([self._alive, lengths >= 0])
        if self._pending:
            rows = np.concatenate([rows, *(p[0] for p in self._pending)])
            terms = np.concatenate([terms, *(p[1] for p in self._pending)])
            tfs = np.concatenate([tfs, *(p[2] for p in self._pending)])
        keep = alive[rows]
        rows, terms, tfs = rows[keep], terms[keep], tfs[keep]
        renumber = np.cumsum(alive) - 1
        rows = renumber[rows].astype(np.int32)
        order = np.argsort(terms, kind="stable")
        self._rows, self._tf = rows[order], tfs[order]
        self._offsets = np.concatenate([[0], np.cumsum(np.bincount(terms, minlength=len(self._terms)))]).astype(
            np.int64
        )
        all_ids = np.concatenate([self._ids, np.array(self._pending_ids, np.int64)])
        all_lengths = np.concatenate([self._lengths, np.maximum(lengths, 0)])
        self._ids = all_ids[alive]
        self._lengths = all_lengths[alive]
        self._alive = np.ones(len(self._ids), bool)
        self._by_doc = {doc: renumber[r][alive[r]] for doc, r in self._by_doc.items()}
        self._pending, self._pending_ids, self._pending_lengths = [], [], []
        self._reweigh()
        self._stale = False
        self._last = None

    def _reweigh(self) -> None:
        self._order = np.argsort(self._ids, kind="stable")
        if not len(self._ids):
            self._weights = np.zeros(0, np.float32)
            return
        average = float(self._lengths.mean()) or 1.0
        norm = K1 * (1 - B + B * self._lengths / average)
        self._weights = (self._tf * (K1 + 1) / (self._tf + norm[self._rows])).astype(np.float32)

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        with self._lock:
            self._settle()
            return len(self._ids)

    def scores(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """BM25 scores of every chunk for ``query``: ``(chunk_ids, scores)``, aligned, in insertion order."""
        terms = Counter(self.analyzer(query))
        with self._lock:
            self._settle()
            last = self._last
            if last is not None and last[0] == query:
                return self._ids, last[1]
            total = np.zeros(len(self._ids), np.float32)
            n = len(self._ids)
            for term, repeat in terms.items():
                t = self._vocab.get(term)
                if t is None:
                    continue
                lo, hi = int(self._offsets[t]), int(self._offsets[t + 1])
                df = hi - lo
                if df == 0:
                    continue
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                total[self._rows[lo:hi]] += np.float32(idf * repeat) * self._weights[lo:hi]
            self._last = (query, total)
            return self._ids, total

    def lookup(self, wanted: Sequence[int], scores: np.ndarray) -> np.ndarray:
        """The entries of ``scores`` (from :meth:`scores`, no write in between) for chunks ``wanted``; 0 if absent."""
        with self._lock:
            self._settle()
            if not len(wanted) or not len(self._ids):
                return np.zeros(len(wanted), np.float32)
            wanted_ids = np.asarray(wanted, np.int64)
            positions = np.minimum(np.searchsorted(self._ids, wanted_ids, sorter=self._order), len(self._ids) - 1)
            rows = self._order[positions]
            return np.where(self._ids[rows] == wanted_ids, scores[rows], 0).astype(np.float32)

    def search(self, query: str, k: int, ids: Iterable[int] | None = None) -> list[tuple[int, float]]:
        """The ``k`` best chunks for ``query`` as ``(chunk_id, score)``, best first; zero scores are left out.

        :param ids: when given, only these chunks are considered.
        """
        chunk_ids, scores = self.scores(query)
        if ids is not None:
            allowed = np.isin(chunk_ids, np.fromiter(ids, np.int64))
            scores = np.where(allowed, scores, 0)
        return top_k(chunk_ids, scores, k)

    # ------------------------------------------------------------ persistence
    def to_bytes(self) -> bytes:
        with self._lock:
            self._settle()
            docs = sorted(self._by_doc)
            doc_rows = [self._by_doc[d] for d in docs]
            buffer = io.BytesIO()
            np.savez(
                buffer,
                terms=np.frombuffer("\n".join(self._terms).encode("utf-8"), np.uint8),
                ids=self._ids,
                lengths=self._lengths,
                offsets=self._offsets,
                rows=self._rows,
                tf=self._tf,
                # document names as a JSON list: a name may hold any character, a newline too
                doc_names=np.frombuffer(json.dumps(docs, ensure_ascii=False).encode("utf-8"), np.uint8),
                doc_sizes=np.array([len(r) for r in doc_rows], np.int64),
                doc_rows=np.concatenate(doc_rows) if doc_rows else np.zeros(0, np.int64),
            )
            return buffer.getvalue()

    def save(self, path: Path) -> None:
        path.write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: Path, analyzer: Callable[[str], list[str]] = tokenize) -> KeywordIndex:
        index = cls(analyzer)
        with np.load(path) as data:
            terms = bytes(data["terms"]).decode("utf-8")
            index._terms = terms.split("\n") if terms else []
            index._vocab = {t: i for i, t in enumerate(index._terms)}
            index._ids = data["ids"]
            index._lengths = data["lengths"]
            index._alive = np.ones(len(index._ids), bool)
            index._offsets = data["offsets"]
            index._rows = data["rows"]
            index._tf = data["tf"]
            if "doc_names" in data:
                names = json.loads(bytes(data["doc_names"]).decode("utf-8"))
            else:  # written before names were JSON: newline-separated
                docs = bytes(data["docs"]).decode("utf-8")
                names = docs.split("\n") if docs else []
            splits = np.cumsum(data["doc_sizes"])[:-1]
            index._by_doc = dict(zip(names, np.split(data["doc_rows"], splits), strict=True)) if names else {}
        index._reweigh()
        return index


def top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` highest positive scores as ``(id, score)``, best first (ties: lower id first)."""
    positive = np.flatnonzero(scores > 0)
    if k <= 0 or not len(positive):
        return []
    if len(positive) > k:
        part = np.argpartition(-scores[positive], k - 1)[:k]
        positive = positive[part]
    order = np.lexsort((ids[positive], -scores[positive]))
    return [(int(ids[i]), float(scores[i])) for i in positive[order]]
