"""``kb-qa ask`` and ``kb-qa chat``: answers in the terminal."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from kb_qa.cli.common import (
    ConfigOpt,
    DocOpt,
    ExpandOpt,
    JsonOpt,
    KbOpt,
    MaxTokensOpt,
    MethodOpt,
    RootOpt,
    TemperatureOpt,
    ThresholdOpt,
    TopKOpt,
    _errors,
    _print_json,
    _services,
    app,
    out,
)
from kb_qa.cli.kb import _retrieval_options
from kb_qa.events import Delta, Final, Sources
from kb_qa.services import Services


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
        if isinstance(event, Sources) and show and mode == "search":
            if not event.sources:
                out.print("no passage passed the score threshold")
            for source in event.sources:
                out.print(
                    f"[bold][{source['number']}] score {source['score']:.3f}[/]  {source['kb']}: {source['document']}"
                )
                out.print("    " + source["text"].replace("\n", "\n    "), highlight=False, markup=False)
        elif isinstance(event, Delta) and show:
            out.print(event.text, end="", highlight=False, markup=False)
        elif isinstance(event, Final):
            final = event.answer
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
