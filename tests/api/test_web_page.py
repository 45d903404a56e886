"""The web page's files as the app serves them (the browser tests are in tests/e2e)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kb_qa.api import create_app
from kb_qa.api.web import WEB_DIR
from kb_qa.services import Services
from tests.helpers import with_keys

pytestmark = pytest.mark.integration

STATIC = sorted(p for p in (WEB_DIR / "static").iterdir() if p.is_file())


@pytest.fixture()
def client(services: Services) -> Iterator[TestClient]:
    app = create_app(services.settings, services=services, load_models=False)
    with TestClient(app) as test_client:
        yield test_client


def test_the_page_is_served_at_the_root_with_a_strict_content_security_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        response = client.get(asset)
        assert response.status_code == 200, asset
    assert client.get("/static/missing.js").json()["error"]["code"] == "not_found"
    page_op = client.get("/openapi.json").json()["paths"]["/"]["get"]  # documented, so a fuzzer knows it
    assert list(page_op["responses"]["200"]["content"]) == ["text/html"]


def test_post_to_the_root_is_still_chatglm2s_api(client: TestClient) -> None:
    # same path, other method: the page does not shadow the drop-in route (answered 422 here for the empty body)
    response = client.post("/", json={})
    assert response.status_code == 422 and "prompt" in response.json()["error"]["message"]


def test_the_page_needs_no_key_but_its_api_calls_do(services: Services) -> None:
    with TestClient(create_app(with_keys(services.settings, ["k"]), services=services, load_models=False)) as client:
        assert client.get("/").status_code == 200
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/knowledge_bases").status_code == 401


@pytest.mark.parametrize("path", [*STATIC, WEB_DIR / "index.html"], ids=lambda p: p.name)
def test_nothing_is_loaded_from_outside_the_service(path) -> None:  # type: ignore[no-untyped-def]
    text = re.sub(r'xmlns="[^"]*"', "", path.read_text(encoding="utf-8"))  # a namespace name, not an address
    assert not re.search(r"https?://", text), f"{path.name} names an outside address"
    assert "@import" not in text and "@font-face" not in text


def test_both_languages_have_every_text() -> None:
    source = (WEB_DIR / "static" / "i18n.js").read_text(encoding="utf-8")
    en, zh = source.split("  zh: {")
    keys_en = set(re.findall(r'^\s+"([a-z_.0-9]+)":', en, re.M))
    keys_zh = set(re.findall(r'^\s+"([a-z_.0-9]+)":', zh, re.M))
    assert keys_en == keys_zh and len(keys_en) > 50
    used = set()
    for path in [*STATIC, WEB_DIR / "index.html"]:
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r'data-i18n(?:-placeholder)?="([a-z_.0-9]+)"', text))
        used |= set(re.findall(r'\bt\("([a-z_.0-9]+)"', text))
    used = {key for key in used if not key.endswith(".")}  # t("error." + status): families checked below
    assert used - keys_en == set(), "texts used by the page but missing from i18n.js"
    for family in ["status.indexed", "status.failed", "upload.added", "upload.updated", "upload.unchanged"]:
        assert family in keys_en
