"""Reading a .gguf file's header without loading the model (architecture, chat template, context)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kb_qa.errors import ModelUnavailable

GGUF_MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


# GGUF value types (ggml's gguf.h): the byte size of each scalar; 8 = string, 9 = array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def gguf_metadata(path: Path, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Scalar and string metadata of a .gguf header (only ``keys`` when given; arrays are skipped).

    Reads the key/value section only (a fraction of a second even for a large vocabulary), not
    the tensors.

    :raises ModelUnavailable: for a file that is not a readable GGUF.
    """
    if not is_gguf(path):
        raise ModelUnavailable(
            f"{path} is not a GGUF file (it does not start with 'GGUF'); point llm.model at a .gguf model file"
        )
    import mmap
    import struct

    values: dict[str, Any] = {}
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            version, _tensors, count = struct.unpack_from("<IQQ", data, 4)
            if version < 2:
                raise ModelUnavailable(f"{path} is a GGUF v{version} file; re-convert it with a current llama.cpp")
            pos = 24

            def string(at: int) -> tuple[str, int]:
                (size,) = struct.unpack_from("<Q", data, at)
                return bytes(data[at + 8 : at + 8 + size]).decode("utf-8", errors="replace"), at + 8 + size

            def skip(kind: int, at: int) -> int:
                if kind in _SCALARS:
                    return at + struct.calcsize(_SCALARS[kind])
                if kind == _STRING:
                    (size,) = struct.unpack_from("<Q", data, at)
                    return at + 8 + size
                if kind == _ARRAY:
                    inner, n = struct.unpack_from("<IQ", data, at)
                    at += 12
                    if inner in _SCALARS:
                        return at + n * struct.calcsize(_SCALARS[inner])
                    for _ in range(n):
                        at = skip(inner, at)
                    return at
                raise ValueError(f"unknown GGUF value type {kind}")

            for _ in range(count):
                name, pos = string(pos)
                (kind,) = struct.unpack_from("<I", data, pos)
                pos += 4
                wanted = not keys or name in keys
                if wanted and kind in _SCALARS:
                    (values[name],) = struct.unpack_from(_SCALARS[kind], data, pos)
                elif wanted and kind == _STRING:
                    values[name], _ = string(pos)
                pos = skip(kind, pos)
                if keys and all(k in values for k in keys):
                    break
    except (struct.error, ValueError, OSError) as exc:
        raise ModelUnavailable(f"{path} is not a readable GGUF file ({exc}); it may be truncated") from exc
    return values


def gguf_architecture(path: Path) -> str:
    arch = gguf_metadata(path, ("general.architecture",)).get("general.architecture")
    if not arch:
        raise ModelUnavailable(f"{path} names no architecture (general.architecture); it is not a usable model")
    return str(arch)
