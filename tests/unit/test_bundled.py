"""Assembling a chat model from part-wheels: exact size, pinned sha256, nothing half-written left behind.

The real parts are 0.5-1.1 GB; these tests run the same code on a model described with small parts
made here (the definition is the test's, the assembling and checking code is the product's). The
real default model is assembled and checked by `kb-qa models provision` in tests/integration/test_cli.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from kb_qa.bundled import BUNDLED, QWEN_05B, QWEN_15B, BundledModel, assemble, find_bundled, part_files, verify
from kb_qa.errors import ModelUnavailable

PART = 1000


def _model(tmp_path: Path, sizes: tuple[int, ...] = (PART, PART, 321)) -> tuple[BundledModel, list[Path]]:
    parts = []
    whole = b""
    for index, size in enumerate(sizes, 1):
        data = bytes((index * 7 + i) % 251 for i in range(size))
        path = tmp_path / "parts" / f"part{index:02d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        parts.append(path)
        whole += data
    model = dataclasses.replace(
        QWEN_05B, name="tiny", file_name="tiny.gguf", parts=len(sizes), part_size=PART, size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(), package="kbqa_test_absent_part",
    )  # fmt: skip
    return model, parts


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_parts_are_assembled_in_order_and_verified(tmp_path: Path) -> None:
    model, parts = _model(tmp_path)
    cache = tmp_path / "cache"
    target = assemble(model, cache, parts=parts)
    assert target.read_bytes() == b"".join(p.read_bytes() for p in parts)
    assert _leftovers(cache) == ["tiny.gguf", "tiny.gguf.verified.json"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    # a second call only checks: the parts are not read again
    assert assemble(model, cache, parts=[]) == target


def test_a_truncated_part_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    model, parts = _model(tmp_path)
    parts[1].write_bytes(parts[1].read_bytes()[:500])
    cache = tmp_path / "cache"
    with pytest.raises(ModelUnavailable, match=r"part 2 .* is 500 bytes, expected 1,000 .*--require-hashes"):
        assemble(model, cache, parts=parts)
    assert _leftovers(cache) == []


def test_a_corrupted_part_fails_the_hash_and_leaves_nothing_behind(tmp_path: Path) -> None:
    model, parts = _model(tmp_path)
    data = bytearray(parts[0].read_bytes())
    data[10] ^= 0xFF
    parts[0].write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(ModelUnavailable, match=r"not the pinned .*reinstall the parts"):
        assemble(model, cache, parts=parts)
    assert _leftovers(cache) == []


def test_a_file_changed_after_assembly_is_refused(tmp_path: Path) -> None:
    model, parts = _model(tmp_path)
    target = assemble(model, tmp_path / "cache", parts=parts)
    verify(model, target)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    os.utime(target, ns=(1, 1))  # even with an unusual modification time, the stamp no longer matches
    with pytest.raises(ModelUnavailable, match="not the pinned tiny"):
        verify(model, target)
    # assembling again replaces the damaged file from the parts
    assert assemble(model, tmp_path / "cache", parts=parts).read_bytes() == b"".join(p.read_bytes() for p in parts)


def test_missing_parts_name_the_install_command(tmp_path: Path) -> None:
    model, _ = _model(tmp_path)
    with pytest.raises(
        ModelUnavailable, match=r"3 of its 3 parts are not installed .*--require-hashes -r configs/models/"
    ):
        part_files(model)


def test_bundled_names_and_pins() -> None:
    assert find_bundled("qwen2.5-coder-1.5b") is QWEN_15B and find_bundled("Qwen2.5-Coder-0.5B-Instruct") is QWEN_05B
    assert find_bundled("SmolLM2-135M-Instruct") is None
    for model in BUNDLED:
        assert model.expected_part_size(1) * (model.parts - 1) + model.expected_part_size(model.parts) == model.size
        requirements = model.requirements_path.read_text(encoding="utf-8")
        assert requirements.count("--hash=sha256:") == model.parts
        assert f"{model.distribution}{model.parts}=={model.version}" in requirements
