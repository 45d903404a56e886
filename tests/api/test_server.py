"""The app served by uvicorn on loopback: the official openai SDK, langchain-openai, concurrency."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from kb_qa.api import create_app
from kb_qa.embeddings import SentenceTransformerEmbeddings
from kb_qa.llm import ChatLLM
from kb_qa.llm.factory import build_backend
from kb_qa.llm.transformers_backend import TransformersBackend
from kb_qa.services import Services, build_services
from kb_qa.settings import load_settings

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "knowledge_base" / "samples"
EN = "How often must passwords be changed?"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embeddings: SentenceTransformerEmbeddings
) -> Iterator[tuple[str, Services]]:
    backend = build_backend(load_settings(environ={}, overrides={"llm": {"device": "cpu"}}))
    assert isinstance(backend, TransformersBackend)
    llm = ChatLLM(backend=backend.load(), temperature=0.0, max_new_tokens=16)
    root = tmp_path_factory.mktemp("served") / "kb"
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(root)}})
    services = build_services(settings, embeddings=embeddings, llm=lambda: llm)
    services.knowledge_bases.create("hb")
    services.knowledge_bases.rebuild("hb", SAMPLES)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, services=services), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}", services
    server.should_exit = True
    thread.join(timeout=30)


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
        body = {"question": "Write a long story about the handbook.", "max_tokens": 120, "stream": True}
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
