"""Crafted uploads against the real app (the cheap ones of bench/crafted.py; the 2 GiB zip bombs are
covered in tests/unit/test_limits.py): each is refused alone with the limit or reason it broke, and
none grows the server's resident memory by more than 300 MB (issue 15's bound; the seconds are
measured in bench/crafted.py, not asserted here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench.common import memory_mb
from bench.crafted import docx_paragraphs, elf_as_text, json_nesting, pdf_pages, png_pixels, xml_laughs
from kb_qa.api import create_app
from kb_qa.embeddings import SentenceTransformerEmbeddings
from kb_qa.services import build_services
from kb_qa.settings import load_settings

pytestmark = pytest.mark.integration


CASES: list[tuple[str, Callable[[], bytes], int, str]] = [
    ("paragraphs.docx", docx_paragraphs, 422, "suspicious"),
    ("pixels.png", png_pixels, 413, "max_image_megapixels"),
    ("pages.pdf", pdf_pages, 413, "too_large"),
    ("laughs.xml", xml_laughs, 422, "empty"),
    ("nested.json", json_nesting, 422, "malformed"),
    ("program.txt", elf_as_text, 422, "malformed"),
]


def test_crafted_files_fail_alone_with_their_reason_and_bounded_memory(
    tmp_path: Path, embeddings: SentenceTransformerEmbeddings
) -> None:
    settings = load_settings(environ={}, overrides={"paths": {"kb_root": str(tmp_path / "kb")}})
    services = build_services(settings, embeddings=embeddings)
    with TestClient(create_app(settings, services=services, load_models=False)) as client:
        assert client.post("/knowledge_bases", json={"name": "hb"}).status_code == 201
        for name, make, status, reason in CASES:
            data = make()
            assert len(data) <= 5 * 1024 * 1024
            before = memory_mb()
            response = client.post("/knowledge_bases/hb/documents", files=[("files", (name, data))])
            assert response.status_code == status, (name, response.text)
            assert reason in response.text, (name, response.text)
            assert memory_mb() - before < 300, name
        good = client.post("/knowledge_bases/hb/documents", files=[("files", ("ok.md", b"# Fine\n\nA real file.\n"))])
        assert good.status_code == 200
        listed = client.get("/knowledge_bases/hb/documents").json()
        assert [d["path"] for d in listed if d["status"] == "indexed"] == ["ok.md"]  # the rest are failed, or refused
        assert all(d["error"] for d in listed if d["status"] == "failed")
