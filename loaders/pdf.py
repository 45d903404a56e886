"""PDF: the text layer page by page (pypdf), OCR for pages that have none, tables row by row.

**Tables.** A page that draws lines (pdfium counts its path objects, cheaply) is also read by
pdfplumber, which finds ruled tables; each table becomes one line per row with its header cells in
front (``列名: 值; …``, as spreadsheets are read), placed where the table stands on the page, and the
page's other text is read around it in reading order, so no cell is repeated or loses its header.
Pages with more than :data:`MAX_TABLE_PAGE_CHARS` characters skip the table search (bounded cost).
Without pdfplumber installed, pages are read as text only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from loaders.base import LoadError, non_empty, piece
from loaders.ocr import ocr_available, ocr_image_bytes
from loaders.office import table_rows

log = logging.getLogger(__name__)
_MIN_PAGE_CHARS = 3  # fewer characters than this on every page means "no text layer"
_OCR_BELOW = 20  # pages with less text than this also get their images read by OCR
_CJK = r"\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_GAP = re.compile(rf"(?<=[{_CJK}]) +(?=[{_CJK}])")
_SPACES = re.compile(r"[ \t\u00a0]{2,}")
_ENDS_SENTENCE = tuple(".!?:;。！？：；…")
MAX_TABLE_PAGE_CHARS = 30_000  # a page with more characters is read as plain text (no table search)
_MIN_PATHS = 4  # fewer drawn lines or boxes than this: no ruled table on the page


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
    tables = _TableReader(path)
    try:
        for number, page in enumerate(pages, start=1):
            try:
                text = page.extract_text() or ""
            except Exception as exc:  # noqa: BLE001 - pypdf raises many types on bad content streams
                log.warning("%s page %d: text extraction failed: %s", path.name, number, exc)
                text = ""
            text = clean_page_text(text)
            if len(text) >= _MIN_PAGE_CHARS:
                text = tables.page_text(number - 1) or text
            _add_page(pieces, blank, path, page, number, text)
    finally:
        tables.close()
    if not pieces:
        if not pages:
            raise LoadError("empty", "the PDF has no pages")
        raise LoadError("no_text_layer", f"{len(pages)} page(s) without text")
    return non_empty(pieces, path)


def _add_page(pieces: list[Document], blank: list[int], path: Path, page: object, number: int, text: str) -> None:
    """Add page ``number``'s piece (OCR where its text is too short), or note it as blank."""
    if len(text) < _OCR_BELOW and ocr_available():
        scanned = _ocr_page(page)
        if scanned.strip():
            pieces.append(piece((text + "\n" + scanned).strip(), path, page=number, ocr=True))
            return
    if len(text) < _MIN_PAGE_CHARS:
        blank.append(number)
        return
    pieces.append(piece(text, path, page=number))


class _TableReader:
    """Ruled tables of a PDF's pages through pdfplumber (see the module's description); opened on
    the first page that draws enough lines, never when none does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pdfium: object | None = None
        self._plumber: object | None = None
        self._failed = False

    def _drawn_paths(self, index: int) -> int:
        try:
            import pypdfium2 as pdfium
            import pypdfium2.raw as raw
        except ImportError:
            return 0
        if self._pdfium is None:
            self._pdfium = pdfium.PdfDocument(str(self.path))
        page = self._pdfium[index]  # type: ignore[index]
        try:
            count = 0
            for _ in page.get_objects(filter=[raw.FPDF_PAGEOBJ_PATH], max_depth=2):
                count += 1
                if count >= _MIN_PATHS:
                    break
            return count
        finally:
            page.close()

    def page_text(self, index: int) -> str | None:
        """The page's text with its tables row by row, in reading order; ``None``: no table found
        (or tables cannot be read here), keep the plain text."""
        if self._failed:
            return None
        try:
            if self._drawn_paths(index) < _MIN_PATHS:
                return None
            import pdfplumber

            if self._plumber is None:
                self._plumber = pdfplumber.open(str(self.path))
            page = self._plumber.pages[index]  # type: ignore[attr-defined]
            if len(page.chars) > MAX_TABLE_PAGE_CHARS:
                return None
            return _page_with_tables(page)
        except ImportError:
            self._failed = True
            return None
        except Exception as exc:  # noqa: BLE001 - a table search that fails leaves the page's plain text
            log.warning("%s page %d: table search failed: %s", self.path.name, index + 1, exc)
            return None

    def close(self) -> None:
        for handle in (self._plumber, self._pdfium):
            if handle is not None:
                handle.close()  # type: ignore[attr-defined]


def _cell_text(cell: str | None) -> str:
    return clean_page_text(cell or "").replace("\n", " ")


def _page_with_tables(page: Any) -> str | None:
    tables = [t for t in page.find_tables() if len(t.rows) >= 2]
    rendered = []
    for table in tables:
        rows = [[_cell_text(c) for c in row] for row in table.extract()]
        if max((sum(1 for c in row if c) for row in rows), default=0) >= 2:  # a box of text is not a table
            rendered.append((table.bbox, table_rows(rows)))
    if not rendered:
        return None
    outside = page
    for bbox, _ in rendered:
        outside = outside.outside_bbox(bbox)
    blocks: list[tuple[float, str, str]] = [
        (line["top"], "text", line["text"]) for line in outside.extract_text_lines()
    ]
    blocks += [(bbox[1], "table", "\n".join(lines)) for bbox, lines in rendered]
    blocks.sort(key=lambda block: block[0])
    out: list[str] = []
    text: list[str] = []
    for _, kind, content in blocks:
        if kind == "text":
            text.append(content)
            continue
        if text:
            out.append(clean_page_text("\n".join(text)))
            text = []
        out.append(content)
    if text:
        out.append(clean_page_text("\n".join(text)))
    return "\n".join(block for block in out if block)


def _ocr_page(page: object) -> str:
    texts = []
    for image in getattr(page, "images", []):
        try:
            texts.append(ocr_image_bytes(image.data))
        except Exception as exc:  # noqa: BLE001 - one unreadable image must not fail the page
            log.warning("OCR of an embedded image failed: %s", exc)
    return "\n".join(t for t in texts if t)
