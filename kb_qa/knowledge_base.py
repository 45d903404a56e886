"""The knowledge-base service: the one place that writes knowledge bases.

It keeps the SQLite registry and the FAISS store in agreement. Every write holds the knowledge
base's writer lock (threads and processes); the store is saved atomically first and the registry
rows are committed after it, so a crash in between leaves documents that the next rebuild sees as
changed and re-indexes (a document's chunks are replaced by key, never duplicated).

Layout under the root: ``<root>/registry.sqlite3`` and, per knowledge base, ``<root>/<kb>/content``
(copies of added files), ``<root>/<kb>/vector_store`` (the FAISS generations) and a lock file.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kb_qa.domain import DocumentRecord, FileOutcome, IngestReport, KnowledgeBaseInfo
from kb_qa.embeddings import RemoteEmbeddings, TextEmbeddings
from kb_qa.errors import (
    Busy,
    Conflict,
    DocumentNotFound,
    DocumentRejected,
    EmbeddingMismatch,
    IndexUnreadable,
    KnowledgeBaseExists,
    KnowledgeBaseNotFound,
    StorageUnavailable,
)
from kb_qa.ingest import NoProgress, Pipeline, Progress
from kb_qa.keys import ACTOR, AuditLog
from kb_qa.registry import PgRegistry, Registry, validate_name
from kb_qa.storage import FolderStorage, Storage, available
from loaders import DEFAULT_LIMITS, Limits, Loader, LoadError, TextSplitter
from loaders.isolation import Isolation
from vector_store import IndexOptions, StoreBusy, StoreError
from vector_store.contract import ChunkStore, StoredChunk, StoreUnavailable

log = logging.getLogger(__name__)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def scan_folder(directory: Path) -> dict[str, Path]:
    """Every regular, non-hidden file under ``directory``, keyed by its relative POSIX path."""
    found: dict[str, Path] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and not _hidden(relative):
            found[relative.as_posix()] = path
    return found


class KnowledgeBaseService:
    """Create, fill, update, search and delete knowledge bases.

    :param root: the knowledge-base root folder.
    :param registry: the registry (usually ``root/registry.sqlite3``).
    :param embeddings: the configured embedding model.
    :param splitter: the chunker.
    :param heading_prefix: embed each chunk with its heading path in front.
    :param workers: threads that load and split files while the model embeds.
    :param max_file_bytes: larger files are rejected.
    :param limits: what a file may unpack to (:mod:`loaders.limits`).
    :param lock_timeout: seconds a writer waits for another before giving up with :class:`Busy`.
    :param index_options: exact or approximate (IVF) dense search (folder storage).
    :param storage: where indexes live and how writers lock (default: folders under ``root``).
    :param isolation: read files in parser processes (:mod:`loaders.isolation`); default: in this one.
    :param audit: where changes are recorded (who, what, which knowledge base and document).

    **Who may.** Every method honours the principal acting in the current context
    (:data:`kb_qa.keys.ACTOR`, set per request by the API and the MCP server): a knowledge base
    outside its scope is refused (:class:`~kb_qa.keys.Forbidden`) and left out of listings; writing
    documents needs the ``write`` role, creating and deleting knowledge bases ``admin``. With no
    principal (the command line, tests) everything is allowed. Enforced here, once, so that every
    route — native, drop-in, OpenAI-compatible, MCP, jobs — honours it by construction.
    """

    def __init__(
        self,
        root: Path,
        registry: Registry | PgRegistry,
        embeddings: TextEmbeddings,
        splitter: TextSplitter,
        *,
        heading_prefix: bool = True,
        workers: int = 2,
        max_file_bytes: int = 200 * 1024 * 1024,
        limits: Limits = DEFAULT_LIMITS,
        lock_timeout: float = 600.0,
        index_options: IndexOptions | None = None,
        audit: AuditLog | None = None,
        isolation: Isolation | None = None,
        storage: Storage | None = None,
        engine: str = "builtin",
        by_extension: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.audit = audit
        self.registry = registry
        self.embeddings = embeddings
        self.splitter = splitter
        self.pipeline = Pipeline(
            embeddings,
            splitter,
            heading_prefix=heading_prefix,
            workers=workers,
            max_file_bytes=max_file_bytes,
            limits=limits,
            isolation=isolation or Isolation(enabled=False),
            engine=engine,
            by_extension=by_extension,
        )
        self.lock_timeout = lock_timeout
        self.index_options = index_options or IndexOptions()
        self.storage: Storage = storage or FolderStorage(root, self.index_options)
        self._readers: dict[str, ChunkStore] = {}
        self._reader_keys: dict[str, tuple[object, ...]] = {}

    # ------------------------------------------------------------------ paths
    def kb_dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    @property
    def max_file_bytes(self) -> int:
        """Files larger than this are refused (``ingest.max_file_mb``)."""
        return self.pipeline.max_file_bytes

    def scratch_dir(self) -> Path:
        """Where uploads wait before they are moved in (same file system as the knowledge bases;
        a hidden name, which no knowledge base can have)."""
        return self.root / ".tmp"

    def content_dir(self, name: str) -> Path:
        return self.kb_dir(name) / "content"

    def store_dir(self, name: str) -> Path:
        """Where a folder-stored index lives (unused with PostgreSQL storage)."""
        return self.kb_dir(name) / "vector_store"

    @contextmanager
    def _lock(self, name: str, info: KnowledgeBaseInfo | None = None) -> Iterator[None]:
        """Hold the knowledge base's writer lock; :class:`Busy` when another writer keeps it.

        With ``info`` (the knowledge base as the caller found it before waiting), the knowledge base
        is looked up again once the lock is held: deleted meanwhile gives :class:`KnowledgeBaseNotFound`,
        deleted and re-created gives :class:`Conflict` — never a write into what is gone.
        """
        try:
            with available(), self.storage.lock(validate_name(name), self.lock_timeout):
                if info is not None:
                    self._still_there(info)
                yield
        except StoreBusy as exc:
            raise Busy(f"{exc}; another import or rebuild is running, try again when it ends") from exc

    def _still_there(self, info: KnowledgeBaseInfo) -> None:
        try:
            now_info = self.registry.get_kb(info.name)
        except KnowledgeBaseNotFound:
            self._remove_leftover_lock(info.name)
            raise KnowledgeBaseNotFound(
                f"knowledge base '{info.name}' was deleted while this request waited for it"
            ) from None
        if now_info.created_at != info.created_at:
            raise Conflict(
                f"knowledge base '{info.name}' was deleted and created again while this request waited; "
                "send it again if it is meant for the new one"
            )

    def _remove_leftover_lock(self, name: str) -> None:
        """A writer that waited on a deleted knowledge base re-created its folder for the lock file."""
        folder = self.kb_dir(name)
        if folder.is_dir() and {p.name for p in folder.iterdir()} <= {".write.lock"}:
            shutil.rmtree(folder, ignore_errors=True)

    # -------------------------------------------------------- knowledge bases
    def create(self, name: str, description: str = "") -> KnowledgeBaseInfo:
        """Create an empty knowledge base that uses the configured embedding model.

        :raises InvalidName: for a bad name. :raises KnowledgeBaseExists: when it exists.
        """
        validate_name(name)
        _allowed(name, "admin")
        if not any(kb.name == name for kb in self.registry.list_kbs()):
            # what a deletion killed part-way left behind must not come back in the new one (a writer
            # still waiting on the deleted one finds a new identity once it holds the lock: it writes nothing)
            self.storage.drop(name)
            shutil.rmtree(self.content_dir(name), ignore_errors=True)
        info = self.registry.create_kb(name, description, self.embeddings.name, self.embeddings.dimension)
        self.content_dir(name).mkdir(parents=True, exist_ok=True)
        self._record("kb.create", name)
        return info

    def get(self, name: str) -> KnowledgeBaseInfo:
        _allowed(name)
        return self._catch_up(self.registry.get_kb(name))

    def list_all(self) -> list[KnowledgeBaseInfo]:
        """The knowledge bases the acting principal may see."""
        return [self._catch_up(info) for info in self.registry.list_kbs() if _sees(info.name)]

    def delete(self, name: str) -> None:
        """Delete a knowledge base, its index and its copies of files."""
        _allowed(name, "admin")
        info = self.registry.get_kb(name)
        with self._lock(name, info):
            self.registry.delete_kb(name)
            self._readers.pop(name, None)
            self.storage.drop(name)
            shutil.rmtree(self.content_dir(name), ignore_errors=True)
        shutil.rmtree(self.kb_dir(name), ignore_errors=True)
        self._record("kb.delete", name)

    def files(self, name: str) -> list[DocumentRecord]:
        _allowed(name)
        self._catch_up(self.registry.get_kb(name))
        return self.registry.documents(name)

    def _check_model(self, info: KnowledgeBaseInfo) -> None:
        # names only: comparing dimensions would load the model even when nothing is embedded;
        # a model that changed under the same name is caught by the store's dimension check. A remote
        # model is asked its dimension once (a server serving another model under the name shows here)
        remote = isinstance(self.embeddings, RemoteEmbeddings)
        if remote and info.embedding_model == self.embeddings.name and self.embeddings.dimension != info.dimension:
            raise EmbeddingMismatch(
                f"knowledge base '{info.name}' holds {info.dimension}-d vectors of {info.embedding_model}, but the "
                f"embedding server at {getattr(self.embeddings, 'url', '?')} gives {self.embeddings.dimension}-d "
                "ones; point embedding.url at a server of that model"
            )
        if info.embedding_model != self.embeddings.name:
            raise EmbeddingMismatch(
                f"knowledge base '{info.name}' was built with {info.embedding_model} ({info.dimension}-d) but the "
                f"configured embedding model is {self.embeddings.name} ({self.embeddings.dimension}-d); set "
                f"embedding.model back to {info.embedding_model}, or run `kb-qa kb rebuild {info.name} --recreate` "
                "to re-embed everything with the new model"
            )

    # ---------------------------------------------------------------- writing
    def add_files(
        self, name: str, paths: Iterable[Path], progress: Progress | None = None, *, move: bool = False
    ) -> IngestReport:
        """Copy files (or folders of files) into the knowledge base and index them.

        A file whose content is already indexed adds nothing; a new version of a file replaces
        its old chunks. Files that cannot be read are reported (with a reason code) and recorded
        with their reason. ``move`` moves the files in instead of copying them (uploads: their
        bytes are written once).
        """
        _allowed(name, "write")
        info = self.registry.get_kb(name)
        report = IngestReport(name)
        items: dict[str, Path] = {}
        content = self.content_dir(name)
        with self._lock(name, info):
            self._check_model(info)
            for source in paths:
                source = source.expanduser()
                if source.is_dir():
                    for relative, path in scan_folder(source).items():
                        items[f"{source.resolve().name}/{relative}"] = path
                elif source.is_file():
                    items[source.name] = source
                else:
                    report.outcomes.append(FileOutcome(str(source), "failed", error="no such file or folder"))
            registered = {r.path for r in self.registry.documents(name)}
            accepted: dict[str, Path] = {}
            checked = {}
            for key, path in items.items():
                try:
                    checked[key] = self.pipeline.precheck(path)  # refused files are not copied in
                except LoadError as rejection:
                    report.outcomes.append(FileOutcome(key, "failed", error=str(rejection), reason=rejection.reason))
                    continue
                try:
                    accepted[key] = _move_into(path, content / key) if move else _copy_into(path, content / key)
                except OSError as exc:  # unreadable: this file fails alone
                    error = LoadError("unreadable", exc.strerror or str(exc))
                    report.outcomes.append(FileOutcome(key, "failed", error=str(error), reason=error.reason))
            try:
                self._sync(info, accepted, remove_missing=False, report=report, progress=progress, checked=checked)
            except BaseException:  # a full disk, say: the copies of new files go (nothing lists them)
                for key in accepted.keys() - registered:
                    (content / key).unlink(missing_ok=True)
                raise
        self._record_report(report)
        return report

    def reindex(self, name: str, key: str, progress: Progress | None = None) -> IngestReport:
        """Read, split and embed one document again (after a loader or splitter change, say).

        :raises DocumentNotFound: when the knowledge base has no such document, or its file is gone.
        """
        _allowed(name, "write")
        info = self.registry.get_kb(name)
        report = IngestReport(name)
        with self._lock(name, info):
            self._check_model(info)
            record = next((r for r in self.registry.documents(name) if r.path == key), None)
            path = Path(record.source) if record is not None else None
            if record is None or path is None or not path.is_file():
                raise DocumentNotFound(
                    f"knowledge base '{name}' has no document '{key}' with a readable file "
                    f"(see `kb-qa kb files {name}`)"
                )
            store = self._open_store(info)
            with available():
                store.delete(key)  # forces the document through the pipeline again
            self._sync(info, {key: path}, remove_missing=False, report=report, progress=progress, store=store)
        self._record_report(report, reindex=True)
        return report

    def remove_files(self, name: str, keys: Iterable[str]) -> list[str]:
        """Remove documents (by the names ``kb files`` lists); their chunks stop being found at once.

        :raises DocumentNotFound: naming the first unknown document; nothing is removed then.
        """
        _allowed(name, "write")
        info = self.registry.get_kb(name)
        keys = list(keys)
        with self._lock(name, info):
            known = {r.path: r for r in self.registry.documents(name)}
            missing = [k for k in keys if k not in known]
            if missing:
                raise DocumentNotFound(
                    f"knowledge base '{name}' has no document '{missing[0]}' (see `kb-qa kb files {name}`)"
                )
            store = self._open_store(info)
            try:
                with available():
                    for key in keys:
                        store.delete(key)
                    self._commit(info, store, [], [(name, k) for k in keys])
            except BaseException:
                store.discard()
                raise
            content = self.content_dir(name).resolve()
            for key in keys:
                copy = (self.content_dir(name) / key).resolve()
                if copy.is_relative_to(content) and copy.is_file():
                    copy.unlink()
        for key in keys:
            self._record("document.remove", name, key)
        return keys

    def rebuild(
        self,
        name: str,
        directory: Path | None = None,
        *,
        recreate: bool = False,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Bring the knowledge base in line with a folder (default: the one it was last built from).

        New and changed files are indexed, unchanged ones are skipped without embedding, and
        documents whose files are gone are removed. ``recreate`` starts from an empty index
        (and adopts the configured embedding model).
        """
        _allowed(name, "write")
        info = self.registry.get_kb(name)
        report = IngestReport(name)
        with self._lock(name, info):
            if directory is not None:
                directory = directory.expanduser().resolve()
                if not directory.is_dir():
                    raise DocumentRejected(f"{directory} is not a folder")
                self.registry.set_source_dir(name, str(directory))
            else:
                directory = Path(info.source_dir) if info.source_dir else self.content_dir(name)
                directory.mkdir(parents=True, exist_ok=True)
            if recreate:  # the registry first: killed in between, the old index re-fills it at the next open
                self.registry.clear_documents(name)
                self.storage.drop(name)
                self._readers.pop(name, None)
                if info.embedding_model != self.embeddings.name:
                    self.registry.delete_kb(name)
                    self.registry.create_kb(name, info.description, self.embeddings.name, self.embeddings.dimension)
                    self.registry.set_source_dir(name, str(directory) if directory != self.content_dir(name) else None)
                info = self.registry.get_kb(name)
            self._check_model(info)
            if recreate:
                self._record("kb.recreate", name)
            self._sync(info, scan_folder(directory), remove_missing=True, report=report, progress=progress)
        self._record_report(report)
        return report

    def _sync(
        self,
        info: KnowledgeBaseInfo,
        items: dict[str, Path],
        *,
        remove_missing: bool,
        report: IngestReport,
        progress: Progress | None,
        store: ChunkStore | None = None,
        checked: dict[str, tuple[Loader, str]] | None = None,
    ) -> None:
        """Run the pipeline, then commit its registry rows (after the store was saved)."""
        store = store or self._open_store(info)
        try:
            with available():
                existing = {r.path: r for r in self.registry.documents(info.name)}
                run = self.pipeline.run(store, items, existing, remove_missing=remove_missing, report=report,
                                        progress=progress, checked=checked)  # fmt: skip
                self._commit(info, store, run.upserts, run.deletes)
        except BaseException:
            store.discard()  # nothing of a failed write stays pending (a database rolls it back)
            raise

    def _commit(
        self, info: KnowledgeBaseInfo, store: ChunkStore, upserts: list[DocumentRecord], deletes: list[tuple[str, str]]
    ) -> None:
        """The one commit point of a write: the store's new generation carries the document rows the
        registry must hold once it is live (``commit.N.json``), then the registry takes them.

        A process killed between the two leaves the registry one generation behind; whoever opens
        the store next brings the registry in line from the generation (:meth:`_reconcile`), so
        listings and search agree without a rebuild."""
        if store.dirty:
            rows = {r.path: r for r in self.registry.documents(info.name)}
            for _, key in deletes:
                rows.pop(key, None)
            rows.update({r.path: r for r in upserts})
            store.save(commit={"created_at": info.created_at, "documents": [r.to_dict() for r in rows.values()]})
        self.registry.apply(upserts, deletes, generation=(info.name, store.generation))
        self._remember(info, store)

    def move_to(self, name: str, target: KnowledgeBaseService, progress: Progress | None = None) -> KnowledgeBaseInfo:
        """Move knowledge base ``name`` — registry rows, chunks, vectors and keywords, nothing re-embedded —
        to ``target`` (a service on the other storage: folders → PostgreSQL or back). The copies of
        files stay where they are (both storages keep them under the same root) and now belong to the
        target. The source is locked throughout; the copy becomes visible in one commit, then the source's
        index and rows are removed. Fails part-way: nothing of the copy stays. Killed between the
        commit and the removal: running it again finishes the move.

        :raises KnowledgeBaseExists: when ``target`` already holds a different knowledge base of that name.
        """
        _allowed(name, "admin")
        info = self.get(name)
        progress = progress or NoProgress()
        with self._lock(name, info):
            store = self._open_store(info)
            rows = self.registry.documents(name)
            if any(kb.name == name for kb in target.registry.list_kbs()):
                if _same_documents(target.registry.documents(name), rows):  # an interrupted move: finish it
                    self._forget(name)
                    return target.get(name)
                raise KnowledgeBaseExists(
                    f"knowledge base '{name}' already exists in the {target.storage.kind} storage with other "
                    "documents; delete it there first (`kb-qa kb delete` with storage.backend set to it)"
                )
            target.storage.drop(name)  # what an earlier move killed part-way left (nothing lists it)
            created = target.registry.create_kb(name, info.description, info.embedding_model, info.dimension)
            try:
                if info.source_dir:
                    target.registry.set_source_dir(name, info.source_dir)
                with target._lock(name, created), available():
                    copy = target._open_store(created)
                    documents = store.documents()
                    progress.start(len(documents), f"moving {name}")
                    for doc in sorted(documents):
                        chunks = sorted(store.chunks_of(doc), key=lambda c: c.id)
                        vectors = store.vectors([c.id for c in chunks])
                        keyword_texts = [self._keyword_text(c) for c in chunks]
                        copy.add(doc, [c.text for c in chunks], [c.metadata for c in chunks], vectors, keyword_texts)
                        progress.advance(1, doc)
                    target._commit(created, copy, rows, [])
            except BaseException:
                target.registry.delete_kb(name)
                target.storage.drop(name)
                raise
            self._forget(name)
        self._record("kb.move", name, detail=f"to {target.storage.kind}")
        return target.get(name)

    def _forget(self, name: str) -> None:
        """Remove a knowledge base's rows and index, keeping its copies of files (a move's last step)."""
        self.registry.delete_kb(name)
        self.storage.drop(name)
        self._readers.pop(name, None)

    def _keyword_text(self, chunk: StoredChunk) -> str:
        """What the keyword index saw for ``chunk`` at ingestion (the heading path in front, when on)."""
        heading = chunk.metadata.get("heading") or ""
        return f"{heading}\n{chunk.text}" if self.pipeline.heading_prefix and heading else chunk.text

    # ---------------------------------------------------------------- reading
    def _open_store(self, info: KnowledgeBaseInfo, *, locked: bool = True) -> ChunkStore:
        """The store, for a writer holding the lock (``locked``: the registry is caught up here) or
        for reading (:meth:`reader` has caught it up already)."""
        if locked:
            self._catch_up(info, locked=True)
        try:
            store = self.storage.open(info)
            commit = store.read_commit()
        except StoreUnavailable as exc:
            raise StorageUnavailable(f"{exc}; try again shortly") from exc
        except StoreError as exc:
            raise IndexUnreadable(
                f"the index of '{info.name}' cannot be read ({exc}); run `kb-qa kb rebuild {info.name} --recreate`"
            ) from exc
        if commit is not None and commit.get("created_at") != info.created_at:
            # left by a knowledge base of the same name whose deletion was killed part-way: never
            # answer from it; the next write replaces it
            log.warning("ignoring the stored index of '%s': it belongs to a deleted knowledge base", info.name)
            return self.storage.empty(info)
        return store

    def _catch_up(self, info: KnowledgeBaseInfo, *, locked: bool = False) -> KnowledgeBaseInfo:
        """``info`` with the registry brought forward to the live index generation, when a writer was
        killed between the two steps of :meth:`_commit`: the rows the generation recorded replace the
        knowledge base's rows. Only ever forwards; costs a read of ``CURRENT`` when nothing is behind.

        A registry one step behind is also what a reader sees for a moment while a live writer
        commits; so unless the caller holds the writer lock (``locked``), the catch-up happens only
        when the lock is free — no writer alive, so the one that left the registry behind was killed."""
        generation = self.storage.generation(info.name)
        if generation <= info.generation:
            return info
        if not locked:
            try:
                with self.storage.lock(info.name, 0):
                    return self._catch_up(self.registry.get_kb(info.name), locked=True)
            except StoreBusy:
                return info  # a writer is committing: the registry follows in a moment
        try:
            commit = self.storage.read_commit(info.name, generation)
        except StoreError:
            return info  # opening the store says what is wrong
        if not commit or commit.get("created_at") != info.created_at:
            return info  # written before commit records existed, or another knowledge base's
        rows = [DocumentRecord(**row) for row in commit.get("documents", [])]
        if self.registry.reconcile(info.name, info.created_at, generation, rows):
            log.warning(
                "the registry of '%s' was behind its index (a write was interrupted); brought in line with "
                "generation %d: %d documents", info.name, generation, len(rows),
            )  # fmt: skip
        return self.registry.get_kb(info.name)

    def _record(self, action: str, name: str, document: str | None = None, detail: str | None = None) -> None:
        if self.audit is not None:
            self.audit.record(action, name, document, detail)

    def _record_report(self, report: IngestReport, *, reindex: bool = False) -> None:
        """One audit line per document a write changed (or failed to); unchanged ones are not changes."""
        for outcome in report.outcomes:
            if outcome.action != "unchanged":
                action = "reindex" if reindex and outcome.action != "failed" else outcome.action
                self._record(f"document.{action}", report.kb, outcome.path, outcome.error)

    def _remember(self, info: KnowledgeBaseInfo, store: ChunkStore) -> None:
        """Keep the store a write just saved as the reader (no reopening from disk)."""
        self._readers[info.name] = store
        self._reader_keys[info.name] = self._reader_key(info)

    def _reader_key(self, info: KnowledgeBaseInfo) -> tuple[object, ...]:
        """Which knowledge base and which generation a reader holds (equal: nothing changed since)."""
        return (info.created_at, *self.storage.identity(info.name))

    def reader(self, name: str) -> ChunkStore:
        """The knowledge base's store for reading, reopened when any writer — this process, the CLI,
        another server — saved a newer one, or deleted and re-created the knowledge base (its
        generations then count from 1 again: the identity of the generation pointer tells)."""
        _allowed(name)
        info = self._catch_up(self.registry.get_kb(name))
        self._check_model(info)
        cached = self._readers.get(name)
        key = self._reader_key(info)  # taken before opening: a switch meanwhile reopens next time
        if cached is None or self._reader_keys.get(name) != key:
            cached = self._open_store(info, locked=False)
            self._readers[name] = cached
            self._reader_keys[name] = key
        return cached


def _same_documents(a: list[DocumentRecord], b: list[DocumentRecord]) -> bool:
    return sorted((r.path, r.sha256, r.chunk_count) for r in a) == sorted((r.path, r.sha256, r.chunk_count) for r in b)


def _sees(name: str) -> bool:
    actor = ACTOR.get()
    return actor is None or actor.sees(name)


def _allowed(name: str, role: str = "read") -> None:
    """:raises Forbidden: when the acting principal may not use ``name`` so (see the class)."""
    actor = ACTOR.get()
    if actor is not None:
        actor.check(name, role)


def _move_into(source: Path, target: Path) -> Path:
    """Move ``source`` to ``target``: a rename on one file system, else a copy and a delete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:
        _copy_into(source, target)
        source.unlink(missing_ok=True)
    return target


def _copy_into(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` atomically (unless they are the same file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.resolve() == source.resolve():
        return target
    fd, tmp = tempfile.mkstemp(prefix=".upload.", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
