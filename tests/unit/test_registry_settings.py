from __future__ import annotations

from pathlib import Path

import pytest

from kb_qa.domain import DocumentRecord
from kb_qa.errors import ConfigError, InvalidName, KnowledgeBaseExists, KnowledgeBaseNotFound
from kb_qa.registry import Registry, validate_name
from kb_qa.settings import load_settings


@pytest.mark.parametrize("name", ["handbook", "员工手册", "hr-2024", "a.b_c", "x" * 64])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "a\\b", "..", ".hidden", "x" * 65, "a b", "-dash"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(name)


def test_registry_round_trip(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite3")
    registry.create_kb("hb", "handbook", "multilingual-e5-small", 384)
    with pytest.raises(KnowledgeBaseExists):
        registry.create_kb("hb", "", "m", 1)
    record = DocumentRecord("hb", "a.md", "/x/a.md", "0" * 64, 10, 1.0, "markdown", 3, "indexed", None, "t")
    failed = DocumentRecord("hb", "b.pdf", "/x/b.pdf", "1" * 64, 5, 1.0, "pdf", 0, "failed", "encrypted", "t")
    registry.apply([record, failed])
    info = registry.get_kb("hb")
    assert (info.document_count, info.chunk_count, info.dimension) == (2, 3, 384)
    assert [d.path for d in registry.documents("hb")] == ["a.md", "b.pdf"]
    registry.apply([], [("hb", "a.md")])
    assert [d.status for d in registry.documents("hb")] == ["failed"]
    registry.delete_kb("hb")
    with pytest.raises(KnowledgeBaseNotFound):
        registry.get_kb("hb")
    assert registry.documents("hb") == []  # rows went with the knowledge base


def test_reconcile_only_moves_the_registry_forward(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite3")
    info = registry.create_kb("hb", "", "m", 384)
    old = DocumentRecord("hb", "a.md", "/x/a.md", "0" * 64, 10, 1.0, "markdown", 3, "indexed", None, "t")
    new = DocumentRecord("hb", "b.md", "/x/b.md", "1" * 64, 10, 1.0, "markdown", 2, "indexed", None, "t")
    registry.apply([old], generation=("hb", 4))
    assert not registry.reconcile("hb", info.created_at, 4, [new])  # already there
    assert not registry.reconcile("hb", info.created_at, 3, [new])  # behind: never backwards
    assert not registry.reconcile("hb", "another identity", 5, [new])  # a re-created namesake
    assert [d.path for d in registry.documents("hb")] == ["a.md"]
    assert registry.reconcile("hb", info.created_at, 5, [new])
    assert [d.path for d in registry.documents("hb")] == ["b.md"] and registry.get_kb("hb").generation == 5


def test_a_registry_of_an_earlier_version_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "registry.sqlite3"
    with sqlite3.connect(path) as db:  # the schema before index generations were recorded
        db.execute("CREATE TABLE knowledge_bases (name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '', "
                   "embedding_model TEXT NOT NULL, dimension INTEGER NOT NULL, created_at TEXT NOT NULL, "
                   "source_dir TEXT)")  # fmt: skip
        db.execute("INSERT INTO knowledge_bases VALUES ('hb', 'd', 'm', 384, 't', NULL)")
    info = Registry(path).get_kb("hb")
    assert (info.name, info.description, info.generation) == ("hb", "d", 0)


def test_settings_defaults_env_and_overrides(tmp_path: Path) -> None:
    settings = load_settings(environ={})
    assert settings.embedding.model == "multilingual-e5-small"
    env = {"KBQA_EMBEDDING__DEVICE": "cpu", "KBQA_SPLITTER__CHUNK_SIZE": "300", "KBQA_KB_ROOT": str(tmp_path)}
    settings = load_settings(environ=env)
    assert settings.embedding.device == "cpu"
    assert settings.splitter.chunk_size == 300
    assert settings.kb_root == tmp_path
    settings = load_settings(environ=env, overrides={"paths": {"kb_root": str(tmp_path / "x")}})
    assert settings.kb_root == tmp_path / "x"


def test_invalid_settings_name_the_key_and_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"KBQA_EMBEDDING__DEVICE": "gpu"})
    assert "embedding.device" in str(info.value)
    assert "'cuda'" in str(info.value)
    with pytest.raises(ConfigError, match="chunk_overlap"):
        load_settings(environ={"KBQA_SPLITTER__CHUNK_OVERLAP": "999"})
    config = tmp_path / "settings.yaml"
    config.write_text("embedding:\n  modle: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"embedding\.modle: unknown setting"):
        load_settings(config, environ={})


def test_relative_paths_are_taken_from_the_project_folder(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "settings.yaml"
    config.write_text("paths:\n  kb_root: data/kb\n", encoding="utf-8")
    assert load_settings(config, environ={}).kb_root == tmp_path / "data" / "kb"


def test_importing_the_package_loads_no_model() -> None:
    import subprocess
    import sys

    code = (
        "import sys, kb_qa.cli, kb_qa.services, kb_qa.knowledge_base, loaders, vector_store; "
        "print(any(m in sys.modules for m in ('torch', 'sentence_transformers', 'faiss')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
