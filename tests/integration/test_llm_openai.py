"""The OpenAI-compatible backend against a real HTTP server on loopback.

The server is a STAND-IN for vLLM / Xinference / Ollama: a small ``http.server`` that speaks the
chat-completions protocol (streamed Server-Sent Events), records what it received, and answers
from a script.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kb_qa.errors import ModelUnavailable
from kb_qa.llm import ChatLLM
from kb_qa.llm.factory import build_llm
from kb_qa.settings import load_settings

pytestmark = pytest.mark.integration


class Server:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.words = ["年假", "有", "十五", "天", "。", " Done", "."]
        self.fail_with: int | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if owner.fail_with:
                    self.send_response(owner.fail_with)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "model overloaded"}}')
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for word in owner.words:
                    event = {"choices": [{"index": 0, "delta": {"content": word}}]}
                    self.wfile.write(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


@pytest.fixture()
def llm(server: Server) -> ChatLLM:
    settings = load_settings(
        environ={},
        overrides={"llm": {"backend": "openai", "base_url": server.url, "model": "qwen2.5-7b", "api_key": "sk-test"}},
    )
    return build_llm(settings)


def test_streams_deltas_and_sends_the_chat(llm: ChatLLM, server: Server) -> None:
    chunks = list(llm.stream("年假几天？", history=[["你好", "你好！"]], temperature=0.2))
    assert "".join(chunks) == "年假有十五天。 Done."
    request = server.requests[-1]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "qwen2.5-7b" and body["stream"] is True and body["temperature"] == 0.2
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]


def test_stop_strings_are_sent_and_applied(llm: ChatLLM, server: Server) -> None:
    assert llm.invoke("年假几天？", stop=["。"]) == "年假有十五天"
    assert server.requests[-1]["body"]["stop"] == ["。"]


def test_server_errors_are_reported_clearly(llm: ChatLLM, server: Server) -> None:
    server.fail_with = 503
    with pytest.raises(ModelUnavailable, match=r"answered 503: .*model overloaded"):
        llm.invoke("hi")


def test_an_unreachable_server_is_reported_clearly() -> None:
    settings = load_settings(
        environ={}, overrides={"llm": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}}
    )
    with pytest.raises(ModelUnavailable, match="cannot reach the model server"):
        build_llm(settings).invoke("hi")


def test_the_openai_backend_needs_a_url() -> None:
    from kb_qa.errors import ConfigError

    with pytest.raises(ConfigError, match=r"llm\.base_url"):
        build_llm(load_settings(environ={}, overrides={"llm": {"backend": "openai"}}))


def test_a_local_tokenizer_counts_exactly(server: Server) -> None:
    from kb_qa.provision import convert_smollm2
    from kb_qa.settings import PROJECT_DIR

    folder = convert_smollm2(PROJECT_DIR / ".cache" / "models")
    llm = build_llm(
        load_settings(
            environ={},
            overrides={"llm": {"backend": "openai", "base_url": server.url, "model": "m", "tokenizer": str(folder)}},
        )
    )
    assert llm.backend.count_tokens("hello world") == 2
    assert llm.backend.count_tokens("年假") != 0
