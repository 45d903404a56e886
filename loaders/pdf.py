"""PDF: the text layer page by page (pypdf), OCR for pages that have none, tables row by row,
two-column pages column by column.

**Tables.** A page that draws lines (pdfium counts its path objects, cheaply) is also read by
pdfplumber, which finds ruled tables; each table becomes one line per row with its header cells in
front (``列名: 值; …``, as spreadsheets are read), placed where the table stands on the page, and the
page's other text is read around it in reading order, so no cell is repeated or loses its header.
Pages with more than :data:`MAX_TABLE_PAGE_CHARS` characters skip the table search (bounded cost).
Without pdfplumber installed, pages are read as text only.

**Columns.** pypdf reads text in the order the page draws it, and some producers draw a two-column
page line by line across both columns. pdfium's text runs show where the columns are: a vertical
gutter in the middle third that (almost) no run crosses, with lines on both sides of it at the same
heights. Such a page is read band by band from the top — full-width lines (titles, footers) on their
own, the text between them left column first — with pdfium's text of each box.
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
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # e.g. a bullet glyph with no Unicode mapping
_ENDS_SENTENCE = tuple(".!?:;。！？：；…")
MAX_TABLE_PAGE_CHARS = 30_000  # a page with more characters is read as plain text (no table search)
_MIN_PATHS = 4  # fewer drawn lines or boxes than this: no ruled table on the page


def clean_page_text(text: str) -> str:
    """Undo the usual text-layer damage: control characters (unmapped glyphs), justified spacing,
    spaces between CJK characters, and hard line wraps inside a sentence (joined without a space in
    Chinese, with one in English)."""
    text = _CJK_GAP.sub("", _SPACES.sub(" ", _CONTROL.sub("", text).replace("\r", "\n")))
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
                text = tables.page_text(number - 1) or tables.columns_text(number - 1) or text
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
        self._page: tuple[int, Any] | None = None  # the pdfium page open now (the table and column checks share it)

    def _drawn_paths(self, index: int) -> int:
        try:
            import pypdfium2.raw as raw
        except ImportError:
            return 0
        count = 0
        for _ in self._pdfium_page(index).get_objects(filter=[raw.FPDF_PAGEOBJ_PATH], max_depth=2):
            count += 1
            if count >= _MIN_PATHS:
                break
        return count

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

    def _pdfium_page(self, index: int) -> Any:
        """Page ``index`` through pdfium, loaded once for both checks; the page before it is closed."""
        import pypdfium2 as pdfium

        if self._page is not None and self._page[0] == index:
            return self._page[1]
        self._close_page()
        if self._pdfium is None:
            self._pdfium = pdfium.PdfDocument(str(self.path))
        self._page = (index, self._pdfium[index])  # type: ignore[index]
        return self._page[1]

    def _close_page(self) -> None:
        if self._page is not None:
            page, self._page = self._page[1], None
            page.close()

    def columns_text(self, index: int) -> str | None:
        """The page read column by column when its text stands in two columns (see
        :func:`_two_columns`); ``None``: one column (or pdfium missing), keep the text as read."""
        try:
            page = self._pdfium_page(index)
        except ImportError:
            return None
        except Exception as exc:  # noqa: BLE001 - pdfium refusing a file pypdf read leaves the plain text
            log.warning("%s page %d: column reading failed: %s", self.path.name, index + 1, exc)
            return None
        try:
            textpage = page.get_textpage()
            try:
                runs = _text_runs(textpage)
                width = page.get_width()
                layout = _two_columns(runs, width)
                if layout is None:
                    return None
                parts = [textpage.get_text_bounded(*box) for box in layout]
                read, whole = (_visible(parts), _visible([textpage.get_text_range()]))
                if read < whole:  # a line outside every box: keep the page's plain text, which has it
                    log.warning(
                        "%s page %d: column reading missed %d of %d characters; kept the text as read",
                        self.path.name,
                        index + 1,
                        whole - read,
                        whole,
                    )
                    return None
            finally:
                textpage.close()
        except Exception as exc:  # noqa: BLE001 - a failed layout reading leaves the page's plain text
            log.warning("%s page %d: column reading failed: %s", self.path.name, index + 1, exc)
            return None
        parts = [part.replace("\r\n", "\n") for part in parts]  # pdfium ends its lines with CRLF
        return "\n".join(t for t in (clean_page_text(part) for part in parts) if t) or None

    def close(self) -> None:
        self._close_page()
        for handle in (self._plumber, self._pdfium):
            if handle is not None:
                handle.close()  # type: ignore[attr-defined]


_MAX_CHARS = 60_000  # characters looked at per page for its layout (bounded cost)
_RUN_GAP = 1.0  # a horizontal gap wider than this many line heights ends a run (a gutter, a tab stop)


def _visible(parts: list[str]) -> int:
    return sum(len("".join(part.split())) for part in parts)


def _text_runs(textpage: Any) -> list[tuple[float, float, float, float]]:
    """A page's text runs (left, bottom, right, top): its characters joined along a line, a run
    ending at a line end, a gap wider than :data:`_RUN_GAP` line heights, or a change of line.

    Built from each character's loose box (the font's ascent and descent at its size) rather than
    pdfium's own rectangles: where a PDF's font is not embedded and the machine lacks it (a CJK
    font on a server, typically), pdfium knows the glyphs' advances but not their outlines, so tight
    boxes are zero-high and its rectangles drop such lines altogether."""
    import pypdfium2.raw as pdfium_c

    runs: list[list[float]] = []
    current: list[float] | None = None
    for i in range(min(textpage.count_chars(), _MAX_CHARS)):
        char = chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i))
        if char in "\r\n":
            current = None
            continue
        left, bottom, right, top = textpage.get_charbox(i, loose=True)
        if char.isspace() or right <= left or top <= bottom:  # spaces (generated or not) join, never start
            continue
        height = top - bottom
        if (
            current is not None
            and left - current[2] <= _RUN_GAP * height
            and min(top, current[3]) - max(bottom, current[1]) > height / 2  # on the same line
        ):
            current[0], current[1] = min(current[0], left), min(current[1], bottom)
            current[2], current[3] = max(current[2], right), max(current[3], top)
        else:
            current = [left, bottom, right, top]
            runs.append(current)
    return [(r[0], r[1], r[2], r[3]) for r in runs]


_MIN_COLUMN_LINES = 4
_FILLED = 0.7  # a quarter of a column's lines span at least this share of its width


def _two_columns(runs: list[tuple[float, float, float, float]], width: float) -> list[tuple[float, ...]] | None:
    """Where a page's text runs (left, bottom, right, top) stand in two columns, the boxes to read
    in order: top to bottom, each band between full-width lines read left column then right column,
    each full-width line (a title, a footer) on its own. ``None`` when there is no gutter: a
    vertical strip in the middle third that almost no run crosses, with at least
    :data:`_MIN_COLUMN_LINES` lines on each side of it side by side, whose lines fill their column
    (a quarter of them at least :data:`_FILLED` of its width, as running text does, ending
    paragraphs aside: labels beside values are a form, not two columns)."""
    if len(runs) < 2 * _MIN_COLUMN_LINES:
        return None
    best: tuple[int, float] | None = None
    x = width / 3
    while x <= 2 * width / 3:
        crossing = sum(1 for left, _, right, _ in runs if left < x < right)
        if best is None or crossing < best[0]:
            best = (crossing, x)
        x += 2.0
    assert best is not None
    crossing, gutter = best
    if crossing > max(2, len(runs) // 10):
        return None
    left_side = [r for r in runs if r[2] <= gutter]
    right_side = [r for r in runs if r[0] >= gutter]

    # side by side: lines of each column at heights where the other column also has text
    def overlapping(a: list[Any], b: list[Any]) -> int:
        return sum(1 for r in a if any(o[1] < r[3] and r[1] < o[3] for o in b))

    if min(overlapping(left_side, right_side), overlapping(right_side, left_side)) < _MIN_COLUMN_LINES:
        return None
    # columns of running text fill their width; labels beside values (a form, an unruled table) do not
    for side in (left_side, right_side):
        span = max(r[2] for r in side) - min(r[0] for r in side)  # the column's width
        widths = sorted(r[2] - r[0] for r in side)
        if widths[3 * len(widths) // 4] < _FILLED * span:
            return None
    full = sorted((r for r in runs if r[0] < gutter < r[2]), key=lambda r: -r[3])
    boxes: list[tuple[float, ...]] = []
    top = max(r[3] for r in runs) + 1
    for band_bottom, run in [*[(r[3], r) for r in full], (min(r[1] for r in runs) - 1, None)]:
        if top > band_bottom:  # the band between the previous full-width line and this one
            boxes += [(0, band_bottom, gutter, top), (gutter, band_bottom, width, top)]
        if run is not None:
            boxes.append((0, run[1], width, run[3]))
            top = run[1]
    return boxes


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
