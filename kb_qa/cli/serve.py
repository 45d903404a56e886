"""``kb-qa serve``: the HTTP API and the web page; ``kb-qa mcp``: the MCP server over stdio."""

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
        if settings.storage.backend != "folder":  # an unreachable database: one line before serving
            from kb_qa.services import build_storage
            from kb_qa.storage import PostgresStorage

            _, storage = build_storage(settings)
            if isinstance(storage, PostgresStorage):
                storage.pool.close()
    host, port = host or settings.server.host, port or settings.server.port
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)
    out.print(f"kb-qa: web page at http://{shown}:{port}/ , API docs at http://{shown}:{port}/docs", highlight=False)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@app.command("mcp")
def mcp(
    root: RootOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve kb-qa to an MCP client (a desktop assistant, an IDE) over stdin/stdout.

    The client starts this command itself; register it in the client's settings, e.g.
    {"mcpServers": {"kb-qa": {"command": "kb-qa", "args": ["mcp", "--root", "/path/to/knowledge_base"]}}}.
    Tools: list_knowledge_bases, list_documents, search, ask; each document's text is a resource.
    The local user is trusted (no keys), as with the other commands. Over HTTP the same server is at
    /mcp of `kb-qa serve`. Logs go to stderr; stdout carries only the protocol.
    """
    from kb_qa.mcp_server import run_stdio
    from kb_qa.services import build_services

    overrides: dict[str, Any] = {"paths": {"kb_root": str(root.resolve())}} if root else {}
    with _errors():
        settings = load_settings(config, overrides=overrides)
        services = build_services(settings)
    run_stdio(services)
