"""Any .gguf chat model in-process through llama.cpp (``llama-cpp-python``).

The prompt is the model's own chat template (from the file's ``tokenizer.chat_template``, or
``llm.chat_template``) rendered by llama-cpp-python's Jinja formatter, the same one its
``create_chat_completion`` uses; tokens are counted with the model's own tokenizer. Generation is
llama.cpp's token generator driven one token per step by the consumer, so a consumer that stops
reading, closes the stream or sets ``cancel`` stops it within a token; text that ends inside a
UTF-8 sequence is held back until the next token completes it. Greedy decoding
(``temperature: 0``) is deterministic; a ``seed`` makes sampling reproducible.

One llama.cpp context serves every caller in turn (a lock; :class:`~kb_qa.llm.chat_llm.ConcurrencyGate`
decides who waits). Consecutive prompts that share a beginning (the system prompt and the
fixed part of the grounded prompt) reuse its computed KV cache: only the new tail is prefilled.

Threads: ``n_threads`` (generation) and ``n_threads_batch`` (prompt prefill). On small machines
spin-waiting threads collapse when another process is busy, so llama.cpp's OpenMP threads are made
to sleep rather than spin while waiting (``OMP_WAIT_POLICY=PASSIVE`` unless already set before
llama.cpp loads) and the default thread counts are chosen by measurement (:func:`default_threads`,
:func:`default_decode_threads`).
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kb_qa.errors import ConfigError, ModelUnavailable
from kb_qa.llm.base import ChatBackend, GenerationParams, Message
from kb_qa.llm.budget import ContextTooLong
from kb_qa.llm.gguf_file import gguf_architecture, gguf_metadata

log = logging.getLogger(__name__)

DEFAULT_MAX_CONTEXT = 8192  # when llm.context_window is unset: the model's own, capped here (KV memory)


SMALL_MODEL_BYTES = 300 * 1024 * 1024  # below this a token's work is too short to share between threads


def default_threads(cores: int | None = None) -> int:
    """Threads for prefill (and for generating with all but tiny models): every core, at most 8.

    Measured on 2 cores (docs/benchmarks.md, "llama.cpp threads", every bundled model): threads
    that spin while waiting lose up to 60 % of their decode speed when another process is busy, so
    they sleep (``OMP_WAIT_POLICY=PASSIVE``, set by :func:`llama_cpp_module`); then 2 threads keep
    the fastest prefill idle and under load, and the 1-thread decode speed or better under load.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))


def default_decode_threads(model_bytes: int, cores: int | None = None) -> int:
    """Threads for generating when none are configured: 1 for a tiny model, else :func:`default_threads`.

    A tiny model's token takes so little work that sleeping threads spend it waking each other:
    SmolLM2-135M (0.1 GB) decoded 31.5 tokens/s with 2 sleeping threads and 77.6 with 1 (64.3 vs
    49.5 with another process busy); from the 0.5B (0.5 GB) up, 2 threads were faster idle and
    equal under load (docs/benchmarks.md)."""
    return 1 if model_bytes < SMALL_MODEL_BYTES else default_threads(cores)


