"""Two-column PDF pages are read column by column, even when the page draws its lines across both
columns (bench/docgen.write_pdf_two_columns); forms of labels beside values and ordinary pages are
read as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import docgen
from loaders.pdf import load_pdf


def _draw(path: Path, rows: list[tuple[str, str]], title: str = "", footer: str = "", x2: float = 310) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.setFont("STSong-Light", 10)
    if title:
        pdf.drawString(60, 780, title)
    for i, (left, right) in enumerate(rows):
        pdf.drawString(50, 740 - 14 * i, left)
        pdf.drawString(x2, 740 - 14 * i, right)
    if footer:
        pdf.drawString(60, 60, footer)
    pdf.save()
    return path


def test_a_page_drawn_across_two_columns_is_read_column_by_column(tmp_path: Path) -> None:
    # STSong-Light is not embedded: on a machine without a CJK font pdfium knows the glyphs' advances
    # but not their outlines, and the title and footer lines (no Latin digit in them) get zero-high
    # tight boxes; the layout is read from the characters' loose boxes, which do not depend on that
    rows = [(f"左栏第{i}行，这是左边一栏的正文内容。", f"右栏第{i}行，这是右边一栏的正文内容。") for i in range(1, 13)]
    title = "两栏排版的标题横跨整页宽度，位于页面顶部，在两栏之前阅读，标题很长很长很长很长很长"
    footer = "页脚：横跨整页的说明文字，在两栏之后阅读，这一行同样很长很长很长很长很长很长很长"
    text = load_pdf(_draw(tmp_path / "two.pdf", rows, title, footer))[0].page_content
    assert text.split("\n") == [title] + [left for left, _ in rows] + [right for _, right in rows] + [footer]


def test_a_column_reading_that_misses_a_line_keeps_the_plain_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from loaders import pdf

    rows = [(f"左栏第{i}行，这是左边一栏的正文内容。", f"右栏第{i}行，这是右边一栏的正文内容。") for i in range(1, 13)]
    footer = "页脚：横跨整页的说明文字，在两栏之后阅读，这一行同样很长很长很长很长很长很长很长"
    layout = pdf._two_columns

    def losing_full_width_lines(runs: list[tuple[float, ...]], width: float) -> list[tuple[float, ...]]:
        return [box for box in layout(runs, width) or [] if (box[0], box[2]) != (0, width)]

    monkeypatch.setattr(pdf, "_two_columns", losing_full_width_lines)  # the footer's box is lost
    text = load_pdf(_draw(tmp_path / "two.pdf", rows, "", footer))[0].page_content
    assert footer in text and all(left in text and right in text for left, right in rows)
    assert text.index("右栏第1行") < text.index("左栏第2行")  # the plain reading: line by line across the page
    assert "column reading missed" in caplog.text


def test_english_two_columns_from_running_text(tmp_path: Path) -> None:
    doc = docgen.Doc("cols", "en", [("p", " ".join(f"Sentence number {i} of the article." for i in range(120)))])
    docgen.write_pdf_two_columns(doc, tmp_path / "cols.pdf")
    text = " ".join(load_pdf(tmp_path / "cols.pdf")[0].page_content.split())
    order = [text.index(f"Sentence number {i} of") for i in range(120)]
    assert order == sorted(order)  # the sentences come back in their order: left column first


def test_labels_beside_values_are_not_columns(tmp_path: Path) -> None:
    form = [("姓名", "张三"), ("部门", "研发中心"), ("职位", "工程师"), ("入职日期", "2024年3月1日"), ("工号", "A1024")]
    text = load_pdf(_draw(tmp_path / "form.pdf", form))[0].page_content
    assert "姓名" in text and text.index("张三") < text.index("部门")  # each label stays with its value


def test_an_ordinary_page_reads_as_before(tmp_path: Path) -> None:
    doc = docgen.Doc(
        "one", "en", [("h", 1, "Leave"), ("p", "Unused annual leave carries over to the first quarter. " * 8)]
    )
    docgen.write_pdf(doc, tmp_path / "one.pdf")
    text = load_pdf(tmp_path / "one.pdf")[0].page_content
    assert text.startswith("Leave\nUnused annual leave carries over")


def test_a_file_pdfium_cannot_open_keeps_pypdfs_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loaders import pdf

    doc = docgen.Doc("one", "en", [("p", "Unused annual leave carries over to the first quarter. " * 4)])
    docgen.write_pdf(doc, tmp_path / "one.pdf")

    def refuse(self: object, index: int) -> object:
        raise RuntimeError("pdfium cannot open it")

    monkeypatch.setattr(pdf._TableReader, "_pdfium_page", refuse)
    assert load_pdf(tmp_path / "one.pdf")[0].page_content.startswith("Unused annual leave carries over")


def test_each_page_is_loaded_once_by_pdfium_for_both_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table check (lines drawn) and the column check read the same pdfium page: one load per
    page, every page closed."""
    import pypdfium2 as pdfium

    doc = docgen.Doc("two", "en", [("p", "Unused annual leave carries over to the first quarter. " * 40)] * 3)
    docgen.write_pdf(doc, tmp_path / "two.pdf")
    loaded: list[int] = []
    closed: list[int] = []
    get_page = pdfium.PdfDocument.get_page

    def counting(self: pdfium.PdfDocument, index: int) -> pdfium.PdfPage:
        page = get_page(self, index)
        loaded.append(index)
        close = page.close

        def closing() -> None:
            closed.append(index)
            close()

        page.close = closing  # type: ignore[method-assign]
        return page

    monkeypatch.setattr(pdfium.PdfDocument, "get_page", counting)
    pages = load_pdf(tmp_path / "two.pdf")
    numbers = sorted({d.metadata["page"] for d in pages})
    assert len(numbers) >= 2  # the text runs over more than one page
    assert loaded == [n - 1 for n in numbers] and closed == loaded
