"""Stores of chunks behind one contract (:mod:`.contract`): the folder store (FAISS + BM25 files,
:mod:`.faiss_store`, the default) and PostgreSQL + pgvector (:mod:`.pg_store`, imported on use: it
needs psycopg). Dense scores are cosine similarities in both."""

from vector_store.contract import ChunkStore, ScoredChunk, StoredChunk, StoreError, StoreUnavailable
from vector_store.faiss_store import FaissStore, IndexOptions
from vector_store.locking import StoreBusy, WriterLock

__all__ = [
    "ChunkStore",
    "FaissStore",
    "IndexOptions",
    "ScoredChunk",
    "StoreBusy",
    "StoreError",
    "StoreUnavailable",
    "StoredChunk",
    "WriterLock",
]
