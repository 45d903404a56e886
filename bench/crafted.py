"""Crafted uploads against the real server: what each costs before it is refused.

    .venv/bin/python bench/crafted.py

Serves the real app (uvicorn on loopback, in this process; the embedding model loaded, no chat
model needed) over the sample handbook, generates files built to exhaust a reader — each at most
5 MB on the wire — and uploads them one at a time while a thread asks ``GET /health`` every 50 ms.
For each file: the answer (status and reason), seconds until it came, how much the server
process's resident memory grew (VmHWM, the peak, before and after), and the slowest ``/health``
meanwhile. Files are read in parser processes (``ingest.isolate_parsers``, the default), whose own
memory is capped by ``ingest.parser_memory_mb``.

Target (issue 15): no crafted file of ≤ 5 MB raises the server's RSS by more than 300 MB or takes
more than 5 s before its rejection, and /health keeps answering in milliseconds meanwhile.
Writes docs/benchmarks/crafted.json; docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import io
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import git_revision, handbook_services, machine, memory_mb, save_result
from kb_qa.api import create_app
from kb_qa.api.local import serving

MB = 1024 * 1024


def _zip(members: dict[str, Callable[[zipfile.ZipFile, str], None] | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, content in members.items():
            if isinstance(content, bytes):
                archive.writestr(name, content)
            else:
                content(archive, name)
    return buffer.getvalue()


def _streamed(unit: bytes, total: int, head: bytes = b"", tail: bytes = b"") -> Callable[[zipfile.ZipFile, str], None]:
    def write(archive: zipfile.ZipFile, name: str) -> None:
        with archive.open(name, "w", force_zip64=True) as handle:
            handle.write(head)
            block = unit * (MB // len(unit))
            for _ in range(total // len(block)):
                handle.write(block)
            handle.write(tail)

    return write


DOCX_TYPES = (b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
              b'<Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" '
              b'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
              b"</Types>")  # fmt: skip
W = b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'


def docx_bomb() -> bytes:
    """A .docx whose document.xml inflates to 2 GiB."""
    return _zip({"[Content_Types].xml": DOCX_TYPES,
                 "word/document.xml": _streamed(b"<w:p/>", 2048 * MB, W, b"</w:body></w:document>")})  # fmt: skip


def docx_paragraphs() -> bytes:
    """A .docx with 20 MB of empty paragraphs (under the unpacked-size limit)."""
    return _zip({"[Content_Types].xml": DOCX_TYPES,
                 "word/document.xml": _streamed(b"<w:p/>", 20 * MB, W, b"</w:body></w:document>")})  # fmt: skip


def xlsx_bomb() -> bytes:
    """An .xlsx whose sheet inflates to 1.5 GiB of cells (4.7 MB packed)."""
    head = b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
    return _zip({"[Content_Types].xml": DOCX_TYPES.replace(b"word/document", b"xl/worksheets/sheet1"),
                 "xl/worksheets/sheet1.xml": _streamed(b'<row><c t="inlineStr"><is><t>x</t></is></c></row>',
                                                       1536 * MB, head, b"</sheetData></worksheet>")})  # fmt: skip


def png_pixels() -> bytes:
    """A PNG declaring 20,000 × 20,000 pixels (400 megapixels)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")
    return buffer.getvalue()


def pdf_pages() -> bytes:
    """A PDF whose page tree lists one page 500,000 times."""
    kids = b" ".join([b"3 0 R"] * 500_000)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count 500000 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def xml_laughs() -> bytes:
    """The billion laughs: ten levels of ten entity references (10^9 'lol's once expanded)."""
    lines = [b'<?xml version="1.0"?>', b"<!DOCTYPE lolz [", b'<!ENTITY lol0 "lol">']
    for level in range(1, 10):
        ref = b"&lol%d;" % (level - 1)
        lines.append(b'<!ENTITY lol%d "%s">' % (level, ref * 10))
    lines += [b"]>", b"<lolz>&lol9;</lolz>"]
    return b"\n".join(lines)


