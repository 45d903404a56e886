"""The `kb-qa` command line, driven in-process with the real model, on a scratch root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kb_qa.cli import app
from kb_qa.embeddings import SentenceTransformerEmbeddings
from kb_qa.evaluation.provenance import git_revision
from kb_qa.settings import PROJECT_DIR

pytestmark = pytest.mark.integration


@pytest.fixture()
def cli(kb_root: Path, embeddings: SentenceTransformerEmbeddings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    # share the session's loaded model instead of loading it for every command
    import kb_qa.services as services

    monkeypatch.setattr(services, "build_embeddings", lambda settings: embeddings)
    monkeypatch.setenv("KBQA_KB_ROOT", str(kb_root))
    monkeypatch.setenv("KBQA_RETRIEVAL__SCORE_THRESHOLD", "0")  # mechanics: keep every passage (tests/helpers.py)
    return CliRunner()


def run(cli: CliRunner, *args: str) -> tuple[int, str]:
    result = cli.invoke(app, list(args))
    return result.exit_code, result.output


def test_full_cycle_with_json(cli: CliRunner, samples_copy: Path, kb_root: Path) -> None:
    code, _ = run(cli, "kb", "create", "hb", "-d", "handbook")
    assert code == 0
    code, output = run(cli, "kb", "add", "hb", str(samples_copy / "employee-handbook.md"), "--json")
    assert code == 0
    summary = json.loads(output)
    assert summary["added"] == 1 and summary["chunks"] > 0
    code, output = run(cli, "kb", "search", "hb", "How many days of annual leave?", "-k", "2", "--json")
    hits = json.loads(output)
    assert code == 0 and len(hits) == 2
    assert hits[0]["document"] == "employee-handbook.md" and "15 days" in hits[0]["text"]
    code, output = run(cli, "kb", "list", "--json")
    assert json.loads(output)[0]["document_count"] == 1
    code, output = run(cli, "kb", "files", "hb", "--json")
    assert json.loads(output)[0]["status"] == "indexed"
    code, output = run(cli, "kb", "remove", "hb", "employee-handbook.md", "--json")
    assert code == 0 and json.loads(output) == {"removed": ["employee-handbook.md"]}
    code, _ = run(cli, "kb", "delete", "hb", "--yes")
    assert code == 0
    assert not (kb_root / "hb").exists()


def test_rebuild_prints_a_summary_and_fails_when_a_file_failed(cli: CliRunner, samples_copy: Path) -> None:
    (samples_copy / "broken.pptx").write_bytes(b"not a presentation")
    code, output = run(cli, "kb", "rebuild", "hb", "--dir", str(samples_copy), "--create")
    assert code == 1
    assert "added" in output and "unchanged" in output
    assert "failed broken.pptx: malformed" in output
    (samples_copy / "broken.pptx").unlink()
    code, output = run(cli, "kb", "rebuild", "hb", "--json")
    assert code == 0
    summary = json.loads(output)
    assert summary["unchanged"] == 5 and summary["removed"] == 1 and summary["chunks"] == 0


def test_errors_are_one_line_with_exit_code_2(cli: CliRunner) -> None:
    code, output = run(cli, "kb", "search", "missing", "question")
    assert code == 2
    assert "error: knowledge base 'missing' does not exist" in output
    code, output = run(cli, "kb", "create", "../x")
    assert code == 2 and "invalid knowledge-base name" in output
    assert "Traceback" not in output


def flat(code: int, output: str) -> tuple[int, str]:
    """The output with rich's line wrapping undone."""
    return code, " ".join(output.split())


