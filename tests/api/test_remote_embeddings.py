"""embedding.backend: openai — embeddings from an OpenAI-compatible server, here kb-qa's own
/v1/embeddings served by uvicorn on loopback (the real model behind it), plus a small flaky server
for the retries and a wrong-dimension one for the check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from kb_qa.api import create_app
from kb_qa.embeddings import RemoteEmbeddings, SentenceTransformerEmbeddings
from kb_qa.errors import EmbeddingMismatch, ModelUnavailable
from kb_qa.services import build_services
from kb_qa.settings import load_settings
from tests.helpers import ANY_SCORE, SAMPLES, serving

pytestmark = pytest.mark.integration

E5 = "multilingual-e5-small"
QUESTIONS = ["年假没休完可以顺延吗？", "How often must passwords be changed?", "省会城市出差住宿每晚上限多少钱？"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, embeddings: SentenceTransformerEmbeddings) -> Iterator[str]:
    """A kb-qa serving /v1/embeddings with the real local model (no LLM is needed for that)."""
    root = tmp_path_factory.mktemp("embedding-server")
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(root)}})
    services = build_services(settings, embeddings=embeddings, llm=lambda: None)  # type: ignore[arg-type, return-value]
    with serving(create_app(settings, services=services, load_models=False)) as base:
        yield f"{base}/v1"


def test_remote_vectors_equal_the_local_models(server: str, embeddings: SentenceTransformerEmbeddings) -> None:
    remote = RemoteEmbeddings(server, name=E5, batch_size=2)  # several requests per call
    texts = ["年假可以顺延到次年", "passwords are changed every 90 days", "住宿上限450元", "probation: three months"]
    # the same vectors (cosine 0.9999+: batches of another size pad differently)
    assert same(remote.encode_passages(texts), embeddings.encode_passages(texts))
    # the e5 prefixes are applied once: by the client, not again by the serving kb-qa
    assert same(remote.encode_queries(QUESTIONS), embeddings.encode_queries(QUESTIONS))
    assert remote.dimension == 384
    assert remote.encode_queries([]).shape == (0, 384)


def test_a_knowledge_base_built_with_remote_embeddings(
    server: str, embeddings: SentenceTransformerEmbeddings, tmp_path: Path
) -> None:
    """Ingestion through the remote model; search gives what the local model gives, and a knowledge
    base built either way is searched with the other (same model name, same dimension)."""
    remote_settings = load_settings(
        environ={},
        overrides={
            "paths": {"kb_root": str(tmp_path / "kb")},
            "embedding": {"backend": "openai", "url": server},
            **ANY_SCORE,
        },
    )
    remote = build_services(remote_settings)
    assert isinstance(remote.embeddings, RemoteEmbeddings)
    remote.knowledge_bases.create("hb")
    assert not remote.knowledge_bases.rebuild("hb", SAMPLES).failed
    local = build_services(remote_settings.model_copy(update={"embedding": load_settings(environ={}).embedding}),
                           embeddings=embeddings)  # fmt: skip
    for question in QUESTIONS:
        by_remote = [(h.document, round(h.score, 4)) for h in remote.retriever.retrieve(question, ["hb"], top_k=3)]
        by_local = [(h.document, round(h.score, 4)) for h in local.retriever.retrieve(question, ["hb"], top_k=3)]
        assert by_remote == by_local


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all(np.sum(a * b, axis=1) > 0.9999))


class Flaky:
    """An embeddings server that fails the first ``failures`` requests with the given statuses."""

    def __init__(self, statuses: list[int], dim: int = 8) -> None:
        self.statuses = list(statuses)
        self.dim = dim
        self.requests = 0
        self.app = FastAPI()
        self.app.post("/v1/embeddings")(self.embeddings)

    async def embeddings(self, request: Request) -> JSONResponse:
        self.requests += 1
        body = await request.json()
        if self.statuses:
            status = self.statuses.pop(0)
            return JSONResponse({"error": {"message": "busy"}}, status_code=status, headers={"Retry-After": "0"})
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0] + [0.0] * (self.dim - 2)}
                for i, t in enumerate(body["input"])]  # fmt: skip
        return JSONResponse({"object": "list", "data": data[::-1], "model": body["model"]})  # any order


def test_retries_on_429_and_5xx_then_succeeds() -> None:
    flaky = Flaky([429, 503, 500])
    with serving(flaky.app) as base:
        remote = RemoteEmbeddings(f"{base}/v1", name="x", max_retries=3, backoff=0.01)
        vectors = remote.encode_passages(["a", "bbb"])
    assert flaky.requests == 4
    assert vectors.shape == (2, 8) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert vectors[1, 0] > vectors[0, 0]  # in the order of the texts, whatever order the server used


@pytest.mark.parametrize(("statuses", "requests", "message"), [
    ([503] * 10, 3, "did not answer after 3 tries"),
    ([400], 1, "refused the request"),
])  # fmt: skip
def test_a_server_that_keeps_failing_is_named(statuses: list[int], requests: int, message: str) -> None:
    flaky = Flaky(statuses)
    with serving(flaky.app) as base:
        remote = RemoteEmbeddings(f"{base}/v1", name="x", max_retries=2, backoff=0.01)
        with pytest.raises(ModelUnavailable, match=message) as raised:
            remote.encode_queries(["q"])
    assert flaky.requests == requests and base in str(raised.value)


def test_an_unreachable_server_is_named() -> None:
    remote = RemoteEmbeddings("http://127.0.0.1:9/v1", name="x", max_retries=1, backoff=0.01, timeout=2)
    with pytest.raises(ModelUnavailable, match=r"127\.0\.0\.1:9/v1/embeddings did not answer .*embedding\.url"):
        remote.warm_up()


def test_a_server_of_another_dimension_is_refused_by_the_knowledge_base(
    tmp_path: Path, embeddings: SentenceTransformerEmbeddings
) -> None:
    root = {"paths": {"kb_root": str(tmp_path / "kb")}}
    local = build_services(load_settings(environ={}, overrides=root), embeddings=embeddings)
    local.knowledge_bases.create("hb")
    flaky = Flaky([], dim=8)
    with serving(flaky.app) as base:
        settings: Any = load_settings(environ={}, overrides={**root, "embedding": {"backend": "openai",
                                                                                  "url": f"{base}/v1"}})  # fmt: skip
        remote = build_services(settings)
        with pytest.raises(EmbeddingMismatch, match=r"384-d vectors of multilingual-e5-small.*gives 8-d"):
            remote.retriever.retrieve("年假", ["hb"])
