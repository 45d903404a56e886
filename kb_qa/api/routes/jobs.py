"""Background jobs: a rebuild runs as one; its progress is polled."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from kb_qa.api.deps import Jobs, Svc, Write, require
from kb_qa.api.errors import ApiError
from kb_qa.api.schemas import ErrorOut, KbName, error_responses

router = APIRouter(tags=["jobs"], responses=error_responses(ErrorOut))


@router.post("/knowledge_bases/{kb}/rebuild", status_code=202, dependencies=[Write],
             summary="Rebuild a knowledge base in the background; poll the returned job")  # fmt: skip
def rebuild(kb: KbName, services: Svc, jobs: Jobs, response: Response, recreate: bool = False) -> dict[str, Any]:
    services.knowledge_bases.get(kb)
    job = jobs.submit("rebuild", kb, lambda job: services.knowledge_bases.rebuild(kb, recreate=recreate,
                                                                                   progress=job))  # fmt: skip
    response.headers["Location"] = f"/jobs/{job.id}"
    return job.to_dict()


Principal = Annotated[Any, Depends(require("read"))]


@router.get("/jobs", summary="Recent jobs, newest first (of the knowledge bases the key may see)")
def list_jobs(jobs: Jobs, principal: Principal) -> list[dict[str, Any]]:
    return [job.to_dict() for job in jobs.all() if principal.sees(job.knowledge_base)]


@router.get("/jobs/{job_id}", summary="A job's status and progress")
def get_job(job_id: str, jobs: Jobs, principal: Principal) -> dict[str, Any]:
    job = jobs.get(job_id)
    if job is None or not principal.sees(job.knowledge_base):  # another scope's job is not there for this key
        raise ApiError(404, "job_not_found", f"no job {job_id!r} (finished jobs are kept for a while only)")
    return job.to_dict()
