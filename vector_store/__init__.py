"""Vector storage: a FAISS store whose scores are cosine similarities (see :mod:`.faiss_store`)."""

from vector_store.faiss_store import FaissStore, IndexOptions, ScoredChunk, StoredChunk, StoreError
from vector_store.locking import StoreBusy, WriterLock

__all__ = ["FaissStore", "IndexOptions", "ScoredChunk", "StoreBusy", "StoreError", "StoredChunk", "WriterLock"]
