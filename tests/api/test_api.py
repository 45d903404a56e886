"""The real app (create_app) with the real embedding model, real FAISS + BM25 and the real SmolLM2."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kb_qa.api import create_app
from kb_qa.embeddings import SentenceTransformerEmbeddings
from kb_qa.llm import ChatLLM
from kb_qa.llm.transformers_backend import TransformersBackend
from kb_qa.services import build_services
from kb_qa.settings import load_settings
from tests.helpers import ANY_SCORE, SAMPLES, error

pytestmark = pytest.mark.integration

EN = "How often must passwords be changed?"


@pytest.fixture(scope="module")
def llm(backend: TransformersBackend) -> ChatLLM:
    return ChatLLM(backend=backend, temperature=0.0, max_new_tokens=16)


def make_client(kb_root: Path, embeddings: SentenceTransformerEmbeddings, llm: ChatLLM, **sections: Any) -> TestClient:
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(kb_root)}, **ANY_SCORE, **sections})
    services = build_services(settings, embeddings=embeddings, llm=lambda: llm)
    return TestClient(create_app(settings, services=services))


@pytest.fixture()
def client(kb_root: Path, embeddings: SentenceTransformerEmbeddings, llm: ChatLLM) -> Iterator[TestClient]:
    with make_client(kb_root, embeddings, llm) as client:
        yield client


def upload(client: TestClient, kb: str, *names: str, **headers: str) -> Any:
    files = [("files", (name, (SAMPLES / name).read_bytes())) for name in names]
    return client.post(f"/knowledge_bases/{kb}/documents", files=files, headers=headers)


@pytest.fixture()
def hb(client: TestClient) -> TestClient:
    assert client.post("/knowledge_bases", json={"name": "hb", "description": "handbook"}).status_code == 201
    response = upload(client, "hb", "employee-handbook.md", "员工手册.md", "差旅管理办法.docx")
    assert response.status_code == 200, response.text
    return client


def test_health_ready_and_documented_openapi(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    schema = client.get("/openapi.json").json()
    ours = ["KnowledgeBaseCreate", "KnowledgeBaseOut", "DocumentOut", "FileResult", "UploadOut", "SearchRequest",
            "Passage", "SearchOut", "Message", "ChatRequest", "Source", "ChatOut", "ChatCompletionRequest",
            "EmbeddingRequest", "GlmRequest", "LocalDocChat"]  # fmt: skip
    for name in ours:
        fields = schema["components"]["schemas"][name]["properties"]
        assert all(field.get("description") for field in fields.values()), name
    assert "/knowledge_bases/{kb}/search" in schema["paths"]


def test_knowledge_base_lifecycle_and_errors(hb: TestClient) -> None:
    listed = hb.get("/knowledge_bases").json()
    assert [kb["name"] for kb in listed] == ["hb"] and listed[0]["document_count"] == 3 and listed[0]["chunk_count"]
    duplicate = hb.post("/knowledge_bases", json={"name": "hb"})
    assert duplicate.status_code == 409 and error(duplicate)["code"] == "kb_exists"
    bad = hb.post("/knowledge_bases", json={"name": "../evil"})
    assert bad.status_code == 400 and error(bad)["code"] == "invalid_name"  # the rule in words, not its regex
    assert "letters, digits" in error(bad)["message"]
    missing = hb.get("/knowledge_bases/nope")
    assert missing.status_code == 404 and "nope" in error(missing)["message"]
    assert hb.post("/knowledge_bases", json={"name": "x", "colour": "red"}).status_code == 422
    malformed = hb.post("/knowledge_bases", content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 422 and error(malformed)["code"] == "invalid_request"
    assert hb.delete("/knowledge_bases/hb").status_code == 204
    assert hb.get("/knowledge_bases/hb").status_code == 404


def test_uploads_report_each_file_and_add_nothing_twice(hb: TestClient) -> None:
    chunks = hb.get("/knowledge_bases/hb").json()["chunk_count"]
    again = upload(hb, "hb", "employee-handbook.md")
    (result,) = again.json()["files"]
    assert result["file"] == "employee-handbook.md" and result["action"] == "unchanged" and result["error"] is None
    assert hb.get("/knowledge_bases/hb").json()["chunk_count"] == chunks
    mixed = hb.post("/knowledge_bases/hb/documents", files=[
        ("files", ("../../etc/notes.md", b"# Notes\\n\\nThe canteen opens at 11:30.")),
        ("files", ("tool.exe", b"MZ\\x90\\x00")),
    ])  # fmt: skip
    results = {r["file"]: r for r in mixed.json()["files"]}
    assert mixed.status_code == 200 and results["notes.md"]["action"] == "added"
    assert results["tool.exe"]["action"] == "failed" and results["tool.exe"]["error"].startswith("unsupported")
    only_bad = hb.post("/knowledge_bases/hb/documents", files=[("files", ("tool.exe", b"MZ"))])
    assert only_bad.status_code == 415 and error(only_bad)["code"] == "unsupported_type"
    empty = hb.post("/knowledge_bases/hb/documents", files=[("files", ("empty.txt", b""))])
    assert empty.status_code == 422 and "empty" in error(empty)["message"]
    unknown = upload(hb, "nope", "employee-handbook.md")
    assert unknown.status_code == 404
    documents = {d["path"]: d for d in hb.get("/knowledge_bases/hb/documents").json()}
    assert documents["notes.md"]["status"] == "indexed" and documents["empty.txt"]["status"] == "failed"


def test_oversized_files_are_refused(kb_root: Path, embeddings: SentenceTransformerEmbeddings, llm: ChatLLM) -> None:
    with make_client(kb_root, embeddings, llm, ingest={"max_file_mb": 0.001}) as client:
        client.post("/knowledge_bases", json={"name": "hb"})
        big = client.post("/knowledge_bases/hb/documents", files=[("files", ("big.txt", b"word " * 1000))])
        assert big.status_code == 413 and error(big)["code"] == "too_large"
        assert client.get("/knowledge_bases/hb").json()["document_count"] == 0


def test_download_and_delete_documents(hb: TestClient) -> None:
    original = (SAMPLES / "差旅管理办法.docx").read_bytes()
    downloaded = hb.get("/knowledge_bases/hb/documents/差旅管理办法.docx/content")
    assert downloaded.status_code == 200 and downloaded.content == original
    found = hb.post("/knowledge_bases/hb/search", json={"query": EN}).json()["passages"]
    assert found[0]["document"] == "employee-handbook.md"
    assert hb.delete("/knowledge_bases/hb/documents/employee-handbook.md").status_code == 204
    after = hb.post("/knowledge_bases/hb/search", json={"query": EN, "top_k": 10}).json()["passages"]
    assert all(p["document"] != "employee-handbook.md" for p in after)
    gone = hb.delete("/knowledge_bases/hb/documents/employee-handbook.md")
    assert gone.status_code == 404 and error(gone)["code"] == "document_not_found"
    assert hb.get("/knowledge_bases/hb/documents/nothing.md/content").status_code == 404


def test_search_options_and_bad_requests(hb: TestClient) -> None:
    body = hb.post("/knowledge_bases/hb/search", json={"query": EN, "top_k": 2, "method": "bm25"}).json()
    assert len(body["passages"]) == 2 and "every 90 days" in body["passages"][0]["text"]
    assert all(-1 <= p["score"] <= 1 for p in body["passages"])
    only = hb.post("/knowledge_bases/hb/search", json={"query": "年假", "documents": ["员工手册.md"]}).json()
    assert {p["document"] for p in only["passages"]} == {"员工手册.md"}
    assert hb.post("/knowledge_bases/hb/search", json={"query": EN, "score_threshold": 0.9999}).json()["passages"] == []
    assert hb.post("/knowledge_bases/hb/search", json={"query": ""}).status_code == 422
    assert hb.post("/knowledge_bases/hb/search", json={"query": EN, "top_k": 0}).status_code == 422
    assert hb.post("/knowledge_bases/nope/search", json={"query": EN}).status_code == 404


def test_an_unreadable_index_is_a_server_fault_not_a_bad_request(
    hb: TestClient, kb_root: Path, embeddings: SentenceTransformerEmbeddings, llm: ChatLLM
) -> None:
    store = next(p for p in kb_root.rglob("CURRENT") if "hb" in str(p)).parent
    for index in store.glob("index.*.faiss"):
        index.write_bytes(b"not a faiss index")
    with make_client(kb_root, embeddings, llm) as fresh:  # a process that reads the index from disk
        broken = fresh.post("/knowledge_bases/hb/search", json={"query": EN})
    assert broken.status_code == 500 and error(broken)["code"] == "index_unreadable"
    assert "kb-qa kb rebuild hb --recreate" in error(broken)["message"]


def test_chat_answers_with_sources_history_and_declines(hb: TestClient) -> None:
    answer = hb.post("/chat", json={"question": EN, "knowledge_base": "hb", "temperature": 0, "max_tokens": 12}).json()
    assert answer["answer"] and answer["sources"][0]["document"] == "employee-handbook.md"
    assert {"retrieval_ms", "generation_ms", "total_ms", "highlights_ms"} <= set(answer["timings"])
    first = answer["sources"][0]
    assert first["highlights"] and set(first["highlights"][0]) == {"start", "end", "score"}
    assert 0 <= first["highlights"][0]["start"] < first["highlights"][0]["end"] <= len(first["text"])
    declined = hb.post("/chat", json={"question": EN, "knowledge_bases": ["hb"], "score_threshold": 0.9999}).json()
    assert declined["declined"] and declined["sources"] == [] and "llm" not in declined["models"]
    for history in ([["Hi", "Hello!"]], [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]):
        ok = hb.post("/chat", json={"question": "And you?", "history": history, "max_tokens": 4})
        assert ok.status_code == 200 and ok.json()["mode"] == "chat"
    wrong = hb.post("/chat", json={"question": "x", "history": [{"speaker": "me"}]})
    assert wrong.status_code == 422 and error(wrong)["code"] == "invalid_request"
    assert hb.post("/chat", json={"question": ""}).status_code == 422
    unknown = hb.post("/chat", json={"question": EN, "knowledge_base": "nope", "stream": True})
    assert unknown.status_code == 404 and error(unknown)["code"] == "kb_not_found"


def test_chat_streams_sources_then_deltas_then_done(hb: TestClient) -> None:
    body = {"question": EN, "knowledge_bases": ["hb"], "stream": True, "max_tokens": 12}
    with hb.stream("POST", "/chat", json=body) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in response.read().decode().split("\n\n") if f.strip()]
    events = [(f.split("\n")[0].removeprefix("event: "), json.loads(f.split("\n")[1].removeprefix("data: ")))
              for f in frames]  # fmt: skip
    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "done" and set(names[1:-1]) == {"delta"}
    assert events[0][1]["sources"][0]["document"] == "employee-handbook.md"
    assert events[0][1]["sources"][0]["highlights"]  # evidence arrives with the sources, before any text
    assert events[-1][1]["answer"] == "".join(data["text"] for name, data in events if name == "delta")


def test_keys_guard_everything_but_health(
    kb_root: Path, embeddings: SentenceTransformerEmbeddings, llm: ChatLLM
) -> None:
    server = {"api_keys": ["reader"], "admin_keys": ["boss"]}
    with make_client(kb_root, embeddings, llm, server=server) as client:
        assert client.get("/health").status_code == 200
        anonymous = client.get("/knowledge_bases")
        assert anonymous.status_code == 401 and error(anonymous)["code"] == "unauthorized"
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert client.get("/knowledge_bases", headers={"Authorization": "Bearer wrong"}).status_code == 401
        reader = {"Authorization": "Bearer reader"}
        boss = {"Authorization": "Bearer boss"}
        assert client.get("/knowledge_bases", headers=reader).status_code == 200
        forbidden = client.post("/knowledge_bases", json={"name": "hb"}, headers=reader)
        assert forbidden.status_code == 403 and error(forbidden)["code"] == "forbidden"
        assert client.post("/knowledge_bases", json={"name": "hb"}, headers=boss).status_code == 201
        assert upload(client, "hb", "employee-handbook.md", **reader).status_code == 403
        assert upload(client, "hb", "employee-handbook.md", **boss).status_code == 200
        assert client.post("/knowledge_bases/hb/search", json={"query": EN}, headers=reader).status_code == 200


def test_unknown_routes_and_methods_use_the_error_shape(client: TestClient) -> None:
    missing = client.get("/no/such/route")
    assert missing.status_code == 404 and error(missing)["code"] == "not_found"
    wrong = client.put("/health")
    assert wrong.status_code == 405 and error(wrong)["code"] == "method_not_allowed"


def test_chatglm2_api_py_shape(client: TestClient) -> None:
    reply = client.post("/", json={"prompt": "What is the capital of France?", "history": [], "max_length": 8})
    body = reply.json()
    assert reply.status_code == 200 and set(body) == {"response", "history", "status", "time"}
    assert body["status"] == 200 and "Paris" in body["response"]
    assert body["history"] == [["What is the capital of France?", body["response"]]]
    bad = client.post("/", json={"prompt": "x", "history": [["only one"]]})
    assert bad.status_code == 422 and "history" in error(bad)["message"]  # a pair is two strings, by the schema


def test_langchain_chatglm_api_py_routes(client: TestClient) -> None:
    handbook = (SAMPLES / "employee-handbook.md").read_bytes()
    uploaded = client.post("/local_doc_qa/upload_file", data={"knowledge_base_id": "legacy"},
                           files={"file": ("employee-handbook.md", handbook)})  # fmt: skip
    assert uploaded.status_code == 200 and uploaded.json()["code"] == 200  # the knowledge base was created
    more = client.post("/local_doc_qa/upload_files", data={"knowledge_base_id": "legacy"},
                       files=[("files", ("员工手册.md", (SAMPLES / "员工手册.md").read_bytes()))])  # fmt: skip
    assert more.status_code == 200
    assert client.get("/local_doc_qa/list_knowledge_base").json() == {"code": 200, "msg": "success", "data": ["legacy"]}
    files = client.get("/local_doc_qa/list_files", params={"knowledge_base_id": "legacy"}).json()["data"]
    assert sorted(files) == ["employee-handbook.md", "员工手册.md"]
    answer = client.post("/local_doc_qa/local_doc_chat", json={"knowledge_base_id": "legacy", "question": EN,
                                                               "history": []}).json()  # fmt: skip
    assert set(answer) == {"question", "response", "history", "source_documents"}
    assert answer["source_documents"][0].startswith("出处 [1] employee-handbook.md：")
    assert "every 90 days" in answer["source_documents"][0] and answer["history"][-1][0] == EN
    deleted = client.delete("/local_doc_qa/delete_file", params={"knowledge_base_id": "legacy",
                                                                 "doc_name": "employee-handbook.md"})  # fmt: skip
    assert deleted.status_code == 200
    assert client.get("/local_doc_qa/list_files", params={"knowledge_base_id": "legacy"}).json()["data"] == [
        "员工手册.md"
    ]
    refused = client.post("/local_doc_qa/upload_file", data={"knowledge_base_id": "legacy"},
                          files={"file": ("tool.exe", b"MZ")})  # fmt: skip
    assert refused.status_code == 415 and error(refused)["code"] == "unsupported_type"  # the same checks as /documents
    missing = client.post("/local_doc_qa/local_doc_chat", json={"knowledge_base_id": "nope", "question": EN})
    assert missing.status_code == 404  # the original answered 200 with the error in the text


def test_reindex_one_document_and_rebuild_as_a_job(hb: TestClient) -> None:
    reindexed = hb.post("/knowledge_bases/hb/documents/员工手册.md/reindex")
    assert reindexed.status_code == 200
    (result,) = reindexed.json()["files"]
    assert result["file"] == "员工手册.md" and result["action"] == "updated" and result["chunks"] > 0
    assert hb.post("/knowledge_bases/hb/documents/nope.md/reindex").status_code == 404
    started = hb.post("/knowledge_bases/hb/rebuild", params={"recreate": True})
    assert started.status_code == 202 and started.headers["location"] == f"/jobs/{started.json()['id']}"
    job = started.json()
    for _ in range(600):  # poll the job resource until it ends
        job = hb.get(f"/jobs/{job['id']}").json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert job["status"] == "done", job
    assert job["total"] == job["done"] == 3 and job["report"]["added"] == 3
    assert job["phase"] == "indexing hb", job  # what it was doing, as the service described it
    assert job["id"] in [j["id"] for j in hb.get("/jobs").json()]
    assert hb.get("/jobs/unknown").status_code == 404
    assert hb.post("/knowledge_bases/nope/rebuild").status_code == 404
    found = hb.post("/knowledge_bases/hb/search", json={"query": EN}).json()["passages"]
    assert "every 90 days" in found[0]["text"]


def test_cors_embedding_model_check_and_a_failure_mid_stream(
    kb_root: Path, embeddings: SentenceTransformerEmbeddings, llm: ChatLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_client(kb_root, embeddings, llm, server={"cors_origins": ["http://intranet.example"]}) as client:
        preflight = client.options("/chat", headers={"Origin": "http://intranet.example",
                                                     "Access-Control-Request-Method": "POST"})  # fmt: skip
        assert preflight.headers["access-control-allow-origin"] == "http://intranet.example"
        other = client.get("/health", headers={"Origin": "http://elsewhere.example"})
        assert "access-control-allow-origin" not in other.headers
        wrong = client.post("/knowledge_bases", json={"name": "x", "embedding_model": "bge-large-zh"})
        assert wrong.status_code == 409 and "multilingual-e5-small" in error(wrong)["message"]
        assert client.post(
            "/knowledge_bases", json={"name": "x", "embedding_model": "multilingual-e5-small"}
        ).is_success

        real = llm.backend.stream

        def failing(messages: Any, params: Any, cancel: Any) -> Iterator[str]:
            stream = real(messages, params, cancel)
            yield next(stream)
            raise RuntimeError("the GPU fell over")

        monkeypatch.setattr(llm.backend, "stream", failing)
        with client.stream("POST", "/chat", json={"question": "Tell me a story.", "stream": True}) as response:
            text = response.read().decode()
        assert "event: delta" in text and "event: error" in text and "the server log" in text
        assert "GPU fell over" not in text  # no internals reach the client


def test_a_model_that_cannot_load_makes_the_service_unready(
    kb_root: Path, embeddings: SentenceTransformerEmbeddings
) -> None:
    from kb_qa.errors import ModelUnavailable

    def broken() -> ChatLLM:
        raise ModelUnavailable("llm.model: /models/chatglm2-6b does not exist; point it at a local model folder")

    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(kb_root)}, **ANY_SCORE})
    services = build_services(settings, embeddings=embeddings, llm=broken)
    with TestClient(create_app(settings, services=services)) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and "chatglm2-6b does not exist" in ready.json()["problems"][0]
        chat = client.post("/chat", json={"question": "hello"})
        assert chat.status_code == 503 and error(chat)["code"] == "model_unavailable"
        assert chat.headers["retry-after"]
