"""Sentence-transformers embeddings as a LangChain ``Embeddings``, with model-family prefixes.

Any local sentence-transformers (or plain transformers encoder) folder works: text2vec, bge-*,
m3e, e5 … The query/passage prefixes a family was trained with are applied automatically:
prompts recorded in the folder's ``config_sentence_transformers.json`` first, then the family
recognised by name (e5: ``query: ``/``passage: ``; bge: its retrieval instruction on queries),
unless the settings give explicit prefixes.

Precision ``auto`` picks fp16 on CUDA, bf16 on a CPU with native bf16 instructions (AVX512-BF16
or AMX; there it runs under autocast, ~2.4x faster than fp32 with embeddings at cosine 0.99999, measured
in bench/ingest.py), fp32 elsewhere. Under bf16 autocast a call with little text (a question: fewer
than ``AUTOCAST_MIN_CHARS`` characters in all) runs in fp32, which is faster there (casts cost more
than the bf16 products save on a few dozen tokens): a question embeds in ~17 instead of ~24 ms.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from kb_qa.errors import ConfigError, ModelUnavailable
from kb_qa.hf import offline_and_quiet
from kb_qa.placement import resolve_device

log = logging.getLogger(__name__)

# Under this many characters in one call (a question, a short line) the CPU's bf16 autocast costs more
# in casts than it saves: fp32 is used (measured: one 60-character text 16.8 ms fp32 vs 24.1 ms bf16, one
# 400-character passage 38.0 vs 34.5, 16 passages 449 vs 172, on 1 thread; docs/benchmarks.md)
AUTOCAST_MIN_CHARS = 300
BGE_ZH_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："
BGE_EN_INSTRUCTION = "Represent this sentence for searching relevant passages: "


def family_prefixes(model_path: Path, name: str) -> tuple[str, str]:
    """The (query, passage) prefixes a model expects, from its folder or its name."""
    config = model_path / "config_sentence_transformers.json"
    if config.is_file():
        try:
            prompts = json.loads(config.read_text(encoding="utf-8")).get("prompts") or {}
        except (OSError, ValueError):
            prompts = {}
        if prompts.get("query") is not None or prompts.get("passage") is not None:
            return prompts.get("query") or "", prompts.get("passage") or prompts.get("document") or ""
    label = f"{name} {model_path.name}".lower()
    if "e5" in label and "bge" not in label:
        return "query: ", "passage: "
    if "bge" in label and "m3" not in label:
        return (BGE_ZH_INSTRUCTION if "zh" in label else BGE_EN_INSTRUCTION), ""
    return "", ""


def cpu_has_bf16() -> bool:
    """True when this CPU runs bf16 matrix work natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def pick_precision(precision: str, device: str) -> str:
    if precision != "auto":
        if precision == "fp16" and device == "cpu":
            raise ConfigError("embedding.precision: 'fp16' is not supported on the CPU; choose 'bf16' or 'fp32'")
        return precision
    if device == "cuda":
        return "fp16"
    if device == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


