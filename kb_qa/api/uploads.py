"""Uploaded files into a knowledge base: the one path every upload route takes.

Each file gets a safe name and is written once, bounded by ``ingest.max_file_mb`` while it arrives
(a larger one stops being read: 413), into a scratch folder inside the knowledge-base root, from
where the service moves it into the knowledge base. Every other check — the type (415), what the
file unpacks to, whether it can be read (422) — is the service's, made once per file; its outcome
carries the reason code this module turns into a status. When no file is indexed at all the whole
request fails with the status of its files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import UploadFile

from kb_qa.api.deps import sanitize_filename
from kb_qa.api.errors import ApiError
from kb_qa.api.limits import upload_dir
from kb_qa.api.schemas import FileResult, UploadOut
from kb_qa.services import Services
from loaders import LoadError

# a failed file's reason code -> the status of a request in which no file was indexed
STATUS_OF_REASON = {"unsupported": 415, "too_large": 413}
_CODES = {413: "too_large", 415: "unsupported_type"}


def ingest_uploads(services: Services, kb: str, files: list[UploadFile]) -> UploadOut:
    """Index ``files`` into ``kb``; a result per file.

    :raises KnowledgeBaseNotFound: (from the service, which looks it up once).
    :raises ApiError: 413, 415 or 422 when no file was indexed.
    """
    knowledge_bases = services.knowledge_bases
    limit = knowledge_bases.max_file_bytes
    results: dict[str, FileResult] = {}
    statuses: list[int] = []
    seconds = 0.0
    with upload_dir(knowledge_bases.scratch_dir()) as tmp:
        paths = []
        for upload in files:
            name = sanitize_filename(upload.filename or "")
            target = Path(tmp) / name
            if not _save(upload, target, limit):
                error = LoadError("too_large", f"over {limit / 2**20:g} MB (ingest.max_file_mb)")
                results[name] = FileResult(file=name, action="failed", error=str(error))
                statuses.append(413)
                continue
            results[name] = FileResult(file=name, action="pending")
            paths.append(target)
        if paths:
            report = knowledge_bases.add_files(kb, paths, move=True)
            seconds = report.seconds
            for outcome in report.outcomes:
                name = Path(outcome.path).name
                results[name] = FileResult(file=name, action=outcome.action, chunks=outcome.chunks, error=outcome.error)
                if outcome.action == "failed":
                    statuses.append(STATUS_OF_REASON.get(outcome.reason or "", 422))
    if results and all(r.action == "failed" for r in results.values()):
        status = statuses[0] if len(set(statuses)) == 1 else 422
        first = next(iter(results.values()))
        raise ApiError(status, _CODES.get(status, "unreadable"), f"no file was indexed; {first.file}: {first.error}")
    return UploadOut(knowledge_base=kb, files=list(results.values()), seconds=round(seconds, 3))


def _save(upload: UploadFile, target: Path, limit: int) -> bool:
    """Copy an upload to ``target``; False (and nothing kept) when it is larger than ``limit``."""
    size = 0
    with target.open("wb") as out:
        while block := upload.file.read(1 << 20):
            size += len(block)
            if size > limit:
                break
            out.write(block)
    if size > limit:
        target.unlink(missing_ok=True)
        return False
    return True
