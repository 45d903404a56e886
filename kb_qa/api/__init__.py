"""The HTTP API (FastAPI). The only package that imports fastapi."""

from kb_qa.api.app import create_app

__all__ = ["create_app"]
