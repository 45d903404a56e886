"""The bundled SmolLM2-135M-Instruct through the LLM class: generation, streaming, stop, history, cancel."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kb_qa.llm import ChatLLM, ConcurrencyGate
from kb_qa.llm.transformers_backend import TransformersBackend

pytestmark = pytest.mark.integration


@pytest.fixture()
def llm(backend: TransformersBackend) -> ChatLLM:
    return ChatLLM(backend=backend, system_prompt="You are a concise assistant.", temperature=0.0, max_new_tokens=24)


def test_greedy_answer_is_deterministic_and_excludes_the_prompt(llm: ChatLLM) -> None:
    question = "What is the capital of France?"
    first = llm.invoke(question)
    assert "Paris" in first
    assert llm.invoke(question) == first
    assert "concise assistant" not in first and question not in first


def test_streaming_gives_the_same_text_in_pieces(llm: ChatLLM) -> None:
    question = "Name three colours."
    chunks = list(llm.stream(question))
    assert len(chunks) > 3
    assert "".join(chunks) == llm.invoke(question)


def test_stop_strings_end_the_text_exactly(llm: ChatLLM) -> None:
    question = "Count from one to ten in words, separated by commas."
    full = llm.invoke(question, max_new_tokens=40)
    assert len(full) > 12
    marker = full[8:11]  # any piece of what greedy decoding writes; the text must end right before it
    cut = llm.invoke(question, stop=[marker], max_new_tokens=40)
    assert cut == full[: full.index(marker)]
    assert marker not in cut


def test_history_goes_through_the_chat_template(llm: ChatLLM, backend: TransformersBackend) -> None:
    history = [["My name is Mei.", "Nice to meet you, Mei!"]]
    messages = llm.messages("What is my name?", history)
    rendered = backend.tokenizer.decode(backend.prompt_inputs(messages)["input_ids"][0])
    assert "<|im_start|>user\nMy name is Mei.<|im_end|>" in rendered
    assert "<|im_start|>assistant\nNice to meet you, Mei!<|im_end|>" in rendered
    assert rendered.rstrip().endswith("<|im_start|>assistant")
    answer = llm.invoke("What is my name?", history=history)
    # the history reaches the model (the answer depends on it), and no state is kept between calls
    assert llm.invoke("What is my name?") != answer
    assert llm.invoke("What is my name?", history=history) == answer


def test_sampling_with_a_seed_is_reproducible(llm: ChatLLM) -> None:
    kwargs = {"temperature": 0.9, "seed": 1234, "max_new_tokens": 20}
    assert llm.invoke("Tell me a short story.", **kwargs) == llm.invoke("Tell me a short story.", **kwargs)


def test_closing_a_stream_stops_generation_promptly(llm: ChatLLM, backend: TransformersBackend) -> None:
    cancel = threading.Event()
    params = llm.params(max_new_tokens=200)
    messages = llm.messages("Write a long essay about the history of tea.")
    stream = llm.stream_text(messages, params, cancel)
    next(stream)
    stream.close()
    assert cancel.is_set()
    # the gate slot was released: a new call goes straight through
    assert llm.gate.waiting == 0
    assert llm.invoke("Say hi.", max_new_tokens=3)


def test_cancelled_generation_stops_within_a_token(backend: TransformersBackend) -> None:
    from kb_qa.llm.base import GenerationParams

    cancel = threading.Event()
    produced = 0
    for _ in backend.stream(
        [{"role": "user", "content": "Write a long story."}], GenerationParams(max_new_tokens=300), cancel
    ):
        produced += 1
        if produced == 3:
            cancel.set()
    assert produced < 10


def test_async_streaming_does_not_block_the_event_loop(llm: ChatLLM) -> None:
    async def run() -> tuple[str, int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        text = "".join([chunk async for chunk in llm.astream("Describe the sea in two sentences.", max_new_tokens=30)])
        stop.set()
        await task
        return text, ticks

    text, ticks = asyncio.run(run())
    assert text
    assert ticks > 5  # the loop kept running while tokens were generated


def test_busy_when_the_queue_is_full(backend: TransformersBackend) -> None:
    gated = ChatLLM(backend=backend, gate=ConcurrencyGate(max_concurrent=1, max_queue=0), max_new_tokens=50)
    stream = gated.stream_text(gated.messages("Write a poem."), gated.params())
    next(stream)  # holds the only slot
    from kb_qa.errors import Busy

    with pytest.raises(Busy):
        gated.invoke("Hello")
    stream.close()
    assert gated.invoke("Hello", max_new_tokens=2) is not None


def test_info_reports_the_model(backend: TransformersBackend) -> None:
    info = backend.info()
    assert info["backend"] == "transformers"
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert 100e6 < info["parameters"] < 200e6
    assert info["context_window"] == 8192
    assert backend.count_tokens("hello world") == 2


def test_a_gguf_file_loads_directly() -> None:
    from kb_qa.provision import smollm2_gguf

    direct = TransformersBackend(smollm2_gguf(), name="smollm2-gguf", device="cpu")
    assert direct.gguf_file and direct.gguf_file.endswith(".gguf")
    assert direct.count_tokens("hello world") == 2