def test_bad_storage_gives_one_line_naming_the_fix(cli: CliRunner, tmp_path: Path, samples_copy: Path) -> None:
    not_a_folder = tmp_path / "root-is-a-file"
    not_a_folder.write_text("x", encoding="utf-8")
    code, output = flat(*run(cli, "kb", "list", "--root", str(not_a_folder)))
    assert code == 2 and "is not a usable folder" in output and "--root" in output
    garbage = tmp_path / "garbage-root"
    garbage.mkdir()
    (garbage / "registry.sqlite3").write_bytes(bytes(range(256)) * 20)
    code, output = flat(*run(cli, "kb", "list", "--root", str(garbage)))
    assert code == 2 and "is damaged" in output and "kb rebuild" in output
    code, _ = run(cli, "kb", "add", "hb", str(samples_copy / "employee-handbook.md"))
    assert code == 2  # no knowledge base yet
    run(cli, "kb", "create", "hb")
    assert run(cli, "kb", "add", "hb", str(samples_copy / "employee-handbook.md"))[0] == 0
    chunks = sorted((Path(os.environ["KBQA_KB_ROOT"]) / "hb" / "vector_store").glob("chunks.*.jsonl"))[-1]
    chunks.write_bytes(chunks.read_bytes()[:300])  # truncated mid-record
    code, output = flat(*run(cli, "kb", "search", "hb", "passwords"))
    assert code == 2 and "is damaged" in output and "kb rebuild hb --recreate" in output
    assert "Traceback" not in output


def test_root_option_on_every_command(cli: CliRunner, tmp_path: Path) -> None:
    other = tmp_path / "other-root"
    code, _ = run(cli, "kb", "create", "elsewhere", "--root", str(other))
    assert code == 0
    assert (other / "registry.sqlite3").is_file()
    code, output = run(cli, "kb", "list", "--root", str(other), "--json")
    assert [kb["name"] for kb in json.loads(output)] == ["elsewhere"]


