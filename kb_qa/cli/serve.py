"""``kb-qa serve``: the HTTP API and the web page."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kb_qa.cli.common import ConfigOpt, RootOpt, _errors, app, out
from kb_qa.settings import load_settings


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Interface (default server.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Port (default server.port).")] = None,
    root: RootOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the web page (/) and the HTTP API (OpenAPI docs at /docs). Models load before the first request."""
    import uvicorn

    from kb_qa.api import create_app

    overrides: dict[str, Any] = {"paths": {"kb_root": str(root.resolve())}} if root else {}
    with _errors():
        settings = load_settings(config, overrides=overrides)
    host, port = host or settings.server.host, port or settings.server.port
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)
    out.print(f"kb-qa: web page at http://{shown}:{port}/ , API docs at http://{shown}:{port}/docs", highlight=False)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
