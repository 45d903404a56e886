"""STAND-INS for parsers gone wrong, to test that reading files in parser processes contains them
(loaders/isolation.py). Real parsers do this on crafted or unlucky files; these do it on demand.
Module-level functions, so that a parser process can import them by name."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def hanging_parser(path: Path) -> list[object]:
    """STAND-IN for a parser stuck in a loop on a crafted file."""
    time.sleep(3600)
    return []


def greedy_parser(path: Path) -> list[object]:
    """STAND-IN for a parser inflating a crafted file: 16 GB, 256 MB at a time."""
    blocks = [bytearray(256 * 1024 * 1024) for _ in range(64)]
    return [len(blocks)]


def crashing_parser(path: Path) -> list[object]:
    """STAND-IN for a C parser's segmentation fault."""
    os.kill(os.getpid(), signal.SIGSEGV)
    return []
