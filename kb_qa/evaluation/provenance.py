"""Which code produced a result: the git revision of the checkout kb-qa runs from."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from kb_qa.settings import PROJECT_DIR


def git_revision(checkout: Path = PROJECT_DIR) -> str:
    """The short commit hash of the checkout (kb-qa's own by default), with ``-dirty`` when tracked files differ
    from it; ``unknown`` when the folder is not the top of a git checkout (an installed wheel, even inside
    some other checkout) or without git."""
    try:
        top, head = subprocess.run(["git", "rev-parse", "--show-toplevel", "--short", "HEAD"], capture_output=True,
                                   text=True, cwd=checkout, check=True, timeout=10).stdout.split()  # fmt: skip
        if Path(top).resolve() != checkout.resolve():
            return "unknown"
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, cwd=checkout, check=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, ValueError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{head}-dirty" if changed else head


@functools.cache
def run_revision() -> str:
    """kb-qa's revision when this process first asked: the code it loaded, even if the checkout moves on
    (a commit made while a long evaluation runs). Evaluations and bench scripts ask at their start."""
    return git_revision()
