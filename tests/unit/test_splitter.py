from __future__ import annotations

import itertools

import pytest
from langchain_core.documents import Document

from loaders.splitter import TextSplitter, sentence_spans


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text, 0, len(text))]


def test_chinese_sentence_ends_keep_their_punctuation_and_quotes() -> None:
    text = "他说：“明天放假。”我们很高兴！真的吗？是的；好……再见"
    assert sentences(text) == ["他说：“明天放假。”", "我们很高兴！", "真的吗？", "是的；", "好……", "再见"]


def test_english_abbreviations_initials_and_decimals_do_not_end_sentences() -> None:
    text = "Dr. Smith met J. Doe in the U.S. at 9 a.m. today. Pi is 3.14 e.g. in maths. Really? Yes!"
    assert sentences(text) == [
        "Dr. Smith met J. Doe in the U.S. at 9 a.m. today.",
        "Pi is 3.14 e.g. in maths.",
        "Really?",
        "Yes!",
    ]


def test_mixed_chinese_and_english() -> None:
    text = "请使用 Python 3.11 运行。Then run the tests. 最后提交代码！"
    assert sentences(text) == ["请使用 Python 3.11 运行。", "Then run the tests.", "最后提交代码！"]


def test_lines_are_boundaries_so_table_rows_stay_whole() -> None:
    assert sentences("a: 1; b: 2\na: 3; b: 4") == ["a: 1; b: 2", "a: 3; b: 4"]


def test_chunks_are_exact_slices_and_never_exceed_size() -> None:
    text = ("员工每年享有十五天带薪年假。年假需提前一周申请！" * 20) + "\n\n" + ("The policy is clear. " * 40)
    splitter = TextSplitter(chunk_size=100, chunk_overlap=20)
    spans = splitter.split_text(text)
    assert len(spans) > 5
    for start, end in spans:
        assert end - start <= 100
        assert text[start:end] == text[start:end].strip()
    # every sentence is inside some chunk, whole
    for sentence in sentences(text):
        assert any(sentence in text[a:b] for a, b in spans)


def test_sentences_are_never_cut_when_they_fit() -> None:
    text = "".join(f"第{i}条规定内容比较长一些。" for i in range(40))
    spans = TextSplitter(chunk_size=60, chunk_overlap=0).split_text(text)
    for start, end in spans:
        assert text[start:end].endswith("。")


def test_overlap_repeats_trailing_sentences() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(30))
    spans = TextSplitter(chunk_size=120, chunk_overlap=50).split_text(text)
    for (_, b1), (a2, _) in itertools.pairwise(spans):
        assert a2 < b1, "the next chunk starts inside the previous one"
        assert b1 - a2 <= 50


def test_a_sentence_longer_than_chunk_size_is_cut_with_overlap() -> None:
    long_sentence = "，".join(f"条款{i}" for i in range(200)) + "。"
    spans = TextSplitter(chunk_size=80, chunk_overlap=10).split_text(long_sentence)
    assert len(spans) > 5
    assert all(b - a <= 80 for a, b in spans)
    covered = set()
    for a, b in spans:
        covered.update(range(a, b))
    assert covered == set(range(len(long_sentence)))


def test_paragraphs_are_kept_whole_when_they_fit() -> None:
    first = "First paragraph sentence one. First paragraph sentence two."
    second = "Second paragraph is a bit longer and has its own sentences. It should stay whole."
    text = first + "\n\n" + second
    spans = TextSplitter(chunk_size=100, chunk_overlap=30).split_text(text)
    assert [text[a:b] for a, b in spans] == [first, second]


def test_split_documents_numbers_chunks_and_keeps_metadata() -> None:
    pieces = [
        Document(page_content="第一段。" * 30, metadata={"source": "a.md", "page": 1, "heading": "总则"}),
        Document(page_content="Second page. " * 30, metadata={"source": "a.md", "page": 2, "heading": ""}),
    ]
    chunks = TextSplitter(chunk_size=50, chunk_overlap=0).split_documents(pieces)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert {c.metadata["page"] for c in chunks} == {1, 2}
    first = chunks[0]
    assert pieces[0].page_content[first.start : first.end] == first.text
    assert first.embedding_text() == "总则\n" + first.text
    assert first.embedding_text(heading_prefix=False) == first.text
    assert len({c.metadata["content_hash"] for c in chunks}) >= 2


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        TextSplitter(chunk_size=100, chunk_overlap=100)
