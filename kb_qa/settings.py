"""Typed settings: configs/settings.yaml, overridden by environment variables.

Precedence, lowest first: the defaults below, the YAML file (``configs/settings.yaml`` or the file
named by ``KBQA_CONFIG``), environment variables ``KBQA_<SECTION>__<KEY>`` (for example
``KBQA_EMBEDDING__DEVICE=cuda``), ``KBQA_KB_ROOT`` for the knowledge-base root, and finally the
overrides a command passes (``--root``). Relative paths are taken from the project folder (the
parent of the folder holding the settings file). Loading settings reads one small file and nothing
else: no model is loaded and no folder is created.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from kb_qa.domain import EXPAND_CHARS, SCORE, TOP_K, PassageOrder
from kb_qa.errors import ConfigError

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_DIR / "configs" / "settings.yaml"
ENV_PREFIX = "KBQA_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PathSettings(_Section):
    kb_root: Path = Field(Path("knowledge_base"), description="Folder holding every knowledge base and the registry.")
    model_cache: Path = Field(Path(".cache/models"), description="Where bundled models are converted to, once.")


class EmbeddingSettings(_Section):
    backend: Literal["local", "openai"] = "local"
    model: str = Field(
        "multilingual-e5-small", description="Bundled model name or a local sentence-transformers folder."
    )
    url: str = ""
    remote_model: str = ""
    api_key: str = ""
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    batch_size: int = Field(16, ge=1, le=1024)
    max_seq_length: int = Field(512, ge=16, le=8192)
    threads: int | None = Field(None, ge=1, le=256)
    query_prefix: str | None = None
    passage_prefix: str | None = None


class SplitterSettings(_Section):
    chunk_size: int = Field(400, ge=50, le=10000)
    chunk_overlap: int = Field(60, ge=0)
    heading_prefix: bool = True

    @model_validator(mode="after")
    def _overlap_smaller(self) -> SplitterSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        return self


class RetrievalSettings(_Section):
    top_k: int = Field(4, **TOP_K.bounds)
    score_threshold: float = Field(0.8, **SCORE.bounds)
    method: Literal["hybrid", "dense", "bm25"] = "hybrid"
    fusion: Literal["weighted", "rrf"] = "weighted"
    dense_weight: float = Field(0.5, ge=0.0, le=1.0)
    candidates: int = Field(50, ge=1, le=1000)
    rrf_k: int = Field(60, ge=1)
    expand_chars: int = Field(0, **EXPAND_CHARS.bounds)
    reranker: str = ""
    rerank_candidates: int = Field(20, ge=1, le=200)
    parallel_keyword: bool = True
    index: Literal["flat", "ivf"] = "flat"
    ivf_nprobe: int = Field(16, ge=1, le=4096)
    ivf_min_chunks: int = Field(20000, ge=1000)


class QASettings(_Section):
    language: Literal["auto", "zh", "en"] = "auto"
    prompts_dir: str = "configs/prompts"
    history_turns: int = Field(3, ge=0, le=50)
    rewrite_followups: bool = True
    check_citations: bool = True
    passage_order: PassageOrder = "best_first"


class IngestSettings(_Section):
    max_file_mb: float = Field(200, gt=0)
    max_unpacked_mb: float = Field(256, gt=0)
    max_compression_ratio: float = Field(200, gt=1)
    workers: int = Field(2, ge=1, le=64)
    max_image_megapixels: float = Field(40, gt=0)
    max_pdf_pages: int = Field(5000, ge=1)
    isolate_parsers: bool = True
    parser_memory_mb: int = Field(4096, ge=256)
    parser_timeout_s: float = Field(600, gt=0)


def _suffix(value: str) -> str:
    value = value.strip().lower()
    return value if value.startswith(".") else "." + value


class LoaderSettings(_Section):
    engine: Literal["builtin", "unstructured"] = "builtin"
    by_extension: dict[Annotated[str, BeforeValidator(_suffix)], Literal["builtin", "unstructured"]] = {}


class LLMSettings(_Section):
    backend: Literal["llamacpp", "transformers", "chatglm", "openai"] = "llamacpp"
    model: str = Field("Qwen2.5-Coder-1.5B-Instruct", description="Bundled name, a local folder, or a .gguf file.")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    quantization: Literal["none", "8bit", "4bit"] = "none"
    num_gpus: int = Field(1, ge=1, le=64)
    device_map: str | dict[str, Any] | None = None
    max_memory: dict[str, str] | None = None
    lora: str | None = None
    trust_remote_code: bool = False
    base_url: str | None = None
    api_key: str | None = None
    request_timeout: float = Field(120, gt=0)
    tokenizer: str | None = None
    context_window: int | None = Field(None, ge=256)
    n_threads: int | None = Field(None, ge=1, le=512)
    n_threads_batch: int | None = Field(None, ge=1, le=512)
    n_gpu_layers: int = Field(0, ge=-1)
    chat_template: str | None = None
    max_new_tokens: int = Field(512, ge=1, le=32768)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.05, ge=0.5, le=2.0)
    seed: int | None = None
    system_prompt: str = "You are a helpful assistant. 你是一个乐于助人的助手。"
    max_concurrent: int = Field(1, ge=1, le=64)
    max_queue: int = Field(8, ge=0, le=1024)


def _key_list(value: Any) -> list[str]:
    """Keys from a YAML list or a comma-separated string (handy in environment variables)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    return [str(k).strip() for k in value if str(k).strip()]


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(7861, ge=1, le=65535)
    api_keys: Annotated[list[str], BeforeValidator(_key_list)] = Field(default_factory=list)
    admin_keys: Annotated[list[str], BeforeValidator(_key_list)] = Field(default_factory=list)
    cors_origins: Annotated[list[str], BeforeValidator(_key_list)] = Field(default_factory=list)
    max_request_mb: float = Field(1024, gt=0)
    public_docs: bool = False
    mcp: bool = True


