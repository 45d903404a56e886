"""A model behind an OpenAI-compatible server (vLLM, Xinference, Ollama, llama.cpp server, chatglm.cpp)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

from kb_qa.errors import ModelUnavailable
from kb_qa.llm.base import ChatBackend, GenerationParams, Message

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_WORD = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: one token per CJK character, 1.3 per word or symbol otherwise.

    Used only when no local tokenizer is configured; it errs on the high side for BPE models.
    """
    cjk = len(_CJK.findall(text))
    rest = _CJK.sub(" ", text)
    return cjk + int(len(_WORD.findall(rest)) * 1.3 + 0.999)


class OpenAIBackend(ChatBackend):
    """Chat completions over HTTP, streamed as Server-Sent Events.

    :param base_url: e.g. ``http://127.0.0.1:8000/v1``.
    :param model: the model name the server knows.
    :param api_key: sent as ``Authorization: Bearer``.
    :param context_window: the server model's limit (servers do not report it).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        context_window: int = 8192,
        tokenizer_path: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = model
        self.api_key = api_key
        self.timeout = timeout
        self._context_window = context_window
        self._tokenizer: Any = None
        if tokenizer_path:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)

    @property
    def context_window(self) -> int:
        return self._context_window

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False))
        return estimate_tokens(text)

    def _body(self, messages: list[Message], params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "stream": True,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = params.stop[:4]  # the protocol allows at most four
        if params.seed is not None:
            body["seed"] = params.seed
        if params.repetition_penalty != 1.0:
            body["frequency_penalty"] = round(min(2.0, max(-2.0, params.repetition_penalty - 1.0)), 3)
        return body

    def stream(self, messages: list[Message], params: GenerationParams, cancel: threading.Event) -> Iterator[str]:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = f"{self.base_url}/chat/completions"
        try:
            with (
                httpx.Client(timeout=self.timeout) as client,
                client.stream("POST", url, json=self._body(messages, params), headers=headers) as response,
            ):
                if response.status_code >= 400:
                    detail = response.read().decode("utf-8", "replace")[:300]
                    raise ModelUnavailable(f"{url} answered {response.status_code}: {detail}")
                for line in response.iter_lines():
                    if cancel.is_set():
                        break
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        event = json.loads(data)
                    except json.JSONDecodeError as exc:
                        raise ModelUnavailable(f"{url} sent an unreadable event: {data[:100]}") from exc
                    if "error" in event:
                        raise ModelUnavailable(f"{url} reported an error: {event['error']}")
                    for choice in event.get("choices", []):
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield text
        except httpx.HTTPError as exc:
            raise ModelUnavailable(f"cannot reach the model server at {self.base_url}: {exc}") from exc

    def info(self) -> dict[str, Any]:
        return {
            "backend": "openai",
            "name": self.name,
            "base_url": self.base_url,
            "context_window": self.context_window,
        }
