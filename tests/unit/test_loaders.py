"""Each loader on real files from ../shared/data/corpus and on files made here."""

from __future__ import annotations

from pathlib import Path

import pytest

from loaders import LoadError, load_file, supported_suffixes
from loaders.ocr import ocr_available
from loaders.pdf import clean_page_text
from loaders.text import decode_bytes
from tests.helpers import SAMPLES

EXAMPLES = "unstructured-example-docs/example-docs"


def text_of(path: Path) -> str:
    return "\n".join(p.page_content for p in load_file(path))


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("utf-8", "年假 annual leave"),
        ("utf-8-sig", "年假 annual leave"),
        ("utf-16", "年假 annual leave"),
        ("utf-16-le", "年假 annual leave"),
        ("utf-16-be", "年假 annual leave"),
        ("utf-32", "年假 annual leave"),
        ("gb18030", "员工每年享有十五天带薪年假，需要提前一周申请。病假需要医院证明。"),
        ("big5", "員工每年享有十五天帶薪年假，需要提前一週申請。病假需要醫院證明。"),
        ("cp1252", "Café crème – naïve façade, “quoted” déjà vu for €5."),
    ],
)
def test_text_encodings_are_detected(tmp_path: Path, encoding: str, text: str) -> None:
    path = tmp_path / "note.txt"
    path.write_bytes(((text + "\n") * 5).encode(encoding))
    assert text in text_of(path)


def test_binary_garbage_is_malformed() -> None:
    with pytest.raises(LoadError) as info:
        decode_bytes(bytes(range(256)) * 10 + b"\0\0\0\xff")
    assert info.value.reason == "malformed"


def test_markdown_sections_carry_heading_paths() -> None:
    pieces = load_file(SAMPLES / "员工手册.md")
    headings = [p.metadata["heading"] for p in pieces]
    assert "澄川科技员工手册 > 假期 > 年假" in headings
    annual = pieces[headings.index("澄川科技员工手册 > 假期 > 年假")]
    assert "15天带薪年假" in annual.page_content
    assert all(len(p.metadata["content_hash"]) == 64 for p in pieces)


def test_docx_headings_and_tables_keep_headers() -> None:
    pieces = load_file(SAMPLES / "差旅管理办法.docx")
    table_piece = next(p for p in pieces if "住宿上限" in p.page_content)
    assert table_piece.metadata["heading"] == "澄川科技差旅管理办法 > 三、住宿与补贴标准"
    assert "城市等级: 省会城市; 住宿上限（元/晚）: 450; 伙食补贴（元/天）: 100" in table_piece.page_content


def test_xlsx_rows_keep_their_headers_and_sheet_names() -> None:
    pieces = load_file(SAMPLES / "benefits-福利.xlsx")
    assert [p.metadata["heading"] for p in pieces] == ["福利 Benefits", "联系人 Contacts"]
    assert "项目 Item: 体检 Health check" in pieces[0].page_content
    assert pieces[1].metadata["page"] == 2


def test_pdf_pages_are_numbered_and_chinese_is_clean() -> None:
    pieces = load_file(SAMPLES / "onboarding-入职指南.pdf")
    assert [p.metadata["page"] for p in pieces] == [1, 2]
    assert "IT服务台会在中午前发放笔记本电脑和工牌。" in pieces[0].page_content
    assert "three months" in pieces[1].page_content


def test_pdf_text_cleanup_joins_wrapped_lines() -> None:
    assert clean_page_text("IT服务台会在中午前发放笔记本电脑\n和工牌。") == "IT服务台会在中午前发放笔记本电脑和工牌。"
    assert clean_page_text("the  laptop and\nbadge before noon.") == "the laptop and badge before noon."
    assert clean_page_text("中 文 字") == "中文字"
    assert clean_page_text("Title\nBody starts here.") == "Title\nBody starts here."


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("zh-laws/行政法/数据安全法(2021-06-10).md", "数据安全"),
        ("chatchat-samples/test_files/langchain.pdf", "LangChain"),
        ("chatchat-samples/test_files/langchain-ChatGLM_open.csv", "title"),
        ("chatchat-samples/test_files/langchain-ChatGLM_open.xlsx", "title"),
        (f"{EXAMPLES}/fake-text-utf-16-be.txt", "This is a test document"),
        (f"{EXAMPLES}/fake-text-utf-32.txt", "This is a test document"),
        (f"{EXAMPLES}/fake-html-cp1252.html", "L'été était très chaud"),
        (f"{EXAMPLES}/example-steelJIS-datasheet-utf-16.html", "JIS"),
        (f"{EXAMPLES}/fake-power-point-table.pptx", "Column 1: Tangerine"),
        (f"{EXAMPLES}/stanley-cups.tsv", "Stanley Cups"),
        (f"{EXAMPLES}/stanley-cups-utf-16.csv", "Stanley Cups"),
        (f"{EXAMPLES}/semicolon-delimited.csv", ":"),
        (f"{EXAMPLES}/spring-weather.html.json", ":"),
        (f"{EXAMPLES}/eml/fake-email.eml", "Subject:"),
        (f"{EXAMPLES}/eml/fake-email-b64.eml", "This is a test email"),
        (f"{EXAMPLES}/winter-sports.epub", "Winter"),
        (f"{EXAMPLES}/fake.odt", "Lorem ipsum"),
        (f"{EXAMPLES}/fake-doc.rtf", "My First Heading"),
        (f"{EXAMPLES}/factbook.xml", "United States"),
        (f"{EXAMPLES}/grid_offset_error.docx", "Merged"),
        (f"{EXAMPLES}/README.rst", "Example Docs"),
    ],
)
def test_loaders_on_real_files(corpus: Path, relative: str, expected: str) -> None:
    path = corpus / relative
    if not path.exists():
        pytest.skip(f"{relative} is not in this copy of the corpus")
    assert expected.lower() in text_of(path).lower()


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        (f"{EXAMPLES}/password_protected.xlsx", "encrypted"),
        (f"{EXAMPLES}/pdf/password.pdf", "encrypted"),
        (f"{EXAMPLES}/eml/fake-encrypted.eml", "encrypted"),
        (f"{EXAMPLES}/empty.txt", "empty"),
        (f"{EXAMPLES}/fake-text-all-whitespace.txt", "empty"),
        (f"{EXAMPLES}/empty.xlsx", "empty"),
    ],
)
def test_bad_files_fail_with_their_reason(corpus: Path, relative: str, reason: str) -> None:
    with pytest.raises(LoadError) as info:
        load_file(corpus / relative)
    assert info.value.reason == reason


