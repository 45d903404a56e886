"""Documents with known content, written as Markdown, HTML, Word and PDF (bench/parsing.py, tests).

A :class:`Doc` is a list of blocks — headings, paragraphs, list items, tables — in Chinese or
English. The writers render the same blocks in each format: HTML by hand, Word with python-docx
(heading styles, real tables), PDF with reportlab (Chinese in its built-in STSong-Light CID font, so
no font file is needed; ruled tables). :func:`prose` is the text a perfect parser gives back (tables
aside), :func:`cells` every table cell with its column header.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Block = tuple[Any, ...]  # ("h", level, text) | ("p", text) | ("li", text) | ("table", rows)


@dataclass
class Doc:
    name: str
    lang: str  # "zh" | "en"
    blocks: list[Block] = field(default_factory=list)


def prose(doc: Doc) -> str:
    """Headings, paragraphs and list items in order, one per line (tables left out)."""
    return "\n".join(b[-1] for b in doc.blocks if b[0] in ("h", "p", "li"))


def cells(doc: Doc) -> list[tuple[str, str]]:
    """(column header, value) for every non-empty data cell of every table."""
    found = []
    for block in doc.blocks:
        if block[0] == "table":
            header, *rows = block[1]
            found += [(header[i], value) for row in rows for i, value in enumerate(row) if value]
    return found


# ------------------------------------------------------------------ from Markdown
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKS = re.compile(r"(\*\*|__|`|<[^>]+>|\{[^}]*\})")


def _inline(text: str) -> str:
    text = _LINK.sub(r"\1", text)
    text = _MARKS.sub("", text).replace("*", "")
    return " ".join(text.split())


def from_markdown(name: str, lang: str, markdown: str, max_chars: int = 6000) -> Doc:
    """The headings, paragraphs and list items of ``markdown`` (code, tables, comments and
    admonitions dropped; inline markup removed), up to about ``max_chars`` characters."""
    doc = Doc(name, lang)
    size = 0
    fenced = False
    paragraph: list[str] = []

    def close() -> None:
        nonlocal size
        text = _inline(" ".join(paragraph) if lang == "en" else "".join(paragraph))
        paragraph.clear()
        if len(text) > 1:
            doc.blocks.append(("p", text))
            size += len(text)

    for raw in markdown.splitlines():
        line = raw.strip()
        if line.startswith("```"):
            fenced = not fenced
            close()
            continue
        if fenced or line.startswith(("|", "///", "{*", "<!--", "!!!", "<")) or set(line) <= set("-=*_ "):
            close()
            continue
        if size > max_chars:
            break
        heading = re.match(r"(#{1,4})\s+(.*)", line)
        item = re.match(r"(?:[-*+]|\d+\.)\s+(.*)", line)
        if heading:
            close()
            text = _inline(heading.group(2))
            if text:
                doc.blocks.append(("h", len(heading.group(1)), text))
        elif item:
            close()
            text = _inline(item.group(1))
            if text:
                doc.blocks.append(("li", text))
        elif line.startswith(">"):
            paragraph.append(line.lstrip("> "))
        elif line:
            paragraph.append(line)
        else:
            close()
    close()
    return doc


# ------------------------------------------------------------------ writers
def write_markdown(doc: Doc, path: Path) -> Path:
    out = []
    for block in doc.blocks:
        if block[0] == "h":
            out.append("#" * block[1] + " " + block[2])
        elif block[0] == "p":
            out.append(block[1])
        elif block[0] == "li":
            out.append("- " + block[1])
        else:
            header, *rows = block[1]
            out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def write_html(doc: Doc, path: Path) -> Path:
    body = []
    items: list[str] = []
    for block in [*doc.blocks, ("end",)]:
        if block[0] != "li" and items:
            body.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if block[0] == "h":
            body.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif block[0] == "p":
            body.append(f"<p>{html.escape(block[1])}</p>")
        elif block[0] == "li":
            items.append(f"<li>{html.escape(block[1])}</li>")
        elif block[0] == "table":
            header, *rows = block[1]
            head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
    lang = "zh-CN" if doc.lang == "zh" else "en"
    path.write_text(
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{html.escape(doc.name)}</title>'
        f"</head><body>{''.join(body)}</body></html>",
        encoding="utf-8",
    )
    return path


def write_docx(doc: Doc, path: Path) -> Path:
    import docx

    document = docx.Document()
    for block in doc.blocks:
        if block[0] == "h":
            document.add_heading(block[2], min(block[1], 9))
        elif block[0] == "p":
            document.add_paragraph(block[1])
        elif block[0] == "li":
            document.add_paragraph(block[1], style="List Bullet")
        elif block[0] == "table":
            header, *rows = block[1]
            table = document.add_table(rows=len(rows) + 1, cols=len(header))
            table.style = "Table Grid"
            for r, row in enumerate([header, *rows]):
                for c, value in enumerate(row):
                    table.cell(r, c).text = value
    document.save(str(path))
    return path


def write_pdf(doc: Doc, path: Path, *, font_size: float = 11, page_size: Any = None) -> int:
    """Write ``doc`` as a PDF; returns its page count."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    font = "Helvetica"
    if doc.lang == "zh":
        pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
        font = "STSong-Light"
    wrap = "CJK" if doc.lang == "zh" else None
    body = ParagraphStyle("body", fontName=font, fontSize=font_size, leading=font_size * 1.45, wordWrap=wrap)
    cell = ParagraphStyle("cell", parent=body, fontSize=font_size * 0.85, leading=font_size * 1.2)
    story: list[Any] = []
    for block in doc.blocks:
        if block[0] == "h":
            size = font_size + 2 * max(1, 4 - block[1])
            style = ParagraphStyle(f"h{block[1]}", parent=body, fontSize=size, leading=size * 1.3)
            story += [Paragraph(html.escape(block[2]), style), Spacer(1, 6)]
        elif block[0] == "p":
            story += [Paragraph(html.escape(block[1]), body), Spacer(1, 6)]
        elif block[0] == "li":
            story += [Paragraph(html.escape(block[1]), body, bulletText="•"), Spacer(1, 3)]
        elif block[0] == "table":
            rows = [[Paragraph(html.escape(v), cell) for v in row] for row in block[1]]
            table = Table(rows, repeatRows=1)
            table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black)]))
            story += [table, Spacer(1, 8)]
    pages: list[int] = []
    template = SimpleDocTemplate(str(path), pagesize=page_size or A4, title=doc.name)
    template.build(story, onLaterPages=lambda c, d: pages.append(1), onFirstPage=lambda c, d: pages.append(1))
    return len(pages)