class PrefixedEmbeddings(Embeddings):
    """A LangChain ``Embeddings`` whose subclasses embed texts behind a query or passage prefix
    (:meth:`_encode`); the local model and a remote server share the rest."""

    query_prefix: str
    passage_prefix: str

    def _encode(self, texts: list[str], prefix: str) -> np.ndarray:
        raise NotImplementedError

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors of passages, one row each."""
        return self._encode(texts, self.passage_prefix)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors of queries, one row each."""
        return self._encode(texts, self.query_prefix)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode_passages(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode_queries([text])[0].tolist()


class SentenceTransformerEmbeddings(PrefixedEmbeddings):
    """Embeddings from a local sentence-transformers folder; the model loads on first use.

    :param model_path: the model folder.
    :param name: the name recorded in each knowledge base (e.g. ``multilingual-e5-small``).
    :param device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
    :param precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
    :param batch_size: texts per forward pass.
    :param query_prefix: overrides the family's query prefix when not None.
    :param passage_prefix: overrides the family's passage prefix when not None.
    :param threads: torch's CPU threads for this process, set when the model loads (None: torch's default).
    """

    def __init__(
        self,
        model_path: Path,
        *,
        name: str,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 16,
        max_seq_length: int = 512,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.model_path = model_path
        self.threads = threads
        self.name = name
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self._device_setting = device
        self._precision_setting = precision
        family_query, family_passage = family_prefixes(model_path, name)
        self.query_prefix = family_query if query_prefix is None else query_prefix
        self.passage_prefix = family_passage if passage_prefix is None else passage_prefix
        self._model: Any = None
        self._autocast = False
        self._lock = threading.Lock()
        self.device = ""
        self.precision = ""

    def warm_up(self) -> None:
        """Load the model (once)."""
        with self._lock:
            if self._model is not None:
                return
            import torch
            from sentence_transformers import SentenceTransformer

            offline_and_quiet()

            device = resolve_device(self._device_setting, section="embedding")
            precision = pick_precision(self._precision_setting, device)
            if self.threads is not None and device == "cpu":
                torch.set_num_threads(self.threads)  # process-wide: torch has one intra-op pool
            try:
                model = SentenceTransformer(str(self.model_path), device=device, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelUnavailable(f"cannot load the embedding model from {self.model_path}: {exc}") from exc
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
            # On the CPU, bf16 runs under autocast: matrix products in bf16, layer norms and
            # softmax in fp32. That keeps embeddings at cosine 0.99999 to fp32 (casting the
            # whole model gives 0.998) for nearly the same speed.
            self._autocast = device == "cpu" and dtype is torch.bfloat16
            if dtype is not torch.float32 and not self._autocast:
                model = model.to(dtype)
            model.max_seq_length = min(self.max_seq_length, model.max_seq_length or self.max_seq_length)
            model.eval()
            self.device, self.precision = device, precision
            self._model = model
            threads = torch.get_num_threads()
            log.info("embedding model %s on %s in %s, %d threads", self.name, device, precision, threads)

    @property
    def dimension(self) -> int:
        self.warm_up()
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") else None
        if dim is None:
            dim = self._model.get_sentence_embedding_dimension()
        return int(dim)

    def _encode(self, texts: list[str], prefix: str) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        import torch

        # a text that carries a prefix already (sent so by another kb-qa's remote embeddings, say) stays as it is
        carried = tuple(p for p in (self.query_prefix, self.passage_prefix) if p)
        inputs = [t if carried and t.startswith(carried) else prefix + t for t in texts]
        # bf16 pays for its casts only on enough text: a question alone is faster in fp32 (module description)
        autocast = self._autocast and sum(map(len, inputs)) >= AUTOCAST_MIN_CHARS
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.inference_mode():
            vectors = self._model.encode(
                inputs,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=False,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors.float().cpu().numpy(), dtype=np.float32)


class RemoteEmbeddings(PrefixedEmbeddings):
    """Embeddings from an OpenAI-compatible ``/v1/embeddings`` server (``embedding.backend: openai``):
    vLLM, text-embeddings-inference, Infinity, Xinference — or another kb-qa.

    The model family's query/passage prefixes are prepended here (servers embed what they get; kb-qa's
    own endpoint leaves a text that already carries one as it is). Texts go in batches; a 429, a 5xx
    or a dropped connection is retried with exponential backoff (honouring ``Retry-After``). Vectors
    are L2-normalised here, as the local model's are.

    :param url: the server's base URL, e.g. ``http://gpu-box:8000/v1``.
    :param name: the model name recorded in knowledge bases (``embedding.model``): a knowledge base
        built by the local model of that name can be searched with the remote one and the other way.
    :param remote_model: the model name the server knows (default: ``name``).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        remote_model: str = "",
        api_key: str = "",
        batch_size: int = 64,
        timeout: float = 60.0,
        max_retries: int = 5,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        backoff: float = 0.5,
    ) -> None:
        self.url = url.rstrip("/")
        self.name = name
        self.remote_model = remote_model or name
        self.api_key = api_key
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        family_query, family_passage = family_prefixes(Path(name), name)
        self.query_prefix = family_query if query_prefix is None else query_prefix
        self.passage_prefix = family_passage if passage_prefix is None else passage_prefix
        self.model_path = Path(self.url)
        self.device = "remote"
        self.precision = "server"
        self._dimension: int | None = None
        self._client: Any = None
        self._lock = threading.Lock()

    def _http(self) -> Any:
        import httpx

        with self._lock:
            if self._client is None:
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                self._client = httpx.Client(timeout=self.timeout, headers=headers)
            return self._client

    def warm_up(self) -> None:
        """Ask the server once (its dimension): an unreachable server fails here, not mid-import."""
        _ = self.dimension

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(self._request(["dimension probe"]).shape[1])
        return self._dimension

    def _request(self, texts: list[str]) -> np.ndarray:
        import time

        import httpx

        endpoint = f"{self.url}/embeddings"
        body = {"model": self.remote_model, "input": texts, "encoding_format": "float"}
        problem = ""
        for attempt in range(self.max_retries + 1):
            wait = self.backoff * 2**attempt
            try:
                response = self._http().post(endpoint, json=body)
            except httpx.HTTPError as exc:  # refused, reset, timed out
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return self._parse(response, len(texts))
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code != 429 and response.status_code < 500:
                    raise ModelUnavailable(f"the embedding server at {endpoint} refused the request ({problem})")
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = max(wait, float(retry_after))
            if attempt < self.max_retries:
                log.info("embedding server: %s; retrying in %.1f s", problem, wait)
                time.sleep(min(wait, 30.0))
        raise ModelUnavailable(
            f"the embedding server at {endpoint} did not answer after {self.max_retries + 1} tries ({problem}); "
            "check embedding.url and that the server runs"
        )

    def _parse(self, response: Any, count: int) -> np.ndarray:
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            matrix = np.array([item["embedding"] for item in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelUnavailable(f"the embedding server's answer is not an embeddings list ({exc})") from exc
        if matrix.ndim != 2 or len(matrix) != count:
            raise ModelUnavailable(f"the embedding server returned {len(matrix)} vectors for {count} texts")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return np.ascontiguousarray(matrix / norms, dtype=np.float32)

    def _encode(self, texts: list[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        parts = [
            self._request([prefix + t for t in texts[start : start + self.batch_size]])
            for start in range(0, len(texts), self.batch_size)
        ]
        matrix = np.vstack(parts)
        if self._dimension is None:
            self._dimension = int(matrix.shape[1])
        elif matrix.shape[1] != self._dimension:
            raise ModelUnavailable(
                f"the embedding server changed its dimension ({self._dimension} → {matrix.shape[1]}); "
                "is embedding.url pointing at another model?"
            )
        return matrix


TextEmbeddings = SentenceTransformerEmbeddings | RemoteEmbeddings
"""Either kind: the services take whichever the settings build (:func:`kb_qa.services.build_embeddings`)."""