def test_malformed_office_files(tmp_path: Path) -> None:
    for suffix in (".docx", ".pptx", ".xlsx", ".odt", ".epub"):
        path = tmp_path / f"broken{suffix}"
        path.write_bytes(b"PK\x03\x04 this is not really a zip archive")
        with pytest.raises(LoadError) as info:
            load_file(path)
        assert info.value.reason == "malformed", suffix


def test_malformed_pdf_and_json(tmp_path: Path) -> None:
    pdf = tmp_path / "broken.pdf"
    pdf.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage")
    with pytest.raises(LoadError) as info:
        load_file(pdf)
    assert info.value.reason in ("malformed", "empty")
    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"a": [1, 2', encoding="utf-8")
    with pytest.raises(LoadError) as info:
        load_file(bad_json)
    assert info.value.reason == "malformed"


def test_unknown_extension_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "archive.xyz"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(LoadError) as info:
        load_file(path)
    assert info.value.reason == "unsupported"
    assert ".pdf" in str(info.value)
    assert ".docx" in supported_suffixes()


def test_files_without_extension_are_read_as_text(tmp_path: Path) -> None:
    readme = tmp_path / "README"
    readme.write_text("Plain notes without an extension.", encoding="utf-8")
    assert text_of(readme) == "Plain notes without an extension."
    blob = tmp_path / "BLOB"
    blob.write_bytes(b"\x00\x01\x02binary\x00" * 50)
    with pytest.raises(LoadError) as info:
        load_file(blob)
    assert info.value.reason == "malformed"


def test_json_lines_flatten_records(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"name": "张三", "dept": {"id": 7}}\n{"name": "Li", "tags": ["a", "b"]}\n', encoding="utf-8")
    text = text_of(path)
    assert "name: 张三\ndept.id: 7" in text
    assert "tags: a, b" in text


@pytest.mark.shared_data
@pytest.mark.skipif(not ocr_available(), reason="rapidocr-onnxruntime is not installed")
def test_ocr_reads_images_and_image_only_pdf_pages(corpus: Path) -> None:
    assert "横向文本框" in text_of(corpus / "chatchat-samples/ocr_test.jpg")
    pieces = load_file(corpus / "chatchat-samples/ocr_test.pdf")
    assert pieces[0].metadata.get("ocr") is True
    assert "文本框" in pieces[0].page_content


def test_html_tables_keep_their_headers_and_layout_tables_stay_text(tmp_path: Path) -> None:
    page = tmp_path / "rules.html"
    page.write_text(
        "<html><body><h1>差旅</h1><p>标准如下。</p><table><caption>住宿</caption>"
        "<thead><tr><th>城市类别</th><th>上限（元/晚）</th></tr></thead>"
        "<tbody><tr><td>省会城市</td><td><b>450</b></td></tr><tr><td>其他城市</td><td>350</td></tr></tbody></table>"
        "<table><tr><td><table><tr><td>Nested</td><td>layout</td></tr></table></td></tr></table>"
        "<p>超出部分自理。</p></body></html>",
        encoding="utf-8",
    )
    lines = text_of(page).split("\n")
    assert lines[:5] == ["标准如下。", "住宿", "城市类别 | 上限（元/晚）", "城市类别: 省会城市; 上限（元/晚）: 450",
                         "城市类别: 其他城市; 上限（元/晚）: 350"]  # fmt: skip
    assert "Nested | layout" in " ".join(lines) and lines[-1] == "超出部分自理。"


def test_pdf_text_loses_control_characters_of_unmapped_glyphs() -> None:
    damaged = "\x7f 超出标准的部分\x00由个人承担。\n\x7f Second item."
    assert clean_page_text(damaged) == "超出标准的部分由个人承担。\nSecond item."