def write_pdf_two_columns(doc: Doc, path: Path, *, font_size: float = 9, title: str | None = None) -> int:
    """Write ``doc``'s text in two columns, drawn the hard way: line by line across both columns
    (left line 1, right line 1, left line 2 ...), as some producers do, so that a reader following the
    drawing order interleaves the columns. ``title``: a full-width line on top of the first page.
    Returns the page count."""
    import textwrap

    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    font = "Helvetica"
    if doc.lang == "zh":
        pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
        font = "STSong-Light"
    width, height = A4
    margin, gutter = 40.0, 20.0
    column = (width - 2 * margin - gutter) / 2
    per_line = int(column / font_size) if doc.lang == "zh" else int(column / (font_size * 0.5))
    lines: list[str] = []
    for block in doc.blocks:
        if block[0] in ("h", "p", "li"):
            text = block[-1]
            if doc.lang == "zh":
                lines += [text[i : i + per_line] for i in range(0, len(text), per_line)]
            else:
                lines += textwrap.wrap(text, per_line)
    leading = font_size * 1.4
    rows = int((height - 2 * margin - 3 * leading) / leading)
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pages = 0
    while lines:
        pages += 1
        top = height - margin
        if title and pages == 1:
            pdf.setFont(font, font_size * 1.6)
            pdf.drawString(margin, top, title)
            top -= 3 * leading
        pdf.setFont(font, font_size)
        left, right, lines = lines[:rows], lines[rows : 2 * rows], lines[2 * rows :]
        for i in range(max(len(left), len(right))):
            y = top - i * leading
            if i < len(left):
                pdf.drawString(margin, y, left[i])
            if i < len(right):
                pdf.drawString(margin + column + gutter, y, right[i])
        pdf.showPage()
    pdf.save()
    return pages


# ------------------------------------------------------------------ tables
ZH_TABLES = [
    ["城市类别", "住宿上限（元/晚）", "伙食补助（元/天）", "审批人"],
    ["岗位", "试用期", "年假（天）", "考核方式"],
    ["设备名称", "单价（元）", "采购部门", "折旧年限"],
]
EN_TABLES = [
    ["Expense", "Limit (CNY)", "Approver", "Receipt needed"],
    ["Role", "Probation", "Annual leave (days)", "Review"],
    ["Device", "Unit price (CNY)", "Department", "Depreciation (years)"],
]
ZH_WORDS = (
    "一线城市 省会城市 其他城市 部门经理 财务总监 人力资源部 行政部 研发中心 销售部 季度考核 年度考核 "
    "笔记本电脑 显示器 打印机 服务器 是 否 无 每月 三个月 六个月"
).split()
EN_WORDS = (
    "Hotel Taxi Meals Flights Training Laptop Monitor Printer Server Manager Director Finance HR Sales "
    "Engineering Yes No Quarterly Yearly Monthly three-months six-months"
).split()


