"""``kb-qa eval retrieval|answers``: quality on a question set."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from kb_qa.cli.common import (
    ConfigOpt,
    JsonOpt,
    MaxTokensOpt,
    OutOpt,
    SetArg,
    ThresholdOpt,
    _Bar,
    _errors,
    _print_json,
    err,
    eval_app,
    out,
)
from kb_qa.errors import KbQaError
from kb_qa.services import Services, build_services
from kb_qa.settings import load_settings


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


def _asked_in(path: Path) -> set[str]:
    """The ids of the questions an earlier ``eval answers`` result file recorded."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        return {str(record["id"]) for record in earlier["questions"]}
    except OSError as exc:
        raise KbQaError(f"--exclude: cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise KbQaError(
            f"--exclude: {path} is not a result of `kb-qa eval answers` (its JSON has no questions with ids)"
        ) from exc


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
    from kb_qa.evaluation.provenance import run_revision

    run_revision()  # the result names the code that started, before the minutes of ingesting and ranking

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
    exclude: Annotated[
        Path | None,
        typer.Option(
            "--exclude",
            help="An earlier result JSON of this command: its questions are not asked again, so this run "
            "measures other ones (held out); --limit is spread over the rest.",
        ),
    ] = None,
    out_dir: OutOpt = Path("eval_results"),
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """EM/F1 (SQuAD's or CMRC 2018's), answers containing a gold answer, answerable questions wrongly
    declined, unanswerable questions declined, evidence highlights holding the gold answer, seconds per answer.

    With --context retrieved the set's docs/ are ingested into a temporary knowledge base and every
    question goes through the whole chain (retrieval, prompt, the configured LLM, greedy decoding).
    Compare with --context gold to see how much of the model's ceiling the chain reaches.
    The JSON written to --out also holds one record per question (the answer, what was scored, and
    gold_source: the number of the first source holding a gold answer), to see which ones failed,
    and the settings it ran with (prompts folder, passage order, retrieval and generation options, the git revision).
    """
    from kb_qa.evaluation import CONTEXTS, build_article_kb, evaluate_answers, load_set
    from kb_qa.evaluation.provenance import run_revision

    run_revision()  # the result names the code that started, before the minutes of ingesting and asking
    with _errors(), _scratch_services(config) as services, _Bar(enabled=not as_json, unit="") as bar:
        if context not in CONTEXTS:
            raise KbQaError(f"--context must be one of {', '.join(CONTEXTS)}")
        data = load_set(set_dir)
        excluded = _asked_in(exclude) if exclude else set()
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
            exclude=excluded,
            progress=bar.report,
        )
    suffix = "-gold" if context == "gold" else ""
    _write_result(out_dir, f"{data.name}-answers{suffix}", result.to_dict(), result.markdown(), as_json)
