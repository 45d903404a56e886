"""What every route depends on: the services, the key a request acts with, safe file names."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Annotated

import anyio
from fastapi import Depends, Request

from kb_qa.api.errors import ApiError
from kb_qa.api.jobs import JobRunner
from kb_qa.keys import ACTOR, OPEN, Keys, Principal
from kb_qa.services import Services

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def _key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def identify(request: Request) -> Principal:
    """Who sends the request: :data:`~kb_qa.keys.OPEN` while no key is configured anywhere.

    :raises ApiError: 401 without a key, or with one nobody knows (or that was revoked).
    """
    keys: Keys = request.app.state.keys
    if not keys.required:
        return OPEN
    key = _key(request)
    if not key:
        raise ApiError(401, "unauthorized", "send an API key: Authorization: Bearer <key>",
                       {"WWW-Authenticate": "Bearer"})  # fmt: skip
    principal = keys.principal(key)
    if principal is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key", {"WWW-Authenticate": "Bearer"})
    return principal


def require(role: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the request carries a key with at least ``role`` (read < write < admin) whose
    scope holds the path's knowledge base, if any. The key becomes the principal the request acts as
    (:data:`kb_qa.keys.ACTOR`): the knowledge-base service checks every other knowledge base the
    request names against it, and the audit log names it."""

    async def check(request: Request) -> Principal:
        principal = await anyio.to_thread.run_sync(identify, request)
        if not principal.may(role):
            raise ApiError(403, "forbidden", f"this key may {principal.role} but not {role}; use a {role} key")
        kb = request.path_params.get("kb")
        if isinstance(kb, str) and not principal.sees(kb):
            raise ApiError(403, "forbidden", f"this key may not use knowledge base '{kb}'")
        ACTOR.set(principal)  # in the request's task: the endpoint and its worker threads inherit it
        request.state.principal = principal
        return principal

    return check


Read = Depends(require("read"))
Write = Depends(require("write"))
Admin = Depends(require("admin"))


def _services(request: Request) -> Services:
    return request.app.state.services


Svc = Annotated[Services, Depends(_services)]


def _jobs(request: Request) -> JobRunner:
    return request.app.state.jobs


Jobs = Annotated[JobRunner, Depends(_jobs)]


# bidi embeddings/overrides/isolates and zero-width characters: they make a name display as another
# ("invoice\u202egnp.md" shows as "invoicedm.png") or two names look the same
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\u061c\u180e]")
MAX_NAME_BYTES = 255  # what file systems allow for one name, in UTF-8


def sanitize_filename(name: str) -> str:
    """The last path part of an uploaded name, safe to store and to show.

    NFC-normalised; bidi controls, zero-width and control characters removed; path and reserved
    characters replaced by "_"; at most 255 bytes in UTF-8, cut on a character boundary with the
    extension kept. Two names that differ only by what is removed are the same document.

    :raises ApiError: (400) when nothing usable is left.
    """
    base = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    base = _INVISIBLE.sub("", base)
    clean = _UNSAFE.sub("_", base).strip().strip(".")
    if not clean or clean.startswith("."):
        raise ApiError(400, "invalid_filename", f"the file name {name!r} cannot be used; give the file a plain name")
    return _cut_to_bytes(clean, MAX_NAME_BYTES)


def _cut_to_bytes(name: str, limit: int) -> str:
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or len(suffix.encode("utf-8")) > 16:
        stem, suffix = name, ""
    ending = f".{suffix}" if suffix else ""
    room = limit - len(ending.encode("utf-8"))
    cut = stem.encode("utf-8")[:room].decode("utf-8", errors="ignore").rstrip()
    return cut + ending
