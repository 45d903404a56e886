"""Loader contract, errors and the file-type registry.

A loader turns one file into a list of LangChain ``Document`` pieces. Every piece carries
``source`` (the file path), ``page`` (1-based, or None where the format has no pages),
``heading`` (the heading path, " > "-joined, or "") and ``content_hash`` (sha256 of its text).
A loader that cannot read a file raises :class:`LoadError` with one of the reasons below, and
nothing else: the caller records the reason and carries on with the next file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from langchain_core.documents import Document

Loader = Callable[[Path], list[Document]]

#: reasons a file fails, with the advice a user needs
REASONS = {
    "unsupported": "this file type is not supported",
    "empty": "the file holds no text",
    "encrypted": "the file is password-protected; remove the password and add it again",
    "malformed": "the file is damaged or not what its extension says",
    "unreadable": "the file cannot be opened (check its permissions)",
    "no_text_layer": "the file has no text layer (scanned or image-only) and OCR is not available",
    "too_large": "the file is larger than ingest.max_file_mb, or unpacks to more than ingest.max_unpacked_mb",
    "suspicious": "the file is built to exhaust the reader (a zip bomb or similar), not a document",
    "missing_parser": "the parser for this file type is not installed",
    "timeout": "reading the file took too long; the parser was stopped",
    "crashed": "the parser crashed on this file",
}


class LoadError(Exception):
    """A file cannot be turned into text; ``reason`` is a key of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        text = REASONS.get(reason, reason)
        super().__init__(f"{reason}: {text}" + (f" ({detail})" if detail else ""))

    def __reduce__(self) -> tuple[type[LoadError], tuple[str, str]]:  # travels back from parser processes
        return (LoadError, (self.reason, self.detail))


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def piece(text: str, path: Path, *, page: int | None = None, heading: str = "", **extra: object) -> Document:
    """One loaded piece with the metadata every loader sets."""
    meta: dict[str, object] = {
        "source": str(path),
        "page": page,
        "heading": heading,
        "content_hash": text_hash(text),
    }
    meta.update(extra)
    return Document(page_content=text, metadata=meta)


def non_empty(pieces: list[Document], path: Path) -> list[Document]:
    """Drop blank pieces; raise ``empty`` when nothing is left."""
    kept = [p for p in pieces if p.page_content.strip()]
    if not kept:
        raise LoadError("empty", path.name)
    return kept


class Sections:
    """Lines collected under the current heading path; each new heading closes a piece."""

    def __init__(self, path: Path, page: int | None = None) -> None:
        self.path = path
        self.page = page
        self.tracker = HeadingTracker()
        self._pieces: list[Document] = []
        self._lines: list[str] = []

    def _flush(self) -> None:
        body = "\n".join(self._lines).strip()
        if body:
            self._pieces.append(piece(body, self.path, page=self.page, heading=self.tracker.path))
        self._lines.clear()

    def heading(self, level: int, title: str) -> None:
        self._flush()
        self.tracker.enter(level, title)

    def add(self, line: str) -> None:
        self._lines.append(line)

    def pieces(self) -> list[Document]:
        """The pieces so far; a document of headings only becomes one piece of its headings."""
        self._flush()
        if not self._pieces and self.tracker.path:
            self._pieces.append(piece(self.tracker.path.replace(" > ", "\n"), self.path, page=self.page))
        return self._pieces


class HeadingTracker:
    """Keeps the current heading path while a document is read top to bottom."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> None:
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title.strip()))

    @property
    def path(self) -> str:
        return " > ".join(title for _, title in self._stack if title)
