"""Plain domain types shared by the CLI, the services and the API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args


@dataclass(frozen=True)
class Range:
    """Allowed values of a retrieval option, declared once for settings, API schemas, CLI and core."""

    low: float
    high: float

    @property
    def bounds(self) -> dict[str, Any]:
        """As pydantic's ``Field(ge=…, le=…)`` keywords."""
        return {"ge": self.low, "le": self.high}

    def __contains__(self, value: object) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high


TOP_K = Range(1, 100)  # passages per question
SCORE = Range(-1.0, 1.0)  # a cosine similarity
EXPAND_CHARS = Range(0, 20000)  # characters a passage may grow to with its neighbours

# How the numbered passages are laid out in the prompt (qa.passage_order): best_first ([1] first) or
# best_last ([1] last, next to the question). The numbers stay the ranks either way.
PassageOrder = Literal["best_first", "best_last"]
PASSAGE_ORDERS: tuple[str, ...] = get_args(PassageOrder)

# request limits (the API answers 422 naming the field and the limit)
MAX_QUESTION_CHARS = 4000  # a question or search query
MAX_HISTORY_MESSAGES = 100  # earlier turns sent with a question
MAX_MESSAGE_CHARS = 20000  # one earlier message


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
    generation: int = 0  # the index generation the registry's document rows describe (0: none yet)

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
    """One retrieved passage: a chunk, or neighbouring chunks of one piece merged into one span.

    ``score`` is always the cosine similarity of the question and the passage's best chunk under
    the embedding model, in [-1, 1], higher is better, whichever method ranked it; it is what
    ``score_threshold`` compares with. ``relevance`` is the signal the method ranked by (the fused
    score in [0, 1] for hybrid, 1/(k + rank) sums for rrf, BM25 for keyword search, the cosine for
    dense search) and ``rerank_score`` the cross-encoder's, when one is configured. ``start`` and
    ``end`` are character offsets into the piece (page) the chunks came from; ``chunk_ids`` lists
    every chunk merged in.
    """

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
    relevance: float | None = None
    keyword_score: float | None = None
    rerank_score: float | None = None
    chunk_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FileOutcome:
    path: str
    action: str  # added | updated | unchanged | removed | failed
    chunks: int = 0
    error: str | None = None
    reason: str | None = None  # for a failure: the loaders.REASONS code (unsupported, too_large, ...)


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
