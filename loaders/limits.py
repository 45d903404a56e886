"""What reading a file may cost, checked before a parser touches it.

Office and e-book files are zip containers whose members can inflate a thousandfold: a 3 MB .docx
that unpacks to 2 GiB of XML took a server down (+4.4 GB resident). :func:`check_container` reads
only the zip's directory — the declared size of every member; Python's zipfile, which every parser
here reads through, never inflates a member past its declared size — and refuses the file before
parsing when the members together unpack to more than ``max_unpacked_bytes`` (``too_large``), when
one member is compressed more than ``max_compression_ratio`` times (``suspicious``: real documents
compress 3–30 times; a bomb, thousands), or when it has more than ``max_members`` members.

Images are checked the same way from their header: a 5 MB PNG can declare 50,000 × 50,000 pixels
(2.5 gigapixels, several GB once decoded, and OCR over it for hours); one over ``max_image_pixels``
is ``too_large`` before anything decodes it. A PDF whose page tree declares more than
``max_pdf_pages`` pages is ``too_large`` before any page is read.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loaders.base import LoadError

#: the formats that are zip containers
ZIP_SUFFIXES = frozenset({".docx", ".pptx", ".xlsx", ".xlsm", ".odt", ".epub"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
_SMALL_MEMBER = 1 << 20  # members under 1 MiB are never "suspicious", whatever their ratio


@dataclass(frozen=True)
class Limits:
    """Bounds on what one file may unpack to (settings: ``ingest.max_unpacked_mb`` and
    ``ingest.max_compression_ratio``)."""

    max_unpacked_bytes: int = 256 * 1024 * 1024
    max_compression_ratio: float = 200.0
    max_members: int = 10_000
    max_image_pixels: int = 40_000_000  # ingest.max_image_megapixels
    max_pdf_pages: int = 5_000  # ingest.max_pdf_pages


DEFAULT_LIMITS = Limits()


def check_container(path: Path, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse a zip container whose declared contents exceed ``limits``.

    :raises LoadError: ``too_large`` or ``suspicious``. A file that is not a zip (an encrypted Office
        file is an OLE container; a damaged one is no container) is left to its parser, which says
        what it is.
    """
    if path.suffix.lower() in IMAGE_SUFFIXES:
        _check_image(path, limits)
        return
    if path.suffix.lower() == ".pdf":
        _check_pdf(path, limits)
        return
    if path.suffix.lower() not in ZIP_SUFFIXES:
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    if len(members) > limits.max_members:
        raise LoadError("suspicious", f"{len(members)} parts in the container, over {limits.max_members}")
    total = sum(m.file_size for m in members)
    if total > limits.max_unpacked_bytes:
        raise LoadError(
            "too_large",
            f"unpacks to {total / 2**20:,.0f} MB, over ingest.max_unpacked_mb = {limits.max_unpacked_bytes / 2**20:g}",
        )
    for member in members:
        if member.file_size < _SMALL_MEMBER:
            continue
        ratio = member.file_size / max(member.compress_size, 1)
        if ratio > limits.max_compression_ratio:
            raise LoadError(
                "suspicious",
                f"{member.filename} inflates {ratio:,.0f} times (over ingest.max_compression_ratio = "
                f"{limits.max_compression_ratio:g}): a zip bomb, not a document",
            )


def _check_image(path: Path, limits: Limits) -> None:
    """Refuse an image whose header declares more than ``limits.max_image_pixels`` (nothing is decoded)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():  # Pillow warns of large images; the bound below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
    except Image.DecompressionBombError as exc:  # Pillow's own bound, far above ours
        limit = limits.max_image_pixels / 1e6
        raise LoadError("too_large", f"{exc} — over ingest.max_image_megapixels = {limit:g}") from exc
    except (OSError, ValueError, SyntaxError):
        return  # not an image after all: the loader says what it is
    if width * height > limits.max_image_pixels:
        raise LoadError(
            "too_large",
            f"{width:,} × {height:,} pixels = {width * height / 1e6:,.0f} megapixels, over "
            f"ingest.max_image_megapixels = {limits.max_image_pixels / 1e6:g}",
        )


def _check_pdf(path: Path, limits: Limits) -> None:
    """Refuse a PDF whose page tree declares more than ``limits.max_pdf_pages`` pages (read from the
    root's ``/Count``; no page is parsed)."""
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PdfReadError

    try:
        root: Any = PdfReader(str(path)).trailer["/Root"]
        declared = int(root["/Pages"]["/Count"])
    except LimitReachedError as exc:  # pypdf's own bounds on arrays and streams
        raise LoadError("too_large", f"{exc} (the PDF's structure is beyond what is read)") from exc
    except (PdfReadError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # encrypted, damaged or unusual: the loader says what it is
    if declared > limits.max_pdf_pages:
        raise LoadError(
            "too_large", f"{declared:,} pages declared, over ingest.max_pdf_pages = {limits.max_pdf_pages:,}"
        )