def test_invalid_setting_stops_with_the_key_named(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KBQA_RETRIEVAL__TOP_K", "0")
    code, output = run(cli, "kb", "list")
    assert code == 2 and "retrieval.top_k" in output


def main_py(*args: str, stdin: str | None = None, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python main.py ARGS` as a user would, with extra environment variables."""
    return subprocess.run(
        [sys.executable, str(PROJECT_DIR / "main.py"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        check=check,
        env={**os.environ, **env},
    )


def test_help_explains_commands() -> None:
    result = main_py("kb", "rebuild", "--help")
    assert "--recreate" in result.stdout and "--dir" in result.stdout and "--root" in result.stdout


def test_help_paragraphs_are_wrapped_to_the_terminal() -> None:
    """A docstring's own line breaks do not show: each paragraph is filled to the width (a help text
    once broke every source line again at 80 columns, leaving lines of two words)."""
    text = main_py("eval", "answers", "--help", COLUMNS="80").stdout
    description = text.split("Arguments:")[0]
    paragraphs = [p.splitlines() for p in description.split("\n\n")[1:] if p.strip()]
    assert len(paragraphs) >= 2 and all(len(line) <= 80 for line in text.splitlines())
    for lines in paragraphs:
        assert all(len(line) > 60 for line in lines[:-1]), lines  # only a paragraph's last line is short
    assert "the git revision" in " ".join(description.split())


def test_every_help_text_fits_80_columns_on_screen() -> None:
    """Every command's --help, at 80 columns, counted in screen cells (a Chinese character takes
    two: click wraps by characters, so an example in Chinese inside a paragraph ran past 80)."""
    import unicodedata

    import typer

    def cells(line: str) -> int:
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)

    def paths(command: Any, prefix: list[str]) -> list[list[str]]:
        found = [prefix]
        if hasattr(command, "commands"):  # a group (typer's own click: not click.Group)
            for name, sub in command.commands.items():
                found += paths(sub, [*prefix, name])
        return found

    runner = CliRunner()
    checked = 0
    for path in paths(typer.main.get_command(app), []):
        result = runner.invoke(app, [*path, "--help"], terminal_width=80)
        assert result.exit_code == 0, (path, result.output)
        wide = [line for line in result.output.splitlines() if cells(line) > 80]
        assert not wide, (path, wide)
        checked += 1
    assert checked >= 25


def test_chat_keeps_history_until_clear_and_stops_on_stop() -> None:
    script = "What is two plus two?\nclear\nSay hello.\nstop\nThis line is never asked.\n"
    result = main_py("chat", "--temperature", "0", "--max-tokens", "12", stdin=script)
    assert "history cleared" in result.stdout
    answers = [line for line in result.stdout.splitlines() if line.strip() and line != "history cleared"]
    assert len(answers) >= 2


def test_llm_info_reports_the_default_model_its_file_and_hash() -> None:
    from kb_qa.bundled import QWEN_15B

    result = main_py("llm", "info", "--json")
    info = json.loads(result.stdout)
    assert info["backend"] == "llamacpp" and info["name"] == QWEN_15B.name
    assert info["source"].endswith(QWEN_15B.file_name)
    assert info["file_bytes"] == QWEN_15B.size and info["sha256"] == QWEN_15B.sha256
    assert info["architecture"] == "qwen2" and info["quantization"] == "Q4_K_M"


def test_llm_info_reports_the_transformers_model() -> None:
    result = main_py(
        "llm", "info", "--json", KBQA_LLM__BACKEND="transformers", KBQA_LLM__MODEL="SmolLM2-135M-Instruct",
        KBQA_LLM__DEVICE="cpu",
    )  # fmt: skip
    info = json.loads(result.stdout)
    assert info["name"] == "SmolLM2-135M-Instruct"
    assert info["device"] == "cpu" and info["quantization"] == "none"
    assert info["parameters"] > 100_000_000


def test_impossible_llm_settings_stop_at_start_up_without_a_traceback() -> None:
    result = main_py(
        "llm", "info", check=False, KBQA_LLM__BACKEND="transformers", KBQA_LLM__DEVICE="cpu",
        KBQA_LLM__QUANTIZATION="8bit",
    )  # fmt: skip
    assert result.returncode == 2
    assert "needs a CUDA GPU" in result.stderr
    assert "Traceback" not in result.stderr


def test_models_provision_prepares_both_bundled_models() -> None:
    result = main_py("models", "provision", "--json")
    info = json.loads(result.stdout)
    assert info["embedding"]["model"] == "multilingual-e5-small" and info["embedding"]["dimension"] == 384
    assert info["chat"]["name"] == "Qwen2.5-Coder-1.5B-Instruct" and info["chat"]["backend"] == "llamacpp"


def _tiny_set(folder: Path) -> Path:
    """A question set in the shared layout: three passages of one article, three questions."""
    passages = [
        "The Aurora project started in 2019 in Lyon. Its first prototype flew in March 2020.",
        "Aurora's battery lasts eleven hours. It is charged by a folding solar panel.",
        "The team behind Aurora has forty engineers and is led by Mina Okafor.",
    ]
    (folder / "docs").mkdir(parents=True)
    (folder / "qrels").mkdir()
    (folder / "docs" / "Aurora.txt").write_text("\n\n".join(passages), encoding="utf-8")
    corpus = [{"_id": f"p{i}", "title": "Aurora", "text": text} for i, text in enumerate(passages)]
    queries = [
        {"_id": "q0", "text": "When did the first Aurora prototype fly?", "answers": ["March 2020"], "gold_doc": "p0"},
        {"_id": "q1", "text": "How long does the battery last?", "answers": ["eleven hours"], "gold_doc": "p1"},
        {"_id": "q2", "text": "Who leads the Aurora team?", "answers": ["Mina Okafor"], "gold_doc": "p2"},
    ]
    for q in queries:
        q["article"] = "Aurora"
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(c) for c in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries), encoding="utf-8")
    (folder / "queries_unanswerable.jsonl").write_text(
        json.dumps({"_id": "u0", "text": "What colour is the Aurora logo?", "answers": [], "article": "Aurora"}),
        encoding="utf-8",
    )
    (folder / "qrels" / "dev.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\tp{i}\t1\n" for i in range(3)), encoding="utf-8"
    )
    return folder


def test_search_and_ask_from_the_command_line(cli: CliRunner, samples_copy: Path) -> None:
    assert run(cli, "kb", "rebuild", "hb", "--dir", str(samples_copy), "--create")[0] == 0
    code, output = run(cli, "kb", "search", "hb", "How often must passwords be changed?", "--json", "--method",
                       "bm25", "--doc", "employee-handbook.md", "-k", "2")  # fmt: skip
    hits = json.loads(output)
    assert code == 0 and len(hits) == 2 and {h["document"] for h in hits} == {"employee-handbook.md"}
    code, output = run(cli, "kb", "search", "hb", "年假可以顺延吗？")
    assert code == 0 and "score" in output and "员工手册.md" in output
    code, output = run(cli, "ask", "年假可以顺延吗？", "--kb", "hb", "--mode", "search", "--json")
    record = json.loads(output)
    assert code == 0 and record["answer"] == "" and record["sources"][0]["document"] == "员工手册.md"
    code, output = run(cli, "ask", "年假可以顺延吗？", "--kb", "hb", "--threshold", "0.999")
    assert code == 0 and "根据知识库中的信息无法回答该问题。" in output
    code, output = run(cli, "kb", "search", "nope", "question")
    assert code == 2 and "does not exist" in output
    code, output = run(cli, "ask", "question", "--kb", "hb", "--method", "fuzzy")
    assert code == 2 and "method must be hybrid, dense or bm25" in output


def test_eval_retrieval_and_answers_on_a_set(cli: CliRunner, tmp_path: Path) -> None:
    folder = _tiny_set(tmp_path / "aurora")
    out = tmp_path / "results"
    code, output = run(cli, "eval", "retrieval", str(folder), "--json", "--out", str(out))
    assert code == 0, output
    result = json.loads(output)
    assert result["level"] == "passage" and result["queries"] == 3 and set(result["methods"]) == {
        "dense", "bm25", "hybrid"
    }  # fmt: skip
    assert result["methods"]["hybrid"]["hit@5"] == 1.0
    assert (out / "aurora-retrieval-passage.json").is_file()
    assert "| hybrid |" in (out / "aurora-retrieval-passage.md").read_text(encoding="utf-8")
    code, output = run(cli, "eval", "retrieval", str(folder), "--level", "article", "--method", "hybrid", "--json",
                       "--out", str(out))  # fmt: skip
    article = json.loads(output)
    assert code == 0 and list(article["methods"]) == ["hybrid"] and article["methods"]["hybrid"]["hit@1"] == 1.0
    code, output = run(cli, "eval", "answers", str(folder), "--limit", "2", "--max-tokens", "16", "--json",
                       "--out", str(out))  # fmt: skip
    answers = json.loads(output)
    assert code == 0, output
    assert answers["answered"]["questions"] == 2 and answers["unanswerable"]["questions"] == 1
    assert answers["settings"]["metric"] == "squad" and 0 <= answers["answered"]["f1"] <= 100
    assert Path(answers["settings"]["prompts_dir"]).resolve() == (PROJECT_DIR / "configs" / "prompts").resolve()
    assert answers["settings"]["passage_order"] == "best_first"
    # both result files name the code they were measured with
    assert answers["settings"]["revision"] == result["settings"]["revision"] == git_revision()
    assert git_revision() != "unknown" or not (PROJECT_DIR / ".git").exists()
    assert answers["answered"]["retrieved"] == 1.0  # the gold answer was in the sources every time
    # one record per question asked, consistent with the totals
    records = answers["questions"]
    assert [r["id"] for r in records] == ["q0", "q1", "u0"]  # two answerable (spread), then the unanswerable
    assert all(r["gold_source"] is not None and r["gold_source"] >= 1 for r in records[:2])
    assert sum(r["contains"] for r in records[:2]) / 2 == answers["answered"]["contains"]
    assert records[2]["gold"] == [] and records[2]["declined"] == bool(answers["unanswerable"]["declined"])
    # --exclude: a second run asks only the questions the first did not (held out)
    code, output = run(cli, "eval", "answers", str(folder), "--limit", "2", "--max-tokens", "16", "--json",
                       "--exclude", str(out / "aurora-answers.json"), "--out", str(tmp_path / "second"))  # fmt: skip
    second = json.loads(output)
    assert code == 0, output
    assert [r["id"] for r in second["questions"]] == ["q2"] and second["settings"]["excluded"] == 3
    assert second["answered"]["questions"] == 1 and second["unanswerable"]["questions"] == 0
    code, output = run(cli, "eval", "answers", str(folder), "--exclude", str(out / "aurora-retrieval-passage.json"))
    assert code == 2 and "is not a result of `kb-qa eval answers`" in output
    code, output = run(cli, "eval", "answers", str(folder), "--exclude", str(tmp_path / "second" / "none.json"))
    assert code == 2 and "--exclude: cannot read" in output
    code, output = run(cli, "eval", "retrieval", str(tmp_path / "missing"))
    assert code == 2 and "corpus.jsonl is missing" in output
    code, output = run(cli, "eval", "retrieval", str(folder), "--level", "chapter")
    assert code == 2 and "--level must be passage or article" in output


@pytest.mark.shared_data
def test_eval_retrieval_meets_the_cmrc_target(cli: CliRunner, shared_data: Path, tmp_path: Path) -> None:
    code, output = run(cli, "eval", "retrieval", str(shared_data / "eval" / "cmrc2018-trial"), "--json", "--out",
                       str(tmp_path))  # fmt: skip
    assert code == 0, output
    methods = json.loads(output)["methods"]
    assert methods["hybrid"]["hit@1"] >= 0.975
    for metric in ("hit@1", "mrr@10"):
        assert methods["hybrid"][metric] > max(methods["dense"][metric], methods["bm25"][metric])


def test_grounded_chat_keeps_history(cli: CliRunner, samples_copy: Path, kb_root: Path) -> None:
    assert run(cli, "kb", "rebuild", "hb", "--dir", str(samples_copy), "--create")[0] == 0
    script = "How often must passwords be changed?\nAnd how long must they be?\nstop\n"
    result = main_py("chat", "--kb", "hb", "--temperature", "0", "--max-tokens", "16", stdin=script,
                     KBQA_KB_ROOT=str(kb_root), KBQA_RETRIEVAL__SCORE_THRESHOLD="0")  # fmt: skip
    assert result.stdout.count("sources (* = cited):") == 2
    assert "employee-handbook.md" in result.stdout


def test_kb_migrate_moves_a_knowledge_base_both_ways(
    cli: CliRunner, samples_copy: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kb-qa kb migrate NAME --to postgres|folder` from the command line: the summary line, the JSON,
    searches on the new storage, and a wrong --to refused with exit code 2."""
    code, _ = run(cli, "kb", "create", "hb")
    assert code == 0
    code, _ = run(cli, "kb", "add", "hb", str(samples_copy / "employee-handbook.md"))
    assert code == 0
    code, output = run(cli, "kb", "search", "hb", "How many days of annual leave?", "-k", "1", "--json")
    before = json.loads(output)
    monkeypatch.setenv("KBQA_STORAGE__URL", pg_url)
    code, output = run(cli, "kb", "migrate", "hb", "--to", "elsewhere")
    assert code == 2 and "choose postgres or folder" in output
    code, output = run(cli, "kb", "migrate", "hb", "--to", "postgres")
    assert code == 0, output
    assert "moved 'hb' to postgres:" in output and "set storage.backend: postgres" in output
    code, output = run(cli, "kb", "list", "--json")
    assert code == 0 and json.loads(output) == []  # gone from the folders
    monkeypatch.setenv("KBQA_STORAGE__BACKEND", "postgres")
    code, output = run(cli, "kb", "search", "hb", "How many days of annual leave?", "-k", "1", "--json")
    assert code == 0 and json.loads(output) == before
    code, output = run(cli, "kb", "migrate", "hb", "--to", "folder", "--json")
    assert code == 0, output
    moved = json.loads(output)
    assert moved["name"] == "hb" and moved["document_count"] == 1 and moved["chunk_count"] > 0
    code, output = run(cli, "kb", "list", "--json")
    assert code == 0 and json.loads(output) == []  # gone from the database
    monkeypatch.setenv("KBQA_STORAGE__BACKEND", "folder")
    code, output = run(cli, "kb", "search", "hb", "How many days of annual leave?", "-k", "1", "--json")
    assert code == 0 and json.loads(output) == before
