"""The llamacpp backend (llama-cpp-python, in-process) through the LLM class, on the real SmolLM2 .gguf.

SmolLM2-135M is the fast model: these tests check the backend's contract (template, tokens,
streaming, stop, cancel, gate, seeds, errors), not answer quality; the default model's answers are
tested in test_answers_default_model.py.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from kb_qa.errors import Busy, ModelUnavailable
from kb_qa.llm import ChatLLM, ConcurrencyGate
from kb_qa.llm.budget import ContextTooLong
from kb_qa.llm.llamacpp_backend import LlamaCppBackend, default_decode_threads, default_threads
from kb_qa.provision import convert_smollm2, smollm2_gguf
from kb_qa.settings import PROJECT_DIR

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cpp() -> LlamaCppBackend:
    return LlamaCppBackend(smollm2_gguf(), name="SmolLM2-135M-Instruct", n_threads=2).load()


@pytest.fixture()
def llm(cpp: LlamaCppBackend) -> ChatLLM:
    return ChatLLM(backend=cpp, system_prompt="You are a concise assistant.", temperature=0.0, max_new_tokens=24)


def test_the_prompt_is_the_files_own_chat_template(cpp: LlamaCppBackend) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(convert_smollm2(PROJECT_DIR / ".cache" / "models")))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "年假几天？"},
        {"role": "assistant", "content": "十五天。"},
        {"role": "user", "content": "And sick leave?"},
    ]
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert cpp.render(messages) == expected
    # tokens counted with the model's own vocabulary: the same counts as the reference tokenizer
    for text in ("Who approves an expense above CNY 5,000?", "年假没休完可以顺延吗？", "naïve café – ok"):
        assert cpp.count_tokens(text) == len(tokenizer.encode(text, add_special_tokens=False))


def test_greedy_is_deterministic_and_streams_token_by_token(llm: ChatLLM) -> None:
    question = "Name three colours."
    first = llm.invoke(question)
    assert first and llm.invoke(question) == first
    assert "concise assistant" not in first
    chunks = list(llm.stream(question))
    assert len(chunks) >= 5 and "".join(chunks) == first
    assert max(len(c) for c in chunks) <= 12  # one token's text at a time, not whole sentences


def test_history_goes_through_the_template(cpp: LlamaCppBackend, llm: ChatLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = cpp.render

    def spy(messages: list[dict[str, str]]) -> str:
        seen.append(real(messages))
        return seen[-1]

    monkeypatch.setattr(cpp, "render", spy)
    llm.invoke("What is my name?", history=[["My name is Alice.", "Nice to meet you, Alice."]], max_new_tokens=4)
    prompt = seen[-1]
    order = [
        prompt.index(s) for s in ("concise assistant", "My name is Alice.", "Nice to meet you", "What is my name?")
    ]
    assert order == sorted(order)


def test_stop_strings_end_the_text_exactly(llm: ChatLLM) -> None:
    question = "Count from one to ten in words, separated by commas."
    full = llm.invoke(question, max_new_tokens=40)
    marker = full[8:11]
    assert len(full) > 12
    cut = llm.invoke(question, max_new_tokens=40, stop=[marker])
    assert cut == full[: full.index(marker)]


def test_max_new_tokens_bounds_the_answer(cpp: LlamaCppBackend, llm: ChatLLM) -> None:
    text = llm.invoke("Write a long story about a cat.", max_new_tokens=7)
    assert 0 < cpp.count_tokens(text) <= 8


def test_seeded_sampling_is_reproducible(llm: ChatLLM) -> None:
    first = llm.invoke("Tell me a word.", temperature=1.0, seed=7)
    assert llm.invoke("Tell me a word.", temperature=1.0, seed=7) == first


def test_cancel_stops_within_a_token_and_frees_the_model(cpp: LlamaCppBackend, llm: ChatLLM) -> None:
    messages = llm.messages("Write a long story about a dragon.")
    params = llm.params(max_new_tokens=200)
    cancel = threading.Event()
    stream = llm.stream_text(messages, params, cancel)
    received = [next(stream)]
    cancel.set()
    received += list(stream)
    assert len(received) <= 2
    # a closed stream frees the context at once: the next call does not wait
    other = llm.stream_text(messages, llm.params(max_new_tokens=200))
    next(other)
    other.close()
    assert cpp._lock.acquire(timeout=5)
    cpp._lock.release()


def test_the_gate_turns_away_callers_beyond_the_queue(cpp: LlamaCppBackend) -> None:
    llm = ChatLLM(backend=cpp, gate=ConcurrencyGate(1, 0), temperature=0.0, max_new_tokens=50)
    running = llm.stream_text(llm.messages("Write a poem."), llm.params())
    next(running)
    with pytest.raises(Busy):
        llm.invoke("hello")
    running.close()
    assert llm.invoke("Say hi.", max_new_tokens=4)


def test_a_prompt_longer_than_n_ctx_is_refused_with_the_fix() -> None:
    small = LlamaCppBackend(smollm2_gguf(), name="s", context_window=256, n_threads=1)
    llm = ChatLLM(backend=small, temperature=0.0, max_new_tokens=8)
    with pytest.raises(ContextTooLong, match=r"llm\.context_window"):
        llm.invoke("word " * 400)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("this is not a model", encoding="utf-8")
    with pytest.raises(ModelUnavailable, match="not a GGUF file"):
        LlamaCppBackend(fake, name="fake")


def test_a_truncated_gguf_is_refused_in_one_line(tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2_gguf().read_bytes()[:200_000])
    with pytest.raises(ModelUnavailable) as caught:
        LlamaCppBackend(cut, name="cut", n_threads=1).load()
    assert "\n" not in str(caught.value)


def test_an_unsupported_architecture_is_refused_naming_it(tmp_path: Path) -> None:
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "strange.gguf"
    writer = GGUFWriter(str(path), "kbqa-imaginary")
    writer.add_string("tokenizer.chat_template", "{{ messages[0]['content'] }}")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelUnavailable, match="architecture 'kbqa-imaginary'"):
        LlamaCppBackend(path, name="strange", n_threads=1).load()


def test_a_chat_template_setting_overrides_the_files(tmp_path: Path) -> None:
    template = "{% for m in messages %}<<{{ m['role'] }}>>{{ m['content'] }}\n{% endfor %}<<assistant>>"
    backend = LlamaCppBackend(smollm2_gguf(), name="s", chat_template=template, n_threads=1)
    assert backend.render([{"role": "user", "content": "hi"}]) == "<<user>>hi\n<<assistant>>"
    stored = tmp_path / "template.jinja"
    stored.write_text(template, encoding="utf-8")
    assert LlamaCppBackend(smollm2_gguf(), name="s", chat_template=str(stored)).template == template


def test_info_names_the_file_its_size_and_hash(cpp: LlamaCppBackend) -> None:
    info = cpp.info()
    path = smollm2_gguf()
    assert info["backend"] == "llamacpp" and info["source"] == str(path)
    assert info["file_bytes"] == path.stat().st_size
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["architecture"] == "llama" and info["n_threads"] == 2


def test_default_threads_use_every_core_up_to_eight_and_one_to_decode_a_tiny_model() -> None:
    assert default_threads(1) == 1 and default_threads(2) == 2 and default_threads(64) == 8
    assert default_decode_threads(100 * 2**20, cores=2) == 1  # SmolLM2-sized
    assert default_decode_threads(500 * 2**20, cores=2) == 2  # the 0.5B and up
    tiny = LlamaCppBackend(smollm2_gguf(), name="SmolLM2-135M-Instruct")
    assert tiny.n_threads == 1 and tiny.n_threads_batch == default_threads()


def test_the_header_reader_agrees_with_the_gguf_package() -> None:
    from gguf import GGUFReader, GGUFValueType

    from kb_qa.llm.gguf_file import gguf_metadata

    path = smollm2_gguf()
    ours = gguf_metadata(path)
    reader = GGUFReader(str(path))
    scalars = {
        name: f
        for name, f in reader.fields.items()
        if f.types and f.types[0] != GGUFValueType.ARRAY and not name.startswith("GGUF.")  # the header counts
    }
    assert set(ours) == set(scalars)
    for name, field in scalars.items():
        value = field.contents()
        assert ours[name] == (pytest.approx(value) if isinstance(value, float) else value), name
    assert gguf_metadata(path, ("general.architecture",)) == {"general.architecture": "llama"}
