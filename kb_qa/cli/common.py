"""What every command shares: the Typer apps, options, output, progress bars, error handling."""

from __future__ import annotations

import json
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

from kb_qa.domain import EXPAND_CHARS, SCORE, TOP_K, IngestReport
from kb_qa.errors import KbQaError
from kb_qa.services import Services, build_services
from kb_qa.settings import load_settings

# Help is laid out by click, not rich: click re-wraps each paragraph of a command's docstring to the
# terminal, while typer's rich layout kept the docstring's own line breaks after the first paragraph
# and wrapped those lines again (ragged text at 80 columns).
HELP_LAYOUT: dict[str, Any] = {"rich_markup_mode": None}

app = typer.Typer(
    help="kb-qa: answer questions from your own documents. Build knowledge bases from files, then search them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    **HELP_LAYOUT,
)


def command_group(summary: str) -> typer.Typer:
    """A ``kb-qa <group>`` of commands, laid out as the top level is."""
    return typer.Typer(help=summary, no_args_is_help=True, **HELP_LAYOUT)


kb_app = command_group("Create, fill, update, search and delete knowledge bases.")
models_app = command_group("Provision and inspect the local models.")
llm_app = command_group("Inspect the chat model.")
eval_app = command_group(
    "Measure retrieval and answer quality on a question set (the layout of ../shared/data/eval/*; see "
    "kb_qa/evaluation/)."
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
SetArg = Annotated[Path, typer.Argument(help="Question-set folder: corpus.jsonl, queries.jsonl, qrels/, docs/.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Where the JSON result and the markdown table are written.")]
KbOpt = Annotated[
    list[str] | None,
    typer.Option("--kb", help="Knowledge base to answer from; repeat for several.", show_default=False),
]
MaxTokensOpt = Annotated[int | None, typer.Option("--max-tokens", min=1, help="Longest answer in tokens.")]
TemperatureOpt = Annotated[float | None, typer.Option("--temperature", min=0.0, max=2.0, help="0 = greedy.")]
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


def _services(root: Path | None, config: Path | None) -> Services:
    overrides: dict[str, Any] = {"paths": {"kb_root": str(root.resolve())}} if root else {}
    with _errors():  # an unreachable database, say: one line
        return build_services(load_settings(config, overrides=overrides))


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except KbQaError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    except OSError as exc:  # the disk itself (full, read-only, a file where a folder should be): one line
        where = f" ({exc.filename})" if exc.filename else ""
        err.print(
            f"[bold red]error:[/] {exc.strerror or exc}{where}; check the knowledge-base root and free space",
            highlight=False,
        )
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
