"""The MCP server with the SDK's own client: over streamable HTTP (the real app served by uvicorn on
loopback, behind API keys) and over stdio (``kb-qa mcp`` spawned as a process). The real embedding
model; SmolLM2 as the fast chat model."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from kb_qa.api import create_app
from kb_qa.embeddings import SentenceTransformerEmbeddings
from kb_qa.llm import ChatLLM, ConcurrencyGate
from kb_qa.llm.transformers_backend import TransformersBackend
from kb_qa.mcp_server import document_uri
from kb_qa.services import Services, build_services
from kb_qa.settings import PROJECT_DIR, load_settings
from tests.conftest import SMOLLM2
from tests.helpers import ANY_SCORE, SAMPLES, serving, with_keys

pytestmark = pytest.mark.integration

EN = "How often must passwords be changed?"
LONG = "Tell me a very long story about a lighthouse keeper and his cat."
TOOLS = {"list_knowledge_bases", "list_documents", "search", "ask"}
READ_KEY, ADMIN_KEY = "mcp-read-key", "mcp-admin-key"


@pytest.fixture(scope="module")
def built_root(tmp_path_factory: pytest.TempPathFactory, embeddings: SentenceTransformerEmbeddings) -> Path:
    """A knowledge-base root holding the sample handbook as "hb"."""
    root = tmp_path_factory.mktemp("mcp") / "kb"
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(root)}})
    services = build_services(settings, embeddings=embeddings)
    services.knowledge_bases.create("hb")
    services.knowledge_bases.rebuild("hb", SAMPLES)
    return root


@pytest.fixture(scope="module")
def served(
    built_root: Path, embeddings: SentenceTransformerEmbeddings, backend: TransformersBackend
) -> Iterator[tuple[str, Services, list[str]]]:
    """The app on loopback with keys; the model takes one request at a time and queues none (a second
    caller gets "busy"). Yields the base URL, the services and the list the backend's tokens go to."""
    produced: list[str] = []
    real = backend.stream

    def counting(messages: Any, params: Any, cancel: Any) -> Iterator[str]:  # to see a cancelled answer stop
        for delta in real(messages, params, cancel):
            produced.append(delta)
            yield delta

    llm = ChatLLM(backend=backend, gate=ConcurrencyGate(max_concurrent=1, max_queue=0), temperature=0.0,
                  max_new_tokens=16)  # fmt: skip
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(built_root)}, **ANY_SCORE})
    services = build_services(settings, embeddings=embeddings, llm=lambda: llm)
    app = create_app(with_keys(settings, [READ_KEY], [ADMIN_KEY]), services=services, load_models=False)
    with pytest.MonkeyPatch.context() as patch, serving(app) as base:
        patch.setattr(backend, "stream", counting)
        yield base, services, produced


def over_http(base: str, key: str = READ_KEY) -> Client:
    headers = {"Authorization": f"Bearer {key}"}
    return Client(streamable_http_client(f"{base}/mcp", http_client=create_mcp_http_client(headers=headers)))


def stdio_server(root: Path, errlog: TextIO) -> Client:
    """``kb-qa mcp`` as a desktop client starts it (its stderr, the server's log, goes to ``errlog``)."""
    env = {**os.environ, "KBQA_LLM__BACKEND": SMOLLM2["backend"], "KBQA_LLM__MODEL": SMOLLM2["model"],
           "KBQA_LLM__DEVICE": "cpu", "KBQA_LLM__MAX_QUEUE": "0", "KBQA_RETRIEVAL__SCORE_THRESHOLD": "0"}  # fmt: skip
    command = [str(PROJECT_DIR / "main.py"), "--verbose", "mcp", "--root", str(root)]
    params = StdioServerParameters(command=sys.executable, args=command, env=env, cwd=str(PROJECT_DIR))
    return Client(stdio_client(params, errlog=errlog))


