"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

from kb_qa.api.local import serving
from kb_qa.settings import PROJECT_DIR

__all__ = ["SAMPLES", "serving", "with_keys"]

SAMPLES = PROJECT_DIR / "knowledge_base" / "samples"


def with_keys(settings: Any, api_keys: list[str], admin_keys: list[str] | None = None) -> Any:
    """A copy of ``settings`` whose server asks for these keys."""
    server = settings.server.model_copy(update={"api_keys": api_keys, "admin_keys": admin_keys or []})
    return settings.model_copy(update={"server": server})