class StorageSettings(_Section):
    backend: Literal["folder", "postgres"] = "folder"
    url: str = ""
    pool_size: int = Field(10, ge=1, le=1000)
    connect_timeout_s: float = Field(10.0, gt=0)
    exact: bool = False
    ef_search: int = Field(100, ge=1, le=1000)
    keyword_budget: int = Field(30_000, ge=0, le=100_000_000)


class Settings(_Section):
    paths: PathSettings = PathSettings()
    storage: StorageSettings = StorageSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    splitter: SplitterSettings = SplitterSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    qa: QASettings = QASettings()
    ingest: IngestSettings = IngestSettings()
    loaders: LoaderSettings = LoaderSettings()
    llm: LLMSettings = LLMSettings()
    server: ServerSettings = ServerSettings()
    base_dir: Path = Field(PROJECT_DIR, exclude=True, description="Relative paths are resolved against this.")

    def resolve(self, path: Path) -> Path:
        """An absolute form of ``path`` (relative ones are taken from the project folder)."""
        path = path.expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    @property
    def kb_root(self) -> Path:
        return self.resolve(self.paths.kb_root)

    @property
    def model_cache(self) -> Path:
        return self.resolve(self.paths.model_cache)


def _set_path(tree: dict[str, Any], dotted: list[str], value: Any) -> None:
    node = tree
    for part in dotted[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(dotted)}: '{part}' is a value, not a section")
        node = child
    node[dotted[-1]] = value


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        parts = key[len(ENV_PREFIX) :].lower().split("__")
        # YAML parsing turns "true", "3", "0.5", "null" into their types; strings stay strings
        value = yaml.safe_load(raw) if raw.strip() else raw
        _set_path(tree, parts, value)
    if environ.get("KBQA_KB_ROOT"):
        _set_path(tree, ["paths", "kb_root"], environ["KBQA_KB_ROOT"])
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        ctx = item.get("ctx") or {}
        if item["type"] == "literal_error":
            lines.append(f"{key}: {item['input']!r} is not allowed; choose one of {ctx.get('expected')}")
        elif item["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown setting (see configs/settings.yaml for the documented keys)")
        else:
            lines.append(f"{key}: {item['msg']} (got {item['input']!r})")
    return "invalid settings: " + "; ".join(lines)


def load_settings(
    config_file: Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Read, merge and validate the settings.

    :param config_file: a YAML file; default ``KBQA_CONFIG`` or configs/settings.yaml.
    :param overrides: a nested dict applied last, e.g. ``{"paths": {"kb_root": "/tmp/kb"}}``.
    :param environ: the environment to read (default ``os.environ``).
    :returns: validated settings.
    :raises ConfigError: naming each invalid key and what is allowed.
    """
    environ = dict(os.environ) if environ is None else environ
    path = config_file or Path(environ.get("KBQA_CONFIG") or DEFAULT_CONFIG)
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of sections")
        data = loaded
    elif config_file is not None or environ.get("KBQA_CONFIG"):
        raise ConfigError(f"settings file {path} does not exist")
    data = _merge(data, _env_overrides(environ))
    data = _merge(data, overrides or {})
    base = path.resolve().parent.parent if path.is_file() else PROJECT_DIR
    try:
        return Settings(**data, base_dir=base)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
