"""The ``kb-qa`` command line (also ``python main.py``).

Every command takes ``--root DIR`` (or the ``KBQA_KB_ROOT`` environment variable) to choose the
knowledge-base root. Errors print one line and exit with status 2; an import or rebuild in which
a file failed exits with status 1 after listing each failure and its reason.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from kb_qa.domain import IngestReport
from kb_qa.errors import KbQaError
from kb_qa.services import Services, build_services
from kb_qa.settings import load_settings

app = typer.Typer(
    help="kb-qa: answer questions from your own documents. Build knowledge bases from files, then search them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kb_app = typer.Typer(help="Create, fill, update, search and delete knowledge bases.", no_args_is_help=True)
models_app = typer.Typer(help="Provision and inspect the local models.", no_args_is_help=True)
llm_app = typer.Typer(help="Inspect the chat model.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(models_app, name="models")
app.add_typer(llm_app, name="llm")

out = Console(soft_wrap=True)
err = Console(stderr=True)

RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root", help="Knowledge-base root folder (default: paths.kb_root, or KBQA_KB_ROOT).", show_default=False
    ),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Settings file (default: configs/settings.yaml or KBQA_CONFIG).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
NameArg = Annotated[str, typer.Argument(help="Knowledge-base name: letters, digits, Chinese, '_', '-', '.'.")]


def _services(root: Path | None, config: Path | None) -> Services:
    overrides: dict[str, Any] = {"paths": {"kb_root": str(root.resolve())}} if root else {}
    return build_services(load_settings(config, overrides=overrides))


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except KbQaError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


class _Bar:
    """A rich progress bar with ETA, drawn on stderr (nothing when --json or not a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}", style="dim"),
            console=err,
            disable=not enabled,
            transient=False,
        )
        self._task: Any = None

    def __enter__(self) -> _Bar:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def start(self, total: int, description: str) -> None:
        self._task = self._progress.add_task(description, total=total, info="")

    def advance(self, step: int = 1, info: str = "") -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=step, info=info[-50:])


