"""The API's contracts in seconds: the real app with STAND-IN models (tests/standins.py).

Routes, statuses, error bodies, uploads, streaming frames, jobs and the OpenAI-compatible routes
(through the openai SDK) — everything that does not depend on what a model computes. The same
routes run against the real models in tests/api.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kb_qa.api import create_app
from kb_qa.llm import ChatLLM
from kb_qa.services import build_services
from kb_qa.settings import load_settings
from tests.helpers import ANY_SCORE, SAMPLES, error
from tests.standins import StandInChatBackend, StandInEmbeddings

EN = "How often must passwords be changed?"


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(tmp_path / "kb")}, **ANY_SCORE})
    llm = ChatLLM(backend=StandInChatBackend(), temperature=0.0, max_new_tokens=32)
    services = build_services(settings, embeddings=StandInEmbeddings(), llm=lambda: llm)
    with TestClient(create_app(settings, services=services)) as client:
        yield client


@pytest.fixture()
def hb(client: TestClient) -> TestClient:
    assert client.post("/knowledge_bases", json={"name": "hb"}).status_code == 201
    files = [("files", (n, (SAMPLES / n).read_bytes())) for n in ("employee-handbook.md", "员工手册.md")]
    response = client.post("/knowledge_bases/hb/documents", files=files)
    assert response.status_code == 200, response.text
    return client


def test_knowledge_bases_and_their_errors(hb: TestClient) -> None:
    assert hb.get("/health").status_code == 200
    assert [kb["name"] for kb in hb.get("/knowledge_bases").json()] == ["hb"]
    again = hb.post("/knowledge_bases", json={"name": "hb"})
    assert again.status_code == 409 and error(again)["code"] == "kb_exists"
    bad = hb.post("/knowledge_bases", json={"name": "../x"})
    assert (
        bad.status_code == 400 and error(bad)["code"] == "invalid_name" and "letters, digits" in error(bad)["message"]
    )
    assert hb.get("/knowledge_bases/nope/documents").status_code == 404
    unknown = hb.get("/no/such/route")
    assert unknown.status_code == 404 and error(unknown)["code"] == "not_found"


def test_uploads_report_each_file(hb: TestClient) -> None:
    files = [("files", ("employee-handbook.md", (SAMPLES / "employee-handbook.md").read_bytes())),
             ("files", ("tool.exe", b"MZ\x90\x00"))]  # fmt: skip
    results = {r["file"]: r for r in hb.post("/knowledge_bases/hb/documents", files=files).json()["files"]}
    assert results["employee-handbook.md"]["action"] == "unchanged"
    assert results["tool.exe"]["action"] == "failed" and results["tool.exe"]["error"]
    names = {d["path"] for d in hb.get("/knowledge_bases/hb/documents").json()}
    assert {"employee-handbook.md", "员工手册.md"} <= names and "tool.exe" not in names


def test_search_and_bad_values(hb: TestClient) -> None:
    found = hb.post("/knowledge_bases/hb/search", json={"query": EN, "top_k": 2}).json()["passages"]
    assert len(found) == 2 and "every 90 days" in found[0]["text"]
    for body in (
        {"query": ""},
        {"query": EN, "top_k": 0},
        {"query": EN, "top_k": 101},
        {"query": EN, "score_threshold": 2},
    ):
        response = hb.post("/knowledge_bases/hb/search", json=body)
        assert response.status_code == 422 and error(response)["code"] == "invalid_request", body


def test_chat_answers_and_streams_sources_deltas_done(hb: TestClient) -> None:
    answer = hb.post("/chat", json={"question": EN, "knowledge_bases": ["hb"]}).json()
    assert "[1]" in answer["answer"] and answer["sources"][0]["document"] == "employee-handbook.md"
    assert answer["sources"][0]["cited"] and answer["models"]["llm"] == "stand-in-chat-model"
    body = {"question": EN, "knowledge_bases": ["hb"], "stream": True}
    with hb.stream("POST", "/chat", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in response.read().decode().split("\n\n") if f.strip()]
    events = [(f.split("\n")[0].removeprefix("event: "), json.loads(f.split("\n")[1].removeprefix("data: ")))
              for f in frames]  # fmt: skip
    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "done" and set(names[1:-1]) == {"delta"}
    assert events[-1][1]["answer"] == "".join(d["text"] for n, d in events if n == "delta") == answer["answer"]


def test_the_openai_routes_with_the_sdk(hb: TestClient) -> None:
    import openai

    client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=hb, max_retries=0)
    assert "kb:hb" in {m.id for m in client.models.list()}
    reply = client.chat.completions.create(model="kb:hb", messages=[{"role": "user", "content": EN}])
    native = hb.post("/chat", json={"question": EN, "knowledge_bases": ["hb"]}).json()["answer"]
    assert reply.choices[0].message.content == native and native.endswith("[1]")
    chunks = list(client.chat.completions.create(model="kb:hb", messages=[{"role": "user", "content": EN}],
                                                 stream=True))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="kb:hb", messages=[])
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "invalid_request_error" and caught.value.body["param"] == "messages"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="kb:nope", messages=[{"role": "user", "content": EN}])
    vectors = client.embeddings.create(model="any", input=["年假", "passwords"], encoding_format="float")
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 256


def test_a_rebuild_runs_as_a_job(hb: TestClient) -> None:
    started = hb.post("/knowledge_bases/hb/rebuild", params={"recreate": True})
    assert started.status_code == 202
    job = started.json()
    for _ in range(300):
        job = hb.get(f"/jobs/{job['id']}").json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.05)
    assert job["status"] == "done" and job["report"]["added"] == 2 and job["phase"] == "indexing hb", job


def test_upload_names_are_stored_safely(hb: TestClient) -> None:
    text = (SAMPLES / "employee-handbook.md").read_bytes()
    long_name = "员工" * 50 + ".md"  # 303 bytes in UTF-8: over a file system's 255
    sneaky = "invoice\u202egnp.md"  # shows as "invoicedm.png"
    spaced = "hand\u200bbook.md"  # a zero-width space: the same document as handbook.md
    files = [("files", (n, text)) for n in (long_name, sneaky, spaced, "handbook.md")]
    response = hb.post("/knowledge_bases/hb/documents", files=files)
    assert response.status_code == 200, response.text
    stored = [r["file"] for r in response.json()["files"]]
    assert len(stored[0].encode("utf-8")) <= 255 and stored[0].endswith(".md") and stored[0].startswith("员工")
    assert stored[1:] == ["invoicegnp.md", "handbook.md"]  # the zero-width one and handbook.md are one document
    listed = {d["path"] for d in hb.get("/knowledge_bases/hb/documents").json()}
    assert {stored[0], "invoicegnp.md", "handbook.md"} <= listed


def test_knowledge_base_names_must_match_whole(client: TestClient) -> None:
    for name in ("abc\n", "\nabc", "a/b", ".."):
        response = client.post("/knowledge_bases", json={"name": name})
        assert response.status_code == 400 and error(response)["code"] == "invalid_name", name


def test_a_body_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(tmp_path / "kb")},
                                                    "server": {"max_request_mb": 1}})  # fmt: skip
    services = build_services(
        settings, embeddings=StandInEmbeddings(), llm=lambda: ChatLLM(backend=StandInChatBackend())
    )
    with TestClient(create_app(settings, services=services)) as client:
        assert client.post("/knowledge_bases", json={"name": "hb"}).status_code == 201
        sent = 0

        def body() -> Iterator[bytes]:  # a valid multipart body, chunked: no Content-Length to go by
            nonlocal sent
            yield b'--x\r\nContent-Disposition: form-data; name="files"; filename="big.md"\r\n\r\n'
            for _ in range(64):
                sent += 1
                yield b"x" * 65536
            yield b"\r\n--x--\r\n"

        declared = client.post("/knowledge_bases/hb/documents", files=[("files", ("big.md", b"x" * (2 << 20)))])
        assert declared.status_code == 413 and error(declared)["code"] == "too_large"
        assert "server.max_request_mb" in error(declared)["message"]
        chunked = client.post("/knowledge_bases/hb/documents", content=body(),
                              headers={"content-type": "multipart/form-data; boundary=x"})  # fmt: skip
        assert chunked.status_code == 413 and error(chunked)["code"] == "too_large"
        openai = client.post("/v1/embeddings", content=body(), headers={"content-type": "application/json"})
        assert openai.status_code == 413 and openai.json()["error"]["type"] == "invalid_request_error"
        assert client.get("/knowledge_bases/hb/documents").json() == []


def test_upload_folders_of_stopped_processes_are_removed_at_start(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from kb_qa.api.limits import UPLOAD_PREFIX, clean_stale_upload_dirs

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{UPLOAD_PREFIX}{gone.stdout.strip()}-abc"
    live = tmp_path / f"{UPLOAD_PREFIX}{os.getpid()}-def"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "part.pdf").write_bytes(b"%PDF")
    assert clean_stale_upload_dirs(tmp_path) == 1
    assert not stale.exists() and live.exists()


def test_the_body_limit_stops_reading_a_chunked_body_at_the_limit() -> None:
    """The middleware alone, under an app that reads the whole body: no chunk past the limit is pulled."""
    import anyio

    from kb_qa.api.limits import BodyLimit

    pulled, sent = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": pulled < 100}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    scope = {"type": "http", "path": "/knowledge_bases/hb/documents", "headers": []}
    anyio.run(BodyLimit(app, max_bytes=10_500), scope, receive, send)
    assert pulled == 11 and sent[0]["status"] == 413  # 11 chunks of 1,000 bytes: the first past 10,500
    assert json.loads(sent[1]["body"])["error"]["code"] == "too_large"


def test_requests_over_the_size_limits_name_the_limit(hb: TestClient) -> None:
    from kb_qa.domain import MAX_HISTORY_MESSAGES, MAX_MESSAGE_CHARS, MAX_QUESTION_CHARS

    long_question = hb.post("/chat", json={"question": "年" * (MAX_QUESTION_CHARS + 1), "knowledge_bases": ["hb"]})
    assert long_question.status_code == 422 and "question" in error(long_question)["message"]
    assert str(MAX_QUESTION_CHARS) in error(long_question)["message"]
    many = [["q", "a"]] * (MAX_HISTORY_MESSAGES + 1)
    assert hb.post("/chat", json={"question": EN, "history": many}).status_code == 422
    huge = [{"role": "user", "content": "x" * (MAX_MESSAGE_CHARS + 1)}]
    assert hb.post("/chat", json={"question": EN, "history": huge}).status_code == 422
    search = hb.post("/knowledge_bases/hb/search", json={"query": "x" * (MAX_QUESTION_CHARS + 1)})
    assert search.status_code == 422
    v1 = hb.post("/v1/chat/completions", json={"model": "kb:hb", "messages": [
        {"role": "user", "content": "x" * (MAX_QUESTION_CHARS + 1)}]})  # fmt: skip
    assert v1.status_code == 400 and v1.json()["error"]["param"] == "messages"


def test_with_keys_set_the_api_docs_need_a_key(tmp_path: Path) -> None:
    for public in (False, True):
        settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(tmp_path / "kb")},
                                 "server": {"api_keys": ["reader"], "public_docs": public}})  # fmt: skip
        llm = ChatLLM(backend=StandInChatBackend())
        services = build_services(settings, embeddings=StandInEmbeddings(), llm=lambda llm=llm: llm)  # type: ignore[misc]
        with TestClient(create_app(settings, services=services)) as client:
            for path in ("/openapi.json", "/docs", "/redoc"):
                assert client.get(path).status_code == (200 if public else 401), (path, public)
                assert client.get(path, headers={"Authorization": "Bearer reader"}).status_code == 200
            if not public:
                assert (
                    "/chat" in client.get("/openapi.json", headers={"Authorization": "Bearer reader"}).json()["paths"]
                )
