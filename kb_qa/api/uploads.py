"""Uploaded files into a knowledge base: the one path every upload route takes.

Each file gets a safe name, is checked against the loader registry (415) and the size limit
``ingest.max_file_mb`` while it is copied (413), and the accepted ones are indexed together; a file
that cannot be read is reported with its reason (422). When no file is indexed at all the whole
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
from loaders import LoadError, loader_for

_CODES = {413: "too_large", 415: "unsupported_type"}


def ingest_uploads(services: Services, kb: str, files: list[UploadFile]) -> UploadOut:
    """Index ``files`` into ``kb``; a result per file.

    :raises ApiError: 413, 415 or 422 when no file was indexed.
    """
    limit_mb = services.settings.ingest.max_file_mb
    results: dict[str, FileResult] = {}
    statuses: list[int] = []
    seconds = 0.0
    with upload_dir() as tmp:
        paths = []
        for upload in files:
            name = sanitize_filename(upload.filename or "")
            try:
                loader_for(Path(name))
            except LoadError as exc:
                results[name] = FileResult(file=name, action="failed", error=str(exc))
                statuses.append(415)
                continue
            target = Path(tmp) / name
            if not _save(upload, target, int(limit_mb * 1024 * 1024)):
                results[name] = FileResult(file=name, action="failed", error=f"too_large: over {limit_mb:g} MB")
                statuses.append(413)
                continue
            results[name] = FileResult(file=name, action="pending")
            paths.append(target)
        if paths:
            report = services.knowledge_bases.add_files(kb, paths)
            seconds = report.seconds
            for outcome in report.outcomes:
                name = Path(outcome.path).name
                results[name] = FileResult(file=name, action=outcome.action, chunks=outcome.chunks, error=outcome.error)
                if outcome.action == "failed":
                    statuses.append(422)
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
