"""Every error leaves the API as ``{"error": {"code", "message"}}`` with the right status.

The core raises :class:`~kb_qa.errors.KbQaError` subclasses; this module maps them to HTTP in one
place. Request validation becomes 422 with the offending field named; anything unexpected becomes
a 500 whose message says to look at the server log (the traceback goes to the log, never to the
client). No error is ever answered with 200.

Under ``/v1`` (the OpenAI-compatible routes) errors follow OpenAI's contract exactly: the body is
``{"error": {"message", "type", "param", "code"}}`` and a request that fails validation answers
**400** ``invalid_request_error`` with ``param`` naming the field (OpenAI never answers 422), so
the OpenAI SDKs raise their ``BadRequestError``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kb_qa import errors
from kb_qa.keys import Forbidden
from kb_qa.llm.base import InvalidHistory
from kb_qa.llm.budget import ContextTooLong
from vector_store.contract import StoreUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5

STATUS: dict[type[errors.KbQaError], int] = {
    errors.InvalidName: 400,
    errors.BadRequest: 400,
    errors.DocumentRejected: 400,
    ContextTooLong: 400,
    errors.KnowledgeBaseNotFound: 404,
    errors.DocumentNotFound: 404,
    errors.KnowledgeBaseExists: 409,
    errors.Conflict: 409,
    errors.EmbeddingMismatch: 409,
    InvalidHistory: 422,
    errors.Busy: 429,
    Forbidden: 403,
    errors.ModelUnavailable: 503,
    errors.ConfigError: 503,
    errors.IndexUnreadable: 500,
    errors.StorageError: 500,
    errors.StorageUnavailable: 503,
}


class ApiError(errors.KbQaError):
    """An error raised by the API layer itself, with its status and code."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}
        self.param = param  # the request field at fault (OpenAI's ``param``)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def openai_error(
    code: str | None, message: str, status: int, param: str | None = None
) -> dict[str, dict[str, str | None]]:
    """OpenAI's error shape, used under /v1 so that OpenAI clients raise their usual exceptions."""
    kinds = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
    kind = kinds.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def is_openai_path(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    if is_openai_path(request):
        status = 400 if status == 422 else status  # OpenAI answers every invalid request with 400
        return JSONResponse(openai_error(code, message, status, param), status_code=status, headers=headers)
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


_NAME_FIELDS = ("name", "kb", "knowledge_base_id")


def _name_problem(problems: Sequence[Any]) -> str | None:
    """When every problem is a knowledge-base name breaking the naming rule: the rule, in words."""
    from kb_qa.registry import validate_name

    if not problems or any(
        not p.get("loc") or p["loc"][-1] not in _NAME_FIELDS or p.get("type") == "missing" for p in problems
    ):
        return None
    for problem in problems:
        try:
            validate_name(str(problem.get("input", "")))
        except errors.InvalidName as exc:
            return str(exc)
    return None


def _where(problem: Any) -> str:
    return ".".join(str(p) for p in problem.get("loc", ()) if p != "body") or "body"


def describe_problems(problems: Sequence[Any]) -> str:
    """Validation problems (pydantic's ``errors()``) in one line: ``field: what is wrong; …``."""
    return "; ".join(f"{_where(p)}: {p.get('msg', 'invalid')}" for p in problems)


def allowed_methods(app: Any, path: str) -> list[str]:
    """The methods the routes of ``path`` take (one route per method here, so Starlette's own
    ``Allow`` names only the first route's)."""
    methods: set[str] = set()
    stack = list(getattr(app, "routes", []))
    while stack:
        route = stack.pop()
        stack.extend(getattr(route, "routes", []) or [])
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods |= set(route_methods)
    return sorted(methods)


def status_of(exc: errors.KbQaError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_response(request: Request, exc: errors.KbQaError) -> JSONResponse:
    status = status_of(exc)
    if status >= 500 and status != 503:
        log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
    headers = dict(exc.headers) if isinstance(exc, ApiError) else {}
    if status in (429, 503):
        headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return respond(request, status, exc.code, str(exc), headers, getattr(exc, "param", None))


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.KbQaError)
    async def kbqa_error(request: Request, exc: errors.KbQaError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        named = _name_problem(exc.errors())
        if named is not None:  # a knowledge-base name: the naming rule in words, not its regex
            return respond(request, 400, "invalid_name", named, param="name")
        fields = [(_where(item), item.get("type", "")) for item in exc.errors()]
        if is_openai_path(request):  # OpenAI: param names the (first) field, code says missing or invalid
            param, kind = fields[0] if fields else (None, "")
            param = param.split(".")[0] if param else param  # the request's field, not pydantic's union member
            code = "missing_required_parameter" if kind == "missing" else "invalid_value"
            return respond(request, 400, code, describe_problems(exc.errors()), param=param)
        return respond(request, 422, "invalid_request", describe_problems(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of the path, not only those of the first route that matched
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return respond(request, exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return error_response(request, errors.StorageUnavailable(f"{exc}; try again shortly"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return respond(request, 500, "internal", "internal error; the server log has the details")
