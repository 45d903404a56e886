"""Spreadsheets and delimited text: every row keeps its column headers."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from langchain_core.documents import Document

from loaders.base import LoadError, non_empty, piece
from loaders.office import check_ooxml, table_rows
from loaders.text import read_text

csv.field_size_limit(10 * 1024 * 1024)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def load_xlsx(path: Path) -> list[Document]:
    check_ooxml(path)
    import openpyxl

    try:
        book = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    except Exception as exc:
        raise LoadError("malformed", f"{type(exc).__name__}: {exc}") from exc
    pieces = []
    try:
        for number, sheet in enumerate(book.worksheets, start=1):
            rows = [[_cell(v) for v in row] for row in sheet.iter_rows(values_only=True)]
            lines = table_rows(rows)
            if lines:
                pieces.append(piece("\n".join(lines), path, page=number, heading=sheet.title))
    finally:
        book.close()
    return non_empty(pieces, path)


def load_delimited(path: Path) -> list[Document]:
    text = read_text(path)
    if not text.strip():
        raise LoadError("empty", path.name)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else None
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:20000], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise LoadError("malformed", str(exc)) from exc
    return non_empty([piece("\n".join(table_rows(rows)), path)], path)
