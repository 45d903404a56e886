"""Knowledge bases and their documents."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, UploadFile
from fastapi.responses import FileResponse, Response

from kb_qa.api.deps import Admin, Read, Svc, Write
from kb_qa.api.errors import ApiError
from kb_qa.api.schemas import (
    DocumentOut,
    ErrorOut,
    FileResult,
    KbName,
    KnowledgeBaseCreate,
    KnowledgeBaseOut,
    UploadOut,
    error_responses,
)
from kb_qa.api.uploads import ingest_uploads
from kb_qa.errors import DocumentNotFound

router = APIRouter(responses=error_responses(ErrorOut))


def kb_out(info: Any) -> KnowledgeBaseOut:
    return KnowledgeBaseOut(**{k: v for k, v in info.to_dict().items() if k in KnowledgeBaseOut.model_fields})


@router.post("/knowledge_bases", status_code=201, tags=["knowledge bases"], dependencies=[Admin],
             summary="Create a knowledge base")  # fmt: skip
def create_kb(body: KnowledgeBaseCreate, services: Svc) -> KnowledgeBaseOut:
    if body.embedding_model and body.embedding_model != services.embeddings.name:
        raise ApiError(
            409,
            "embedding_mismatch",
            f"this server embeds with {services.embeddings.name}, not {body.embedding_model}; "
            "set embedding.model in its settings to use another model",
        )
    return kb_out(services.knowledge_bases.create(body.name, body.description))


@router.get("/knowledge_bases", tags=["knowledge bases"], dependencies=[Read], summary="List knowledge bases")
def list_kbs(services: Svc) -> list[KnowledgeBaseOut]:
    return [kb_out(info) for info in services.knowledge_bases.list_all()]


@router.get("/knowledge_bases/{kb}", tags=["knowledge bases"], dependencies=[Read], summary="One knowledge base")
def get_kb(kb: KbName, services: Svc) -> KnowledgeBaseOut:
    return kb_out(services.knowledge_bases.get(kb))


@router.delete("/knowledge_bases/{kb}", status_code=204, tags=["knowledge bases"], dependencies=[Admin],
               summary="Delete a knowledge base, its index and its files")  # fmt: skip
def delete_kb(kb: KbName, services: Svc) -> Response:
    services.knowledge_bases.delete(kb)
    return Response(status_code=204)


@router.post("/knowledge_bases/{kb}/documents", tags=["documents"], dependencies=[Write],
             summary="Upload and index files (multipart field 'files', one or many)")  # fmt: skip
def upload(kb: KbName, services: Svc, files: Annotated[list[UploadFile], File(description="The files.")]) -> UploadOut:
    return ingest_uploads(services, kb, files)


@router.get("/knowledge_bases/{kb}/documents", tags=["documents"], dependencies=[Read],
            summary="Documents with status, chunk counts and errors")  # fmt: skip
def list_documents(kb: KbName, services: Svc) -> list[DocumentOut]:
    return [DocumentOut(**{k: v for k, v in r.to_dict().items() if k in DocumentOut.model_fields})
            for r in services.knowledge_bases.files(kb)]  # fmt: skip


@router.get("/knowledge_bases/{kb}/documents/{document:path}/content", tags=["documents"], dependencies=[Read],
            summary="Download the original file")  # fmt: skip
def download(kb: KbName, document: str, services: Svc) -> FileResponse:
    record = next((r for r in services.knowledge_bases.files(kb) if r.path == document), None)
    if record is None or not Path(record.source).is_file():
        raise DocumentNotFound(f"knowledge base '{kb}' has no document '{document}'")
    return FileResponse(record.source, filename=Path(document).name)


@router.delete("/knowledge_bases/{kb}/documents/{document:path}", status_code=204, tags=["documents"],
               dependencies=[Write], summary="Remove a document; its chunks stop being found at once")  # fmt: skip
def delete_document(kb: KbName, document: str, services: Svc) -> Response:
    services.knowledge_bases.remove_files(kb, [document])
    return Response(status_code=204)


@router.post("/knowledge_bases/{kb}/documents/{document:path}/reindex", tags=["documents"], dependencies=[Write],
             summary="Read, split and embed one document again")  # fmt: skip
def reindex(kb: KbName, document: str, services: Svc) -> UploadOut:
    report = services.knowledge_bases.reindex(kb, document)
    files = [FileResult(file=o.path, action=o.action, chunks=o.chunks, error=o.error) for o in report.outcomes]
    return UploadOut(knowledge_base=kb, files=files, seconds=round(report.seconds, 3))
