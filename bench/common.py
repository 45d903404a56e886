"""Helpers shared by the benchmark scripts (not a test module: nothing here asserts timings)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

# the bench scripts import git_revision from here: the revision when the script started (the code it runs),
# even where they write it at the end and something is committed meanwhile
from kb_qa.evaluation.provenance import run_revision as git_revision
from kb_qa.settings import PROJECT_DIR

if TYPE_CHECKING:
    from kb_qa.services import Services

SHARED = Path(os.environ.get("KBQA_SHARED_DATA", PROJECT_DIR.parent / "shared" / "data"))
RESULTS = PROJECT_DIR / "docs" / "benchmarks"
git_revision()  # read now, as the script starts

# questions on the sample handbook (knowledge_base/samples), Chinese and English in turn
HANDBOOK_QUESTIONS = [
    "年假没休完可以顺延吗？",
    "How often must passwords be changed?",
    "省会城市出差住宿每晚上限多少钱？",
    "Who approves an expense above CNY 5,000?",
    "试用期多长时间？",
    "How many days of annual leave do employees get?",
]


def handbook_services(root: str | Path, **overrides: Any) -> Services:
    """Services over a fresh knowledge-base root holding the sample handbook as ``handbook``."""
    from kb_qa.services import build_services
    from kb_qa.settings import load_settings

    settings = load_settings(overrides={"paths": {"kb_root": str(root)}, **overrides})
    services = build_services(settings)
    services.knowledge_bases.create("handbook")
    services.knowledge_bases.rebuild("handbook", PROJECT_DIR / "knowledge_base" / "samples")
    return services


def model_arguments(parser: argparse.ArgumentParser, out: Path) -> None:
    """The options every answerability script shares: the chat model, the knowledge-base root its
    sets are ingested into (kept between runs), and where the report goes (see :func:`model_services`)."""
    parser.add_argument("--model", default="Qwen2.5-Coder-1.5B-Instruct")
    parser.add_argument("--root", type=Path, default=PROJECT_DIR / ".cache" / "bench-eval")
    parser.add_argument("--out", type=Path, default=out)


def model_services(root: Path, model: str) -> tuple[Any, Services]:
    """The chat model loaded once, and services over a knowledge-base root that use it (the
    answerability scripts read the model's logits directly and ask the chain through the services)."""
    from kb_qa.llm.factory import build_llm
    from kb_qa.services import build_services
    from kb_qa.settings import load_settings

    settings = load_settings(overrides={"paths": {"kb_root": str(root)}, "llm": {"model": model}})
    llm = build_llm(settings)
    return llm, build_services(settings, llm=lambda: llm)


def memory_mb(field: str = "VmRSS") -> float:
    """This process's resident memory now (``VmRSS``) or at its peak (``VmHWM``), in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def require_shared() -> Path:
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: the benchmarks need ../shared/data")
    return SHARED


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (
        f"{cpu or platform.processor()}, {os.cpu_count()} cores, "
        f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def copy_tree(sources: Iterable[tuple[Path, str]], target: Path, pattern: str = "*.md") -> list[Path]:
    """Copy matching files of each (folder, prefix) into target/prefix/…; returns the copies."""
    copies = []
    for folder, prefix in sources:
        for path in sorted(folder.rglob(pattern)):
            destination = target / prefix / path.relative_to(folder)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
            copies.append(destination)
    return copies


def load_queries(set_dir: Path, limit: int | None = None) -> list[dict]:
    lines = (set_dir / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    queries = [q for q in (json.loads(line) for line in lines if line) if q["text"].strip()]
    if limit and len(queries) > limit:
        step = len(queries) / limit
        queries = [queries[int(i * step)] for i in range(limit)]
    return queries


_SPACE = re.compile(r"\s+")


def contains_answer(text: str, answers: list[str]) -> bool:
    flat = _SPACE.sub(" ", text)
    return any(_SPACE.sub(" ", a).strip() in flat for a in answers if a.strip())


def save_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path