async def exercise_every_tool(client: Client) -> None:
    """list tools, call each, read a resource: what any client does first."""
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():  # typed and described inputs and outputs
        assert tool.description and tool.output_schema and tool.input_schema["type"] == "object"
        assert all(p.get("description") for p in tool.input_schema.get("properties", {}).values()), tool.name
    assert tools["ask"].annotations and tools["ask"].annotations.read_only_hint

    listed = await client.call_tool("list_knowledge_bases", {})
    assert not listed.is_error and listed.structured_content
    (kb,) = listed.structured_content["knowledge_bases"]
    assert kb["name"] == "hb" and kb["document_count"] == 5 and kb["chunk_count"] > 0

    documents = await client.call_tool("list_documents", {"knowledge_base": "hb"})
    assert documents.structured_content
    by_name = {d["path"]: d for d in documents.structured_content["documents"]}
    assert by_name["employee-handbook.md"]["status"] == "indexed"
    assert by_name["benefits-福利.xlsx"]["uri"] == document_uri("hb", "benefits-福利.xlsx")

    found = await client.call_tool("search", {"query": EN, "knowledge_bases": ["hb"], "top_k": 2})
    assert found.structured_content
    first = found.structured_content["passages"][0]
    assert first["document"] == "employee-handbook.md" and "every 90 days" in first["text"]
    assert -1 <= first["score"] <= 1 and first["uri"] == document_uri("hb", "employee-handbook.md")

    answer = await client.call_tool("ask", {"question": EN, "knowledge_bases": ["hb"], "max_tokens": 8})
    assert not answer.is_error and answer.structured_content
    record = answer.structured_content
    assert record["mode"] == "kb" and record["answer"] and record["models"]["llm"] == "SmolLM2-135M-Instruct"
    source = record["sources"][0]
    assert source["number"] == 1 and source["document"] == "employee-handbook.md" and source["highlights"]
    assert json.loads(answer.content[0].text) == record  # type: ignore[union-attr]  # the text for plain clients

    passages_only = await client.call_tool("ask", {"question": EN, "knowledge_bases": ["hb"], "mode": "search"})
    assert passages_only.structured_content
    assert passages_only.structured_content["answer"] == "" and "llm" not in passages_only.structured_content["models"]

    listed_resources = {r.uri: r for r in (await client.list_resources()).resources}
    assert set(listed_resources) == {d["uri"] for d in by_name.values()}
    (template,) = (await client.list_resource_templates()).resource_templates
    assert template.uri_template == "kbqa://{knowledge_base}/{+document}"
    text = (await client.read_resource(source["uri"])).contents[0]
    assert text.uri == source["uri"] and "every 90 days" in getattr(text, "text", "")
    sheet = (await client.read_resource(by_name["benefits-福利.xlsx"]["uri"])).contents[0]
    assert "35元/天" in getattr(sheet, "text", "")


async def check_errors(client: Client) -> None:
    unknown = await client.call_tool("search", {"query": EN, "knowledge_bases": ["nope"]})
    assert unknown.is_error and "knowledge base 'nope' does not exist" in unknown.content[0].text  # type: ignore[union-attr]
    bad = await client.call_tool("search", {"query": EN, "knowledge_bases": ["hb"], "top_k": 0})
    assert bad.is_error  # told as the API tells it, in one line
    assert bad.content[0].text.endswith("top_k: Input should be greater than or equal to 1")  # type: ignore[union-attr]
    empty = await client.call_tool("ask", {"question": "", "knowledge_bases": ["hb"]})
    assert empty.is_error and "question" in empty.content[0].text  # type: ignore[union-attr]
    with pytest.raises(MCPError):
        await client.read_resource(document_uri("hb", "no-such-file.md"))


def test_over_http_every_tool_a_resource_and_errors(served: tuple[str, Services, list[str]]) -> None:
    base, _, _ = served

    async def main() -> None:
        async with over_http(base) as client:
            await exercise_every_tool(client)
            await check_errors(client)
        async with over_http(base, ADMIN_KEY) as client:  # an admin key may read too
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS

    anyio.run(main)


