"""``kb-qa keys``: API keys with a role and a knowledge-base scope (see :mod:`kb_qa.keys`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kb_qa.cli.common import ConfigOpt, JsonOpt, RootOpt, _errors, _print_json, app, command_group, out
from kb_qa.keys import AUDIT_FILE, KEYS_FILE, ROLES, AuditLog, KeyStore, local_principal
from kb_qa.settings import Settings, load_settings

keys_app = command_group(
    "API keys: each with a role (read, write, admin) and the knowledge bases it may use. Stored hashed "
    "in keys.sqlite3 under the knowledge-base root; a running server sees changes at once."
)
app.add_typer(keys_app, name="keys")


ROLE_HELP = "read: list, search, chat; write: also change documents; admin: also create and delete knowledge bases."


def _settings(root: RootOpt, config: ConfigOpt) -> Settings:
    overrides = {"paths": {"kb_root": str(root.resolve())}} if root else {}
    return load_settings(config, overrides=overrides)


def _stores(root: RootOpt, config: ConfigOpt) -> tuple[KeyStore, AuditLog]:
    settings = _settings(root, config)
    return KeyStore(settings.kb_root / KEYS_FILE), AuditLog(settings.kb_root / AUDIT_FILE)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option("--role", help=ROLE_HELP)] = "read",
    kb: Annotated[
        list[str] | None,
        typer.Option("--kb", help="A knowledge base the key may use (repeat for more); none: every one."),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="What the key is for (shown in `keys list`).")] = "",
    root: RootOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print it once (only its hash is kept: store it now).

    Example: kb-qa keys create --role read --kb hr --name "HR portal"
    """
    if role not in ROLES:
        raise typer.BadParameter(f"choose one of {', '.join(ROLES)}", param_hint="--role")
    with _errors():
        store, audit = _stores(root, config)
        info, key = store.create(role, kb or None, name)
        audit.record("key.create", None, None, f"{info.id} {role} {','.join(kb or ['*'])}", actor=local_principal())
    if as_json:
        _print_json({**info.to_dict(), "key": key})
        return
    scope = ", ".join(info.knowledge_bases) if info.knowledge_bases else "every knowledge base"
    out.print(f"key {info.id} ({role}; {scope}):", highlight=False)
    out.print(key, highlight=False, soft_wrap=True)
    out.print("Send it as `Authorization: Bearer <key>`. It is shown only this once.", highlight=False)


@keys_app.command("list")
def keys_list(root: RootOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Keys made with `keys create`: id, name, role, knowledge bases, created, revoked (never the keys)."""
    with _errors():
        keys = _stores(root, config)[0].list()
    if as_json:
        _print_json([k.to_dict() for k in keys])
        return
    table = Table()
    for column in ("id", "name", "role", "knowledge bases", "created", "revoked"):
        table.add_column(column)
    for k in keys:
        scope = ", ".join(k.knowledge_bases) if k.knowledge_bases else "*"
        table.add_row(k.id, k.name, k.role, scope, k.created_at, k.revoked_at or "")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")],
    root: RootOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a key: every request with it is refused from now on (401)."""
    with _errors():
        store, audit = _stores(root, config)
        info = store.revoke(key_id)
        audit.record("key.revoke", None, None, info.id, actor=local_principal())
    out.print(f"key {info.id} revoked", highlight=False)
