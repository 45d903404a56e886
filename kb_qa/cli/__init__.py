"""The ``kb-qa`` command line (also ``python main.py``), one module per command group.

Every command takes ``--root DIR`` (or the ``KBQA_KB_ROOT`` environment variable) to choose the
knowledge-base root. Errors print one line and exit with status 2; an import or rebuild in which
a file failed exits with status 1 after listing each failure and its reason.

- :mod:`.common`: the Typer apps, shared options, progress bars, error handling;
- :mod:`.kb`: ``kb create|list|delete|add|remove|files|rebuild|search``;
- :mod:`.models`: ``models provision``, ``llm info``;
- :mod:`.answer`: ``ask`` and ``chat``;
- :mod:`.evaluate`: ``eval retrieval|answers``;
- :mod:`.keys`: ``keys create|list|revoke`` (API keys with a role and a scope);
- :mod:`.serve`: ``serve`` and ``mcp`` (the MCP server over stdio);
- :mod:`.db`: ``db start|stop|status`` (a local PostgreSQL for ``storage.backend: postgres``).
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from kb_qa.cli import answer, db, evaluate, kb, keys, models, serve  # noqa: F401  (the commands register themselves)
from kb_qa.cli.common import app


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def main() -> None:
    app()


__all__ = ["app", "main"]
