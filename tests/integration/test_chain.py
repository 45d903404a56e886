"""The QA chain end to end: real embedding model, real FAISS + BM25, the real bundled SmolLM2.

The model's messages are recorded by wrapping the real backend's ``stream`` (a spy: the model
still runs), so the tests can check what the prompt held and how often the model was called.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from kb_qa.chain import QAChain, cited_numbers
from kb_qa.embeddings import SentenceTransformerEmbeddings
from kb_qa.errors import BadRequest, ConfigError
from kb_qa.events import Delta, Final, Sources
from kb_qa.llm import ChatLLM
from kb_qa.llm.transformers_backend import TransformersBackend
from kb_qa.prompts import PromptSet, question_language
from kb_qa.services import Services, build_services
from kb_qa.settings import PROJECT_DIR, load_settings
from loaders import load_file
from tests.helpers import ANY_SCORE

pytestmark = pytest.mark.integration

EN = "How often must passwords be changed?"
ZH = "年假没休完可以顺延到明年吗？"


class Spy:
    """Records every message list the real backend is asked to continue."""

    def __init__(self, backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[dict[str, str]]] = []
        real = backend.stream

        def stream(messages: list[dict[str, str]], params: Any, cancel: threading.Event) -> Iterator[str]:
            self.calls.append([dict(m) for m in messages])
            return real(messages, params, cancel)

        monkeypatch.setattr(backend, "stream", stream)


@pytest.fixture()
def spy(backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch) -> Spy:
    return Spy(backend, monkeypatch)


def make_services(
    kb_root: Path, embeddings: SentenceTransformerEmbeddings, llm: Any, samples: Path | None, **qa: Any
) -> Services:
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(kb_root)}, "qa": qa, **ANY_SCORE})
    services = build_services(settings, embeddings=embeddings, llm=llm)
    if samples is not None:
        services.knowledge_bases.create("hb")
        services.knowledge_bases.rebuild("hb", samples)
    return services


@pytest.fixture()
def qa(kb_root: Path, embeddings: SentenceTransformerEmbeddings, backend: TransformersBackend, samples_copy: Path,
       spy: Spy) -> Services:  # fmt: skip
    llm = ChatLLM(backend=backend, temperature=0.0, max_new_tokens=24)
    return make_services(kb_root, embeddings, lambda: llm, samples_copy)


def test_grounded_answer_streams_sources_then_text_then_the_record(qa: Services, spy: Spy) -> None:
    events = list(qa.qa.stream(EN, knowledge_bases=["hb"]))
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Sources" and kinds[-1] == "Final" and set(kinds[1:-1]) == {"Delta"}
    assert isinstance(events[0], Sources) and isinstance(events[-1], Final)
    final = events[-1].answer
    assert final["answer"] == "".join(e.text for e in events[1:-1] if isinstance(e, Delta)) and final["answer"].strip()
    without_evidence = [{k: v for k, v in s.items() if k not in ("highlights", "cited")} for s in final["sources"]]
    assert [{k: v for k, v in s.items() if k not in ("highlights", "cited")} for s in events[0].sources] == (
        without_evidence
    )
    first = final["sources"][0]
    assert first["number"] == 1 and first["document"] == "employee-handbook.md" and "every 90 days" in first["text"]
    assert {"retrieval_ms", "generation_ms", "first_token_ms", "total_ms"} <= set(final["timings"])
    assert final["models"] == {"embedding": qa.embeddings.name, "llm": "SmolLM2-135M-Instruct"}
    # one model call; its prompt numbers the passages in the order of the sources and asks for [n]
    assert len(spy.calls) == 1
    system, user = spy.calls[0][0], spy.calls[0][-1]
    assert system["role"] == "system" and "[1], [2]" in system["content"]
    positions = [user["content"].index(f"[{s['number']}] ({s['document']}") for s in final["sources"]]
    assert positions == sorted(positions)
    assert all(s["text"] in user["content"] for s in final["sources"])
    assert user["content"].index(EN) > positions[-1]  # the question comes after the passages


def test_sources_point_at_their_chunks_and_citations_are_marked(qa: Services, samples_copy: Path) -> None:
    answer = qa.qa.ask(ZH, knowledge_bases=["hb"], retrieval={"top_k": 3})
    store = qa.knowledge_bases.reader("hb")
    for source in answer.sources:
        chunk = store.get(source.chunk_id)
        assert chunk is not None and chunk.doc == source.document and chunk.text in source.text
        if source.document.endswith(".md") and len(source.chunk_ids) == 1:
            piece = load_file(samples_copy / source.document)[chunk.metadata["piece"]]
            assert piece.page_content[source.start : source.end] == source.text
    cited = cited_numbers(answer.answer)
    assert [s.cited for s in answer.sources] == [s.number in cited for s in answer.sources]
    assert cited_numbers("见[1]和【3】，以及 [12]") == {1, 3, 12}


def test_no_passage_above_the_threshold_answers_without_the_model(
    kb_root: Path, embeddings: SentenceTransformerEmbeddings, samples_copy: Path
) -> None:
    def never() -> ChatLLM:
        raise AssertionError("the LLM must not be loaded or called")

    services = make_services(kb_root, embeddings, never, samples_copy)
    zh = services.qa.ask(ZH, knowledge_bases=["hb"], retrieval={"score_threshold": 0.999})
    assert zh.declined and zh.answer == "根据知识库中的信息无法回答该问题。" and zh.sources == []
    en = services.qa.ask(EN, knowledge_bases=["hb"], retrieval={"score_threshold": 0.999})
    assert en.declined and en.answer.startswith("I could not find") and "llm" not in en.models
    # retrieval-only mode never needs the model either
    found = services.qa.ask(EN, mode="search", knowledge_bases=["hb"])
    assert found.answer == "" and found.sources and "every 90 days" in found.sources[0].text


def test_history_reaches_the_model_and_old_turns_are_dropped(
    kb_root: Path, embeddings: SentenceTransformerEmbeddings, backend: TransformersBackend, samples_copy: Path,
    spy: Spy,
) -> None:  # fmt: skip
    llm = ChatLLM(backend=backend, temperature=0.0, max_new_tokens=16)
    services = make_services(kb_root, embeddings, lambda: llm, samples_copy, history_turns=2, rewrite_followups=False)
    history = [[f"question {i}", f"answer {i}"] for i in range(5)]
    answer = services.qa.ask(EN, knowledge_bases=["hb"], history=history)
    assert answer.query == EN  # no rewrite when it is off
    (messages,) = spy.calls
    contents = [m["content"] for m in messages[1:-1]]
    assert contents == ["question 3", "answer 3", "question 4", "answer 4"]
    # the same in plain chat mode, with role messages
    spy.calls.clear()
    services.qa.ask("And what did I ask first?", mode="chat", history=[{"role": "user", "content": "question 4"},
                    {"role": "assistant", "content": "answer 4"}])  # fmt: skip
    sent = [m["content"] for m in spy.calls[0] if m["role"] != "system"]
    assert sent == ["question 4", "answer 4", "And what did I ask first?"]


def test_a_follow_up_is_rewritten_for_retrieval(qa: Services, spy: Spy) -> None:
    history = [["How often must passwords be changed?", "Every 90 days [1]."]]
    answer = qa.qa.ask("How long must they be?", knowledge_bases=["hb"], history=history)
    assert len(spy.calls) == 2  # the rewrite, then the answer
    rewrite_prompt = spy.calls[0][-1]["content"]
    assert "Follow-up question: How long must they be?" in rewrite_prompt
    assert "How often must passwords be changed?" in rewrite_prompt
    assert answer.query and "rewrite_ms" in answer.timings
    # the answer prompt still asks the question as the user asked it
    assert "Question: How long must they be?" in spy.calls[1][-1]["content"]


def test_plain_chat_mode_uses_no_knowledge_base(qa: Services, spy: Spy) -> None:
    answer = qa.qa.ask("What is the capital of France?", mode="chat")
    assert "Paris" in answer.answer and answer.sources == [] and "retrieval_ms" not in answer.timings
    assert spy.calls[0][-1]["content"] == "What is the capital of France?"


def test_prompt_language_follows_the_question_or_the_setting(
    kb_root: Path, embeddings: SentenceTransformerEmbeddings, backend: TransformersBackend, samples_copy: Path,
    spy: Spy,
) -> None:  # fmt: skip
    llm = ChatLLM(backend=backend, temperature=0.0, max_new_tokens=8)
    auto = make_services(kb_root, embeddings, lambda: llm, samples_copy)
    assert auto.qa.ask(ZH, knowledge_bases=["hb"]).language == "zh"
    assert "编号资料" in spy.calls[-1][0]["content"] and "资料：" in spy.calls[-1][-1]["content"]
    fixed = make_services(kb_root.parent / "kb2", embeddings, lambda: llm, samples_copy, language="en")
    assert fixed.qa.ask(ZH, knowledge_bases=["hb"]).language == "en"
    assert "Passages:" in spy.calls[-1][-1]["content"]
    assert question_language("What does 年假 mean?") == "en" and question_language("年假是什么 API?") == "zh"


def test_best_last_puts_the_top_passage_next_to_the_question_keeping_its_number(
    kb_root: Path, embeddings: SentenceTransformerEmbeddings, backend: TransformersBackend, samples_copy: Path,
    spy: Spy,
) -> None:  # fmt: skip
    llm = ChatLLM(backend=backend, temperature=0.0, max_new_tokens=8)
    services = make_services(kb_root, embeddings, lambda: llm, samples_copy, passage_order="best_last")
    answer = services.qa.ask(EN, knowledge_bases=["hb"], retrieval={"top_k": 3})
    assert [s.number for s in answer.sources] == [1, 2, 3] and "every 90 days" in answer.sources[0].text
    user = spy.calls[-1][-1]["content"]
    positions = [user.index(f"[{s.number}] ({s.document}") for s in answer.sources]
    assert positions == sorted(positions, reverse=True)  # [3] first, [1] last
    assert positions[0] < user.index(EN)  # and the question still after all of them
    with pytest.raises(ConfigError, match=r"qa\.passage_order: 'random' is not allowed; choose one of 'best_first'"):
        make_services(kb_root.parent / "kb3", embeddings, lambda: llm, None, passage_order="random")
    with pytest.raises(ConfigError, match="passage_order must be one of best_first, best_last"):
        QAChain(services.qa.retriever, lambda: llm, PROJECT_DIR / "configs" / "prompts", passage_order="random")


def test_prompts_with_an_evidence_mark_mark_each_passages_best_sentence(
    kb_root: Path, embeddings: SentenceTransformerEmbeddings, backend: TransformersBackend, samples_copy: Path,
    spy: Spy, tmp_path: Path,
) -> None:  # fmt: skip
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    for language in ("en", "zh"):
        shipped = (PROJECT_DIR / "configs" / "prompts" / f"{language}.yaml").read_text(encoding="utf-8")
        (prompts / f"{language}.yaml").write_text(shipped + '\nevidence: "<<{sentence}>>"\n', encoding="utf-8")
    llm = ChatLLM(backend=backend, temperature=0.0, max_new_tokens=4)
    services = make_services(kb_root, embeddings, lambda: llm, samples_copy, prompts_dir=str(prompts))
    finder = services.qa.evidence
    assert finder is not None
    find, asked = finder.find, []

    def counting(passages: Sequence[str], question: str, answer: str = "", **kwargs: Any) -> Any:
        asked.append(answer)
        return find(passages, question, answer, **kwargs)

    finder.find = counting  # type: ignore[method-assign]
    events = list(services.qa.stream(EN, knowledge_bases=["hb"], retrieval={"top_k": 3}))
    assert isinstance(events[0], Sources)
    # the question's highlights are found once: the prompt's marks and the sources event share them
    assert asked.count("") == 1
    texts = [source["text"] for source in events[0].sources]
    assert [s["highlights"] for s in events[0].sources] == [[h.to_dict() for h in f] for f in find(texts, EN)]
    user = spy.calls[-1][-1]["content"]
    assert user.count("<<") == user.count(">>") == 3  # one sentence per passage
    for source in events[0].sources:  # the one the sources' top highlight (for the question) names
        top = source["highlights"][0]
        text = source["text"]
        assert text[: top["start"]] + "<<" + text[top["start"] : top["end"]] + ">>" + text[top["end"] :] in user
    assert isinstance(events[-1], Final) and "<<" not in "".join(s["text"] for s in events[-1].answer["sources"])
    shipped = (PROJECT_DIR / "configs" / "prompts" / "en.yaml").read_text(encoding="utf-8")
    (prompts / "en.yaml").write_text(shipped + '\nevidence: "<<{text}>>"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"evidence prompt must be text with the one placeholder \{sentence\}"):
        PromptSet.load(prompts / "en.yaml")


def test_passages_that_do_not_fit_the_window_are_not_sources(
    qa: Services, backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = qa.qa.ask(ZH, mode="search", knowledge_bases=["hb"], retrieval={"top_k": 6})
    monkeypatch.setattr(type(backend), "context_window", property(lambda self: 560))
    tight = qa.qa.ask(ZH, knowledge_bases=["hb"], retrieval={"top_k": 6}, generation={"max_new_tokens": 8})
    assert 0 < len(tight.sources) < len(full.sources)
    assert any("lowest-ranked passage" in note for note in tight.notes)


def test_the_lcel_chain_and_bad_requests(qa: Services) -> None:
    out = qa.qa.runnable().invoke({"question": EN, "mode": "search", "knowledge_bases": ["hb"]})
    assert out["query"] == EN and out["answer"] == "" and "every 90 days" in out["passages"][0].text
    with pytest.raises(BadRequest, match="empty"):
        qa.qa.ask("   ", knowledge_bases=["hb"])
    with pytest.raises(BadRequest, match="at least one knowledge base"):
        qa.qa.ask(EN)
    with pytest.raises(BadRequest, match="mode must be one of"):
        qa.qa.ask(EN, mode="poem", knowledge_bases=["hb"])


def test_prompt_files_are_checked(tmp_path: Path) -> None:
    good = (PROJECT_DIR / "configs" / "prompts" / "en.yaml").read_text(encoding="utf-8")
    (tmp_path / "en.yaml").write_text(good.replace("no_answer:", "not_the_key:"), encoding="utf-8")
    with pytest.raises(ConfigError, match="no_answer"):
        PromptSet.load(tmp_path / "en.yaml")
    (tmp_path / "en.yaml").write_text(good.replace("{context}", "(nothing)"), encoding="utf-8")
    with pytest.raises(ConfigError, match="context"):
        PromptSet.load(tmp_path / "en.yaml")


def test_sources_carry_evidence_highlights_for_the_question_then_the_answer(qa: Services) -> None:
    """Before the answer the highlights follow the question; in the record they follow the answer."""
    events = list(qa.qa.stream(EN, knowledge_bases=["hb"], generation={"max_new_tokens": 4}))
    assert isinstance(events[0], Sources) and isinstance(events[-1], Final)
    early, final = events[0].sources, events[-1].answer["sources"]
    for sources in (early, final):
        assert all(s["highlights"] for s in sources)
        for source in sources:
            for h in source["highlights"]:
                assert 0 <= h["start"] < h["end"] <= len(source["text"])
                sentence = source["text"][h["start"] : h["end"]]
                assert sentence == sentence.strip() and len(sentence) >= 4
    top = early[0]["highlights"][0]
    assert early[0]["text"][top["start"] : top["end"]] == (
        "Passwords have at least 12 characters and are changed every 90 days."
    )
    assert isinstance(events[-1], Final)
    timings = events[-1].answer["timings"]
    assert timings["highlights_ms"] > 0 and timings["answer_highlights_ms"] > 0


def test_answer_highlights_follow_what_the_answer_says(qa: Services) -> None:
    """The evidence finder on its own: the same passage, different answers, different sentences."""
    assert qa.qa.evidence is not None
    passage = (
        "Annual leave is 15 days a year. Unused leave may be carried over until 31 March of the next year. "
        "Sick leave needs a doctor's note after two days."
    )
    question = "Can unused annual leave be carried over?"
    by_question = qa.qa.evidence.find([passage], question)[0][0]
    assert passage[by_question.start : by_question.end].startswith("Unused leave may be carried over")
    by_answer = qa.qa.evidence.find([passage], question, "You need a doctor's note after two days [1].")[0][0]
    assert passage[by_answer.start : by_answer.end].startswith("Sick leave needs a doctor's note")
    chinese = "年假每年15天。未休完的年假可以顺延至次年3月31日。病假超过两天需要医生证明。"
    best = qa.qa.evidence.find([chinese], "年假没休完可以顺延吗？")[0][0]
    assert chinese[best.start : best.end] == "未休完的年假可以顺延至次年3月31日。"


def test_citations_are_checked_as_they_stream(qa: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    from kb_qa.evidence import CitationChecker

    assert qa.qa.evidence is not None
    passages = [
        "Travel claims are due within ten working days after the trip.",
        "Any single expense above CNY 5,000 must also be signed off by the Chief Financial Officer.",
    ]
    answer = (
        "Expenses above CNY 5,000 are signed off by the Chief Financial Officer [1]. Claims are due in ten days [1]."
    )
    import kb_qa.evidence

    split_calls = 0
    real_sentences = kb_qa.evidence.sentences

    def counted(text: str) -> list[tuple[int, int]]:
        nonlocal split_calls
        split_calls += 1
        return real_sentences(text)

    monkeypatch.setattr(kb_qa.evidence, "sentences", counted)
    checker = CitationChecker(qa.qa.evidence, passages)
    streamed = "".join(checker.feed(ch) for ch in answer) + checker.flush()  # one character at a time
    assert split_calls == len(passages)  # the passages are split (and tokenized) once for both citations
    assert streamed == (
        "Expenses above CNY 5,000 are signed off by the Chief Financial Officer [2]. Claims are due in ten days [1]."
    )
    assert checker.changed == [(1, 2)]
    # a number that does not exist is corrected; lists of numbers and an unfinished bracket pass unchanged
    other = CitationChecker(qa.qa.evidence, passages)
    text = "Claims are due within ten working days【7】 see [1, 2] and ["
    assert other.feed(text) + other.flush() == "Claims are due within ten working days【1】 see [1, 2] and ["


def test_a_wrong_citation_number_is_corrected_in_the_stream_and_the_record(
    qa: Services, backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model (its output replaced here) cites [3] for a sentence that only passage [1] holds."""

    def scripted(messages: list[dict[str, str]], params: Any, cancel: threading.Event) -> Iterator[str]:
        yield from ["Passwords are changed ", "every 90 days ", "[", "3", "]."]

    monkeypatch.setattr(backend, "stream", scripted)
    events = list(qa.qa.stream(EN, knowledge_bases=["hb"]))
    assert isinstance(events[-1], Final)
    final = events[-1].answer
    streamed = "".join(e.text for e in events if isinstance(e, Delta))
    assert streamed == final["answer"] == "Passwords are changed every 90 days [1]."
    assert [s["number"] for s in final["sources"] if s["cited"]] == [1]
    assert "every 90 days" in final["sources"][0]["text"]
    assert any("changed to [1]" in note for note in final["notes"])
