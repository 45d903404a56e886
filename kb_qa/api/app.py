"""The FastAPI application: knowledge bases, documents, search and grounded chat over HTTP.

``create_app(settings)`` builds it; ``kb-qa serve`` runs it with uvicorn. The embedding model and
the chat model load in the lifespan (``/ready`` says when). Blocking work (embedding, FAISS, the
LLM) runs on worker threads, never on the event loop: plain endpoints are sync functions that
FastAPI runs in its thread pool, and a streamed answer advances its generator on a worker thread
one event at a time (:mod:`kb_qa.api.streaming`). Routes: one router per domain in
:mod:`kb_qa.api.routes` (their dependencies in :mod:`kb_qa.api.deps`), the drop-in routes of the
originals in :mod:`kb_qa.api.legacy`, the page in :mod:`kb_qa.api.web`. Errors:
:mod:`kb_qa.api.errors`. Keys: ``server.api_keys`` (read, search, chat) and ``server.admin_keys``
(also change knowledge bases); with none set the API is open. ``POST /`` is ChatGLM2's drop-in route.
``/mcp`` is the MCP server's streamable HTTP transport (:mod:`kb_qa.mcp_server`; ``server.mcp``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Route

from kb_qa.api import errors as api_errors
from kb_qa.api import legacy, web
from kb_qa.api.deps import Read, sanitize_filename
from kb_qa.api.jobs import JobRunner, PgJobStore
from kb_qa.api.limits import BodyLimit, clean_stale_upload_dirs
from kb_qa.api.routes import AFTER_LEGACY, ROUTERS
from kb_qa.errors import KbQaError
from kb_qa.keys import KEYS_FILE, Keys, KeyStore
from kb_qa.services import Services, build_services
from kb_qa.settings import Settings
from kb_qa.storage import PostgresStorage

if TYPE_CHECKING:
    from kb_qa.mcp_server import McpEndpoint

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, services: Services | None = None, load_models: bool = True) -> FastAPI:
    """The application.

    :param services: already built services (tests share loaded models this way).
    :param load_models: load the embedding model and the LLM at start-up (``/ready`` waits for it).
    """
    readiness: dict[str, Any] = {"ready": False, "error": None}
    jobs = JobRunner()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = services or build_services(settings)
        storage = app.state.services.knowledge_bases.storage
        if isinstance(storage, PostgresStorage):  # jobs in the database: every replica sees them
            jobs.store = PgJobStore(storage.pool)
        clean_stale_upload_dirs(app.state.services.knowledge_bases.scratch_dir())
        clean_stale_upload_dirs()  # those of versions that used the system's temp dir
        if load_models:
            try:
                await anyio.to_thread.run_sync(_load_models, app.state.services)
            except KbQaError as exc:
                readiness["error"] = str(exc)
                log.error("models failed to load: %s", exc)
        readiness["ready"] = readiness["error"] is None
        async with mcp.running() if mcp is not None else nullcontext():
            yield
        jobs.shutdown()
        if services is None:
            app.state.services.close()

    # with keys (in the settings, or made by `kb-qa keys create`, even while serving), the API's
    # description is behind them too; server.public_docs opens it
    keyed = not settings.server.public_docs
    app = FastAPI(
        title="kb-qa",
        version="0.4",
        summary="Answers questions from your own documents, with sources.",
        lifespan=lifespan,
        # with keys set, the API's description is behind them too (server.public_docs opens it)
        openapi_url=None if keyed else "/openapi.json",
        docs_url=None if keyed else "/docs",
        redoc_url=None if keyed else "/redoc",
    )
    app.state.settings = settings
    app.state.keys = Keys(KeyStore(settings.kb_root / KEYS_FILE), settings.server.api_keys, settings.server.admin_keys)
    app.state.jobs = jobs
    app.state.readiness = readiness
    api_errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=int(settings.server.max_request_mb * 1024 * 1024))
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials=False,
        )
    for router in ROUTERS:
        app.include_router(router)
    mcp = _mcp_endpoint(app) if settings.server.mcp else None
    legacy.register(app)
    web.register(app)
    for router in AFTER_LEGACY:
        app.include_router(router)
    if keyed:
        _docs_behind_keys(app)
    return app


def _docs_behind_keys(app: FastAPI) -> None:
    """/openapi.json, /docs and /redoc for holders of a key (a browser sends it as a Bearer header);
    for anyone while no key is configured."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse, JSONResponse

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Read])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Read])
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="kb-qa")

    @app.get("/redoc", include_in_schema=False, dependencies=[Read])
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="kb-qa")


def _mcp_endpoint(app: FastAPI) -> McpEndpoint:
    """MCP's streamable HTTP transport at /mcp, over the app's services (see :mod:`kb_qa.mcp_server`)."""
    from kb_qa.mcp_server import McpEndpoint, build_mcp

    settings: Settings = app.state.settings
    endpoint = McpEndpoint(
        build_mcp(lambda: app.state.services),
        host=settings.server.host,
        max_request_bytes=int(settings.server.max_request_mb * 1024 * 1024),
    )
    app.router.routes.append(Route("/mcp", endpoint=endpoint, methods=["GET", "POST", "DELETE"]))
    return endpoint


def _load_models(services: Services) -> None:
    services.embeddings.warm_up()
    services.qa.load_model()


__all__ = ["create_app", "sanitize_filename"]
