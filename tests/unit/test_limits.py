"""Crafted files are refused before a parser reads them (loaders/limits.py, loaders/text.py)."""

from __future__ import annotations

import resource
import time
import zipfile
from pathlib import Path

import pytest

from loaders import Limits, LoadError, load_file
from loaders.limits import check_container

DOCX_PARTS = {
    "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
    'content-types"><Default Extension="xml" ContentType="application/xml"/></Types>',
}


def bomb(path: Path, member: str, megabytes: int, filler: bytes = b"<w:p/>") -> Path:
    """A zip container whose ``member`` inflates to ``megabytes`` MB of ``filler``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, text in DOCX_PARTS.items():
            archive.writestr(name, text)
        block = filler * ((1 << 20) // len(filler))
        with archive.open(member, "w", force_zip64=True) as out:
            for _ in range(megabytes):
                out.write(block)
    return path


BOMBS = [
    (".docx", "word/document.xml", 300, Limits()),  # over the default 256 MB
    (".xlsx", "xl/worksheets/sheet1.xml", 80, Limits(max_unpacked_bytes=64 * 2**20)),
    (".pptx", "ppt/slides/slide1.xml", 80, Limits(max_unpacked_bytes=64 * 2**20)),
    (".epub", "OEBPS/c1.xhtml", 80, Limits(max_unpacked_bytes=64 * 2**20)),
]


@pytest.mark.parametrize(("suffix", "member", "megabytes", "limits"), BOMBS, ids=[b[0] for b in BOMBS])
def test_a_zip_bomb_is_refused_fast_and_without_inflating_it(
    tmp_path: Path, suffix: str, member: str, megabytes: int, limits: Limits
) -> None:
    path = bomb(tmp_path / f"bomb{suffix}", member, megabytes)  # hundreds of MB of XML in a file of ~300 KB
    assert path.stat().st_size < 5 * 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(LoadError) as refused:
        load_file(path, limits)
    assert time.perf_counter() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB: nothing inflated
    assert refused.value.reason == "too_large" and "ingest.max_unpacked_mb" in str(refused.value)


def test_a_highly_compressed_part_under_the_size_limit_is_suspicious(tmp_path: Path) -> None:
    path = bomb(tmp_path / "empty-paragraphs.docx", "word/document.xml", 20)  # 20 MB of empty paragraphs
    with pytest.raises(LoadError) as refused:
        load_file(path)
    assert refused.value.reason == "suspicious" and "inflates" in str(refused.value)
    # a limit set higher lets it through to the parser (which then finds no text in it)
    with pytest.raises(LoadError) as parsed:
        load_file(path, Limits(max_compression_ratio=1e9))
    assert parsed.value.reason != "suspicious"


def test_real_office_files_pass_the_bounds(tmp_path: Path) -> None:
    from docx import Document

    document = Document()
    for i in range(2000):
        document.add_paragraph(f"第{i}条 员工每年享有带薪年假，具体天数按工龄计算。Paragraph {i} of the handbook.")
    document.save(str(tmp_path / "handbook.docx"))
    pieces = load_file(tmp_path / "handbook.docx")
    assert "带薪年假" in pieces[0].page_content


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (12_000, 10_000)).save(bomb)  # 120 megapixels in a few kilobytes
    assert bomb.stat().st_size < 100_000
    with pytest.raises(LoadError) as caught:
        check_container(bomb, Limits())
    assert caught.value.reason == "too_large" and "120 megapixels" in str(caught.value)
    assert "ingest.max_image_megapixels = 40" in str(caught.value)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (4000, 3000)).save(photo)  # 12 megapixels: a phone's photo
    check_container(photo, Limits())


def test_binary_data_under_a_text_extension_is_refused(tmp_path: Path) -> None:
    for name, data in [
        ("elf.txt", Path("/bin/ls").read_bytes() if Path("/bin/ls").is_file() else b"\x7fELF\x02\x01\x01" + bytes(500)),
        ("stripped-elf.txt", (Path("/bin/ls").read_bytes() if Path("/bin/ls").is_file() else bytes(5000))[64:20000]),
        ("setup.exe.md", b"MZ\x90\x00\x03\x00\x00\x00" + bytes(200)),
        ("archive.txt", b"PK\x03\x04" + bytes(100)),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(LoadError) as refused:
            load_file(tmp_path / name)
        assert refused.value.reason == "malformed" and "binary" in str(refused.value), name
    # text that merely starts like a magic number, and UTF-16 without a mark, still read
    (tmp_path / "mz.txt").write_text("MZ is the prefix of DOS executables.", encoding="utf-8")
    (tmp_path / "utf16.txt").write_bytes("年假可以顺延 to next year".encode("utf-16-le"))
    assert "DOS" in load_file(tmp_path / "mz.txt")[0].page_content
    assert "年假可以顺延" in load_file(tmp_path / "utf16.txt")[0].page_content


def test_the_billion_laughs_are_not_expanded(tmp_path: Path) -> None:
    lines = ['<?xml version="1.0"?>', "<!DOCTYPE lolz [", '<!ENTITY lol0 "lol">']
    lines += [f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10)]
    laughs = tmp_path / "laughs.xml"
    laughs.write_text("\n".join([*lines, "]>", "<lolz>Fish &amp; chips &lol9;</lolz>"]), encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (piece,) = load_file(laughs)
    assert piece.page_content == "Fish & chips"  # XML's own entities still read; declared ones not expanded
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB: nothing inflated


def test_a_pdf_declaring_too_many_pages_is_refused_before_any_page_is_read(tmp_path: Path) -> None:
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 100000 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"]  # fmt: skip
    body, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, content in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n%s\nendobj\n" % (number, content)
    xref = len(body)
    body += b"xref\n0 4\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    body += b"trailer\n<< /Size 4 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    claims = tmp_path / "claims.pdf"
    claims.write_bytes(bytes(body))
    with pytest.raises(LoadError) as caught:
        check_container(claims, Limits())
    assert caught.value.reason == "too_large" and "100,000 pages declared" in str(caught.value)
    check_container(claims, Limits(max_pdf_pages=100_000))  # within a raised limit it passes to the loader
