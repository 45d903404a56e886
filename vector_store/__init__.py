"""Vector storage: a FAISS store whose scores are cosine similarities (see :mod:`.faiss_store`)."""

from vector_store.faiss_store import FaissStore, ScoredChunk, StoredChunk, StoreError
from vector_store.locking import StoreBusy, WriterLock

__all__ = ["FaissStore", "ScoredChunk", "StoreBusy", "StoreError", "StoredChunk", "WriterLock"]
