"""The ingestion pipeline: files → pieces → chunks → vectors, into one store generation and the registry.

:class:`Pipeline` holds what does not change between runs (the embedding model, the splitter, the
limits); :class:`IngestRun` is one run's state (the report, the registry rows to write, what the
store held before, progress). Files are loaded and split on worker threads while the model embeds
the finished ones in groups. A file that cannot be read fails alone: its outcome carries the
reason code (:data:`loaders.REASONS`) and a failed registry row records it; the previous
version's chunks, if any, are kept. The knowledge-base service (:mod:`kb_qa.knowledge_base`)
holds the writer lock around a run and commits the registry rows after the store is saved.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kb_qa.domain import DocumentRecord, FileOutcome, IngestReport
from kb_qa.embeddings import TextEmbeddings
from kb_qa.errors import EmbeddingMismatch
from kb_qa.registry import now
from loaders import DEFAULT_LIMITS, Chunk, Limits, Loader, LoadError, TextSplitter, loader_for, read_and_split
from loaders.isolation import Isolation, pool_for
from vector_store.contract import ChunkStore

log = logging.getLogger(__name__)

NO_ISOLATION = Isolation(enabled=False)

EMBED_GROUP = 256  # chunks gathered from finished files before one encode call


class Progress(Protocol):
    """Where long work reports progress (the CLI draws a bar; the API exposes a job)."""

    def start(self, total: int, description: str) -> None: ...

    def advance(self, step: int = 1, info: str = "") -> None: ...


class NoProgress:
    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, step: int = 1, info: str = "") -> None:
        pass


@dataclass
class Item:
    """A file to index: its document key, where it is, and what it is now."""

    key: str
    path: Path
    sha256: str
    size: int
    mtime: float
    action: str  # added | updated
    loader: Loader  # the one the precheck found (the type is looked up once per file)
    loader_name: str


@dataclass
class Prepared:
    item: Item
    loader: str
    chunks: list[Chunk]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class IngestRun:
    """One run's state: what it reports, the registry rows it will write, what the store held."""

    report: IngestReport
    stored: dict[str, int]  # document key -> chunks in the store before the run
    progress: Progress = field(default_factory=NoProgress)
    upserts: list[DocumentRecord] = field(default_factory=list)
    deletes: list[tuple[str, str]] = field(default_factory=list)
    engine: str = "builtin"  # the parsing engine, for the loader name of a failed file's row
    by_extension: dict[str, str] = field(default_factory=dict)

    @property
    def kb(self) -> str:
        return self.report.kb

    def fail(self, key: str, path: Path, error: LoadError, *, sha256: str = "", advance: bool = False) -> None:
        """Record a file that cannot be indexed: its outcome (with the reason) and a failed row."""
        message = str(error)
        kept = self.stored.get(key, 0)
        if kept:
            message += f" (the previous version's {kept} chunks are kept)"
        try:
            stat = path.stat()
            size, mtime = stat.st_size, stat.st_mtime
        except OSError:
            size, mtime = 0, 0.0
        try:
            loader = loader_for(path, self.engine, self.by_extension)[1]
        except LoadError:
            loader = "none"
        self.upserts.append(
            DocumentRecord(self.kb, key, str(path), sha256, size, mtime, loader, kept, "failed", message, now())
        )
        self.report.outcomes.append(FileOutcome(key, "failed", error=message, reason=error.reason))
        if advance:
            self.progress.advance(1, key)

    def indexed(self, entry: Prepared) -> None:
        item = entry.item
        self.upserts.append(
            DocumentRecord(
                self.kb, item.key, str(item.path), item.sha256, item.size, item.mtime, entry.loader,
                len(entry.chunks), "indexed", None, now(),
            )
        )  # fmt: skip
        self.report.outcomes.append(FileOutcome(item.key, item.action, len(entry.chunks)))
        self.progress.advance(1, item.key)


