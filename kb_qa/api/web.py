"""The web page: ``GET /`` and its static files under ``/static``.

The page (``kb_qa/web/``: plain HTML, CSS and JavaScript, no build step) talks to the service only
through the public API, as any client would. It loads nothing from outside the service (no CDN,
no web fonts), which the Content-Security-Policy sent with it enforces in the browser. The page
itself needs no key; the API calls it makes send the key the user enters when auth is on.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[1] / "web"

# everything from the service itself; blob: for downloads, data: for inline icons
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


def register(app: FastAPI) -> None:
    """Serve the page at ``GET /`` (``POST /`` stays ChatGLM2's drop-in chat route)."""

    @app.get("/", tags=["web page"], summary="The web page (HTML)", response_class=FileResponse,
             responses={200: {"content": {"text/html": {}}, "description": "The page"}})  # fmt: skip
    def page() -> FileResponse:
        return FileResponse(
            WEB_DIR / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")
