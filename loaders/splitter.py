"""A Chinese- and English-aware splitter that keeps sentences whole.

Rules, in order:

1. Paragraphs (blank lines) are the first boundary; a paragraph that fits in the space left is
   kept with the chunk being built, one that fits in a fresh chunk starts a new chunk.
2. A paragraph too large for one chunk is split at sentence ends: ``。！？；…`` (with any closing
   quote or bracket) and ``. ? !`` followed by white space — never after a known abbreviation
   (``e.g.``, ``Dr.``, ``U.S.``, an initial like ``J.``) and never inside a decimal such as
   ``3.14`` — and at line breaks, so table rows stay whole. Sentences are merged up to
   ``chunk_size`` characters; the next chunk repeats the trailing sentences that fit in
   ``chunk_overlap`` characters.
3. Only a single sentence longer than ``chunk_size`` is cut inside, preferably after a comma
   or a space, with the same overlap.

Each chunk is an exact slice of its piece's text: ``start``/``end`` are character offsets into
it, and ``ordinal`` numbers the chunks of one document from 0, so neighbours can be fetched later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.documents import Document

from loaders.base import text_hash

_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd", "co",
    "corp", "no", "fig", "figs", "vol", "pp", "p", "u.s", "u.k", "a.m", "p.m", "approx", "dept", "est",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mt", "gen",
    "rev", "ph.d", "cf", "al", "ca", "eq", "sec", "art",
}  # fmt: skip
_ZH_END = re.compile(r"(?:[。！？；]|…+|\.{3,})[”’」』）)\]\"']*")
_EN_END = re.compile(r"[.?!]+[\"'”’)\]]*(?=\s|$)")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_SOFT_BREAK = re.compile(r"[，,、：:\s]")


@dataclass(frozen=True)
class Chunk:
    """One chunk: a slice ``[start, end)`` of a loaded piece, with that piece's metadata."""

    text: str
    ordinal: int
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def heading(self) -> str:
        return str(self.metadata.get("heading") or "")

    def embedding_text(self, heading_prefix: bool = True) -> str:
        """The text to embed and index: the heading path on its own line, then the chunk."""
        if heading_prefix and self.heading:
            return f"{self.heading}\n{self.text}"
        return self.text


def _is_abbreviation(text: str, dot: int) -> bool:
    # look at a short window only: searching from 0 would make splitting quadratic
    match = _WORD_BEFORE.search(text, max(0, dot - 24), dot)
    if not match:
        return False
    word = match.group(1).lower().rstrip(".")
    if word in _ABBREVIATIONS:
        return True
    return len(word) == 1 and match.group(1).isupper()  # an initial: "J. Smith"


def sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence (and line) spans of ``text[start:end]``, trimmed of white space."""
    cuts = {end}
    for match in _ZH_END.finditer(text, start, end):
        cuts.add(match.end())
    for match in _EN_END.finditer(text, start, end):
        if text[match.start()] == "." and _is_abbreviation(text, match.start()):
            continue
        cuts.add(match.end())
    position = text.find("\n", start, end)
    while position != -1:
        cuts.add(position + 1)
        position = text.find("\n", position + 1, end)
    spans = []
    previous = start
    for cut in sorted(cuts):
        span = _trim(text, previous, cut)
        if span:
            spans.append(span)
        previous = cut
    return spans


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    previous = 0
    for match in re.finditer(r"\n[ \t\u3000]*\n", text):
        span = _trim(text, previous, match.start())
        if span:
            spans.append(span)
        previous = match.end()
    span = _trim(text, previous, len(text))
    if span:
        spans.append(span)
    return spans


class TextSplitter:
    """Split loaded pieces into :class:`Chunk` objects.

    :param chunk_size: the largest chunk, in characters.
    :param chunk_overlap: how many characters of trailing sentences the next chunk repeats.
    """

    def __init__(self, chunk_size: int = 400, chunk_overlap: int = 60) -> None:
        if chunk_size <= 0 or not 0 <= chunk_overlap < chunk_size:
            raise ValueError("need chunk_size > 0 and 0 <= chunk_overlap < chunk_size")
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap

    def split_text(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` spans of the chunks of ``text``."""
        size = self.chunk_size
        chunks: list[tuple[int, int]] = []
        current: list[tuple[int, int]] = []  # sentence spans of the chunk being built

        def length(spans: list[tuple[int, int]]) -> int:
            return spans[-1][1] - spans[0][0] if spans else 0

        def emit(keep_overlap: bool) -> None:
            nonlocal current
            if not current:
                return
            chunks.append((current[0][0], current[-1][1]))
            tail: list[tuple[int, int]] = []
            if keep_overlap and self.chunk_overlap:
                for span in reversed(current[1:]):
                    if (current[-1][1] - span[0]) > self.chunk_overlap:
                        break
                    tail.insert(0, span)
            current = tail

        for p_start, p_end in paragraph_spans(text):
            if current and p_end - current[0][0] <= size:
                current += sentence_spans(text, p_start, p_end)
                continue
            if p_end - p_start <= size:
                emit(keep_overlap=False)
                current = sentence_spans(text, p_start, p_end)
                continue
            for sentence in sentence_spans(text, p_start, p_end):
                if sentence[1] - sentence[0] > size:
                    emit(keep_overlap=True)
                    # the overlap tail cannot join an over-long sentence; start it clean
                    current = []
                    chunks.extend(self._cut_long(text, *sentence))
                    continue
                if current and sentence[1] - current[0][0] > size:
                    emit(keep_overlap=True)
                    while current and sentence[1] - current[0][0] > size:
                        current.pop(0)
                current.append(sentence)
            if length(current) > size:  # pragma: no cover - guarded above
                emit(keep_overlap=False)
        emit(keep_overlap=False)
        return chunks

    def _cut_long(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        size, overlap = self.chunk_size, self.chunk_overlap
        spans = []
        position = start
        while position < end:
            stop = min(position + size, end)
            if stop < end:
                window_start = position + int(size * 0.8)
                soft = [m.end() for m in _SOFT_BREAK.finditer(text, window_start, stop)]
                if soft:
                    stop = soft[-1]
            span = _trim(text, position, stop)
            if span:
                spans.append(span)
            if stop >= end:
                break
            position = max(stop - overlap, position + 1)
        return spans

    def split_documents(self, pieces: Iterable[Document]) -> list[Chunk]:
        """Chunks of one document's pieces, numbered in order."""
        chunks: list[Chunk] = []
        for number, piece in enumerate(pieces):
            text = piece.page_content
            for start, end in self.split_text(text):
                body = text[start:end]
                meta = dict(piece.metadata)
                meta["content_hash"] = text_hash(body)
                meta["piece"] = number  # offsets count from the start of this piece
                chunks.append(Chunk(body, len(chunks), start, end, meta))
        return chunks
