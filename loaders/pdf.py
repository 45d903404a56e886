"""PDF: the text layer page by page (pypdf), OCR for pages that have none."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from langchain_core.documents import Document

from loaders.base import LoadError, non_empty, piece
from loaders.ocr import ocr_available, ocr_image_bytes

log = logging.getLogger(__name__)
_MIN_PAGE_CHARS = 3  # fewer characters than this on every page means "no text layer"
_OCR_BELOW = 20  # pages with less text than this also get their images read by OCR
_CJK = r"\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_GAP = re.compile(rf"(?<=[{_CJK}]) +(?=[{_CJK}])")
_SPACES = re.compile(r"[ \t\u00a0]{2,}")
_ENDS_SENTENCE = tuple(".!?:;。！？：；…")


def clean_page_text(text: str) -> str:
    """Undo the usual text-layer damage: justified spacing, spaces between CJK characters, and
    hard line wraps inside a sentence (joined without a space in Chinese, with one in English)."""
    text = _CJK_GAP.sub("", _SPACES.sub(" ", text.replace("\r", "\n")))
    lines = [line.strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if not line:
            if out and out[-1]:
                out.append("")
            continue
        previous = out[-1] if out else ""
        if previous and not previous.endswith(_ENDS_SENTENCE):
            if re.match(rf"[{_CJK}]", previous[-1]) and re.match(rf"[{_CJK}]", line[0]):
                out[-1] = previous + line
                continue
            if previous.endswith("-") and line[0].islower():
                out[-1] = previous[:-1] + line
                continue
            if line[0].islower() or (line[0].isdigit() and not previous[-1].isdigit()):
                out[-1] = previous + " " + line
                continue
        out.append(line)
    return "\n".join(out).strip()


def load_pdf(path: Path) -> list[Document]:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            # many PDFs are "encrypted" with an empty user password only to forbid editing
            try:
                if not reader.decrypt(""):
                    raise LoadError("encrypted", path.name)
            except (FileNotDecryptedError, NotImplementedError) as exc:
                raise LoadError("encrypted", str(exc)) from exc
        pages = list(reader.pages)
    except LoadError:
        raise
    except (PdfReadError, OSError, ValueError, KeyError, TypeError) as exc:
        raise LoadError("malformed", f"{type(exc).__name__}: {exc}") from exc

    pieces: list[Document] = []
    blank: list[int] = []  # pages with no text, even after OCR
    for number, page in enumerate(pages, start=1):
        try:
            text = page.extract_text() or ""
        except Exception as exc:  # noqa: BLE001 - pypdf raises many types on bad content streams
            log.warning("%s page %d: text extraction failed: %s", path.name, number, exc)
            text = ""
        text = clean_page_text(text)
        if len(text) < _OCR_BELOW and ocr_available():
            scanned = _ocr_page(page)
            if scanned.strip():
                pieces.append(piece((text + "\n" + scanned).strip(), path, page=number, ocr=True))
                continue
        if len(text) < _MIN_PAGE_CHARS:
            blank.append(number)
            continue
        pieces.append(piece(text, path, page=number))
    if not pieces:
        if not pages:
            raise LoadError("empty", "the PDF has no pages")
        raise LoadError("no_text_layer", f"{len(pages)} page(s) without text")
    return non_empty(pieces, path)


def _ocr_page(page: object) -> str:
    texts = []
    for image in getattr(page, "images", []):
        try:
            texts.append(ocr_image_bytes(image.data))
        except Exception as exc:  # noqa: BLE001 - one unreadable image must not fail the page
            log.warning("OCR of an embedded image failed: %s", exc)
    return "\n".join(t for t in texts if t)
