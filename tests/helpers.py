"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

from kb_qa.api.local import serving
from kb_qa.settings import PROJECT_DIR

__all__ = ["ANY_SCORE", "SAMPLES", "serving", "with_keys"]

SAMPLES = PROJECT_DIR / "knowledge_base" / "samples"

# Settings overrides for tests of retrieval, chain, API and page mechanics: keep every passage, whatever
# its score (the shipped score_threshold of 0.80 declines off-topic questions; that default is tested
# with the default model in tests/integration/test_answers_default_model.py and in test_retrieval.py).
ANY_SCORE: dict[str, Any] = {"retrieval": {"score_threshold": 0.0}}


def with_keys(settings: Any, api_keys: list[str], admin_keys: list[str] | None = None) -> Any:
    """A copy of ``settings`` whose server asks for these keys."""
    server = settings.server.model_copy(update={"api_keys": api_keys, "admin_keys": admin_keys or []})
    return settings.model_copy(update={"server": server})


def error(response: Any) -> dict[str, str]:
    """The ``{"code", "message"}`` of an error response in the API's own shape (checking the shape)."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]  # type: ignore[no-any-return]
