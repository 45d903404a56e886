"""``kb-qa kb …``: create, fill, update, search and delete knowledge bases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kb_qa.cli.common import (
    ConfigOpt,
    DocOpt,
    ExpandOpt,
    JsonOpt,
    MethodOpt,
    NameArg,
    RootOpt,
    ThresholdOpt,
    TopKOpt,
    _Bar,
    _errors,
    _ingest,
    _print_json,
    _services,
    err,
    kb_app,
    out,
)
from kb_qa.services import build_services
from kb_qa.settings import load_settings


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


@kb_app.command("migrate")
def kb_migrate(
    name: NameArg,
    to: Annotated[
        str,
        typer.Option("--to", help="postgres: from the folders into the database (storage.url); folder: back."),
    ],
    root: RootOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a knowledge base to the other storage without re-embedding: its documents, chunks, vectors
    and keywords. The copies of its files stay under the knowledge-base root (both storages keep them
    there). Afterwards set storage.backend to the new storage to use it. Interrupted: run it again.

    Example: kb-qa kb migrate handbook --to postgres
    """
    if to not in ("postgres", "folder"):
        raise typer.BadParameter("choose postgres or folder", param_hint="--to")
    overrides: dict[str, Any] = {"paths": {"kb_root": str(root.resolve())}} if root else {}
    with _errors():
        settings = load_settings(config, overrides=overrides)
        source_backend = "folder" if to == "postgres" else "postgres"
        source = build_services(settings.model_copy(update={"storage": settings.storage.model_copy(
            update={"backend": source_backend})}))  # fmt: skip
        target = build_services(
            settings.model_copy(update={"storage": settings.storage.model_copy(update={"backend": to})}),
            embeddings=source.embeddings,
        )
        try:
            with _Bar(not as_json, unit="documents") as bar:
                info = source.knowledge_bases.move_to(name, target.knowledge_bases, progress=bar)
        finally:
            source.close()
            target.close()
    if as_json:
        _print_json(info.to_dict())
        return
    out.print(
        f"moved '{name}' to {to}: {info.document_count} documents, {info.chunk_count} chunks "
        f"(set storage.backend: {to} to use it)",
        highlight=False,
    )


def _retrieval_options(
    top_k: int | None, threshold: float | None, method: str | None, docs: list[str] | None, expand: int | None
) -> dict[str, Any]:
    return {
        "top_k": top_k,
        "score_threshold": threshold,
        "method": method,
        "documents": docs or None,
        "expand_chars": expand,
    }


def _print_passages(passages: list[dict[str, Any]]) -> None:
    if not passages:
        out.print("no passage passed the score threshold")
    for rank, p in enumerate(passages, start=1):
        where = (
            p["document"]
            + (f", page {p['page']}" if p["page"] else "")
            + (f" — {p['heading']}" if p["heading"] else "")
        )
        relevance = f"  relevance {p['relevance']:.3f}" if p.get("relevance") is not None else ""
        out.print(f"[bold][{rank}] score {p['score']:.3f}[/]{relevance}  {p['kb']}: {where}", highlight=False)
        out.print("    " + p["text"].replace("\n", "\n    "), highlight=False, markup=False)


@kb_app.command("search")
def kb_search(
    names: Annotated[list[str], typer.Argument(help="Knowledge base(s), then the question (last argument).")],
    k: TopKOpt = None,
    threshold: ThresholdOpt = None,
    method: MethodOpt = None,
    docs: DocOpt = None,
    expand: ExpandOpt = None,
    root: RootOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the passages that best match a question, without asking the model.

    The score is the cosine similarity of question and passage (higher is closer); the order is the
    method's relevance (see configs/settings.yaml, retrieval).

    \b
    Examples:
      kb-qa kb search handbook "年假可以顺延吗？"
      kb-qa kb search a b QUESTION      (several knowledge bases: a and b)
    """
    if len(names) < 2:
        err.print("[bold red]error:[/] give a knowledge base and a question")
        raise typer.Exit(2)
    *kbs, question = names
    with _errors():
        services = _services(root, config)
        hits = services.retriever.retrieve(question, kbs, **_retrieval_options(k, threshold, method, docs, expand))
    if as_json:
        _print_json([h.to_dict() for h in hits])
    else:
        _print_passages([h.to_dict() for h in hits])
