"""Request bodies bounded while they arrive, and upload scratch space that never outlives its process.

Starlette writes a multipart body to temporary files while parsing it, before any route runs: a
2 GiB upload reached the route's size check only after ~1.7 GB were on disk. :class:`BodyLimit`
refuses a body over ``server.max_request_mb`` before reading it when it declares a Content-Length,
and stops reading at the limit when it does not (chunked), answering 413 either way.

Uploads are written into ``kbqa-upload-<pid>-*`` folders in the knowledge-base root's scratch folder
(``<root>/.tmp``), removed when the request ends however it ends; :func:`clean_stale_upload_dirs`
removes those of processes that no longer run (a killed server) at start-up.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from kb_qa.api.errors import respond

log = logging.getLogger(__name__)

UPLOAD_PREFIX = "kbqa-upload-"


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` mid-body; an HTTP exception so that body parsing passes it on as 413
    (FastAPI turns other exceptions there into 400) and the app's handler answers it."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, too_large_message(max_bytes))


def too_large_message(max_bytes: int) -> str:
    limit = f"{max_bytes / 2**20:g} MB"
    return f"the request body is larger than server.max_request_mb ({limit}); send fewer or smaller files"


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watching_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watching_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """413 in the API's error shape (OpenAI's under /v1), as every other error."""
        message = too_large_message(self.max_bytes)
        response = respond(Request(scope), 413, "too_large", message, {"Connection": "close"})
        await response(scope, receive, send)


def upload_dir(parent: Path | None = None) -> tempfile.TemporaryDirectory[str]:
    """A scratch folder for one request's uploads, named after this process, in ``parent`` (the
    knowledge-base root's scratch folder, so that moving a file in is a rename) or the temp dir."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-", dir=parent)


def clean_stale_upload_dirs(temp_dir: Path | None = None) -> int:
    """Remove upload folders left by processes that no longer run; how many were removed."""
    root = Path(temp_dir or tempfile.gettempdir())
    removed = 0
    for folder in root.glob(f"{UPLOAD_PREFIX}*"):
        pid_text = folder.name[len(UPLOAD_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and _alive(int(pid_text)):
            continue  # a running server's request (or ours)
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    if removed:
        log.info("removed %d upload folder(s) left by stopped processes in %s", removed, root)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
