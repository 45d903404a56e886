"""Parsing fidelity: how much of a document's text and tables each engine gives back.

    .venv/bin/python bench/parsing.py

Documents with known content (bench/docgen.py) are written as Word (python-docx), HTML and PDF
(reportlab; Chinese in the STSong-Light CID font) and read back by each engine (``builtin`` and
``unstructured``, loaders/__init__.py), in one run, one after the other:

- **Text** (prose documents: the first ~5,000 characters of real Chinese and English Markdown from
  ../shared/data — laws, Langchain-Chatchat's articles, FastAPI's docs — headings, paragraphs and list
  items): character similarity of the extracted text (each piece's new headings, then its text) to
  the source's, whitespace and list bullets ignored (rapidfuzz's Indel similarity, the ratio difflib
  reports: 1.0 is identical).
- **Tables** (documents of three ruled tables of 8 rows each, Chinese and English, between
  sentences): cell recall, the share of data cells found next to their column header
  (``header: value`` on one line, as kb-qa writes rows; whitespace ignored).
- **Two columns** (``pdf-2col``): the prose documents as two-column PDF pages drawn line by line
  across both columns, so a reader that follows the drawing order interleaves them.
- **Seconds per page**: reading time over the page count of the same content as a PDF (after one
  untimed read per engine and format: imports and spaCy's model load are not counted).
- **Bounded cost**: a PDF with a 40-column table and one with a page of ~60,000 characters, each read
  in a fresh process: seconds and peak memory (the builtin loader skips the table search on pages
  over loaders.pdf.MAX_TABLE_PAGE_CHARS).

Writes docs/benchmarks/parsing.json and prints the tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import docgen
from bench.common import git_revision, machine, require_shared, save_result
from loaders import ENGINES, load_file, loader_for
from loaders.unstructured_engine import available as unstructured_available

FORMATS: dict[str, Callable[[docgen.Doc, Path], Any]] = {
    "docx": docgen.write_docx,
    "html": docgen.write_html,
    "pdf": docgen.write_pdf,
    "pdf-2col": docgen.write_pdf_two_columns,  # prose only: two columns drawn line by line across both
}
SOURCES = [
    ("zh", "zh-laws/社会法/劳动合同法(2012-12-28).md"),
    ("zh", "zh-laws/社会法/劳动法(2018-12-29).md"),
    ("zh", "chatchat-samples/大模型推理优化策略.md"),
    ("zh", "chatchat-samples/分布式训练技术原理.md"),
    ("en", "fastapi-docs/docs/en/docs/async.md"),
    ("en", "fastapi-docs/docs/en/docs/features.md"),
    ("en", "fastapi-docs/docs/en/docs/deployment/concepts.md"),
]
_IGNORED = re.compile(r"\s+|•|\(cid:\d+\)")


def _normal(text: str) -> str:
    return _IGNORED.sub("", text)


def extracted_text(pieces: list[Any]) -> str:
    """The pieces as one text: each piece's headings not already given, then its text."""
    out: list[str] = []
    previous: list[str] = []
    for piece in pieces:
        heading = piece.metadata.get("heading") or ""
        path = heading.split(" > ") if heading else []
        common = 0
        while common < min(len(path), len(previous)) and path[common] == previous[common]:
            common += 1
        out += path[common:]
        out.append(piece.page_content)
        previous = path
    return "\n".join(out)


def similarity(source: str, extracted: str) -> float:
    from rapidfuzz.distance import Indel

    return float(Indel.normalized_similarity(_normal(source), _normal(extracted)))


def cell_recall(doc: docgen.Doc, extracted: str) -> float:
    lines = [_normal(line) for line in extracted.splitlines()]
    wanted = docgen.cells(doc)
    found = sum(any(_normal(f"{h}: {v}") in line for line in lines) for h, v in wanted)
    return found / len(wanted)


def read(path: Path, engine: str) -> tuple[str, float]:
    """``engine``, or ``builtin-no-columns``: the builtin loader with its column reading switched
    off (pypdf's drawing order), for the comparison on two-column pages."""
    from loaders import pdf

    loader, _ = loader_for(path, engine.removesuffix("-no-columns"))
    saved = pdf._TableReader.columns_text
    if engine.endswith("-no-columns"):
        pdf._TableReader.columns_text = lambda self, index: None  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        pieces = load_file(path, loader=loader)
        return extracted_text(pieces), time.perf_counter() - started
    finally:
        pdf._TableReader.columns_text = saved  # type: ignore[method-assign]


# a fresh process per stress file: its peak memory is its own
_STRESS = """
import json, sys, time
from pathlib import Path
from loaders import load_file, loader_for
path = Path(sys.argv[1])
loader, _ = loader_for(path, sys.argv[2])
started = time.perf_counter()
pieces = load_file(path, loader=loader)
seconds = round(time.perf_counter() - started, 2)
characters = sum(len(p.page_content) for p in pieces)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec
peak = round(int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024)
print(json.dumps({"seconds": seconds, "characters": characters, "peak_mb": peak}))
"""


