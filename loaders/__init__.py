"""File loaders and the Chinese/English splitter.

:func:`load_file` picks a loader by file extension from :data:`LOADERS`; :func:`supported_suffixes`
lists what is accepted. Loaders import their parsers lazily, so importing this package is cheap.
"""

from __future__ import annotations

from pathlib import Path

from langchain_core.documents import Document

from loaders.base import REASONS, Loader, LoadError, text_hash
from loaders.legacy import load_doc
from loaders.limits import DEFAULT_LIMITS, Limits, check_container
from loaders.markup import load_email, load_epub, load_html, load_json, load_rtf, load_xml
from loaders.ocr import load_image
from loaders.office import load_docx, load_odt, load_pptx
from loaders.pdf import load_pdf
from loaders.splitter import Chunk, TextSplitter
from loaders.tabular import load_delimited, load_xlsx
from loaders.text import decode_bytes, load_markdown, load_text
from loaders.unstructured_engine import ONLY_HERE, PARTITIONERS, load_unstructured
from loaders.unstructured_engine import available as unstructured_available

#: file extension (lower case, with dot) -> (loader, its name as recorded in the registry)
LOADERS: dict[str, tuple[Loader, str]] = {
    "": (load_text, "text"),  # README, LICENSE …: read as text; binary files fail as malformed
    ".txt": (load_text, "text"),
    ".text": (load_text, "text"),
    ".log": (load_text, "text"),
    ".rst": (load_text, "text"),
    ".md": (load_markdown, "markdown"),
    ".markdown": (load_markdown, "markdown"),
    ".pdf": (load_pdf, "pdf"),
    ".docx": (load_docx, "docx"),
    ".pptx": (load_pptx, "pptx"),
    ".xlsx": (load_xlsx, "xlsx"),
    ".xlsm": (load_xlsx, "xlsx"),
    ".csv": (load_delimited, "csv"),
    ".tsv": (load_delimited, "csv"),
    ".html": (load_html, "html"),
    ".htm": (load_html, "html"),
    ".xml": (load_xml, "xml"),
    ".json": (load_json, "json"),
    ".jsonl": (load_json, "json"),
    ".eml": (load_email, "email"),
    ".epub": (load_epub, "epub"),
    ".odt": (load_odt, "odt"),
    ".rtf": (load_rtf, "rtf"),
    ".doc": (load_doc, "doc"),
    ".jpg": (load_image, "ocr"),
    ".jpeg": (load_image, "ocr"),
    ".png": (load_image, "ocr"),
    ".bmp": (load_image, "ocr"),
    ".tif": (load_image, "ocr"),
    ".tiff": (load_image, "ocr"),
}


#: the parsing engines (``loaders.engine``)
ENGINES = ("builtin", "unstructured")


def supported_suffixes() -> list[str]:
    """The extensions a file may have: the builtin loaders' and, where unstructured is installed,
    the formats only it reads (:data:`loaders.unstructured_engine.ONLY_HERE`)."""
    extra = set(ONLY_HERE) if unstructured_available() else set()
    return sorted({s for s in LOADERS if s} | extra)


def loader_for(path: Path, engine: str = "builtin", by_extension: dict[str, str] | None = None) -> tuple[Loader, str]:
    """The loader for ``path``'s extension under ``engine`` (``builtin`` or ``unstructured``;
    ``by_extension`` overrides it per extension, e.g. ``{".docx": "unstructured"}``). An extension
    unstructured does not read stays with the builtin loader; one only unstructured reads goes to it.

    :raises LoadError: ``unsupported`` for an unknown extension.
    """
    suffix = path.suffix.lower()
    chosen = (by_extension or {}).get(suffix, engine)
    if suffix in PARTITIONERS and (chosen == "unstructured" or suffix not in LOADERS):
        return load_unstructured, "unstructured"
    try:
        return LOADERS[suffix]
    except KeyError:
        raise LoadError(
            "unsupported", f"'{path.suffix or path.name}'; supported: {', '.join(supported_suffixes())}"
        ) from None


def load_file(path: Path, limits: Limits = DEFAULT_LIMITS, *, loader: Loader | None = None) -> list[Document]:
    """Load ``path`` into pieces with metadata (see :mod:`loaders.base`), after checking that
    reading it stays within ``limits`` (:mod:`loaders.limits`). ``loader``: the one
    :func:`loader_for` gave (else it is looked up here).

    :raises LoadError: with the reason the file cannot be read.
    """
    loader = loader or loader_for(path)[0]
    check_container(path, limits)
    return loader(path)


def read_and_split(path: Path, limits: Limits, loader: Loader, splitter: TextSplitter) -> list[Chunk]:
    """:func:`load_file`, then the splitter: what a parser process runs for one file
    (:mod:`loaders.isolation`)."""
    return splitter.split_documents(load_file(path, limits, loader=loader))


__all__ = [
    "DEFAULT_LIMITS",
    "ENGINES",
    "LOADERS",
    "REASONS",
    "Chunk",
    "Limits",
    "LoadError",
    "Loader",
    "TextSplitter",
    "decode_bytes",
    "load_file",
    "loader_for",
    "read_and_split",
    "supported_suffixes",
    "text_hash",
]
