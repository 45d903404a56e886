"""Ruled tables in text PDFs come out row by row with their headers, where they stand on the page.
The PDFs are generated here with reportlab (its built-in STSong-Light CID font for Chinese: no font
file needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loaders import pdf as pdf_loader
from loaders.pdf import load_pdf

CITIES = [
    ["城市类别", "住宿上限（元/晚）", "伙食补助（元/天）"],
    ["一线城市", "600", "120"],
    ["省会城市", "450", "100"],
    ["其他城市", "350", "80"],
]


def build(path: Path, *flow: Any) -> Path:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    style = ParagraphStyle("body", fontName="STSong-Light", fontSize=11, leading=16)
    story: list[Any] = []
    for item in flow:
        if item == "page":
            story.append(PageBreak())
        elif isinstance(item, str):
            story += [Paragraph(item, style), Spacer(1, 10)]
        else:
            rows, options = item if isinstance(item, tuple) else (item, {})
            if options.pop("wrap", False):  # cells as paragraphs: long ones wrap inside their column
                rows = [[Paragraph(cell, style) for cell in row] for row in rows]
            table = Table(rows, repeatRows=1, **options)
            table.setStyle(TableStyle([("FONTNAME", (0, 0), (-1, -1), "STSong-Light"),
                                       ("GRID", (0, 0), (-1, -1), 0.5, colors.black)]))  # fmt: skip
            story += [table, Spacer(1, 10)]
    SimpleDocTemplate(str(path), pagesize=A4).build(story)
    return path


def test_a_chinese_table_keeps_its_headers_and_its_place(tmp_path: Path) -> None:
    before, after = "差旅标准如下表所示。出差前须在OA系统中提交申请。", "超出标准的部分由个人承担。"
    path = build(tmp_path / "差旅.pdf", before, CITIES, after)
    text = load_pdf(path)[0].page_content
    lines = text.split("\n")
    assert lines[0] == before
    assert "城市类别: 省会城市; 住宿上限（元/晚）: 450; 伙食补助（元/天）: 100" in lines
    assert "城市类别: 其他城市; 住宿上限（元/晚）: 350; 伙食补助（元/天）: 80" in lines
    assert lines[-1] == after
    assert text.count("450") == 1 and text.count("一线城市") == 1  # no cell twice


def test_wrapped_cells_are_joined_and_english_tables_read_the_same_way(tmp_path: Path) -> None:
    rows = [
        ["Expense", "Approver", "Limit"],
        ["Hotel", "Line manager", "CNY 450 per night in provincial capitals"],
        ["Equipment above CNY 5,000", "Department director", "Needs a purchase request"],
    ]
    path = build(tmp_path / "expenses.pdf", "Approval rules.", (rows, {"colWidths": [120, 110, 120], "wrap": True}))
    text = load_pdf(path)[0].page_content
    assert "Expense: Hotel; Approver: Line manager; Limit: CNY 450 per night in provincial capitals" in text
    assert ("Expense: Equipment above CNY 5,000; Approver: Department director; Limit: Needs a purchase "
            "request") in text  # fmt: skip
    assert text.startswith("Approval rules.")


def test_a_table_over_two_pages_keeps_its_headers_on_both(tmp_path: Path) -> None:
    rows = [["编号", "物品", "单价"]] + [[str(i), f"物品{i}", f"{i * 10}"] for i in range(1, 61)]
    pages = load_pdf(build(tmp_path / "long.pdf", "物品清单。", rows))
    assert len(pages) >= 2
    assert "编号: 1; 物品: 物品1; 单价: 10" in pages[0].page_content
    assert "编号: 60; 物品: 物品60; 单价: 600" in pages[-1].page_content
    assert sum(p.page_content.count("物品: 物品") for p in pages) == 60


def test_a_box_around_text_is_not_a_table(tmp_path: Path) -> None:
    path = build(tmp_path / "box.pdf", "前言。", [["本手册适用于全体员工。"], ["请仔细阅读。"]], "正文。")
    text = load_pdf(path)[0].page_content
    assert ": " not in text and "本手册适用于全体员工。" in text


def test_pages_over_the_table_bound_are_read_as_plain_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build(tmp_path / "bounded.pdf", "差旅标准。", CITIES)
    monkeypatch.setattr(pdf_loader, "MAX_TABLE_PAGE_CHARS", 10)
    text = load_pdf(path)[0].page_content
    assert "城市类别:" not in text and "省会城市" in text  # the cells, as the text layer has them
