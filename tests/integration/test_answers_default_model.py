"""The default chat model (bundled Qwen2.5-Coder-1.5B-Instruct through llama.cpp, greedy) answers the
sample handbook: each answer holds its key fact and cites [n] a source that holds it too; off-topic
questions are declined. This is the user's first impression, so it runs on the real defaults: the
real embedding model, FAISS + BM25, the shipped prompts and the bundled model (no stand-in).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kb_qa.embeddings import SentenceTransformerEmbeddings
from kb_qa.evaluation import declines
from kb_qa.services import Services, build_services
from kb_qa.settings import load_settings
from tests.helpers import SAMPLES

pytest.importorskip("llama_cpp")
pytestmark = [pytest.mark.integration, pytest.mark.slow]

# question, the key fact (any of these spellings, in either language: the handbook exists in Chinese
# and English, and citing the other language's version of the same sentence is a correct citation)
HANDBOOK = ("员工手册.md", "employee-handbook.md")
QUESTIONS = [
    ("年假没休完可以顺延吗？", ("5天", "五天", "3月31日", "March 31")),
    ("单笔报销超过5000元需要谁批准？", ("财务总监", "Chief Financial Officer")),
    ("登录密码多久更换一次？", ("90天", "90 days")),
    ("Who approves an expense above CNY 5,000?", ("Chief Financial Officer", "CFO", "财务总监")),
    ("How often must passwords be changed?", ("90 days", "90天")),
    ("How many days of paid sick leave do employees get per year?", ("10 days", "ten days", "10天")),
]
OFF_TOPIC = ["What is the boiling point of mercury in Kelvin?", "梵高的《星夜》是哪一年画的？"]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, embeddings: SentenceTransformerEmbeddings) -> Services:
    root: Path = tmp_path_factory.mktemp("default-model") / "kb"
    built = build_services(
        load_settings(environ={}, overrides={"paths": {"kb_root": str(root)}}), embeddings=embeddings
    )
    built.knowledge_bases.create("handbook")
    built.knowledge_bases.rebuild("handbook", SAMPLES)
    return built


@pytest.mark.parametrize(("question", "facts"), QUESTIONS, ids=[q for q, _ in QUESTIONS])
def test_the_answer_holds_the_fact_and_cites_a_source_holding_it(
    services: Services, question: str, facts: tuple[str, ...]
) -> None:
    answer = services.qa.ask(question, knowledge_bases=["handbook"], generation={"temperature": 0.0})
    assert answer.models["llm"] == "Qwen2.5-Coder-1.5B-Instruct"
    text = answer.answer
    assert any(f.lower() in text.lower() for f in facts), text
    cited = [s for s in answer.sources if s.cited]
    assert cited, f"no [n] citation in: {text}"
    assert re.search(r"[\[【]\d+[\]】]", text)
    # every cited number is a real source, and at least one cited source holds the fact
    assert all(1 <= s.number <= len(answer.sources) for s in cited)
    assert any(any(f.lower() in s.text.lower() for f in facts) for s in cited), (text, [s.document for s in cited])
    assert all(s.document in HANDBOOK for s in cited if any(f.lower() in s.text.lower() for f in facts))


@pytest.mark.parametrize("question", OFF_TOPIC)
def test_off_topic_questions_are_declined(services: Services, question: str) -> None:
    answer = services.qa.ask(question, knowledge_bases=["handbook"], generation={"temperature": 0.0})
    no_answer = services.qa.prompts[answer.language].no_answer
    assert answer.declined or declines(answer.answer, no_answer), answer.answer
