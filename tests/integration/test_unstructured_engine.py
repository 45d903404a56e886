"""unstructured as a parsing engine (loaders/unstructured_engine.py): offline, mapped onto kb-qa's
pieces (heading path, tables row by row with headers, pages), chosen by setting, bad files failing
alone. The files are made here (bench/docgen.py) and, where ../shared is present, taken from
unstructured's own example documents."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import docgen
from kb_qa.services import build_services
from kb_qa.settings import PROJECT_DIR, load_settings
from loaders import LoadError, load_file, loader_for
from loaders import unstructured_engine as engine

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not engine.available(), reason="unstructured is not installed (kb-qa[unstructured])"),
]

HANDBOOK = docgen.Doc(
    "handbook",
    "zh",
    [
        ("h", 1, "员工手册"),
        ("p", "年假没休完的，可以顺延到次年第一季度，逾期作废。"),
        ("h", 2, "差旅"),
        ("p", "出差住宿按城市类别执行下表标准。"),
        ("table", [["城市类别", "住宿上限（元/晚）"], ["一线城市", "600"], ["省会城市", "450"]]),
        ("li", "超出标准的部分由个人承担。"),
    ],
)

# In a fresh process, so that nothing of unstructured is imported before the guard: every socket
# connection and name lookup is refused and recorded; then each format is read.
OFFLINE = textwrap.dedent(
    """
    import json, socket, sys
    attempts = []
    def refuse(*args, **kwargs):
        attempts.append(repr(args[1:] or args)[:80])
        raise OSError("network blocked by the test")
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.getaddrinfo = refuse
    socket.create_connection = refuse
    from pathlib import Path
    from loaders import load_file, loader_for
    out = {}
    for name in sys.argv[1:]:
        path = Path(name)
        loader, loader_name = loader_for(path, "unstructured")
        pieces = load_file(path, loader=loader)
        out[path.suffix] = [loader_name, [[p.page_content, p.metadata["heading"], p.metadata["page"]] for p in pieces]]
    print(json.dumps({"attempts": attempts, "out": out}, ensure_ascii=False))
    """
)


def test_every_format_is_read_offline_with_headings_and_table_headers(tmp_path: Path) -> None:
    files = [
        docgen.write_docx(HANDBOOK, tmp_path / "handbook.docx"),
        docgen.write_html(HANDBOOK, tmp_path / "handbook.html"),
        docgen.write_markdown(HANDBOOK, tmp_path / "handbook.md"),
    ]
    docgen.write_pdf(HANDBOOK, tmp_path / "handbook.pdf")
    (tmp_path / "handbook.org").write_text(
        "* 员工手册\n年假没休完的，可以顺延到次年第一季度，逾期作废。\n** 差旅\n出差住宿按城市类别执行下表标准。\n"
        "| 城市类别 | 住宿上限（元/晚） |\n|---+---|\n| 一线城市 | 600 |\n| 省会城市 | 450 |\n",
        encoding="utf-8",
    )
    body = "各位同事：\n年假没休完的，可以顺延到次年第一季度，逾期作废。"
    docgen.write_msg(tmp_path / "notice.msg", "年假顺延通知", body, "人力资源部", "hr@example.com")
    files += [tmp_path / "handbook.pdf", tmp_path / "handbook.org", tmp_path / "notice.msg"]
    run = subprocess.run(
        [sys.executable, "-c", OFFLINE, *map(str, files)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["attempts"] == []  # no telemetry, no model download
    out = result["out"]
    assert {name for name, _ in out.values()} == {"unstructured"}
    for suffix in (".docx", ".html", ".md", ".org"):
        pieces = out[suffix][1]
        text = "\n".join(t for t, _, _ in pieces)
        assert "年假没休完的，可以顺延到次年第一季度，逾期作废。" in text, suffix
        assert "城市类别: 省会城市; 住宿上限（元/晚）: 450" in text, suffix  # the row keeps its headers
        headings = {h for _, h, _ in pieces}
        assert "员工手册 > 差旅" in headings, (suffix, headings)
    mail = "\n".join(t for t, _, _ in out[".msg"][1])
    assert mail.startswith('Subject: 年假顺延通知\nFrom: "人力资源部" <hr@example.com>')
    assert "年假没休完的，可以顺延到次年第一季度，逾期作废。" in mail
    pdf = out[".pdf"][1]
    assert all(page == 1 for _, _, page in pdf)  # pages from the elements' metadata
    # the fast strategy reads the text layer only: the sentence is there, the table's structure is not
    assert "年假没休完的" in "".join(t + h for t, h, _ in pdf)


def test_the_engine_is_chosen_by_setting_and_by_extension(tmp_path: Path) -> None:
    docx = tmp_path / "a.docx"
    assert loader_for(docx)[1] == "docx"
    assert loader_for(docx, "unstructured")[1] == "unstructured"
    assert loader_for(docx, "builtin", {".docx": "unstructured"})[1] == "unstructured"
    assert loader_for(docx, "unstructured", {".docx": "builtin"})[1] == "docx"
    assert loader_for(tmp_path / "notes.org")[1] == "unstructured"  # only unstructured reads these two
    assert loader_for(tmp_path / "mail.msg")[1] == "unstructured"
    assert loader_for(tmp_path / "a.xml", "unstructured")[1] == "xml"  # unstructured not offered: builtin
    with pytest.raises(LoadError, match="unsupported"):
        loader_for(tmp_path / "a.xyz", "unstructured")


def test_a_broken_file_fails_alone_with_its_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken.docx"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(LoadError) as caught:
        load_file(broken, loader=engine.load_unstructured)
    assert caught.value.reason in {"malformed", "suspicious"}
    not_mail = tmp_path / "not-mail.msg"
    not_mail.write_bytes(b"\xd0\xcf\x11\xe0 truncated compound file")
    with pytest.raises(LoadError, match="malformed"):
        engine.load_unstructured(not_mail)
    empty = tmp_path / "empty.html"
    empty.write_text("<html><body></body></html>", encoding="utf-8")
    with pytest.raises(LoadError, match="empty"):
        engine.load_unstructured(empty)


def test_without_the_spacy_model_the_file_fails_instead_of_downloading(monkeypatch: pytest.MonkeyPatch) -> None:
    real = engine.importlib.util.find_spec
    monkeypatch.setattr(
        engine.importlib.util, "find_spec", lambda name: None if name == engine.SPACY_MODEL else real(name)
    )
    monkeypatch.setattr(engine, "_prepared", False)
    with pytest.raises(LoadError) as caught:
        engine.load_unstructured(Path("whatever.docx"))
    assert caught.value.reason == "missing_parser" and "spacy-en-core-web-sm.txt" in str(caught.value)


def test_unstructured_examples_from_the_shared_corpus(corpus: Path) -> None:
    examples = corpus / "unstructured-example-docs" / "example-docs"
    rows = "\n".join(p.page_content for p in engine.load_unstructured(examples / "docx-tables.docx"))
    assert ": " in rows  # table rows carry their headers
    epub = engine.load_unstructured(examples / "winter-sports.epub")
    assert sum(len(p.page_content) for p in epub) > 1000
    rst = engine.load_unstructured(examples / "README.rst")
    assert any(p.metadata["heading"] for p in rst)


def test_a_knowledge_base_indexes_through_unstructured_in_parser_processes(tmp_path: Path, embeddings: object) -> None:
    settings = load_settings(
        environ={},
        overrides={"paths": {"kb_root": str(tmp_path / "kb")}, "loaders": {"engine": "unstructured"},
                   "ingest": {"isolate_parsers": True}, "retrieval": {"score_threshold": 0.0}},
    )  # fmt: skip
    services = build_services(settings, embeddings=embeddings)  # type: ignore[arg-type]
    folder = tmp_path / "docs"
    folder.mkdir()
    docgen.write_docx(HANDBOOK, folder / "handbook.docx")
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 broken")
    (folder / "notes.org").write_text("* Leave\nUnused leave carries over to the first quarter.\n", encoding="utf-8")
    services.knowledge_bases.create("u")
    report = services.knowledge_bases.add_files("u", sorted(folder.iterdir()))
    outcome = {o.path: o for o in report.outcomes}
    assert outcome["handbook.docx"].action == "added" and outcome["notes.org"].action == "added"
    assert outcome["broken.docx"].action == "failed" and outcome["broken.docx"].reason in {"malformed", "suspicious"}
    records = {r.path: r for r in services.knowledge_bases.files("u")}
    assert {records[name].loader for name in ("handbook.docx", "notes.org", "broken.docx")} == {"unstructured"}
    hits = services.retriever.retrieve("省会城市住宿上限是多少？", ["u"], top_k=2)
    assert any("住宿上限（元/晚）: 450" in h.text for h in hits)