def test_over_http_the_api_keys_guard_it(served: tuple[str, Services, list[str]]) -> None:
    base, _, _ = served
    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = httpx.post(f"{base}/mcp", json=hello, headers=headers, timeout=30)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert refused.headers["www-authenticate"] == "Bearer"

    # served on loopback: a page that reached it through another name (DNS rebinding) is refused
    keyed = {"Authorization": f"Bearer {READ_KEY}", "Accept": "application/json, text/event-stream"}
    for extra, status in (({"Host": "attacker.example"}, 421), ({"Origin": "http://attacker.example"}, 403)):
        assert httpx.post(f"{base}/mcp", json=hello, headers={**keyed, **extra}, timeout=30).status_code == status

    async def connect_without_key() -> None:
        async with over_http(base, "wrong") as client:
            await client.list_tools()

    with pytest.raises(BaseExceptionGroup) as refused_client:  # the SDK's client fails to connect
        anyio.run(connect_without_key)
    assert refused_client.group_contains(MCPError)


def test_over_http_a_busy_model_and_a_cancelled_ask(served: tuple[str, Services, list[str]]) -> None:
    base, services, produced = served
    produced.clear()

    async def main() -> None:
        writing = anyio.Event()

        async def progress(done: float, total: float | None, message: str | None) -> None:
            if message and "tokens written" in message:
                writing.set()

        async with over_http(base) as client, anyio.create_task_group() as group:
            long = {"question": LONG, "max_tokens": 300}

            async def ask_long() -> None:
                await client.call_tool("ask", long, progress_callback=progress)

            group.start_soon(ask_long)
            with anyio.fail_after(120):
                await writing.wait()  # the model is writing, and reporting it
            busy = await client.call_tool("ask", {"question": "hi", "max_tokens": 2})
            assert busy.is_error and "busy" in busy.content[0].text  # type: ignore[union-attr]
            group.cancel_scope.cancel()  # the client gives up on the long answer

        async with over_http(base) as client:  # the model is freed for the next caller
            for _ in range(600):
                result = await client.call_tool("ask", {"question": "hello", "max_tokens": 2})
                if not result.is_error:
                    break
                assert "busy" in result.content[0].text  # type: ignore[union-attr]
                await anyio.sleep(0.1)
            else:
                pytest.fail("the model was not freed after the client cancelled")

    anyio.run(main)
    assert 0 < len(produced) - 2 < 300  # the long answer stopped early (the 2 are the last call's)
    assert not services.qa.busy()


def test_over_stdio_every_tool_a_resource_errors_and_cancel(built_root: Path, tmp_path: Path) -> None:
    errors = tmp_path / "stderr.log"

    async def main() -> None:
        with errors.open("w") as log:
            async with stdio_server(built_root, log) as client:
                await exercise_every_tool(client)
                await check_errors(client)
                writing = anyio.Event()

                async def progress(done: float, total: float | None, message: str | None) -> None:
                    if message and "tokens written" in message:
                        writing.set()

                async with anyio.create_task_group() as group:

                    async def ask_long() -> None:
                        await client.call_tool("ask", {"question": LONG, "max_tokens": 300}, progress_callback=progress)

                    group.start_soon(ask_long)
                    with anyio.fail_after(120):
                        await writing.wait()
                    group.cancel_scope.cancel()
                for _ in range(600):  # the model is freed (it queues no one: busy until it stops)
                    result = await client.call_tool("ask", {"question": "hello", "max_tokens": 2})
                    if not result.is_error:
                        break
                    await anyio.sleep(0.1)
                else:
                    pytest.fail("the model was not freed after the client cancelled")

    anyio.run(main)
    assert "ask cancelled by the client" in errors.read_text(), errors.read_text()[-2000:]