def stress_files(folder: Path) -> dict[str, Path]:
    from reportlab.lib.pagesizes import A0, A4, landscape

    wide = docgen.Doc("wide", "en", [("p", "A table of 40 columns.")])
    header = [f"Column {c}" for c in range(40)]
    wide.blocks.append(("table", [header] + [[f"r{r}c{c}" for c in range(40)] for r in range(30)]))
    docgen.write_pdf(wide, folder / "wide-table.pdf", font_size=4, page_size=landscape(A0))
    words = docgen.EN_WORDS * 4
    text = " ".join(words[i % len(words)] for i in range(9000))
    dense = docgen.Doc("dense", "en", [("p", text)])
    docgen.write_pdf(dense, folder / "dense-page.pdf", font_size=3, page_size=A0)
    assert A4  # (the ordinary page size of the other documents)
    return {"40-column table": folder / "wide-table.pdf", "~60,000-character page": folder / "dense-page.pdf"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-chars", type=int, default=5000, help="characters taken from each source")
    args = parser.parse_args()
    shared = require_shared()
    engines = [e for e in ENGINES if e == "builtin" or unstructured_available()]
    corpus = shared / "corpus"
    prose_docs = [
        docgen.from_markdown(Path(name).stem, lang, (corpus / name).read_text(encoding="utf-8"), args.max_chars)
        for lang, name in SOURCES
    ]
    table_docs = [docgen.table_doc("tables-zh", "zh", seed=1), docgen.table_doc("tables-en", "en", seed=2)]
    results: dict[str, Any] = {"machine": machine(), "revision": git_revision(), "engines": engines,
                               "documents": {}, "summary": {}, "stress": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="kbqa-parsing-") as tmp:
        folder = Path(tmp)
        warm = docgen.table_doc("warm-up", "zh", tables=1, rows=3)
        for fmt in ("docx", "html", "pdf"):  # imports and spaCy's model load once, untimed
            FORMATS[fmt](warm, folder / f"warm-up.{fmt}")
            for engine in engines:
                read(folder / f"warm-up.{fmt}", engine)
        for doc in prose_docs + table_docs:
            pages = docgen.write_pdf(doc, folder / f"{doc.name}.pages.pdf")
            for fmt, write in FORMATS.items():
                if fmt == "pdf-2col" and doc.name.startswith("tables-"):
                    continue
                path = folder / (f"{doc.name}.2col.pdf" if fmt == "pdf-2col" else f"{doc.name}.{fmt}")
                write(doc, path)
                variants = engines + (["builtin-no-columns"] if fmt == "pdf-2col" else [])
                for engine in variants:
                    text, seconds = read(path, engine)
                    row: dict[str, Any] = {
                        "lang": doc.lang, "format": fmt, "engine": engine, "pages": pages,
                        "seconds": round(seconds, 3), "s_per_page": round(seconds / pages, 3),
                    }  # fmt: skip
                    if doc.name.startswith("tables-"):
                        row["cell_recall"] = round(cell_recall(doc, text), 4)
                    else:
                        row["similarity"] = round(similarity(docgen.prose(doc), text), 4)
                    results["documents"][f"{doc.name}.{fmt} {engine}"] = row
                    print(f"{doc.name}.{fmt:4} {engine:12} {row}", flush=True)
        baseline = subprocess.run(
            [sys.executable, "-c", "import loaders, pypdf, pdfplumber, pypdfium2; print(round(int(next("
             "l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024))"],
            capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent, check=True,
        )  # fmt: skip
        results["stress"]["baseline peak_mb (the imports alone)"] = int(baseline.stdout.strip())
        print(f"baseline: {baseline.stdout.strip()} MB", flush=True)
        for label, path in stress_files(folder).items():
            for engine in engines:
                run = subprocess.run([sys.executable, "-c", _STRESS, str(path), engine], capture_output=True,
                                     text=True, timeout=900, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
                outcome = json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else {
                    "error": (run.stderr.strip().splitlines() or ["?"])[-1][:200]}  # fmt: skip
                results["stress"][f"{label} {engine}"] = outcome
                print(f"stress {label} {engine}: {outcome}", flush=True)
    rows = list(results["documents"].values())
    order = list(FORMATS)
    groups = sorted({(r["format"], r["engine"], r["lang"]) for r in rows},
                    key=lambda g: (order.index(g[0]), g[1], g[2] != "zh"))  # fmt: skip
    for fmt, engine, lang in groups:
        mine = [r for r in rows if (r["format"], r["engine"], r["lang"]) == (fmt, engine, lang)]
        scores = [r["similarity"] for r in mine if "similarity" in r]
        recalls = [r["cell_recall"] for r in mine if "cell_recall" in r]
        pages = sum(r["pages"] for r in mine)
        results["summary"][f"{fmt} {engine} {lang}"] = {
            "similarity_mean": round(sum(scores) / len(scores), 4),
            "similarity_min": round(min(scores), 4),
            "cell_recall": round(sum(recalls) / len(recalls), 4) if recalls else None,
            "s_per_page": round(sum(r["seconds"] for r in mine) / pages, 3),
        }
    print("\n| format | engine | language | text similarity (mean / min) | table cell recall | s/page |")
    print("|---|---|---|---|---|---|")
    for key, s in results["summary"].items():
        fmt, engine, lang = key.split()
        recall = "—" if s["cell_recall"] is None else format(s["cell_recall"], ".3f")
        print(f"| {fmt} | {engine} | {lang} | {s['similarity_mean']:.3f} / {s['similarity_min']:.3f} | "
              f"{recall} | {s['s_per_page']:.3f} |")  # fmt: skip
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(f"written: {save_result('parsing', results)}")


if __name__ == "__main__":
    main()
