"""Office Open XML and OpenDocument: docx (headings, tables), pptx (slides), odt.

Encrypted Office files are not zip archives but OLE compound files; they are recognised
and reported as ``encrypted`` rather than as damaged.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from loaders.base import LoadError, Sections, non_empty, piece

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def check_ooxml(path: Path) -> None:
    """Raise the right :class:`LoadError` when ``path`` is not a readable OOXML zip."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise LoadError("malformed", str(exc)) from exc
    if not head:
        raise LoadError("empty", path.name)
    if head == _OLE_MAGIC:
        try:
            import msoffcrypto

            with path.open("rb") as handle:
                if msoffcrypto.OfficeFile(handle).is_encrypted():
                    raise LoadError("encrypted", path.name)
        except LoadError:
            raise
        except Exception as exc:
            raise LoadError("malformed", f"an OLE file, not {path.suffix}: {exc}") from exc
        raise LoadError("malformed", f"a legacy binary Office file saved as {path.suffix}")
    if not zipfile.is_zipfile(path):
        raise LoadError("malformed", f"not a {path.suffix} (zip) file")


def table_rows(rows: list[list[str]]) -> list[str]:
    """Render a table so every row keeps its column headers: ``header: value; …``."""
    rows = [[c.strip() for c in row] for row in rows if any(c.strip() for c in row)]
    if not rows:
        return []
    header = rows[0]
    if len(rows) == 1 or not all(header):
        return [" | ".join(c for c in row if c) for row in rows]
    out = [" | ".join(header)]
    for row in rows[1:]:
        cells = [f"{header[i] if i < len(header) else ''}: {v}".lstrip(": ") for i, v in enumerate(row) if v]
        out.append("; ".join(cells))
    return out


def _heading_level(style_name: str) -> int | None:
    name = style_name.lower()
    if name == "title":
        return 0
    for prefix in ("heading ", "标题 ", "标题"):
        if name.startswith(prefix):
            digits = name[len(prefix) :].strip()
            if digits.isdigit():
                return int(digits)
    return None


def load_docx(path: Path) -> list[Document]:
    check_ooxml(path)
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(str(path))
    except Exception as exc:
        raise LoadError("malformed", f"{type(exc).__name__}: {exc}") from exc
    sections = Sections(path)
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            level = _heading_level(block.style.name if block.style is not None else "")
            if level is not None and text:
                sections.heading(level, text)
            elif text:
                sections.add(text)
        elif isinstance(block, Table):
            sections.add("\n".join(_docx_table(block)))
    return non_empty(sections.pieces(), path)


def _docx_table(table: Any) -> list[str]:
    try:
        rows = [[cell.text for cell in row.cells] for row in table.rows]
    except (ValueError, IndexError, KeyError):
        # irregular grids (merged cells python-docx cannot place): keep the text, row by row
        w = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
        rows = [
            ["".join(t.text or "" for t in tc.iter(f"{w}t")) for tc in tr.iter(f"{w}tc")]
            for tr in table._tbl.iter(f"{w}tr")
        ]
    return table_rows(_dedupe_merged(rows))


def _dedupe_merged(rows: list[list[str]]) -> list[list[str]]:
    # python-docx repeats a merged cell's text in every grid cell it spans
    out = []
    for row in rows:
        kept: list[str] = []
        for cell in row:
            if not kept or cell != kept[-1]:
                kept.append(cell)
        out.append(kept)
    return out


def _shape_texts(shape: Any) -> list[str]:
    texts: list[str] = []
    if getattr(shape, "shape_type", None) is not None and hasattr(shape, "shapes"):  # group
        for inner in shape.shapes:
            texts += _shape_texts(inner)
        return texts
    if getattr(shape, "has_table", False):
        rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
        texts += table_rows(rows)
    if getattr(shape, "has_text_frame", False):
        text = shape.text_frame.text.strip()
        if text:
            texts.append(text)
    return texts


def load_pptx(path: Path) -> list[Document]:
    check_ooxml(path)
    from pptx import Presentation

    try:
        deck = Presentation(str(path))
        slides = list(deck.slides)
    except Exception as exc:
        raise LoadError("malformed", f"{type(exc).__name__}: {exc}") from exc
    pieces = []
    for number, slide in enumerate(slides, start=1):
        title_shape = slide.shapes.title
        title = title_shape.text_frame.text.strip() if title_shape is not None and title_shape.has_text_frame else ""
        texts: list[str] = []
        for shape in slide.shapes:
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            texts += _shape_texts(shape)
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame.text.strip() if slide.notes_slide.notes_text_frame else ""
            if notes:
                texts.append(notes)
        body = "\n".join(texts).strip() or title
        if body:
            pieces.append(piece(body, path, page=number, heading=title))
    return non_empty(pieces, path)


def load_odt(path: Path) -> list[Document]:
    """OpenDocument text: ``text:h`` headings (with their outline level) and ``text:p`` paragraphs,
    read straight from content.xml in document order (tables and lists included)."""
    from lxml import etree

    text_ns = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
    try:
        with zipfile.ZipFile(path) as archive:
            root = etree.fromstring(archive.read("content.xml"), parser=etree.XMLParser(huge_tree=True))
    except (zipfile.BadZipFile, KeyError, OSError, etree.XMLSyntaxError) as exc:
        raise LoadError("malformed", f"{type(exc).__name__}: {exc}") from exc
    sections = Sections(path)
    for element in root.iter(f"{{{text_ns}}}h", f"{{{text_ns}}}p"):
        text = "".join(element.itertext()).strip()
        if element.tag == f"{{{text_ns}}}h":
            level = element.get(f"{{{text_ns}}}outline-level") or "1"
            sections.heading(int(level) if level.isdigit() else 1, text)
        elif text and not any(a.tag == f"{{{text_ns}}}p" for a in element.iterancestors()):
            sections.add(text)
    return non_empty(sections.pieces(), path)
