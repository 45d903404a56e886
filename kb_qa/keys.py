"""API keys with a role and a knowledge-base scope, stored hashed; the audit log of changes.

**Roles**, each allowing what the ones before allow: ``read`` (list, search, chat, download),
``write`` (upload, delete and re-index documents, rebuild), ``admin`` (create and delete
knowledge bases). **Scope**: the knowledge bases a key may see, or all. A key scoped to ``hr``
lists only ``hr``, searches and chats only over ``hr`` (naming another gives 403 naming it) and
with ``admin`` may create or delete only knowledge bases of its scope.

**Keys made by** ``kb-qa keys create`` look like ``kbqa_<id>_<secret>``; only the SHA-256 of the
whole key is stored (``<kb root>/keys.sqlite3``), the key itself is printed once. A presented
key is looked up by its id and compared with :func:`hmac.compare_digest` (constant time). The
keys of the settings file keep working: ``server.api_keys`` are read keys and
``server.admin_keys`` admin keys, both over every knowledge base.

**Audit log** (:class:`AuditLog`): ``<kb root>/audit.jsonl``, one JSON object per change, appended
and never rewritten: ``time``, ``key`` (the key id; ``local:<user>`` on the command line),
``action``, ``knowledge_base``, ``document`` and, where it helps, ``detail``.
"""

from __future__ import annotations

import contextvars
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kb_qa.errors import BadRequest, KbQaError, StorageError
from kb_qa.registry import validate_name

ROLES = ("read", "write", "admin")
KEYS_FILE = "keys.sqlite3"  # under the knowledge-base root
AUDIT_FILE = "audit.jsonl"  # under the knowledge-base root
_TOKEN = re.compile(r"kbqa_([0-9a-f]{12})_[A-Za-z0-9_-]{20,}")


class Forbidden(KbQaError):
    """The key may not do this, or not to this knowledge base."""

    code = "forbidden"


class KeyNotFound(KbQaError):
    code = "key_not_found"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a key's id, its role and the knowledge bases it may see (None: all)."""

    key: str
    role: str
    knowledge_bases: frozenset[str] | None = None

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def sees(self, kb: str) -> bool:
        return self.knowledge_bases is None or kb in self.knowledge_bases

    def check(self, kb: str, role: str = "read") -> None:
        """:raises Forbidden: naming the knowledge base (or the role) this key lacks."""
        if not self.sees(kb):
            raise Forbidden(f"this key may not use knowledge base '{kb}'")
        if not self.may(role):
            raise Forbidden(f"this key may {self.role} but not {role}; use a {role} key")

    def visible(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if self.sees(n)]


OPEN = Principal("open", "admin")  # no key configured anywhere: the API is open (fine on 127.0.0.1)


