"""Retrieval without the model."""

from __future__ import annotations

from fastapi import APIRouter

from kb_qa.api.deps import Read, Svc
from kb_qa.api.schemas import ErrorOut, KbName, SearchOut, SearchRequest, error_responses

router = APIRouter(tags=["search"], responses=error_responses(ErrorOut))


@router.post("/knowledge_bases/{kb}/search", dependencies=[Read],
             summary="Ranked passages with sources and cosine scores (no model)")  # fmt: skip
def search(kb: KbName, body: SearchRequest, services: Svc) -> SearchOut:
    options = body.model_dump(exclude={"query"}, exclude_none=True)
    hits = services.retriever.retrieve(body.query, [kb], **options)
    return SearchOut.model_validate({"query": body.query, "passages": [h.to_dict() for h in hits]})
