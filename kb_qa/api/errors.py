"""Every error leaves the API as ``{"error": {"code", "message"}}`` with the right status.

The core raises :class:`~kb_qa.errors.KbQaError` subclasses; this module maps them to HTTP in one
place. Request validation becomes 422 with the offending field named; anything unexpected becomes
a 500 whose message says to look at the server log (the traceback goes to the log, never to the
client). No error is ever answered with 200.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kb_qa import errors
from kb_qa.llm.base import InvalidHistory
from kb_qa.llm.budget import ContextTooLong

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5

STATUS: dict[type[errors.KbQaError], int] = {
    errors.InvalidName: 400,
    errors.DocumentRejected: 400,
    ContextTooLong: 400,
    errors.KnowledgeBaseNotFound: 404,
    errors.DocumentNotFound: 404,
    errors.KnowledgeBaseExists: 409,
    errors.EmbeddingMismatch: 409,
    InvalidHistory: 422,
    errors.Busy: 429,
    errors.ModelUnavailable: 503,
    errors.ConfigError: 503,
}


class ApiError(errors.KbQaError):
    """An error raised by the API layer itself, with its status and code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def openai_error(code: str, message: str, status: int) -> dict[str, dict[str, str | None]]:
    """OpenAI's error shape, used under /v1 so that OpenAI clients raise their usual exceptions."""
    kinds = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
    kind = kinds.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _respond(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    if request.url.path.startswith("/v1/"):
        return JSONResponse(openai_error(code, message, status), status_code=status, headers=headers)
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def status_of(exc: errors.KbQaError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_response(request: Request, exc: errors.KbQaError) -> JSONResponse:
    status = status_of(exc)
    headers = dict(exc.headers) if isinstance(exc, ApiError) else {}
    if status in (429, 503):
        headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return _respond(request, status, exc.code, str(exc), headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.KbQaError)
    async def kbqa_error(request: Request, exc: errors.KbQaError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        return _respond(request, 422, "invalid_request", "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _respond(request, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _respond(request, 500, "internal", "internal error; the server log has the details")