def local_principal() -> Principal:
    """The command line's user: trusted, as the owner of the files."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Principal(f"local:{user}", "admin")


# the principal a change is made by, for the audit log (the API sets it per request; jobs copy it)
ACTOR: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("kbqa_actor", default=None)


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    token = ACTOR.set(principal)
    try:
        yield
    finally:
        ACTOR.reset(token)


@dataclass
class KeyInfo:
    id: str
    name: str
    role: str
    knowledge_bases: list[str] | None  # None: all
    created_at: str
    revoked_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyStore:
    """Keys made by ``kb-qa keys create``: their hashes, roles and scopes, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(
                f"cannot open the key store {self.path} ({exc}); check the folder's permissions"
            ) from exc
        try:
            db.execute(
                "CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL, name TEXT NOT NULL, "
                "role TEXT NOT NULL, knowledge_bases TEXT, created_at TEXT NOT NULL, revoked_at TEXT)"
            )
            with db:
                yield db
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"the key store {self.path} cannot be read ({exc}); restore it or move it away") from exc
        finally:
            db.close()

    def create(self, role: str, knowledge_bases: Iterable[str] | None = None, name: str = "") -> tuple[KeyInfo, str]:
        """A new key: its record and the key itself (shown once; only its hash is kept)."""
        if role not in ROLES:
            raise BadRequest(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        scope = sorted({validate_name(kb) for kb in knowledge_bases}) if knowledge_bases else None
        key_id = secrets.token_hex(6)
        token = f"kbqa_{key_id}_{secrets.token_urlsafe(32)}"
        info = KeyInfo(key_id, name, role, scope, _now())
        with self._connect() as db:
            db.execute(
                "INSERT INTO keys (id, hash, name, role, knowledge_bases, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, _hash(token), name, role, json.dumps(scope) if scope is not None else None, info.created_at),
            )
        return info, token

    def list(self) -> list[KeyInfo]:
        if not self.path.exists():
            return []
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, name, role, knowledge_bases, created_at, revoked_at FROM keys ORDER BY created_at, id"
            ).fetchall()
        return [KeyInfo(r[0], r[1], r[2], json.loads(r[3]) if r[3] else None, r[4], r[5]) for r in rows]

    def revoke(self, key_id: str) -> KeyInfo:
        with self._connect() as db:
            updated = db.execute(
                "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (_now(), key_id)
            ).rowcount
        found = next((k for k in self.list() if k.id == key_id), None)
        if found is None:
            raise KeyNotFound(f"no key with id {key_id!r} (see `kb-qa keys list`)")
        if not updated:
            raise BadRequest(f"key {key_id} was already revoked at {found.revoked_at}")
        return found

    def active(self) -> bool:
        """Whether any key is in force (then the API asks every request for one)."""
        if not self.path.exists():
            return False
        with self._connect() as db:
            return db.execute("SELECT 1 FROM keys WHERE revoked_at IS NULL LIMIT 1").fetchone() is not None

    def principal(self, token: str) -> Principal | None:
        """Who ``token`` is, or None for an unknown or revoked key."""
        match = _TOKEN.fullmatch(token)
        if match is None or not self.path.exists():
            return None
        with self._connect() as db:
            row = db.execute(
                "SELECT hash, role, knowledge_bases FROM keys WHERE id = ? AND revoked_at IS NULL", (match[1],)
            ).fetchone()
        if row is None or not hmac.compare_digest(row[0], _hash(token)):
            return None
        return Principal(match[1], row[1], frozenset(json.loads(row[2])) if row[2] else None)


class Keys:
    """Every key the server accepts: the settings file's and the key store's."""

    def __init__(self, store: KeyStore, api_keys: Iterable[str] = (), admin_keys: Iterable[str] = ()) -> None:
        self.store = store
        self.api_keys = list(api_keys)
        self.admin_keys = list(admin_keys)

    @property
    def required(self) -> bool:
        return bool(self.api_keys or self.admin_keys) or self.store.active()

    def principal(self, token: str) -> Principal | None:
        """Who presents ``token`` (None: nobody known). Settings keys compare in constant time too."""
        if not token:
            return None
        for index, key in enumerate(self.admin_keys):
            if hmac.compare_digest(token.encode(), key.encode()):
                return Principal(f"settings:admin:{index}", "admin")
        for index, key in enumerate(self.api_keys):
            if hmac.compare_digest(token.encode(), key.encode()):
                return Principal(f"settings:api:{index}", "read")
        return self.store.principal(token)


class AuditLog:
    """Changes, one JSON line each, appended to ``path`` (never rewritten)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, action: str, knowledge_base: str | None = None, document: str | None = None,
               detail: str | None = None, actor: Principal | None = None) -> None:  # fmt: skip
        who = actor or ACTOR.get() or local_principal()
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "key": who.key, "action": action,
                 "knowledge_base": knowledge_base, "document": document}  # fmt: skip
        if detail:
            entry["detail"] = detail
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # one write() per line on a file opened for appending: lines of concurrent writers never interleave
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
