"""Plain domain types shared by the CLI, the services and (later) the API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class KnowledgeBaseInfo:
    name: str
    description: str
    embedding_model: str
    dimension: int
    created_at: str
    source_dir: str | None = None
    document_count: int = 0
    chunk_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DocumentRecord:
    kb: str
    path: str  # the document key: its path relative to the knowledge base's source folder
    source: str  # the absolute path of the file that was read
    sha256: str
    size: int
    mtime: float
    loader: str
    chunk_count: int
    status: str  # "indexed" or "failed"
    error: str | None
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchHit:
    """One retrieved chunk; ``score`` is the cosine similarity (higher is better)."""

    kb: str
    document: str
    chunk_id: int
    score: float
    text: str
    page: int | None
    heading: str
    ordinal: int
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FileOutcome:
    path: str
    action: str  # added | updated | unchanged | removed | failed
    chunks: int = 0
    error: str | None = None


@dataclass
class IngestReport:
    kb: str
    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0
    embedded_chunks: int = 0

    def count(self, action: str) -> int:
        return sum(1 for o in self.outcomes if o.action == action)

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.action == "failed"]

    def summary(self) -> dict[str, Any]:
        return {
            "kb": self.kb,
            "added": self.count("added"),
            "updated": self.count("updated"),
            "unchanged": self.count("unchanged"),
            "removed": self.count("removed"),
            "failed": self.count("failed"),
            "chunks": self.embedded_chunks,
            "seconds": round(self.seconds, 2),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "files": [asdict(o) for o in self.outcomes]}
