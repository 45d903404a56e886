"""Legacy binary Word (.doc) through antiword, when it is installed (Debian: ``apt-get install antiword``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from langchain_core.documents import Document

from loaders.base import LoadError, non_empty, piece


def load_doc(path: Path) -> list[Document]:
    exe = shutil.which("antiword")
    if exe is None:
        raise LoadError("missing_parser", "legacy .doc needs antiword (apt-get install antiword), or save it as .docx")
    try:
        result = subprocess.run([exe, "-w", "0", str(path)], capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LoadError("malformed", "antiword timed out") from exc
    if result.returncode != 0:
        raise LoadError("malformed", result.stderr.decode("utf-8", "replace").strip()[:200])
    return non_empty([piece(result.stdout.decode("utf-8", "replace"), path)], path)
