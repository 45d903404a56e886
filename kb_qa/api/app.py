"""The FastAPI application: knowledge bases, documents, search and grounded chat over HTTP.

``create_app(settings)`` builds it; ``kb-qa serve`` runs it with uvicorn. The embedding model and
the chat model load in the lifespan (``/ready`` says when). Blocking work (embedding, FAISS, the
LLM) runs on worker threads, never on the event loop: plain endpoints are sync functions that
FastAPI runs in its thread pool, and a streamed answer advances its generator on a worker thread
one event at a time. Errors: :mod:`kb_qa.api.errors`. Keys: ``server.api_keys`` (read, search,
chat) and ``server.admin_keys`` (also change knowledge bases); with none set the API is open.
The web page is ``GET /`` (:mod:`kb_qa.api.web`); ``POST /`` is ChatGLM2's drop-in route.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, File, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from kb_qa.api import errors as api_errors
from kb_qa.api import legacy, openai_compat, web
from kb_qa.api.deps import Admin, Read, Svc, sanitize_filename
from kb_qa.api.errors import ApiError
from kb_qa.api.jobs import JobRunner
from kb_qa.api.schemas import (
    ChatOut,
    ChatRequest,
    DocumentOut,
    FileResult,
    KnowledgeBaseCreate,
    KnowledgeBaseOut,
    SearchOut,
    SearchRequest,
    UploadOut,
    history_value,
)
from kb_qa.api.uploads import ingest_uploads
from kb_qa.chain import QAChain
from kb_qa.errors import Busy, DocumentNotFound, KbQaError
from kb_qa.services import Services, build_services
from kb_qa.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, services: Services | None = None, load_models: bool = True) -> FastAPI:
    """The application.

    :param services: already built services (tests share loaded models this way).
    :param load_models: load the embedding model and the LLM at start-up (``/ready`` waits for it).
    """
    state: dict[str, Any] = {"ready": False, "error": None}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = services or build_services(settings)
        if load_models:
            try:
                await anyio.to_thread.run_sync(_load_models, app.state.services)
            except KbQaError as exc:
                state["error"] = str(exc)
                log.error("models failed to load: %s", exc)
        state["ready"] = state["error"] is None
        yield
        jobs.shutdown()

    app = FastAPI(
        title="kb-qa",
        version="0.4",
        summary="Answers questions from your own documents, with sources.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    jobs = JobRunner()
    api_errors.install(app)
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials=False,
        )

    @app.get("/health", tags=["service"], summary="Alive (no key needed)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["service"], summary="Models loaded and knowledge bases readable", dependencies=[Read])
    def ready(services: Svc) -> JSONResponse:
        problems = []
        if not state["ready"]:
            problems.append(state["error"] or "models are still loading")
        try:
            services.knowledge_bases.list_all()
        except (KbQaError, OSError) as exc:
            problems.append(f"knowledge bases unreadable: {exc}")
        body = {"ready": not problems, "problems": problems, "embedding_model": services.embeddings.name}
        return JSONResponse(body, status_code=200 if not problems else 503)

    # ------------------------------------------------------------ knowledge bases
    @app.post("/knowledge_bases", status_code=201, tags=["knowledge bases"], dependencies=[Admin],
              summary="Create a knowledge base")  # fmt: skip
    def create_kb(body: KnowledgeBaseCreate, services: Svc) -> KnowledgeBaseOut:
        if body.embedding_model and body.embedding_model != services.embeddings.name:
            raise ApiError(
                400,
                "embedding_mismatch",
                f"this server embeds with {services.embeddings.name}, not {body.embedding_model}; "
                "set embedding.model in its settings to use another model",
            )
        return KnowledgeBaseOut(**_kb(services.knowledge_bases.create(body.name, body.description)))

    @app.get("/knowledge_bases", tags=["knowledge bases"], dependencies=[Read], summary="List knowledge bases")
    def list_kbs(services: Svc) -> list[KnowledgeBaseOut]:
        return [KnowledgeBaseOut(**_kb(info)) for info in services.knowledge_bases.list_all()]

    @app.get("/knowledge_bases/{kb}", tags=["knowledge bases"], dependencies=[Read], summary="One knowledge base")
    def get_kb(kb: str, services: Svc) -> KnowledgeBaseOut:
        return KnowledgeBaseOut(**_kb(services.knowledge_bases.get(kb)))

    @app.delete("/knowledge_bases/{kb}", status_code=204, tags=["knowledge bases"], dependencies=[Admin],
                summary="Delete a knowledge base, its index and its files")  # fmt: skip
    def delete_kb(kb: str, services: Svc) -> Response:
        services.knowledge_bases.delete(kb)
        return Response(status_code=204)

    # ------------------------------------------------------------------ documents
    @app.post("/knowledge_bases/{kb}/documents", tags=["documents"], dependencies=[Admin],
              summary="Upload and index files (multipart field 'files', one or many)")  # fmt: skip
    def upload(kb: str, services: Svc, files: Annotated[list[UploadFile], File(description="The files.")]) -> UploadOut:
        services.knowledge_bases.get(kb)
        return ingest_uploads(services, kb, files)

    @app.get("/knowledge_bases/{kb}/documents", tags=["documents"], dependencies=[Read],
             summary="Documents with status, chunk counts and errors")  # fmt: skip
    def list_documents(kb: str, services: Svc) -> list[DocumentOut]:
        return [DocumentOut(**{k: v for k, v in r.to_dict().items() if k in DocumentOut.model_fields})
                for r in services.knowledge_bases.files(kb)]  # fmt: skip

    @app.get("/knowledge_bases/{kb}/documents/{document:path}/content", tags=["documents"], dependencies=[Read],
             summary="Download the original file")  # fmt: skip
    def download(kb: str, document: str, services: Svc) -> FileResponse:
        record = next((r for r in services.knowledge_bases.files(kb) if r.path == document), None)
        if record is None or not Path(record.source).is_file():
            raise DocumentNotFound(f"knowledge base '{kb}' has no document '{document}'")
        return FileResponse(record.source, filename=Path(document).name)

    @app.delete("/knowledge_bases/{kb}/documents/{document:path}", status_code=204, tags=["documents"],
                dependencies=[Admin], summary="Remove a document; its chunks stop being found at once")  # fmt: skip
    def delete_document(kb: str, document: str, services: Svc) -> Response:
        services.knowledge_bases.remove_files(kb, [document])
        return Response(status_code=204)

    @app.post("/knowledge_bases/{kb}/documents/{document:path}/reindex", tags=["documents"], dependencies=[Admin],
              summary="Read, split and embed one document again")  # fmt: skip
    def reindex(kb: str, document: str, services: Svc) -> UploadOut:
        report = services.knowledge_bases.reindex(kb, document)
        files = [FileResult(file=o.path, action=o.action, chunks=o.chunks, error=o.error) for o in report.outcomes]
        return UploadOut(knowledge_base=kb, files=files, seconds=round(report.seconds, 3))

    @app.post("/knowledge_bases/{kb}/rebuild", status_code=202, tags=["jobs"], dependencies=[Admin],
              summary="Rebuild a knowledge base in the background; poll the returned job")  # fmt: skip
    def rebuild(kb: str, services: Svc, response: Response, recreate: bool = False) -> dict[str, Any]:
        services.knowledge_bases.get(kb)
        job = jobs.submit("rebuild", kb, lambda job: services.knowledge_bases.rebuild(kb, recreate=recreate,
                                                                                       progress=job))  # fmt: skip
        response.headers["Location"] = f"/jobs/{job.id}"
        return job.to_dict()

    @app.get("/jobs", tags=["jobs"], dependencies=[Read], summary="Recent jobs, newest first")
    def list_jobs() -> list[dict[str, Any]]:
        return [job.to_dict() for job in jobs.all()]

    @app.get("/jobs/{job_id}", tags=["jobs"], dependencies=[Read], summary="A job's status and progress")
    def get_job(job_id: str) -> dict[str, Any]:
        job = jobs.get(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"no job {job_id!r} (finished jobs are kept for a while only)")
        return job.to_dict()

    # --------------------------------------------------------------------- search
    @app.post("/knowledge_bases/{kb}/search", tags=["search"], dependencies=[Read],
              summary="Ranked passages with sources and cosine scores (no model)")  # fmt: skip
    def search(kb: str, body: SearchRequest, services: Svc) -> SearchOut:
        options = body.model_dump(exclude={"query"}, exclude_none=True)
        hits = services.retriever.retrieve(body.query, [kb], **options)
        return SearchOut.model_validate({"query": body.query, "passages": [h.to_dict() for h in hits]})

    # ----------------------------------------------------------------------- chat
    @app.post("/chat", tags=["chat"], dependencies=[Read], response_model=ChatOut,
              summary="Answer from knowledge bases (or plain chat), with sources; stream=true for SSE")  # fmt: skip
    async def chat(body: ChatRequest, services: Svc) -> Any:
        kbs = list(dict.fromkeys([*body.knowledge_bases, *([body.knowledge_base] if body.knowledge_base else [])]))
        for name in kbs:  # unknown knowledge bases fail before any streaming starts
            await anyio.to_thread.run_sync(services.knowledge_bases.get, name)
        arguments: dict[str, Any] = {
            "mode": body.mode or ("kb" if kbs else "chat"),
            "knowledge_bases": kbs,
            "history": history_value(body.history),
            "retrieval": {"top_k": body.top_k, "score_threshold": body.score_threshold, "documents": body.documents},
            "generation": {"temperature": body.temperature, "max_new_tokens": body.max_tokens},
        }
        if body.stream and arguments["mode"] != "search":
            _refuse_when_full(services)  # once the stream has started, a full queue could only be an error event
        events = services.qa.stream(body.question, **arguments)
        first = await anyio.to_thread.run_sync(_next, events)  # retrieval errors become HTTP errors here
        if not body.stream:
            return await anyio.to_thread.run_sync(_drain, events, first)
        return StreamingResponse(_sse(events, first), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    legacy.register(app)
    web.register(app)

    # ------------------------------------------------------- OpenAI-compatible
    @app.get("/v1/models", tags=["OpenAI-compatible"], dependencies=[Read],
             summary="The chat model, and each knowledge base as kb:<name>")  # fmt: skip
    def v1_models(services: Svc) -> dict[str, Any]:
        return openai_compat.models_payload(services)

    @app.post("/v1/chat/completions", tags=["OpenAI-compatible"], dependencies=[Read],
              summary="Chat completions; model kb:<name> answers from that knowledge base")  # fmt: skip
    async def v1_chat(body: openai_compat.ChatCompletionRequest, services: Svc) -> Any:
        question, arguments = await anyio.to_thread.run_sync(openai_compat.chat_arguments, body, services)
        if body.stream:
            _refuse_when_full(services)
        events = services.qa.stream(question, **arguments)
        first = await anyio.to_thread.run_sync(_next, events)
        if not body.stream:
            answer = await anyio.to_thread.run_sync(_drain, events, first)
            return await anyio.to_thread.run_sync(openai_compat.completion, body.model, answer, services)
        return StreamingResponse(openai_compat.stream_chunks(body.model, events, first, _next),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})  # fmt: skip

    @app.post("/v1/embeddings", tags=["OpenAI-compatible"], dependencies=[Read],
              summary="Embeddings with the configured model (float or base64)")  # fmt: skip
    def v1_embeddings(body: openai_compat.EmbeddingRequest, services: Svc) -> dict[str, Any]:
        return openai_compat.embeddings_payload(body, services)

    return app


def _next(events: Iterator[dict[str, Any]]) -> Any:
    return next(events, None)


def _drain(events: Iterator[dict[str, Any]], first: Any) -> dict[str, Any]:
    return QAChain.final_record(itertools.chain([first] if first is not None else [], events))


def _sse_line(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse(events: Iterator[dict[str, Any]], first: Any) -> AsyncIterator[str]:
    """SSE frames: ``sources``, ``delta`` (``{"text"}``), then ``done`` (the answer) or ``error``.

    The generator advances on a worker thread one event at a time; a cancelled request waits for
    the step in progress (one token) before closing it, so it is never closed while running.
    """
    event = first
    try:
        while event is not None:
            kind = event["event"]
            if kind == "sources":
                yield _sse_line("sources", {"query": event["query"], "sources": event["sources"]})
            elif kind == "delta":
                yield _sse_line("delta", {"text": event["text"]})
            elif kind == "final":
                yield _sse_line("done", event["answer"])
            event = await anyio.to_thread.run_sync(_next, events)
    except KbQaError as exc:
        yield _sse_line("error", api_errors.error_body(exc.code, str(exc))["error"])
    except Exception:
        log.exception("generation failed part-way")
        yield _sse_line("error", {"code": "internal", "message": "generation failed; the server log has the details"})
    finally:
        close = getattr(events, "close", None)
        if close is not None:  # a client that went away stops its generation
            close()


def _refuse_when_full(services: Services) -> None:
    llm = services.qa.loaded_llm
    if llm is not None and llm.gate.full:
        raise Busy("the model is busy (its queue is full); try again shortly")


def _kb(info: Any) -> dict[str, Any]:
    return {k: v for k, v in info.to_dict().items() if k in KnowledgeBaseOut.model_fields}


def _load_models(services: Services) -> None:
    services.embeddings.warm_up()
    services.qa.llm.backend.load()


__all__ = ["create_app", "sanitize_filename"]
