"""The app served by uvicorn on loopback: the official openai SDK, langchain-openai, concurrency."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from kb_qa.api import create_app
from kb_qa.embeddings import SentenceTransformerEmbeddings
from kb_qa.llm import ChatLLM, ConcurrencyGate
from kb_qa.llm.transformers_backend import TransformersBackend
from kb_qa.services import Services, build_services
from kb_qa.settings import load_settings
from tests.helpers import ANY_SCORE, SAMPLES, serving

pytestmark = pytest.mark.integration

EN = "How often must passwords be changed?"


def _services(root: Path, embeddings: SentenceTransformerEmbeddings, llm: ChatLLM) -> Services:
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(root)}, **ANY_SCORE})
    services = build_services(settings, embeddings=embeddings, llm=lambda: llm)
    services.knowledge_bases.create("hb")
    services.knowledge_bases.rebuild("hb", SAMPLES)
    return services


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embeddings: SentenceTransformerEmbeddings, backend: TransformersBackend
) -> Iterator[tuple[str, Services]]:
    llm = ChatLLM(backend=backend, temperature=0.0, max_new_tokens=16)
    services = _services(tmp_path_factory.mktemp("served") / "kb", embeddings, llm)
    with serving(create_app(services.settings, services=services)) as base:
        yield base, services


def test_the_official_openai_sdk(served: tuple[str, Services]) -> None:
    import openai

    base, services = served
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
    models = {m.id for m in client.models.list()}
    assert {"SmolLM2-135M-Instruct", "kb:hb"} <= models
    reply = client.chat.completions.create(
        model="kb:hb", messages=[{"role": "user", "content": EN}], max_tokens=12, temperature=0
    )
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    sources = (reply.model_extra or {})["sources"]
    assert sources[0]["document"] == "employee-handbook.md" and "every 90 days" in sources[0]["text"]
    chunks = list(client.chat.completions.create(
        model="kb:hb", messages=[{"role": "user", "content": EN}], max_tokens=12, temperature=0, stream=True
    ))  # fmt: skip
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content  # greedy: the same answer either way
    assert (chunks[0].model_extra or {})["sources"][0]["document"] == "employee-handbook.md"
    question = [{"role": "user", "content": "What is the capital of France?"}]
    plain = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        max_tokens=8,
        temperature=0,
        messages=question,  # type: ignore[arg-type]
    )
    assert "Paris" in (plain.choices[0].message.content or "")
    # embeddings: the SDK asks for base64 by default and decodes it; float works too
    texts = ["年假可以顺延", "passwords are changed every 90 days"]
    default = client.embeddings.create(model="any", input=texts)
    floats = client.embeddings.create(model="any", input=texts, encoding_format="float")
    expected = services.embeddings.encode_passages(texts)
    for result in (default, floats):
        got = np.array([d.embedding for d in result.data], dtype=np.float32)
        assert got.shape == (2, 384) and np.allclose(got, expected, atol=1e-5)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="kb:nope", messages=[{"role": "user", "content": EN}])
    assert missing.value.status_code == 404 and missing.value.body["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="kb:hb", messages=[{"role": "assistant", "content": "hi"}])


def test_invalid_requests_under_v1_follow_openais_error_contract(served: tuple[str, Services]) -> None:
    """OpenAI answers a request that fails validation with 400 invalid_request_error naming the
    field (never 422), so the SDK raises BadRequestError."""
    import openai

    base, _ = served
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    cases = [
        ({"model": "kb:hb", "messages": []}, "messages", "invalid_value"),
        ({"model": "kb:hb"}, "messages", "missing_required_parameter"),
        ({"model": "kb:hb", "messages": [{"role": "user", "content": EN}], "top_k": 0}, "top_k", "invalid_value"),
        ({"model": "kb:hb", "messages": [{"role": "user", "content": EN}], "temperature": "hot"}, "temperature",
         "invalid_value"),
    ]  # fmt: skip
    for body, param, code in cases:
        with pytest.raises(openai.BadRequestError) as caught:  # sent as is: the SDK's own checks would stop some
            client.post("/chat/completions", body=body, cast_to=object)
        error = caught.value.body
        assert caught.value.status_code == 400, body
        assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == code, error  # type: ignore[index]
        assert param in error["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):  # and through the typed call
        client.chat.completions.create(model="kb:hb", messages=[])
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="any", input=[])
    assert caught.value.body["param"] == "input"  # type: ignore[index]
    # the native routes keep their own shape: 422 with {"error": {"code", "message"}}
    native = httpx.post(f"{base}/chat", json={"question": ""})
    assert native.status_code == 422 and native.json()["error"]["code"] == "invalid_request"


def test_langchain_openai_chat_and_embeddings(served: tuple[str, Services]) -> None:
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    base, services = served
    chat = ChatOpenAI(base_url=f"{base}/v1", api_key="unused", model="kb:hb", max_tokens=12, temperature=0)
    message = chat.invoke(EN)
    assert isinstance(message.content, str) and message.content
    streamed = "".join(str(chunk.content) for chunk in chat.stream(EN))
    assert streamed == message.content
    embedder = OpenAIEmbeddings(
        base_url=f"{base}/v1", api_key="unused", model="any", check_embedding_ctx_length=False
    )  # fmt: skip  (no tiktoken download)
    vectors = np.array(embedder.embed_documents(["年假可以顺延"]), dtype=np.float32)
    assert np.allclose(vectors, services.embeddings.encode_passages(["年假可以顺延"]), atol=1e-5)


def test_health_and_search_answer_while_an_answer_streams(served: tuple[str, Services]) -> None:
    base, _ = served
    first_delta = threading.Event()
    finished = threading.Event()

    def stream_long_answer() -> None:
        body = {"question": "Count from 1 to 400, separated by commas.", "max_tokens": 200, "stream": True}
        with httpx.stream("POST", f"{base}/chat", json=body, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("event: delta"):
                    first_delta.set()
        finished.set()

    worker = threading.Thread(target=stream_long_answer)
    worker.start()
    assert first_delta.wait(60)
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get("/health").json() == {"status": "ok"}
        found = client.post("/knowledge_bases/hb/search", json={"query": EN}).json()["passages"]
        assert found and not finished.is_set()  # both answered while the long answer was still streaming
    worker.join(120)
    assert finished.is_set()


def test_parallel_uploads_to_one_knowledge_base_are_all_kept(served: tuple[str, Services]) -> None:
    base, services = served
    texts = {f"note-{i}.md": f"# Note {i}\n\nMeeting room {i} is booked by team {i * 7}." for i in range(6)}
    codes: list[int] = []

    def send(name: str, text: str) -> None:
        response = httpx.post(f"{base}/knowledge_bases/hb/documents", files=[("files", (name, text.encode()))],
                              timeout=300)  # fmt: skip
        codes.append(response.status_code)

    workers = [threading.Thread(target=send, args=item) for item in texts.items()]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    assert codes == [200] * len(texts)
    documents = {d.path: d for d in services.knowledge_bases.files("hb")}
    assert set(texts) <= set(documents) and all(documents[n].status == "indexed" for n in texts)
    store = services.knowledge_bases.reader("hb")
    assert all(store.chunk_ids(name) for name in texts)


def test_a_full_queue_answers_429_and_a_dropped_stream_stops_generating(
    tmp_path: Path, embeddings: SentenceTransformerEmbeddings, backend: TransformersBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    produced: list[str] = []
    real = backend.stream

    def counting(messages: Any, params: Any, cancel: Any) -> Iterator[str]:
        for delta in real(messages, params, cancel):
            produced.append(delta)
            yield delta

    monkeypatch.setattr(backend, "stream", counting)
    gate = ConcurrencyGate(max_concurrent=1, max_queue=0)
    llm = ChatLLM(backend=backend, gate=gate, temperature=0.0, max_new_tokens=300)
    services = _services(tmp_path / "kb", embeddings, llm)
    with serving(create_app(services.settings, services=services)) as base:
        body = {"question": "Tell me a very long story about a lighthouse.", "stream": True}
        with httpx.Client(base_url=base, timeout=120) as client:
            with client.stream("POST", "/chat", json=body) as response:
                lines = response.iter_lines()
                assert any(line.startswith("event: delta") for line in lines)  # generation is running
                for stream in (False, True):  # a stream is refused before it starts, not with an error event
                    busy = httpx.post(f"{base}/chat", json={"question": "hi", "max_tokens": 4, "stream": stream},
                                      timeout=60)  # fmt: skip
                    assert busy.status_code == 429 and busy.headers["retry-after"]
                    assert busy.json()["error"]["code"] == "busy"
            # the client went away: the generation stops and frees the model for the next caller
            for _ in range(600):
                if client.post("/chat", json={"question": "hello", "max_tokens": 2}).status_code == 200:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("the model was not freed after the client disconnected")
    assert 0 < len(produced) < 300
