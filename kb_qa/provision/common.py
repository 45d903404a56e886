"""What the model conversions share: finding a package's files, converting once (marker, temp folder, rename)."""

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from kb_qa.errors import ModelUnavailable

log = logging.getLogger(__name__)

_MARKER = ".kbqa-converted.json"


def package_dir(package: str) -> Path:
    """Locate an installed package's folder without importing it.

    :raises ModelUnavailable: when the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"the package '{package}' is not installed; run the install step in README.md "
            f"(or `pip install {package.replace('_', '-')}`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def convert_once(
    source: Path, target: Path, version: int, write: Callable[[Path], None], *, force: bool = False
) -> Path:
    """Build ``target`` from ``source`` with ``write(folder)`` unless a finished build is there.

    A finished folder carries a marker naming the source file, its size and ``version``; the
    build happens in a temporary folder beside the target that is renamed into place, so an
    interrupted conversion never leaves a half-written model behind.
    """
    stamp = {"source": str(source), "size": source.stat().st_size, "format": version}
    marker = target / _MARKER
    if not force and marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == stamp:
                return target
        except (OSError, ValueError):
            log.warning("conversion marker %s unreadable; converting again", marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s into %s (once)", source, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp / "model")
        (tmp / "model" / _MARKER).write_text(json.dumps(stamp), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / "model", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