def llama_cpp_module() -> Any:
    """Import llama_cpp, or say how to install it."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import llama_cpp
    except ImportError as exc:
        raise ModelUnavailable(
            "llm.backend 'llamacpp' needs llama-cpp-python: run `bash scripts/install.sh` (it builds it from "
            "source once; needs cmake and a C/C++ compiler: apt-get install cmake build-essential)"
        ) from exc
    return llama_cpp


class LlamaCppBackend(ChatBackend):
    """A .gguf chat model run by llama.cpp in this process.

    :param model: the .gguf file (or a folder holding exactly one).
    :param name: how the model is called in answers and ``llm info``.
    :param context_window: llama.cpp's ``n_ctx``; None: the model's trained context, capped at 8192.
    :param n_threads: threads for generating; None: :func:`default_decode_threads`.
    :param n_threads_batch: threads for prefilling the prompt; None: ``n_threads`` if given, else
        :func:`default_threads`.
    :param n_gpu_layers: layers offloaded to the GPU in a CUDA/Metal build (-1 = all; 0 = CPU only).
    :param chat_template: a Jinja chat template (or a file holding one) instead of the file's own.
    :param sha256: the file's expected hash when it is known (bundled models), for ``info``.
    """

    def __init__(
        self,
        model: Path,
        *,
        name: str,
        context_window: int | None = None,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_gpu_layers: int = 0,
        chat_template: str | None = None,
        sha256: str | None = None,
    ) -> None:
        self.name = name
        self.path = self._locate(model)
        meta = gguf_metadata(self.path)
        self.architecture = gguf_architecture(self.path)
        self.metadata = meta
        trained = meta.get(f"{self.architecture}.context_length")
        self.trained_context = int(trained) if isinstance(trained, int) else None
        self._n_ctx = context_window or min(self.trained_context or 4096, DEFAULT_MAX_CONTEXT)
        self.n_threads = n_threads or default_decode_threads(self.path.stat().st_size)
        self.n_threads_batch = n_threads_batch or n_threads or default_threads()
        self.n_gpu_layers = n_gpu_layers
        self.template = self._template(chat_template, meta)
        self._sha256 = sha256
        self._llama: Any = None
        self._formatter: Any = None
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @staticmethod
    def _locate(model: Path) -> Path:
        if model.is_dir():
            files = sorted(model.glob("*.gguf"))
            if len(files) != 1:
                raise ModelUnavailable(
                    f"{model} holds {len(files)} .gguf files; point llm.model at the one file to use"
                )
            model = files[0]
        if not model.is_file():
            raise ModelUnavailable(f"{model} does not exist; point llm.model at a .gguf file on this machine")
        return model

    def _template(self, override: str | None, meta: dict[str, Any]) -> str:
        if override:
            candidate = Path(override).expanduser()
            if "{" not in override and candidate.is_file():
                return candidate.read_text(encoding="utf-8")
            if "{" not in override:
                raise ConfigError(f"llm.chat_template: {override} is neither a Jinja template nor an existing file")
            return override
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise ModelUnavailable(
                f"{self.path.name} carries no chat template; set llm.chat_template to the model's Jinja template "
                "(or a file holding it)"
            )
        return str(template)

    # ------------------------------------------------------------ loading
    def load(self) -> LlamaCppBackend:
        """Load the model (once)."""
        with self._load_lock:
            if self._llama is not None:
                return self
            llama_cpp = llama_cpp_module()
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            try:
                llama = llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=self._n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads_batch,
                    n_gpu_layers=self.n_gpu_layers,
                    n_batch=512,
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                raise ModelUnavailable(
                    f"llama.cpp cannot load {self.path.name} (architecture '{self.architecture}'): {exc}. "
                    "Use a GGUF of an architecture llama.cpp supports, or a newer llama-cpp-python"
                ) from exc
            eos_id, bos_id = llama.token_eos(), llama.token_bos()
            model = llama._model
            eos = model.token_get_text(eos_id) if eos_id != -1 else ""
            bos = model.token_get_text(bos_id) if bos_id != -1 else ""
            self._formatter = Jinja2ChatFormatter(template=self.template, eos_token=eos, bos_token=bos)
            self._llama = llama
            log.info("chat model %s loaded by llama.cpp (%d threads, n_ctx %d)", self.name, self.n_threads, self._n_ctx)
            return self

    @property
    def llama(self) -> Any:
        """The ``llama_cpp.Llama`` object (loads the model)."""
        return self.load()._llama

    @property
    def context_window(self) -> int:
        return self._n_ctx

    # ------------------------------------------------------------ prompts and tokens
    def render(self, messages: list[Message]) -> str:
        """The prompt text: ``messages`` through the chat template, ending where the answer begins."""
        self.load()
        try:
            result = self._formatter(messages=messages)
        except Exception as exc:  # a template's own raise_exception or a Jinja error
            raise ModelUnavailable(f"the chat template of {self.name} refused these messages: {exc}") from exc
        return str(result.prompt)

    def prompt_tokens(self, messages: list[Message]) -> list[int]:
        tokens: list[int] = self.llama.tokenize(self.render(messages).encode("utf-8"), add_bos=False, special=True)
        return tokens

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    # ------------------------------------------------------------ generation
    def stream(self, messages: list[Message], params: GenerationParams, cancel: threading.Event) -> Iterator[str]:
        llama_cpp = llama_cpp_module()
        tokens = self.prompt_tokens(messages)
        room = self._n_ctx - len(tokens)
        if room < 1:
            raise ContextTooLong(
                f"the prompt takes {len(tokens)} tokens but llama.cpp's context (llm.context_window = n_ctx) is "
                f"{self._n_ctx}; raise llm.context_window (the model was trained for {self.trained_context}) "
                "or send less"
            )
        limit = min(params.max_new_tokens, room)
        with self._lock:
            llama = self.llama
            llama.set_seed(params.seed if params.seed is not None else random.getrandbits(31))
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            vocab = llama._model.vocab
            generator = llama.generate(
                tokens,
                temp=max(params.temperature, 0.0),
                top_p=params.top_p,
                top_k=40,
                min_p=0.0,
                repeat_penalty=params.repetition_penalty,
            )
            produced = 0
            try:
                for token in generator:
                    if cancel.is_set() or llama_cpp.llama_vocab_is_eog(vocab, token):
                        break
                    produced += 1
                    text = decoder.decode(llama.detokenize([token], special=False))
                    if text:
                        yield text
                    if produced >= limit or cancel.is_set():
                        break
                tail = decoder.decode(b"", final=True)
                if tail and not cancel.is_set():
                    yield tail
            finally:
                generator.close()

    # ------------------------------------------------------------ info
    def sha256(self) -> str:
        if self._sha256 is None:
            digest = hashlib.sha256()
            with self.path.open("rb") as handle:
                while block := handle.read(8 << 20):
                    digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def info(self) -> dict[str, Any]:
        llama_cpp = llama_cpp_module()
        return {
            "backend": "llamacpp",
            "name": self.name,
            "source": str(self.path),
            "file_bytes": self.path.stat().st_size,
            "sha256": self.sha256(),
            "architecture": self.architecture,
            "quantization": _FILE_TYPES.get(int(self.metadata.get("general.file_type", -1)), "unknown"),
            "device": "cpu" if self.n_gpu_layers == 0 else f"gpu ({self.n_gpu_layers} layers)",
            "n_threads": self.n_threads,
            "n_threads_batch": self.n_threads_batch,
            "context_window": self._n_ctx,
            "trained_context": self.trained_context,
            "llama_cpp_python": getattr(llama_cpp, "__version__", "?"),
        }


# llama.cpp's LLAMA_FTYPE values for the usual files
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
}  # fmt: skip
