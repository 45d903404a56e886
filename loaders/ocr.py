"""Optional OCR through RapidOCR (its models ship inside the PyPI package, so it runs offline)."""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from loaders.base import LoadError, non_empty, piece

_lock = threading.Lock()


def ocr_available() -> bool:
    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


@functools.lru_cache(maxsize=1)
def _engine() -> Any:
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR()


def ocr_image_bytes(data: bytes) -> str:
    """Text of one image, lines in reading order."""
    with _lock:  # the ONNX sessions are not shared safely between threads
        result, _ = _engine()(data)
    if not result:
        return ""
    return "\n".join(str(line[1]) for line in result)


def load_image(path: Path) -> list[Document]:
    if not ocr_available():
        raise LoadError("no_text_layer", "an image; install rapidocr-onnxruntime to read images")
    try:
        text = ocr_image_bytes(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise LoadError("malformed", str(exc)) from exc
    return non_empty([piece(text, path, page=1, ocr=True)], path)
