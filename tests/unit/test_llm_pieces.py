"""The LLM layer's model-free parts: history forms, stop strings, context budget, gate, placement."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from kb_qa.errors import Busy, ConfigError
from kb_qa.llm import (
    Budget,
    ConcurrencyGate,
    ContextTooLong,
    InvalidHistory,
    StopFilter,
    fit_context,
    normalize_history,
)
from kb_qa.llm.base import to_pairs
from kb_qa.llm.chatglm_backend import chatglm_device_map
from kb_qa.llm.openai_backend import estimate_tokens
from kb_qa.placement import resolve_device, resolve_dtype


def test_both_history_forms_become_role_messages() -> None:
    pairs = [["你好", "你好！有什么可以帮你？"], ["年假几天？", None]]
    assert normalize_history(pairs) == [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！有什么可以帮你？"},
        {"role": "user", "content": "年假几天？"},
    ]
    roles = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert normalize_history(roles) == roles
    assert normalize_history(None) == []


@pytest.mark.parametrize(
    "bad",
    ["just a string", [{"role": "robot", "content": "x"}], [["only one"]], [[1, 2]], [42], {"role": "user"}],
)
def test_malformed_history_is_refused(bad: object) -> None:
    with pytest.raises(InvalidHistory):
        normalize_history(bad)


def test_to_pairs_for_chatglm() -> None:
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert to_pairs(messages) == ("S", [("q1", "a1")], "q2")
    with pytest.raises(InvalidHistory):
        to_pairs([{"role": "assistant", "content": "x"}])


def test_stop_filter_cuts_exactly_and_across_deltas() -> None:
    stop = StopFilter(["Observation:", "\n\n"])
    out = "".join(stop.feed(d) for d in ["The answer", " is 42.\nObse", "rvation: ignored", " more"]) + stop.flush()
    assert out == "The answer is 42.\n"
    assert stop.stopped
    plain = StopFilter([])
    assert plain.feed("abc") == "abc"
    holding = StopFilter(["END"])
    assert holding.feed("xyE") == "xy"  # "E" might start "END"
    assert holding.feed("N") == ""
    assert holding.feed("q") == "ENq"
    assert holding.flush() == ""


def count_words(text: str) -> int:
    return len(text.split())


def fit(question: str = "why?", **kwargs: Any) -> Budget:
    return fit_context(system="sys", question=question, count=count_words, **kwargs)


def test_budget_keeps_everything_that_fits() -> None:
    history = [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c d"}]
    budget = fit_context(
        system="s",
        question="q",
        history=history,
        passages=["p1", "p2"],
        count=count_words,
        window=1000,
        max_new_tokens=10,
    )
    assert budget.history == history and budget.passages == ["p1", "p2"]
    assert budget.dropped_history == budget.dropped_passages == 0


def test_budget_drops_oldest_history_first_then_lowest_passages() -> None:
    history = [
        {"role": "user", "content": "old " * 50},
        {"role": "assistant", "content": "old answer " * 25},
        {"role": "user", "content": "recent"},
        {"role": "assistant", "content": "recent answer"},
    ]
    passages = ["best " * 20, "good " * 20, "worst " * 20]
    budget = fit(history=history, passages=passages, window=160, max_new_tokens=40, overhead_per_message=1)
    assert budget.history == history[2:]  # the old turn went, the recent one fits
    assert budget.dropped_history == 2
    assert budget.passages == passages
    tight = fit(history=history, passages=passages, window=100, max_new_tokens=40, overhead_per_message=1)
    # all history goes before any passage; then the lowest-ranked passage
    assert tight.history == []
    assert tight.dropped_history == 4
    assert tight.passages == passages[:2]
    assert tight.dropped_passages == 1
    assert tight.prompt_tokens <= 100 - 40
    assert any("oldest history" in n for n in tight.notes) and any("lowest-ranked" in n for n in tight.notes)


def test_budget_never_truncates_the_question() -> None:
    with pytest.raises(ContextTooLong, match="question"):
        fit_context(
            system="s",
            question="word " * 500,
            history=[],
            passages=[],
            count=count_words,
            window=256,
            max_new_tokens=16,
        )


def test_gate_answers_busy_when_the_queue_is_full() -> None:
    gate = ConcurrencyGate(max_concurrent=1, max_queue=1)
    release = threading.Event()
    entered = threading.Event()

    def hold() -> None:
        with gate:
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(10)
    waiter = threading.Thread(target=lambda: gate.__enter__() and gate.__exit__())
    waiter.start()
    for _ in range(100):
        if gate.waiting == 1:
            break
        time.sleep(0.01)
    assert gate.waiting == 1
    with pytest.raises(Busy), gate:
        pass
    release.set()
    holder.join()
    waiter.join()


def test_impossible_placements_fail_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import kb_qa.placement as placement

    monkeypatch.setattr(placement, "cuda_count", lambda: 0)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        resolve_device("cpu", quantization="8bit")
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"^embedding\.device: 'cuda'"):
        resolve_device("cuda", section="embedding")
    with pytest.raises(ConfigError, match="GPUs were asked for"):
        resolve_device("auto", num_gpus=2)
    monkeypatch.setattr(placement.sys, "platform", "linux")
    with pytest.raises(ConfigError, match="only on macOS"):
        resolve_device("mps")
    with pytest.raises(ConfigError, match="fp16"):
        resolve_dtype("fp16", "cpu")
    assert resolve_device("auto") in ("cpu", "mps")


def test_chatglm2_device_map_matches_the_official_loader() -> None:
    names = {
        "transformer.embedding.word_embeddings",
        "transformer.encoder.final_layernorm",
        "transformer.output_layer",
        "transformer.rotary_pos_emb",
        "transformer.encoder",
    }
    device_map = chatglm_device_map(names, num_layers=28, num_gpus=2)
    # the official auto_configure_device_map(2) for ChatGLM2-6B: 30 "layers", 15 per GPU, 2 taken on GPU 0
    expected = {
        "transformer.embedding.word_embeddings": 0,
        "transformer.encoder.final_layernorm": 0,
        "transformer.output_layer": 0,
        "transformer.rotary_pos_emb": 0,
    }
    expected.update({f"transformer.encoder.layers.{i}": 0 if i < 13 else 1 for i in range(28)})
    assert device_map == expected
    four = chatglm_device_map(names, num_layers=28, num_gpus=4)
    assert sorted(set(four.values())) == [0, 1, 2, 3]


def test_chatglm_v1_layout_names() -> None:
    names = {"transformer.word_embeddings", "transformer.final_layernorm", "lm_head", "transformer.layers"}
    device_map = chatglm_device_map(names, num_layers=4, num_gpus=2)
    assert device_map["transformer.word_embeddings"] == 0 and device_map["lm_head"] == 0
    assert device_map["transformer.layers.3"] == 1


def test_token_estimate_counts_cjk_characters() -> None:
    assert estimate_tokens("年假十五天") == 5
    assert estimate_tokens("annual leave") >= 2