def table_doc(name: str, lang: str, tables: int = 3, rows: int = 8, seed: int = 0) -> Doc:
    """A document of ``tables`` ruled tables, each between two sentences; cells are words and
    numbers drawn with ``seed``."""
    import random

    rng = random.Random(seed)
    headers, words = (ZH_TABLES, ZH_WORDS) if lang == "zh" else (EN_TABLES, EN_WORDS)
    doc = Doc(name, lang, [("h", 1, "差旅与设备标准" if lang == "zh" else "Travel and equipment rules")])
    for t in range(tables):
        header = headers[t % len(headers)]
        body = [
            [rng.choice(words) if c % 2 == 0 else str(rng.randrange(10, 5000)) for c in range(len(header))]
            for _ in range(rows)
        ]
        for r, row in enumerate(body):
            row[0] = f"{row[0]}{r + 1}"  # unique first cells
        intro = f"下表为第{t + 1}项标准，自发布之日起执行。"
        if lang == "en":
            intro = f"Table {t + 1} applies from the date of issue."
        after = "超出部分由个人承担。" if lang == "zh" else "Anything above the limit is paid by the employee."
        doc.blocks += [("p", intro), ("table", [header, *body]), ("p", after)]
    return doc


# ------------------------------------------------------------------ Outlook .msg
def _cfb(streams: dict[str, bytes]) -> bytes:
    """A Compound File (CFB v3, 512-byte sectors) holding ``streams`` (each under 4,096 bytes, all in
    the root storage, kept in the mini stream) — the container of an Outlook .msg. Written here
    because no package on PyPI writes one; olefile reads it."""
    import struct

    end, free, fat_mark, none = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF
    names = sorted(streams, key=lambda n: (len(n), n.upper()))  # the order CFB's directory tree uses
    mini, mini_fat, starts = b"", [], {}
    for name in names:
        data = streams[name]
        assert len(data) < 4096, name
        starts[name] = len(mini) // 64
        blocks = max(1, -(-len(data) // 64))
        mini_fat += [starts[name] + i + 1 for i in range(blocks - 1)] + [end]
        mini += data.ljust(blocks * 64, b"\0")

    def sectors(data: bytes) -> list[bytes]:
        return [data[i : i + 512].ljust(512, b"\0") for i in range(0, max(len(data), 1), 512)]

    def entry(name: str, kind: int, right: int, child: int, start: int, size: int) -> bytes:
        raw = name.encode("utf-16-le") + b"\0\0"
        return (raw.ljust(64, b"\0") + struct.pack("<HBB3I", len(raw), kind, 1, none, right, child)
                + b"\0" * 36 + struct.pack("<IQ", start, size))  # fmt: skip

    mini_fat_sectors = sectors(b"".join(struct.pack("<I", v) for v in mini_fat).ljust(512, b"\xff"))
    mini_sectors = sectors(mini)
    directory_count = -(-(len(names) + 1) // 4)
    # sector order: FAT, directory, mini FAT, mini stream
    fat_at, dir_at = 0, 1
    minifat_at = dir_at + directory_count
    ministream_at = minifat_at + len(mini_fat_sectors)
    total = ministream_at + len(mini_sectors)
    assert total <= 128, "one FAT sector"
    fat = [fat_mark]
    chains = ((dir_at, directory_count), (minifat_at, len(mini_fat_sectors)), (ministream_at, len(mini_sectors)))
    for first, count in chains:
        fat += [first + i + 1 for i in range(count - 1)] + [end]
    fat_sector = b"".join(struct.pack("<I", v) for v in fat).ljust(512, b"\xff")
    entries = [entry("Root Entry", 5, none, 1 if names else none, ministream_at, len(mini))]
    for i, name in enumerate(names, start=1):
        entries.append(entry(name, 2, i + 1 if i < len(names) else none, none, starts[name], len(streams[name])))
    directory = b"".join(entries).ljust(directory_count * 512, b"\0")
    # empty directory slots must say "no sibling, no child"
    blank = entry("", 0, none, none, 0, 0)
    directory = directory[: 128 * len(entries)] + blank * (directory_count * 4 - len(entries))
    header = (
        bytes.fromhex("D0CF11E0A1B11AE1") + b"\0" * 16
        + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + b"\0" * 6
        + struct.pack("<IIIIIIIII", 0, 1, dir_at, 0, 4096, minifat_at, len(mini_fat_sectors), end, 0)
        + struct.pack("<I", fat_at) + struct.pack("<I", free) * 108
    )  # fmt: skip
    return header + fat_sector + directory + b"".join(mini_fat_sectors) + b"".join(mini_sectors)


def write_msg(path: Path, subject: str, body: str, sender_name: str, sender_email: str) -> Path:
    """An Outlook .msg (MS-OXMSG) with a subject, a plain-text body and a sender, all Unicode."""
    import struct

    strings = {0x001A: "IPM.Note", 0x0037: subject, 0x1000: body, 0x0C1A: sender_name, 0x0C1F: sender_email}
    streams: dict[str, bytes] = {}
    properties = b"\0" * 8 + struct.pack("<IIII", 0, 0, 0, 0) + b"\0" * 8  # top-level header: 32 bytes
    for pid, text in strings.items():
        data = text.encode("utf-16-le")  # the stream without the terminator; its size counts one
        streams[f"__substg1.0_{pid:04X}001F"] = data
        properties += struct.pack("<IIII", (pid << 16) | 0x001F, 0x6, len(data) + 2, 0)
    streams["__properties_version1.0"] = properties
    path.write_bytes(_cfb(streams))
    return path
