"""The composition root: every component is built here from the settings, and only here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kb_qa.chain import QAChain
from kb_qa.embeddings import RemoteEmbeddings, SentenceTransformerEmbeddings, TextEmbeddings
from kb_qa.errors import ConfigError, StorageUnavailable
from kb_qa.keys import AUDIT_FILE, AuditLog
from kb_qa.knowledge_base import KnowledgeBaseService
from kb_qa.llm.chat_llm import ChatLLM
from kb_qa.provision import resolve_embedding_model
from kb_qa.registry import PgRegistry, Registry
from kb_qa.retrieval import Reranker, RetrievalOptions, Retriever
from kb_qa.settings import Settings
from kb_qa.storage import PostgresStorage, Storage
from loaders import Limits, TextSplitter
from loaders.isolation import Isolation
from vector_store import IndexOptions, StoreError
from vector_store.contract import StoreUnavailable


@dataclass
class Services:
    settings: Settings
    embeddings: TextEmbeddings
    knowledge_bases: KnowledgeBaseService
    retriever: Retriever
    qa: QAChain

    def close(self) -> None:
        """Release what the services hold open (the database pool of PostgreSQL storage)."""
        pool = getattr(self.knowledge_bases.storage, "pool", None)
        if pool is not None:
            pool.close()


def embedding_threads(settings: Settings) -> int | None:
    """``embedding.threads``, or its default: 1 on PostgreSQL storage (the database server's work and the
    parallel keyword search need the other cores; torch's spinning threads collapse beside them, see
    configs/settings.yaml), else None (torch's default: every core)."""
    if settings.embedding.threads is not None:
        return settings.embedding.threads
    return 1 if settings.storage.backend == "postgres" else None


def build_embeddings(settings: Settings) -> TextEmbeddings:
    """The configured embedding model (provisioned on first use; loaded lazily), or the remote server
    of ``embedding.backend: openai``."""
    cfg = settings.embedding
    if cfg.backend == "openai":
        if not cfg.url:
            raise ConfigError(
                "embedding.backend is openai but embedding.url is empty; set it, e.g. http://host:8000/v1"
            )
        return RemoteEmbeddings(
            cfg.url,
            name=cfg.model,
            remote_model=cfg.remote_model,
            api_key=cfg.api_key,
            batch_size=cfg.batch_size,
            timeout=cfg.timeout_s,
            max_retries=cfg.max_retries,
            query_prefix=cfg.query_prefix,
            passage_prefix=cfg.passage_prefix,
        )
    return SentenceTransformerEmbeddings(
        resolve_embedding_model(cfg.model, settings.model_cache),
        name=cfg.model,
        device=cfg.device,
        precision=cfg.precision,
        batch_size=cfg.batch_size,
        max_seq_length=cfg.max_seq_length,
        threads=embedding_threads(settings),
        query_prefix=cfg.query_prefix,
        passage_prefix=cfg.passage_prefix,
    )


def storage_url(settings: Settings) -> str:
    """``storage.url``, or the local server of ``kb-qa db start`` when it is empty."""
    if settings.storage.url:
        return settings.storage.url
    from kb_qa.pgserver import LocalPostgres

    local = LocalPostgres(settings.kb_root / ".postgres")
    if not local.url_file.exists():
        raise ConfigError(
            "storage.backend is postgres but storage.url (KBQA_STORAGE__URL) is empty and no local server "
            "was made; set storage.url, or run `kb-qa db start` for a local one"
        )
    return local.url()


def build_storage(settings: Settings) -> tuple[Registry | PgRegistry, Storage | None]:
    """The registry and the storage of knowledge bases (``storage.backend``); connects to PostgreSQL
    when that is the backend (:class:`~vector_store.pg_store.PostgresUnavailable` names the URL)."""
    cfg = settings.storage
    if cfg.backend == "folder":
        return Registry(settings.kb_root / "registry.sqlite3"), None
    from vector_store.pg_store import connect_pool

    try:
        pool = connect_pool(storage_url(settings), max_size=cfg.pool_size, timeout=cfg.connect_timeout_s)
    except StoreUnavailable as exc:
        raise StorageUnavailable(str(exc)) from exc
    except StoreError as exc:
        raise ConfigError(str(exc)) from exc
    return PgRegistry(pool), PostgresStorage(
        pool, exact=cfg.exact, ef_search=cfg.ef_search, keyword_budget=cfg.keyword_budget
    )


def build_services(
    settings: Settings,
    *,
    embeddings: TextEmbeddings | None = None,
    llm: Callable[[], ChatLLM] | None = None,
) -> Services:
    """Wire the services; nothing is loaded until first used.

    :param embeddings: lets tests share one loaded model between roots.
    :param llm: returns the chat model (default: the configured one, built on first use).
    """
    embeddings = embeddings or build_embeddings(settings)
    root = settings.kb_root
    registry, storage = build_storage(settings)
    service = KnowledgeBaseService(
        root,
        registry,
        embeddings,
        TextSplitter(settings.splitter.chunk_size, settings.splitter.chunk_overlap),
        heading_prefix=settings.splitter.heading_prefix,
        engine=settings.loaders.engine,
        by_extension=dict(settings.loaders.by_extension),
        workers=settings.ingest.workers,
        max_file_bytes=int(settings.ingest.max_file_mb * 1024 * 1024),
        limits=Limits(
            max_unpacked_bytes=int(settings.ingest.max_unpacked_mb * 1024 * 1024),
            max_compression_ratio=settings.ingest.max_compression_ratio,
            max_image_pixels=int(settings.ingest.max_image_megapixels * 1_000_000),
            max_pdf_pages=settings.ingest.max_pdf_pages,
        ),
        index_options=IndexOptions(
            settings.retrieval.index, settings.retrieval.ivf_nprobe, settings.retrieval.ivf_min_chunks
        ),
        audit=AuditLog(root / AUDIT_FILE),
        isolation=Isolation(
            settings.ingest.isolate_parsers, settings.ingest.parser_memory_mb, settings.ingest.parser_timeout_s
        ),
        storage=storage,
    )
    cfg = settings.retrieval
    reranker = (
        Reranker(settings.resolve(Path(cfg.reranker)), device=settings.embedding.device) if cfg.reranker else None
    )
    retriever = Retriever(
        service,
        embeddings,
        RetrievalOptions.from_settings(cfg),
        reranker,
        rerank_candidates=cfg.rerank_candidates,
        parallel_keyword=cfg.parallel_keyword,
    )
    if llm is None:
        from kb_qa.llm.factory import build_llm

        llm = lambda: build_llm(settings)  # noqa: E731 - QAChain calls it once, on first need
    qa = QAChain(
        retriever,
        llm,
        settings.resolve(Path(settings.qa.prompts_dir)),
        language=settings.qa.language,
        history_turns=settings.qa.history_turns,
        rewrite_followups=settings.qa.rewrite_followups,
        check_citations=settings.qa.check_citations,
        passage_order=settings.qa.passage_order,
    )
    return Services(settings, embeddings, service, retriever, qa)
