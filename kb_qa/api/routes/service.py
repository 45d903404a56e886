"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kb_qa.api.deps import Read, Svc
from kb_qa.api.schemas import ErrorOut, error_responses
from kb_qa.errors import KbQaError

router = APIRouter(tags=["service"], responses=error_responses(ErrorOut))


@router.get("/health", summary="Alive (no key needed)")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Models loaded and knowledge bases readable", dependencies=[Read])
def ready(request: Request, services: Svc) -> JSONResponse:
    state = request.app.state.readiness
    problems = []
    if not state["ready"]:
        problems.append(state["error"] or "models are still loading")
    try:
        services.knowledge_bases.list_all()
    except (KbQaError, OSError) as exc:
        problems.append(f"knowledge bases unreadable: {exc}")
    body = {"ready": not problems, "problems": problems, "embedding_model": services.embeddings.name}
    return JSONResponse(body, status_code=200 if not problems else 503)