def json_nesting() -> bytes:
    """JSON nested a million levels deep."""
    return b"[" * 1_000_000 + b"]" * 1_000_000


def text_one_line() -> bytes:
    """5 MB of text without a line break or a sentence end."""
    return b"lorem" * (MB)


def elf_as_text() -> bytes:
    """An executable named .txt."""
    return Path(sys.executable).resolve().read_bytes()[: 5 * MB]


CRAFTED: list[tuple[str, Callable[[], bytes]]] = [
    ("bomb.docx", docx_bomb),
    ("paragraphs.docx", docx_paragraphs),
    ("bomb.xlsx", xlsx_bomb),
    ("pixels.png", png_pixels),
    ("pages.pdf", pdf_pages),
    ("laughs.xml", xml_laughs),
    ("nested.json", json_nesting),
    ("one-line.txt", text_one_line),
    ("program.txt", elf_as_text),
]


def main() -> None:
    result: dict = {"machine": machine(), "revision": git_revision(), "files": []}
    with tempfile.TemporaryDirectory(prefix="kbqa-crafted-") as tmp:
        services = handbook_services(Path(tmp) / "kb")
        services.embeddings.warm_up()
        app = create_app(services.settings, services=services, load_models=False)
        with serving(app) as base, httpx.Client(base_url=base, timeout=600) as client:
            warm = [("files", ("warm.md", b"# Warm\n\nThe parser processes start here.\n"))]
            client.post("/knowledge_bases/handbook/documents", files=warm)  # parser processes started
            for name, make in CRAFTED:
                data = make()
                assert len(data) <= 5 * MB, (name, len(data))
                worst = [0.0]
                stop = threading.Event()

                def poll(worst: list[float] = worst, stop: threading.Event = stop) -> None:
                    with httpx.Client(base_url=base, timeout=60) as health:
                        while not stop.is_set():
                            started = time.perf_counter()
                            health.get("/health")
                            worst[0] = max(worst[0], time.perf_counter() - started)
                            time.sleep(0.05)

                poller = threading.Thread(target=poll, daemon=True)
                before_rss, before_peak = memory_mb(), memory_mb("VmHWM")
                poller.start()
                started = time.perf_counter()
                response = client.post("/knowledge_bases/handbook/documents", files=[("files", (name, data))])
                seconds = time.perf_counter() - started
                stop.set()
                poller.join()
                body = response.json()
                outcome = body["files"][0] if response.status_code == 200 else body.get("error", {})
                row = {
                    "file": name,
                    "bytes": len(data),
                    "status": response.status_code,
                    "action": outcome.get("action") or outcome.get("code"),
                    "reason": (outcome.get("error") or outcome.get("message") or "")[:160],
                    "seconds": round(seconds, 2),
                    "rss_growth_mb": round(memory_mb() - before_rss, 1),
                    "peak_growth_mb": round(memory_mb("VmHWM") - before_peak, 1),
                    "health_max_ms": round(worst[0] * 1000, 1),
                }
                result["files"].append(row)
                print(f"{name:16} {len(data) / MB:5.2f} MB  {row['status']} {row['action']:8} {row['seconds']:6.2f} s  "
                      f"RSS +{row['rss_growth_mb']:.0f} MB (peak +{row['peak_growth_mb']:.0f})  "
                      f"/health max {row['health_max_ms']:.0f} ms  {row['reason'][:70]}", flush=True)  # fmt: skip
    rows = result["files"]
    result["met"] = all(r["seconds"] <= 5 and r["peak_growth_mb"] <= 300 for r in rows)
    print(f"target (≤ 5 s and ≤ +300 MB each): {'met' if result['met'] else 'NOT met'}")
    print(f"written {save_result('crafted', result)}")


if __name__ == "__main__":
    main()
