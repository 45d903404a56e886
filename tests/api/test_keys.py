"""Scoped keys over the real app on loopback: roles and knowledge-base scope on every route (native,
drop-in, OpenAI-compatible, jobs, MCP), keys made and revoked with the CLI and stored hashed, and the
audit log of changes. The real embedding model; SmolLM2 as the fast chat model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from typer.testing import CliRunner

from kb_qa.api import create_app
from kb_qa.cli import app as cli_app
from kb_qa.embeddings import SentenceTransformerEmbeddings
from kb_qa.keys import AUDIT_FILE, KEYS_FILE, AuditLog
from kb_qa.llm import ChatLLM
from kb_qa.llm.transformers_backend import TransformersBackend
from kb_qa.services import build_services
from kb_qa.settings import load_settings
from tests.api.test_mcp import over_http
from tests.helpers import ANY_SCORE, SAMPLES, error, serving, with_keys

pytestmark = pytest.mark.integration

BOSS = "settings-admin-key"
EN = "How often must passwords be changed?"


def make_key(root: Path, *args: str) -> tuple[str, str]:
    """``kb-qa keys create ARGS --json``: (key id, key)."""
    result = CliRunner().invoke(cli_app, ["keys", "create", *args, "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    return made["id"], made["key"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, embeddings: SentenceTransformerEmbeddings, backend: TransformersBackend
) -> Iterator[dict[str, Any]]:
    """Knowledge bases hr and finance; keys: hr read, hr write, hr admin, read everything."""
    root = tmp_path_factory.mktemp("keys") / "kb"
    llm = ChatLLM(backend=backend, temperature=0.0, max_new_tokens=4)
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(root)}, **ANY_SCORE})
    services = build_services(settings, embeddings=embeddings, llm=lambda: llm)
    keys = {
        "hr_read": make_key(root, "--role", "read", "--kb", "hr", "--name", "HR portal"),
        "hr_write": make_key(root, "--role", "write", "--kb", "hr"),
        "hr_admin": make_key(root, "--role", "admin", "--kb", "hr"),
        "all_read": make_key(root, "--role", "read"),
    }
    app = create_app(with_keys(settings, [], [BOSS]), services=services, load_models=False)
    with serving(app) as base, httpx.Client(base_url=base, timeout=120) as client:
        for kb in ("hr", "finance"):
            assert client.post("/knowledge_bases", json={"name": kb}, headers=bearer(BOSS)).status_code == 201
            files = [("files", (n, (SAMPLES / n).read_bytes())) for n in ("employee-handbook.md", "员工手册.md")]
            uploaded = client.post(f"/knowledge_bases/{kb}/documents", files=files, headers=bearer(BOSS))
            assert uploaded.status_code == 200, uploaded.text
        yield {"root": root, "base": base, "client": client, "keys": keys}


def forbidden(response: httpx.Response, kb: str) -> None:
    assert response.status_code == 403, response.text
    body = response.json()["error"]
    assert kb in body["message"] and body.get("code", "forbidden") in ("forbidden", None), body


def test_a_scoped_key_sees_and_uses_only_its_knowledge_bases_on_every_route(server: dict[str, Any]) -> None:
    client: httpx.Client = server["client"]
    hr = bearer(server["keys"]["hr_read"][1])
    # listings show only what the key may see
    assert [kb["name"] for kb in client.get("/knowledge_bases", headers=hr).json()] == ["hr"]
    everything = bearer(server["keys"]["all_read"][1])
    assert [kb["name"] for kb in client.get("/knowledge_bases", headers=everything).json()] == ["finance", "hr"]
    models = {m["id"] for m in client.get("/v1/models", headers=hr).json()["data"]}
    assert "kb:hr" in models and "kb:finance" not in models
    legacy = client.get("/local_doc_qa/list_knowledge_base", headers=hr).json()["data"]
    assert legacy == ["hr"]
    # its own knowledge base works
    assert client.post("/knowledge_bases/hr/search", json={"query": EN}, headers=hr).status_code == 200
    # every way of naming another one is refused, naming it
    forbidden(client.get("/knowledge_bases/finance", headers=hr), "finance")
    forbidden(client.get("/knowledge_bases/finance/documents", headers=hr), "finance")
    forbidden(client.get("/knowledge_bases/finance/documents/employee-handbook.md/content", headers=hr), "finance")
    forbidden(client.post("/knowledge_bases/finance/search", json={"query": EN}, headers=hr), "finance")
    forbidden(client.post("/chat", json={"question": EN, "knowledge_bases": ["hr", "finance"]}, headers=hr), "finance")
    forbidden(client.post("/chat", json={"question": EN, "knowledge_bases": ["hr", "finance"], "stream": True},
                          headers=hr), "finance")  # fmt: skip
    completion = client.post("/v1/chat/completions", headers=hr,
                             json={"model": "kb:finance", "messages": [{"role": "user", "content": EN}]})  # fmt: skip
    assert completion.status_code == 403 and completion.json()["error"]["type"] == "permission_error"
    assert "finance" in completion.json()["error"]["message"]
    forbidden(client.get("/local_doc_qa/list_files", params={"knowledge_base_id": "finance"}, headers=hr), "finance")
    forbidden(client.post("/local_doc_qa/local_doc_chat", headers=hr,
                          json={"knowledge_base_id": "finance", "question": EN, "history": []}), "finance")  # fmt: skip


def test_roles_read_write_admin_within_the_scope(server: dict[str, Any]) -> None:
    client: httpx.Client = server["client"]
    reader, writer, admin = (bearer(server["keys"][k][1]) for k in ("hr_read", "hr_write", "hr_admin"))
    note = [("files", ("note.md", b"# Note\n\nThe canteen opens at noon.\n"))]
    assert error_of(client.post("/knowledge_bases/hr/documents", files=note, headers=reader))["code"] == "forbidden"
    assert client.post("/knowledge_bases/hr/documents", files=note, headers=writer).status_code == 200
    forbidden(client.post("/knowledge_bases/finance/documents", files=note, headers=writer), "finance")
    assert client.delete("/knowledge_bases/hr/documents/note.md", headers=writer).status_code == 204
    started = client.post("/knowledge_bases/hr/rebuild", headers=writer)
    assert started.status_code == 202
    assert client.post("/knowledge_bases", json={"name": "hr2"}, headers=writer).status_code == 403  # not admin
    forbidden(client.post("/knowledge_bases", json={"name": "payroll"}, headers=admin), "payroll")  # out of scope
    # jobs: a key sees the jobs of its knowledge bases only
    finance_job = client.post("/knowledge_bases/finance/rebuild", headers=bearer(BOSS)).json()["id"]
    own = {j["id"] for j in client.get("/jobs", headers=reader).json()}
    assert started.json()["id"] in own and finance_job not in own
    assert client.get(f"/jobs/{finance_job}", headers=reader).status_code == 404
    for job in (started.json()["id"], finance_job):  # let the rebuilds finish before other tests write
        for _ in range(600):
            if client.get(f"/jobs/{job}", headers=bearer(BOSS)).json()["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.1)


def error_of(response: httpx.Response) -> dict[str, str]:
    return error(response)


def test_mcp_acts_as_the_key(server: dict[str, Any]) -> None:
    async def main() -> None:
        async with over_http(server["base"], server["keys"]["hr_read"][1]) as mcp:
            listed = await mcp.call_tool("list_knowledge_bases", {})
            assert [kb["name"] for kb in listed.structured_content["knowledge_bases"]] == ["hr"]  # type: ignore[index]
            found = await mcp.call_tool("search", {"query": EN, "knowledge_bases": ["hr"]})
            assert not found.is_error
            refused = await mcp.call_tool("search", {"query": EN, "knowledge_bases": ["finance"]})
            assert refused.is_error and "may not use knowledge base 'finance'" in refused.content[0].text  # type: ignore[union-attr]
            resources = {r.uri for r in (await mcp.list_resources()).resources}
            assert resources and all(uri.startswith("kbqa://hr/") for uri in resources)

    anyio.run(main)


def test_keys_are_stored_hashed_revoked_at_once_and_changes_audited(server: dict[str, Any]) -> None:
    client: httpx.Client = server["client"]
    root: Path = server["root"]
    key_id, key = make_key(root, "--role", "write", "--kb", "hr", "--name", "temporary")
    stored = (root / KEYS_FILE).read_bytes()
    # only a hash is kept: neither the key nor its secret part (which may itself hold '_') is stored
    secret = key.removeprefix(f"kbqa_{key_id}_")
    assert len(secret) >= 40 and key.encode() not in stored and secret.encode() not in stored
    listed = CliRunner().invoke(cli_app, ["keys", "list", "--root", str(root), "--json"])
    entry = next(k for k in json.loads(listed.stdout) if k["id"] == key_id)
    assert entry == {**entry, "role": "write", "knowledge_bases": ["hr"], "name": "temporary", "revoked_at": None}
    assert "key" not in entry
    note = [("files", ("audited.md", b"# Audited\n\nVisitors sign in at reception.\n"))]
    assert client.post("/knowledge_bases/hr/documents", files=note, headers=bearer(key)).status_code == 200
    revoked = CliRunner().invoke(cli_app, ["keys", "revoke", key_id, "--root", str(root)])
    assert revoked.exit_code == 0, revoked.output
    refused = client.get("/knowledge_bases", headers=bearer(key))
    assert refused.status_code == 401 and "revoked" in error(refused)["message"]  # at once, no restart
    again = CliRunner().invoke(cli_app, ["keys", "revoke", key_id, "--root", str(root)])
    assert again.exit_code == 2 and "already revoked" in again.output
    entries = AuditLog(root / AUDIT_FILE).entries()
    assert {
        "key": key_id,
        "action": "document.added",
        "knowledge_base": "hr",
        "document": "audited.md",
    }.items() <= next(e for e in entries if e["document"] == "audited.md").items()
    assert any(e["action"] == "key.revoke" and e["detail"] == key_id for e in entries)
    assert any(e["action"] == "kb.create" and e["knowledge_base"] == "finance" and e["key"] == "settings:admin:0"
               for e in entries)  # fmt: skip
    assert all(set(e) >= {"time", "key", "action", "knowledge_base", "document"} for e in entries)


def test_a_stored_key_alone_closes_the_api(tmp_path: Path, embeddings: SentenceTransformerEmbeddings) -> None:
    root = tmp_path / "kb"
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(root)}})
    app = create_app(settings, services=build_services(settings, embeddings=embeddings), load_models=False)
    with serving(app) as base:
        assert httpx.get(f"{base}/knowledge_bases").status_code == 200  # no key anywhere: open
        _, key = make_key(root, "--role", "read")
        assert httpx.get(f"{base}/knowledge_bases").status_code == 401  # from now on, without a restart
        assert httpx.get(f"{base}/openapi.json").status_code == 401
        assert httpx.get(f"{base}/knowledge_bases", headers=bearer(key)).status_code == 200
        assert httpx.get(f"{base}/health").status_code == 200