class Pipeline:
    """Load, split and embed files into a store.

    :param heading_prefix: embed each chunk with its heading path in front.
    :param workers: threads that load and split files while the model embeds.
    :param max_file_bytes: larger files are refused (``too_large``).
    :param limits: what a file may unpack to (:mod:`loaders.limits`).
    :param isolation: read files in parser processes with a memory and a time limit
        (:mod:`loaders.isolation`), or in this process.
    :param engine: the parsing engine (``builtin`` or ``unstructured``), ``by_extension`` per
        extension (:func:`loaders.loader_for`).
    """

    def __init__(
        self,
        embeddings: TextEmbeddings,
        splitter: TextSplitter,
        *,
        heading_prefix: bool = True,
        workers: int = 2,
        max_file_bytes: int = 200 * 1024 * 1024,
        limits: Limits = DEFAULT_LIMITS,
        isolation: Isolation = NO_ISOLATION,
        engine: str = "builtin",
        by_extension: dict[str, str] | None = None,
    ) -> None:
        self.isolation = isolation
        self.engine = engine
        self.by_extension = dict(by_extension or {})
        self.embeddings = embeddings
        self.splitter = splitter
        self.heading_prefix = heading_prefix
        self.workers = workers
        self.max_file_bytes = max_file_bytes
        self.limits = limits

    def precheck(self, path: Path) -> tuple[Loader, str]:
        """The checks made before a file is copied or read: a known type, within the size limit.
        Returns the loader for its type and the loader's name.

        :raises LoadError: ``unsupported``, ``unreadable`` or ``too_large``.
        """
        found = loader_for(path, self.engine, self.by_extension)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise LoadError("unreadable", exc.strerror or str(exc)) from None
        if size > self.max_file_bytes:
            raise LoadError("too_large", f"{size / 1e6:.1f} MB > {self.max_file_bytes / 1e6:.0f} MB")
        return found

    def run(
        self,
        store: ChunkStore,
        items: dict[str, Path],
        existing: dict[str, DocumentRecord],
        *,
        remove_missing: bool,
        report: IngestReport,
        progress: Progress | None = None,
        checked: dict[str, tuple[Loader, str]] | None = None,
    ) -> IngestRun:
        """Index ``items`` (document key -> file) into ``store``: unchanged files are skipped, new and
        changed ones read, split and embedded; with ``remove_missing`` documents not in ``items`` are
        removed. ``checked``: what :meth:`precheck` returned for each item, when the caller made it. Saves the
        store; returns the run, whose registry rows the caller commits."""
        started = time.perf_counter()
        run = IngestRun(report, store.documents(), progress or NoProgress(), engine=self.engine,
                        by_extension=self.by_extension)  # fmt: skip
        todo: list[Item] = []
        for key, path in items.items():
            if checked is not None and key in checked:
                loader, loader_name = checked[key]
            else:
                try:
                    loader, loader_name = self.precheck(path)
                except LoadError as rejection:
                    run.fail(key, path, rejection)
                    continue
            try:
                sha = file_sha256(path)
            except OSError as exc:  # no permission, a vanished file: this file fails alone
                run.fail(key, path, LoadError("unreadable", exc.strerror or str(exc)))
                continue
            record = existing.get(key)
            if (
                record is not None
                and record.sha256 == sha
                and record.status == "indexed"
                and run.stored.get(key, 0) == record.chunk_count
            ):
                report.outcomes.append(FileOutcome(key, "unchanged", record.chunk_count))
                continue
            stat = path.stat()
            action = "updated" if key in run.stored or record is not None else "added"
            todo.append(Item(key, path, sha, stat.st_size, stat.st_mtime, action, loader, loader_name))
        if remove_missing:
            for key in sorted(set(existing) | set(run.stored)):
                if key not in items:
                    store.delete(key)
                    run.deletes.append((run.kb, key))
                    report.outcomes.append(FileOutcome(key, "removed"))
        if todo:
            run.progress.start(len(todo), f"indexing {run.kb}")
        for group in self._prepare_all(todo, run):
            report.embedded_chunks += self._embed_and_add(store, group)
            for entry in group:
                run.indexed(entry)
        report.seconds = time.perf_counter() - started
        return run  # unsaved: the caller commits the store and the registry together

    def _prepare_all(self, todo: list[Item], run: IngestRun) -> Iterator[list[Prepared]]:
        """Load and split files on worker threads; yield groups of finished files to embed."""
        group: list[Prepared] = []
        size = 0
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="kbqa-load") as pool:
            futures: dict[Future[Prepared], Item] = {pool.submit(self._prepare, item): item for item in todo}
            for future in as_completed(futures):
                item = futures[future]
                try:
                    prepared = future.result()
                except LoadError as exc:
                    run.fail(item.key, item.path, exc, sha256=item.sha256, advance=True)
                    continue
                except Exception as exc:  # a parser's own failure: the file fails alone
                    log.debug("unexpected error reading %s", item.path, exc_info=True)
                    error = LoadError("malformed", f"{type(exc).__name__}: {exc}")
                    run.fail(item.key, item.path, error, sha256=item.sha256, advance=True)
                    continue
                group.append(prepared)
                size += len(prepared.chunks)
                if size >= EMBED_GROUP:
                    yield group
                    group, size = [], 0
        if group:
            yield group

    def _prepare(self, item: Item) -> Prepared:
        arguments = (item.path, self.limits, item.loader, self.splitter)
        if self.isolation.enabled:
            chunks = pool_for(self.isolation, self.workers).run(read_and_split, *arguments)
        else:
            chunks = read_and_split(*arguments)
        if not chunks:
            raise LoadError("empty", item.path.name)
        return Prepared(item, item.loader_name, chunks)

    def _embed_and_add(self, store: ChunkStore, group: list[Prepared]) -> int:
        texts = [c.embedding_text(self.heading_prefix) for entry in group for c in entry.chunks]
        # repeated boilerplate (headers, footers, table-of-contents lines) is embedded once
        unique = list(dict.fromkeys(texts))
        position = {text: i for i, text in enumerate(unique)}
        vectors = self.embeddings.encode_passages(unique)[[position[t] for t in texts]]
        if vectors.shape[1] != store.dim:
            raise EmbeddingMismatch(
                f"the embedding model gives {vectors.shape[1]}-d vectors but the index holds {store.dim}-d ones; "
                "run `kb-qa kb rebuild NAME --recreate` to re-embed with this model"
            )
        offset = 0
        for entry in group:
            count = len(entry.chunks)
            metadatas = [chunk_metadata(entry.item.key, c) for c in entry.chunks]
            store.add(
                entry.item.key,
                [c.text for c in entry.chunks],
                metadatas,
                vectors[offset : offset + count],
                keyword_texts=texts[offset : offset + count],
            )
            offset += count
        return len(texts)


def chunk_metadata(key: str, chunk: Chunk) -> dict[str, object]:
    meta = {k: v for k, v in chunk.metadata.items() if k != "source"}
    meta.update({"document": key, "ordinal": chunk.ordinal, "start": chunk.start, "end": chunk.end})
    return meta
