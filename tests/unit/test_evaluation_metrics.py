"""The evaluation metrics against cases computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kb_qa.errors import DocumentRejected
from kb_qa.evaluation import (
    cmrc_em,
    cmrc_f1,
    cmrc_tokens,
    contains_answer,
    declines,
    load_set,
    ndcg_at,
    rank_of,
    ranking_metrics,
    squad_em,
    squad_f1,
    squad_normalize,
)


def test_squad_normalisation_em_and_f1() -> None:
    assert squad_normalize("The  Cat, sat!") == "cat sat"
    assert squad_em("the Eiffel Tower.", ["Eiffel tower"]) == 1.0
    assert squad_em("Eiffel", ["Eiffel tower"]) == 0.0
    # pred {cat, sat}; gold {cat, sat, on, mat}: P = 1, R = 1/2, F1 = 2/3
    assert squad_f1("the cat sat", ["cat sat on the mat"]) == pytest.approx(2 / 3)
    # the best gold counts
    assert squad_f1("October 1973", ["1973", "October 1973"]) == 1.0
    assert squad_f1("nothing", ["something"]) == 0.0


def test_cmrc_tokens_em_and_longest_common_substring_f1() -> None:
    assert cmrc_tokens("2008年NBA总决赛，") == ["2008", "年", "nba", "总", "决", "赛"]
    assert cmrc_em("“踢爆”。", ["踢爆"]) == 1.0
    # pred 北京大学的校长 (7 tokens), gold 北京大学 (4): common substring 4 -> P 4/7, R 1, F1 8/11
    assert cmrc_f1("北京大学的校长", ["北京大学"]) == pytest.approx(8 / 11)
    # substring, not bag: 学大 shares two characters with 大学 but only one contiguous
    assert cmrc_f1("学大", ["大学"]) == pytest.approx(0.5)
    assert cmrc_f1("清华", ["北京大学", "清华大学"]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert cmrc_f1("", ["北京"]) == 0.0


def test_ranking_metrics_by_hand() -> None:
    assert rank_of(["a", "b", "g"], {"g"}) == 3
    assert rank_of(["a"], {"g"}) is None
    assert ndcg_at(["x", "g"], {"g"}) == pytest.approx(1 / math.log2(3))
    assert ndcg_at(["g", "x", "h"], {"g", "h"}) == pytest.approx((1 + 1 / 2) / (1 + 1 / math.log2(3)))
    metrics = ranking_metrics([1, 3, None, 11], [1.0, 0.5, 0.0, 0.0])
    expected = {"hit@1": 0.25, "hit@5": 0.5, "hit@10": 0.5, "mrr@10": round((1 + 1 / 3) / 4, 4), "ndcg@10": 0.375}
    assert metrics == expected


def test_contains_answer_and_declines() -> None:
    assert contains_answer("It began in October 1973 [1].", ["october 1973"])
    assert contains_answer("玩家以水枪泡封敌人。", ["水枪"])
    assert not contains_answer("In 1974.", ["1973"])
    assert declines("根据知识库中的信息无法回答该问题。", "根据知识库中的信息无法回答该问题。")
    assert declines("Sorry, I could not find that in the passages.", "No answer.")
    assert not declines("The answer is 42 [1].", "No answer.")


def _write_set(folder: Path) -> None:
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": "p1", "title": "T", "text": "alpha"}, {"_id": "p2", "title": "T", "text": "beta"}]
    queries = [
        {"_id": "q1", "text": "alpha?", "answers": ["alpha"], "gold_doc": "p1", "article": "T"},
        {"_id": "q2", "text": "", "answers": ["x"], "gold_doc": "p2", "article": "T"},  # empty: dropped
        {"_id": "q3", "text": "beta?", "answers": ["beta"], "gold_doc": "p2", "article": "T"},
    ]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(c) for c in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries), encoding="utf-8")
    (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tp1\t1\nq3\tp2\t1\nq3\tp1\t0\n")


def test_loading_a_set(tmp_path: Path) -> None:
    _write_set(tmp_path / "s")
    data = load_set(tmp_path / "s")
    assert [q.id for q in data.queries] == ["q1", "q3"]
    assert data.qrels == {"q1": {"p1"}, "q3": {"p2"}}  # a zero judgement is not relevant
    assert not data.chinese and data.unanswerable == []
    with pytest.raises(DocumentRejected, match=r"corpus\.jsonl is missing"):
        load_set(tmp_path)
    (tmp_path / "s" / "queries.jsonl").write_text("{not json", encoding="utf-8")
    with pytest.raises(DocumentRejected, match="not a valid record"):
        load_set(tmp_path / "s")


def test_results_name_the_revision_they_were_measured_at(tmp_path: Path) -> None:
    import subprocess

    from kb_qa.evaluation.provenance import git_revision

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip

    assert git_revision(tmp_path) == "unknown"  # not a checkout
    git("init", "-q")
    (tmp_path / "a.txt").write_text("one\n", encoding="utf-8")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "one")
    head = git("rev-parse", "--short", "HEAD")
    assert git_revision(tmp_path) == head
    (tmp_path / "new.txt").write_text("untracked\n", encoding="utf-8")
    assert git_revision(tmp_path) == head  # untracked files are not the code that ran
    (tmp_path / "a.txt").write_text("two\n", encoding="utf-8")
    assert git_revision(tmp_path) == f"{head}-dirty"
    (tmp_path / "inner").mkdir()
    assert git_revision(tmp_path / "inner") == "unknown"  # inside a checkout, not its top


def test_a_run_keeps_the_revision_it_started_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit made while a long evaluation runs does not change the revision its result names."""
    from kb_qa.evaluation import provenance

    provenance.run_revision.cache_clear()
    try:
        monkeypatch.setattr(provenance, "git_revision", lambda: "abc1234")
        assert provenance.run_revision() == "abc1234"
        monkeypatch.setattr(provenance, "git_revision", lambda: "def5678")  # committed meanwhile
        assert provenance.run_revision() == "abc1234"
    finally:
        provenance.run_revision.cache_clear()


def test_the_cut_off_of_an_answerability_check_respects_the_budget() -> None:
    from bench.answer_check import declined_at

    answerable = [0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.95, 0.97, 0.99]
    unanswerable = [0.05, 0.2, 0.3, 0.4, 0.55, 0.8]
    # declining below 0.5 turns away 1 of 10 answerable (the budget) and 4 of 6 unanswerable
    assert declined_at(answerable, unanswerable, 0.10) == (0.5, 4 / 6)
    assert declined_at(answerable, unanswerable, 0.0) == (0.1, 1 / 6)
