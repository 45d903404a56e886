"""Device and dtype choice for every model (embeddings and LLM): impossible combinations become one
clear start-up error naming the setting."""

from __future__ import annotations

import sys
from typing import Any

from kb_qa.errors import ConfigError


def cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    import torch

    return sys.platform == "darwin" and bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(device: str, *, quantization: str = "none", num_gpus: int = 1, section: str = "llm") -> str:
    """The device to run on, or :class:`ConfigError` saying why the combination cannot work.

    :param section: the settings section the values come from, named in the messages.
    """
    gpus = cuda_count()
    if device == "mps" and sys.platform != "darwin":
        raise ConfigError(
            f"{section}.device: 'mps' is Apple's GPU backend and exists only on macOS; use 'cuda' or 'cpu'"
        )
    if device == "mps" and not mps_available():
        raise ConfigError(f"{section}.device: 'mps' was asked for but this Mac's torch has no MPS support; use 'cpu'")
    if device == "auto":
        device = "cuda" if gpus else ("mps" if mps_available() else "cpu")
    if device == "cuda" and not gpus:
        raise ConfigError(f"{section}.device: 'cuda' was asked for but no CUDA GPU is visible; use 'cpu' or 'auto'")
    if quantization != "none" and device != "cuda":
        raise ConfigError(
            f"{section}.quantization: '{quantization}' (bitsandbytes) needs a CUDA GPU, and this runs on {device}; "
            "set quantization: none (and dtype bf16 or fp32 on the CPU), or use a GPU"
        )
    if num_gpus > 1 and num_gpus > gpus:
        raise ConfigError(f"{section}.num_gpus: {num_gpus} GPUs were asked for but {gpus} are visible")
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device == "mps" else torch.float32
    if dtype == "fp16" and device == "cpu":
        raise ConfigError("llm.dtype: 'fp16' is not supported for generation on the CPU; use 'bf16' or 'fp32'")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


def balanced_max_memory(num_gpus: int, reserve_fraction: float = 0.1) -> dict[int | str, str]:
    """Per-GPU memory limits that make ``device_map="auto"`` spread a model over ``num_gpus`` GPUs."""
    import torch

    limits: dict[int | str, str] = {}
    for index in range(num_gpus):
        total = torch.cuda.get_device_properties(index).total_memory
        limits[index] = f"{int(total * (1 - reserve_fraction) / 2**20)}MiB"
    return limits
