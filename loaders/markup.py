"""HTML, XML, JSON/JSONL, e-mail, EPUB and RTF."""

from __future__ import annotations

import email
import json
import warnings
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from loaders.base import HeadingTracker, LoadError, non_empty, piece
from loaders.office import table_rows
from loaders.text import decode_bytes, read_text

_SKIP = {"script", "style", "noscript", "template", "head", "title", "svg", "iframe", "object"}
_BLOCK = {
    "p", "div", "section", "article", "li", "ul", "ol", "tr", "table", "br", "pre", "blockquote",
    "dd", "dt", "dl", "header", "footer", "main", "aside", "nav", "form", "figure", "figcaption", "hr",
}  # fmt: skip
_HEADINGS = {f"h{i}": i for i in range(1, 7)}


def html_sections(markup: bytes | str, path: Path, *, page: int | None = None) -> list[Document]:
    """Pieces of an HTML document, one per heading section, scripts and styles dropped; a table
    (one with no table inside: layout tables are read as text) one line per row with its header
    cells in front, as spreadsheets are read."""
    from bs4 import BeautifulSoup, NavigableString, Tag, XMLParsedAsHTMLWarning
    from bs4.element import Comment, Doctype, ProcessingInstruction

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(markup, "lxml")
    root = soup.body or soup
    tracker = HeadingTracker()
    pieces: list[Document] = []
    buffer: list[str] = []

    def flush() -> None:
        lines = [" ".join(line.split()) for line in "".join(buffer).split("\n")]
        body = "\n".join(line for line in lines if line)
        if body:
            pieces.append(piece(body, path, page=page, heading=tracker.path))
        buffer.clear()

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, (Comment, Doctype, ProcessingInstruction)):
                continue
            if isinstance(child, NavigableString):
                buffer.append(str(child))
                continue
            if not isinstance(child, Tag) or child.name in _SKIP or _invisible(child):
                continue
            if child.name in _HEADINGS:
                flush()
                tracker.enter(_HEADINGS[child.name], child.get_text(" ", strip=True))
                continue
            if child.name == "table" and child.find("table") is None:  # a data table: rows with headers
                caption = child.find("caption")
                lines = ([" ".join(caption.get_text(" ").split())] if caption else []) + table_rows(cell_rows(child))
                buffer.append("\n" + "\n".join(lines) + "\n")
                continue
            if child.name in ("td", "th"):
                buffer.append(" | ")
            block = child.name in _BLOCK
            if block:
                buffer.append("\n")
            walk(child)
            if block:
                buffer.append("\n")

    walk(root)
    flush()
    if not pieces and tracker.path:  # a page of headings only
        pieces.append(piece(tracker.path.replace(" > ", "\n"), path, page=page, heading=tracker.path))
    return pieces


def cell_rows(table: Any) -> list[list[str]]:
    """The cells' text of every row (``tr``) under ``table`` (a BeautifulSoup tag or document)."""
    return [[" ".join(c.get_text(" ").split()) for c in tr.find_all(["th", "td"])] for tr in table.find_all("tr")]


def _invisible(tag: object) -> bool:
    attrs = getattr(tag, "attrs", None) or {}
    style = str(attrs.get("style", "")).replace(" ", "").lower()
    return "hidden" in attrs or "display:none" in style or attrs.get("aria-hidden") == "true"


def load_html(path: Path) -> list[Document]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError("malformed", str(exc)) from exc
    head = data[:4096].lower()
    declared = b"charset" in head or b"encoding=" in head
    # an HTML file that declares its charset is decoded by the parser; otherwise by our detector
    markup: bytes | str = data if declared else decode_bytes(data)[0]
    return non_empty(html_sections(markup, path), path)


def load_xml(path: Path) -> list[Document]:
    from lxml import etree

    try:
        # entities are not expanded (the billion laughs stay ten lines) and nothing is fetched
        parser = etree.XMLParser(recover=True, huge_tree=True, resolve_entities=False, no_network=True, load_dtd=False)
        tree = etree.fromstring(path.read_bytes(), parser=parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise LoadError("malformed", str(exc)) from exc
    if tree is None:
        raise LoadError("malformed", "no XML element found")
    texts = [t.strip() for t in tree.itertext() if t and t.strip()]
    return non_empty([piece("\n".join(texts), path)], path)


def _flatten(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        out = []
        for key, inner in value.items():
            out += _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return [f"{prefix}: {', '.join(map(str, value))}"] if value else []
        out = []
        for index, inner in enumerate(value):
            out += _flatten(inner, f"{prefix}[{index}]")
        return out
    if value is None or value == "":
        return []
    return [f"{prefix}: {value}" if prefix else str(value)]


def _records(data: Any) -> list[Any]:
    return data if isinstance(data, list) else [data]


def load_json(path: Path) -> list[Document]:
    """JSON or JSON Lines: one line per leaf (``a.b[0].c: value``), one paragraph per record."""
    text = read_text(path)
    if not text.strip():
        raise LoadError("empty", path.name)
    try:
        if path.suffix.lower() == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = _records(json.loads(text))
    except json.JSONDecodeError as exc:
        raise LoadError("malformed", f"invalid JSON: {exc}") from exc
    paragraphs = ["\n".join(_flatten(record)) for record in records]
    return non_empty([piece("\n\n".join(p for p in paragraphs if p), path)], path)


def load_email(path: Path) -> list[Document]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError("malformed", str(exc)) from exc
    if not data.strip():
        raise LoadError("empty", path.name)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\0" in data[:200]:
        data = decode_bytes(data)[0].encode("utf-8")
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    if message.get_content_type() in ("application/pkcs7-mime", "multipart/encrypted"):
        raise LoadError("encrypted", "S/MIME or PGP encrypted message")
    header_lines = []
    for name in ("Subject", "From", "To", "Cc", "Date"):
        try:
            value = message.get(name)
        except (ValueError, TypeError, IndexError):
            value = None
        if value:
            header_lines.append(f"{name}: {value}")
    body = _email_body(message)
    attachments = [part.get_filename() for part in message.iter_attachments() if part.get_filename()]
    if attachments:
        body += "\n\nAttachments: " + ", ".join(str(a) for a in attachments)
    if not body.strip():
        raise LoadError("empty", "the message has no text body")
    heading = str(message.get("Subject") or "")
    return [piece("\n".join(header_lines) + "\n\n" + body.strip(), path, heading=heading)]


def _email_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        content = decode_bytes(payload)[0] if isinstance(payload, bytes) else str(payload or "")
    if isinstance(content, bytes):
        content = decode_bytes(content)[0]
    if part.get_content_type() == "text/html":
        return "\n\n".join(p.page_content for p in html_sections(content, Path("message.html")))
    return str(content)


def load_epub(path: Path) -> list[Document]:
    import ebooklib
    from ebooklib import epub

    try:
        book = epub.read_epub(str(path), options={"ignore_ncx": True})
    except Exception as exc:
        raise LoadError("malformed", f"{type(exc).__name__}: {exc}") from exc
    pieces: list[Document] = []
    for number, item in enumerate(book.get_items_of_type(ebooklib.ITEM_DOCUMENT), start=1):
        for section in html_sections(item.get_content(), path, page=number):
            pieces.append(section)
    return non_empty(pieces, path)


def load_rtf(path: Path) -> list[Document]:
    from striprtf.striprtf import rtf_to_text

    raw = read_text(path)
    if not raw.lstrip().startswith("{\\rtf"):
        raise LoadError("malformed", "not an RTF file")
    return non_empty([piece(rtf_to_text(raw, errors="ignore"), path)], path)