def _report(report: IngestReport, as_json: bool) -> None:
    if as_json:
        _print_json(report.to_dict())
    else:
        summary = report.summary()
        table = Table(title=f"knowledge base '{report.kb}'")
        for column in ("added", "updated", "unchanged", "removed", "failed", "chunks", "seconds"):
            table.add_column(column, justify="right")
        table.add_row(
            *(str(summary[c]) for c in ("added", "updated", "unchanged", "removed", "failed", "chunks", "seconds"))
        )
        out.print(table)
        for failure in report.failed:
            out.print(f"[red]failed[/] {failure.path}: {failure.error}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


def _ingest(as_json: bool, run: Callable[[_Bar], IngestReport]) -> None:
    with _errors(), _Bar(enabled=not as_json) as bar:
        report = run(bar)
    _report(report, as_json)


@kb_app.command("create")
def kb_create(
    name: NameArg,
    description: Annotated[str, typer.Option("--description", "-d", help="What the knowledge base holds.")] = "",
    root: RootOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an empty knowledge base that uses the configured embedding model."""
    with _errors():
        info = _services(root, config).knowledge_bases.create(name, description)
    if as_json:
        _print_json(info.to_dict())
        return
    out.print(f"created knowledge base '{info.name}' ({info.embedding_model}, {info.dimension}-d)")


@kb_app.command("list")
def kb_list(root: RootOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List knowledge bases with their document and chunk counts."""
    with _errors():
        infos = _services(root, config).knowledge_bases.list_all()
    if as_json:
        _print_json([i.to_dict() for i in infos])
        return
    table = Table()
    for column in ("name", "documents", "chunks", "embedding model", "created", "description"):
        table.add_column(column)
    for i in infos:
        table.add_row(i.name, str(i.document_count), str(i.chunk_count), i.embedding_model, i.created_at, i.description)
    out.print(table if infos else "no knowledge bases yet; create one with `kb-qa kb create NAME`")


@kb_app.command("delete")
def kb_delete(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    root: RootOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Delete a knowledge base, its index and its copies of files."""
    with _errors():
        services = _services(root, config)
        services.knowledge_bases.get(name)
        if not yes and not typer.confirm(f"Delete knowledge base '{name}' and everything in it?"):
            raise typer.Exit(1)
        services.knowledge_bases.delete(name)
    out.print(f"deleted knowledge base '{name}'")


@kb_app.command("add")
def kb_add(
    name: NameArg,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to copy into the knowledge base and index.")],
    root: RootOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add files (or folders of files); unchanged content is not embedded again."""
    services = _services(root, config)
    _ingest(as_json, lambda bar: services.knowledge_bases.add_files(name, paths, progress=bar))


@kb_app.command("remove")
def kb_remove(
    name: NameArg,
    files: Annotated[list[str], typer.Argument(help="Document names as `kb-qa kb files` lists them.")],
    root: RootOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove documents; their chunks stop being found at once."""
    with _errors():
        removed = _services(root, config).knowledge_bases.remove_files(name, files)
    if as_json:
        _print_json({"removed": removed})
    else:
        out.print(f"removed {len(removed)} document(s) from '{name}'")


@kb_app.command("files")
def kb_files(name: NameArg, root: RootOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List a knowledge base's documents with their status, chunks and errors."""
    with _errors():
        records = _services(root, config).knowledge_bases.files(name)
    if as_json:
        _print_json([r.to_dict() for r in records])
        return
    table = Table()
    for column in ("document", "status", "chunks", "size", "loader", "updated", "error"):
        table.add_column(column, overflow="fold", no_wrap=column in ("status", "chunks", "size"))
    for r in records:
        status = "[green]indexed[/]" if r.status == "indexed" else "[red]failed[/]"
        table.add_row(r.path, status, str(r.chunk_count), f"{r.size:,}", r.loader, r.updated_at, r.error or "")
    out.print(table)


@kb_app.command("rebuild")
def kb_rebuild(
    name: NameArg,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Folder to mirror (remembered; default: the last one, or the KB's content)."),
    ] = None,
    recreate: Annotated[
        bool, typer.Option("--recreate", help="Start from an empty index and re-embed everything.")
    ] = False,
    create: Annotated[
        bool, typer.Option("--create", help="Create the knowledge base first if it does not exist.")
    ] = False,
    root: RootOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mirror a folder: index new and changed files, skip unchanged ones, drop deleted ones."""
    services = _services(root, config)
    with _errors():
        if create and name not in {i.name for i in services.knowledge_bases.list_all()}:
            services.knowledge_bases.create(name)
    _ingest(as_json, lambda bar: services.knowledge_bases.rebuild(name, directory, recreate=recreate, progress=bar))


@kb_app.command("search")
def kb_search(
    name: NameArg,
    question: Annotated[str, typer.Argument(help="What to look for, in any language the model knows.")],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, max=100, help="How many chunks to return.")] = 4,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", min=-1.0, max=1.0, help="Minimum cosine similarity (default: retrieval.score_threshold)."
        ),
    ] = None,
    root: RootOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rank a knowledge base's chunks by cosine similarity to a question (higher is closer)."""
    with _errors():
        services = _services(root, config)
        if threshold is None:
            threshold = services.settings.retrieval.score_threshold
        hits = services.knowledge_bases.search(name, question, top_k=k, score_threshold=threshold)
    if as_json:
        _print_json([h.to_dict() for h in hits])
        return
    if not hits:
        out.print("no chunk passed the score threshold")
    for rank, hit in enumerate(hits, start=1):
        where = hit.document + (f", page {hit.page}" if hit.page else "") + (f" — {hit.heading}" if hit.heading else "")
        out.print(f"[bold]{rank}. score {hit.score:.3f}[/]  {where}", highlight=False)
        out.print("   " + hit.text.replace("\n", "\n   "), highlight=False)


@models_app.command("provision")
def models_provision(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    chat: Annotated[bool, typer.Option("--chat/--no-chat", help="Also prepare and load the chat model.")] = True,
) -> None:
    """Convert the bundled models into the local model cache (once) and load them to check they work."""
    with _errors():
        settings = load_settings(config)
        embeddings = build_services(settings).embeddings
        embeddings.warm_up()
        info: dict[str, Any] = {
            "embedding": {
                "model": embeddings.name,
                "path": str(embeddings.model_path),
                "dimension": embeddings.dimension,
                "device": embeddings.device,
                "precision": embeddings.precision,
            }
        }
        if chat:
            from kb_qa.llm.factory import build_backend

            backend = build_backend(settings)
            backend.context_window  # noqa: B018 - loads the model
            info["chat"] = backend.info()
    if as_json:
        _print_json(info)
        return
    e = info["embedding"]
    out.print(
        f"embedding model {e['model']} ready: {e['dimension']}-d on {e['device']} in {e['precision']} ({e['path']})"
    )
    if "chat" in info:
        c = info["chat"]
        out.print(
            f"chat model {c['name']} ready: {c.get('backend')} on {c.get('device', 'server')} ({c.get('source', '')})"
        )


def _chat_llm(config: Path | None) -> Any:
    from kb_qa.llm.factory import build_llm

    return build_llm(load_settings(config))


@llm_app.command("info")
def llm_info(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Load the configured chat model and show backend, device, dtype, quantization, size and memory."""
    with _errors():
        info = _chat_llm(config).backend.info()
    if as_json:
        _print_json(info)
        return
    table = Table(show_header=False)
    for key, value in info.items():
        if key == "parameters" and isinstance(value, int):
            value = f"{value:,} ({value / 1e6:.0f}M)"
        elif key == "memory_bytes" and isinstance(value, int):
            value = f"{value / 2**20:.0f} MiB"
        table.add_row(key, str(value))
    out.print(table)


@app.command("chat")
def chat(
    config: ConfigOpt = None,
    system: Annotated[str | None, typer.Option("--system", help="System prompt (default: llm.system_prompt).")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Longest answer in tokens.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", min=0.0, max=2.0, help="0 = greedy.")] = None,
) -> None:
    """Chat with the configured model, with history. Type `clear` to empty the history, `stop` to quit."""
    from kb_qa.llm.budget import fit_context

    with _errors():
        llm = _chat_llm(config)
        llm.backend.context_window  # noqa: B018 - loads the model before the first prompt
    history: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()
    if interactive:
        out.print(f"[bold]{llm.backend.name}[/] — `clear` empties the history, `stop` quits.")
    while True:
        try:
            question = input("\n用户 / you: " if interactive else "").strip()
        except EOFError:
            break
        if question == "stop":
            break
        if question == "clear":
            history.clear()
            out.print("history cleared")
            continue
        if not question:
            continue
        params = llm.params(max_new_tokens=max_tokens, temperature=temperature)
        with _errors():
            kept = fit_context(
                system=llm.system_prompt if system is None else system,
                question=question,
                history=history,
                passages=[],
                count=llm.backend.count_tokens,
                window=llm.backend.context_window,
                max_new_tokens=params.max_new_tokens,
            )
            messages = llm.messages(question, kept.history, system)
            if interactive:
                out.print(f"[bold]{llm.backend.name}:[/] ", end="")
            answer = []
            for delta in llm.stream_text(messages, params):
                answer.append(delta)
                out.print(delta, end="", highlight=False, markup=False)
            out.print()
        history = [
            *kept.history,
            {"role": "user", "content": question},
            {"role": "assistant", "content": "".join(answer)},
        ]


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def main() -> None:
    app()
