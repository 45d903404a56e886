"""Plain text and Markdown, with encoding detection.

Order of evidence: a byte-order mark (UTF-8/16/32); UTF-16/32 without a mark, recognised by
the pattern of zero bytes; strict UTF-8; then a statistical guess (charset-normalizer) among
the encodings Chinese and Western offices actually use (gb18030, big5, cp1252 …). GBK text
is decoded as gb18030, its superset.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from langchain_core.documents import Document

from loaders.base import LoadError, Sections, non_empty, piece

_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]
_PREFERRED = ["gb18030", "big5", "cp1252", "latin-1"]
# detector names -> the codec to decode with (GBK and GB2312 text is decoded as their superset)
_CJK_ENCODINGS = {
    "gb18030": "gb18030", "gbk": "gb18030", "gb2312": "gb18030", "hz": "hz", "cp936": "gb18030",
    "big5": "big5hkscs", "big5hkscs": "big5hkscs", "cp950": "cp950",
    "euc_jp": "euc_jp", "shift_jis": "shift_jis", "cp932": "cp932", "euc_kr": "euc_kr", "cp949": "cp949",
}  # fmt: skip


def _zero_pattern(data: bytes) -> str | None:
    sample = data[:4000]
    if len(sample) < 4:
        return None
    quads = len(sample) // 4
    if quads and sum(sample[i * 4 + 1 : i * 4 + 4] == b"\0\0\0" for i in range(quads)) > 0.6 * quads:
        return "utf-32-le"
    if quads and sum(sample[i * 4 : i * 4 + 3] == b"\0\0\0" for i in range(quads)) > 0.6 * quads:
        return "utf-32-be"
    pairs = len(sample) // 2
    even = sum(sample[i * 2] == 0 for i in range(pairs))
    odd = sum(sample[i * 2 + 1] == 0 for i in range(pairs))
    if odd > 0.3 * pairs and even < 0.05 * pairs:
        return "utf-16-le"
    if even > 0.3 * pairs and odd < 0.05 * pairs:
        return "utf-16-be"
    return None


# the first bytes of binary formats that a text extension must not hide
_MAGIC = {
    b"\x7fELF": "an ELF executable",
    b"MZ": "a Windows executable",
    b"\xcf\xfa\xed\xfe": "a Mach-O executable",
    b"\xca\xfe\xba\xbe": "a Mach-O or Java binary",
    b"PK\x03\x04": "a zip archive (or an Office file)",
    b"\x1f\x8b": "a gzip archive",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive",
    b"Rar!": "a RAR archive",
    b"%PDF-": "a PDF",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\xd0\xcf\x11\xe0": "an old Office (OLE) file",
}


def _unreadable_share(text: str) -> float:
    """The share of characters no text file holds: controls (other than tab, newlines, form
    feed), U+FFFD from undecodable bytes, private-use and unassigned code points."""
    import unicodedata

    sample = text[:20000]
    if not sample:
        return 0.0
    bad = sum(
        1
        for ch in sample
        if (ch not in "\t\n\r\f" and unicodedata.category(ch) in ("Cc", "Co", "Cn", "Cs")) or ch == "\ufffd"
    )
    return bad / len(sample)


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode ``data``, returning ``(text, encoding)``.

    :raises LoadError: ``malformed`` when no encoding fits (a binary file: an executable's or an
        archive's magic bytes, NUL bytes, or text that decodes to mostly unreadable characters).
    """
    for magic, kind in _MAGIC.items():
        # "MZ" alone could begin a sentence: an executable also has NUL bytes in its header
        if data.startswith(magic) and (magic != b"MZ" or b"\0" in data[:64]):
            raise LoadError("malformed", f"binary data ({kind}), not text")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace"), encoding
    zero = _zero_pattern(data)
    if zero:  # UTF-16/32 without a mark, or a binary file full of zero bytes: the decoded text tells
        text = data.decode(zero, errors="replace")
        if _unreadable_share(text) > 0.05:
            raise LoadError("malformed", "binary data, not text")
        return text, zero
    if b"\0" in data[:8000]:  # NUL is valid UTF-8 but never appears in text files
        raise LoadError("malformed", "binary data, not text")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None and best.encoding in _CJK_ENCODINGS:
        encoding = _CJK_ENCODINGS[best.encoding]
        return data.decode(encoding, errors="replace"), encoding
    # Western single-byte text: the detector often names a neighbour (cp1250, cp1257 …) that
    # differs from cp1252 only in a few letters; Windows-1252 is what Western offices write.
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        pass
    if best is not None:
        return data.decode(best.encoding, errors="replace"), best.encoding
    for encoding in _PREFERRED:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise LoadError("malformed", "no text encoding fits")  # pragma: no cover - latin-1 always decodes


def read_text(path: Path) -> str:
    """Read a text file in whatever encoding it uses."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError("malformed", str(exc)) from exc
    text, _ = decode_bytes(data)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def load_text(path: Path) -> list[Document]:
    return non_empty([piece(read_text(path), path)], path)


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def load_markdown(path: Path) -> list[Document]:
    """One piece per section, each carrying its heading path; code fences are kept whole."""
    text = read_text(path)
    sections = Sections(path)
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _MD_HEADING.match(line)
        if match:
            sections.heading(len(match.group(1)), match.group(2))
        else:
            sections.add(line)
    return non_empty(sections.pieces(), path)
