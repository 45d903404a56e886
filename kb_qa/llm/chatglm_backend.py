"""The ChatGLM family: ChatGLM2-6B natively, other ChatGLM folders through their own code.

**ChatGLM2-6B** (and -32k, -int4, -int8): the official code targets transformers 4.30 and fails
under ours, so the folder is loaded into transformers' own ``GlmForCausalLM`` (same architecture;
weights renamed and split in memory, the int4/int8 checkpoints de-quantized on load) with
ChatGLM2's sentencepiece tokenizer, prompt format and response processing
(:mod:`kb_qa.llm.chatglm2_native`; proven against the official code's outputs). The options the
official README names map onto it:

    .half().cuda()          -> device cuda, dtype auto (fp16) or bf16
    .float()                -> device cpu (fp32)
    .to("mps")              -> device mps (fp16)
    .quantize(4) / (8)      -> quantization 4bit / 8bit: bitsandbytes (NF4 / LLM.int8) on CUDA, the
                               equivalent of the official CUDA-only kernels; the -int4/-int8
                               checkpoints are re-quantized to their own width when bitsandbytes is there
    load_model_on_gpus(n)   -> num_gpus n: the official balanced device map (:func:`chatglm_device_map`)

**Other ChatGLM folders** (ChatGLM-6B, ChatGLM3-6B: different code and prompt formats) go
through their own code as the official repositories use them
(``AutoModel.from_pretrained(path, trust_remote_code=True)``, ``model.chat``/``stream_chat``);
whether that code runs depends on the transformers version it was written for, and a failure says
so and what to use instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kb_qa.errors import ConfigError, ModelUnavailable
from kb_qa.hf import offline_and_quiet
from kb_qa.llm.base import ChatBackend, GenerationParams, Message, to_pairs
from kb_qa.llm.budget import ContextTooLong
from kb_qa.llm.chatglm2_native import (
    ChatGLM2Tokenizer,
    ResponseStream,
    convert_state_dict,
    glm_config,
    is_chatglm2,
    read_config,
    read_state_dict,
)
from kb_qa.llm.transformers_backend import TokenStreamer, check_quantization_installed, stream_generation
from kb_qa.placement import resolve_device, resolve_dtype

log = logging.getLogger(__name__)

# module names the official loader pins to GPU 0, in the three layouts: native GLM (ChatGLM2 loaded
# by this project), ChatGLM2/3's own code, ChatGLM-6B's own code
_PINNED = {
    "native": ["model.embed_tokens", "model.norm", "lm_head", "model.rotary_emb"],
    "v2": ["transformer.embedding.word_embeddings", "transformer.encoder.final_layernorm", "transformer.output_layer",
           "transformer.rotary_pos_emb", "lm_head"],
    "v1": ["transformer.word_embeddings", "transformer.final_layernorm", "lm_head"],
}  # fmt: skip
_LAYERS = {"native": "model.layers", "v2": "transformer.encoder.layers", "v1": "transformer.layers"}


def chatglm_device_map(module_names: set[str], num_layers: int, num_gpus: int) -> dict[str, int]:
    """The official ``auto_configure_device_map``, generalised to any layer count and all layouts.

    Embeddings, final norm and output layer count as two "layers" on GPU 0; the transformer
    layers fill GPUs in order, ``(num_layers + 2) / num_gpus`` each.
    """
    if num_gpus < 1:
        raise ConfigError("llm.num_gpus must be at least 1")
    layout = "native" if "model.layers" in module_names else "v2" if "transformer.encoder" in module_names else "v1"
    device_map: dict[str, int] = {name: 0 for name in _PINNED[layout] if name in module_names}
    per_gpu = (num_layers + 2) / num_gpus
    used, target = 2, 0
    for index in range(num_layers):
        if used >= per_gpu:
            target += 1
            used = 0
        device_map[f"{_LAYERS[layout]}.{index}"] = min(target, num_gpus - 1)
        used += 1
    return device_map


def native_module_names(num_layers: int) -> set[str]:
    """The modules of the native GLM model whose placement the device map decides."""
    return {"model", "model.layers", *_PINNED["native"], *(f"model.layers.{i}" for i in range(num_layers))}


class ChatGLMBackend(ChatBackend):
    """A ChatGLM checkpoint in a local folder.

    :param model: the checkpoint folder (chatglm2-6b, chatglm2-6b-32k, chatglm2-6b-int4, chatglm3-6b, …).
    :param device: auto | cpu | cuda | mps.
    :param dtype: auto | fp32 | fp16 | bf16 (auto: fp16 on a GPU as the official ``.half()``, fp32 on the CPU).
    :param quantize_bits: 4 or 8; None for none (ChatGLM2: bitsandbytes on CUDA; others: the model's own ``quantize``).
    :param num_gpus: more than 1 splits the model over GPUs as ``load_model_on_gpus`` does.
    :param device_map: an explicit map (module name -> GPU index) instead of the balanced one.
    """

    def __init__(
        self,
        model: Path,
        *,
        name: str,
        device: str = "auto",
        dtype: str = "auto",
        quantize_bits: int | None = None,
        num_gpus: int = 1,
        device_map: dict[str, Any] | None = None,
        context_window: int | None = None,
    ) -> None:
        if not (model / "config.json").is_file():
            raise ModelUnavailable(
                f"{model} holds no ChatGLM checkpoint (no config.json); download THUDM/chatglm2-6b (or -int4) "
                "to that folder yourself and point llm.model at it"
            )
        if quantize_bits not in (None, 4, 8):
            raise ConfigError("llm.quantization for ChatGLM must be none, 4bit or 8bit")
        self.name = name
        self.folder = model
        self.native = is_chatglm2(model)
        self.config = read_config(model)
        checkpoint_bits = int(self.config.get("quantization_bit") or 0) or None
        if self.native:
            self.device = resolve_device(device, num_gpus=num_gpus)
            if quantize_bits is None and checkpoint_bits and self.device == "cuda" and _has_bitsandbytes():
                quantize_bits = checkpoint_bits  # keep an -int4/-int8 checkpoint small on the GPU
            if quantize_bits:
                resolve_device(self.device, quantization=f"{quantize_bits}bit", num_gpus=num_gpus)
                check_quantization_installed(f"{quantize_bits}bit")
        else:
            self.device = resolve_device(device, num_gpus=num_gpus)
            if quantize_bits and self.device != "cuda":
                log.warning("ChatGLM's own quantization kernels run on CUDA; on %s it may be slow or fail", self.device)
        self.dtype = dtype
        self.checkpoint_bits = checkpoint_bits
        self.quantize_bits = quantize_bits
        self.num_gpus = num_gpus
        self.device_map = device_map
        self._context_window = context_window
        self.model: Any = None
        self.tokenizer: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ loading
    def load(self) -> ChatGLMBackend:
        with self._lock:
            if self.model is None:
                self._load_native() if self.native else self._load_remote_code()
            return self

    def _torch_dtype(self) -> Any:
        import torch

        if self.dtype == "auto":
            return torch.float16 if self.device in ("cuda", "mps") else torch.float32
        return resolve_dtype(self.dtype, self.device)

    def _load_native(self) -> None:
        from transformers import GlmForCausalLM

        offline_and_quiet()
        started = time.perf_counter()
        dtype = self._torch_dtype()
        config = glm_config(self.config)
        tokenizer = ChatGLM2Tokenizer(self.folder / "tokenizer.model")
        state = convert_state_dict(read_state_dict(self.folder), self.config, dtype)
        kwargs: dict[str, Any] = {"config": config, "state_dict": state, "dtype": dtype}
        if self.quantize_bits:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = (
                BitsAndBytesConfig(load_in_8bit=True) if self.quantize_bits == 8 else
                BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
            )  # fmt: skip
            kwargs["device_map"] = {"": 0}
        if self.device_map is not None or self.num_gpus > 1:
            layers = config.num_hidden_layers
            kwargs["device_map"] = self.device_map or chatglm_device_map(
                native_module_names(layers), layers, self.num_gpus
            )
        try:
            model = GlmForCausalLM.from_pretrained(None, **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelUnavailable(f"cannot load ChatGLM2 from {self.folder}: {exc}") from exc
        if "device_map" not in kwargs:
            model = model.to(self.device)  # type: ignore[arg-type]
        self.model, self.tokenizer = model.eval(), tokenizer
        log.info(
            "ChatGLM2 %s loaded natively (GlmForCausalLM, %s, %s) in %.1f s",
            self.name, self.device, str(dtype).replace("torch.", ""), time.perf_counter() - started,
        )  # fmt: skip

    def _load_remote_code(self) -> None:
        import transformers
        from transformers import AutoModel, AutoTokenizer

        offline_and_quiet()
        path = str(self.folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
            model = AutoModel.from_pretrained(path, trust_remote_code=True)
        except ImportError as exc:
            raise ModelUnavailable(f"cannot load ChatGLM from {self.folder}: {exc}; pip install what it names") from exc
        except Exception as exc:  # the folder's own code: anything can go wrong in it
            raise ModelUnavailable(
                f"the model code in {self.folder} does not run under transformers {transformers.__version__} "
                f"({type(exc).__name__}: {exc}). ChatGLM2-6B folders load natively; for ChatGLM-6B or ChatGLM3-6B "
                "convert the model to GGUF and use llm.backend: llamacpp, or serve it and use llm.backend: openai"
            ) from exc
        if self.quantize_bits and not getattr(model.config, "quantization_bit", 0):
            model = model.quantize(self.quantize_bits)
        model = self._place(model)
        self.model, self.tokenizer = model.eval(), tokenizer

    def _place(self, model: Any) -> Any:
        if self.num_gpus > 1 or self.device_map is not None:
            from accelerate import dispatch_model

            model = model.half()
            device_map = self.device_map or chatglm_device_map(
                {name for name, _ in model.named_modules()}, self.num_layers(model), self.num_gpus
            )
            return dispatch_model(model, device_map=device_map)
        if self.device == "cuda":
            return model.half().cuda()
        if self.device == "mps":
            return model.to("mps")
        return model.float()

    @staticmethod
    def num_layers(model: Any) -> int:
        config = model.config
        layers: Any = getattr(config, "num_layers", None) or getattr(config, "num_hidden_layers", None) or 28
        return int(layers)

    # ------------------------------------------------------------ prompts
    @property
    def _uses_role_history(self) -> bool:
        # ChatGLM3's chat() takes role dicts; ChatGLM-6B/ChatGLM2 take (question, answer) pairs
        if self.native:
            return False
        return "chatglm3" in (str(self.folder).lower() + self.name.lower()) or bool(
            getattr(self.load().model.config, "use_role_history", False)
        )

    def _query_and_history(self, messages: list[Message]) -> tuple[str, list[Any]]:
        system, pairs, query = to_pairs(messages)
        if self._uses_role_history:
            history: list[Any] = [m for m in messages[:-1]]
            return query, history
        if system:  # ChatGLM2 has no system role: the instruction goes in front of the first question
            if pairs:
                pairs[0] = (f"{system}\n\n{pairs[0][0]}", pairs[0][1])
            else:
                query = f"{system}\n\n{query}"
        return query, [list(p) for p in pairs]

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """The input ids ChatGLM2's ``chat`` would build for these messages (native path)."""
        query, history = self._query_and_history(messages)
        ids: list[int] = self.load().tokenizer.prompt_ids(query, history)
        return ids

    # ------------------------------------------------------------ generation
    def stream(self, messages: list[Message], params: GenerationParams, cancel: threading.Event) -> Iterator[str]:
        self.load()
        if self.native:
            yield from self._stream_native(messages, params, cancel)
        else:
            yield from self._stream_remote_code(messages, params, cancel)

    def _stream_native(
        self, messages: list[Message], params: GenerationParams, cancel: threading.Event
    ) -> Iterator[str]:
        import torch

        ids = self.prompt_ids(messages)
        room = self.context_window - len(ids)
        if room < 1:
            raise ContextTooLong(
                f"the prompt takes {len(ids)} tokens but {self.name} holds {self.context_window}; send less"
            )
        input_ids = torch.tensor([ids], device=self.model.device)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        kwargs: dict[str, Any] = {
            "max_new_tokens": min(params.max_new_tokens, room),
            "repetition_penalty": params.repetition_penalty,
            "pad_token_id": self.model.config.pad_token_id,
            "eos_token_id": self.model.config.eos_token_id,
        }
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=None)
        yield from stream_generation(self.model, inputs, kwargs, _ChatGLM2Streamer(self.tokenizer), params, cancel)

    def _stream_remote_code(
        self, messages: list[Message], params: GenerationParams, cancel: threading.Event
    ) -> Iterator[str]:
        query, history = self._query_and_history(messages)
        kwargs: dict[str, Any] = {"max_length": self.context_window, "top_p": params.top_p}
        kwargs["temperature"] = max(params.temperature, 0.01)
        kwargs["do_sample"] = not params.greedy
        if params.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = params.repetition_penalty
        generator = self.model.stream_chat(self.tokenizer, query, history, **kwargs)
        sent = 0
        produced = 0
        try:
            for response, _history in generator:
                if cancel.is_set():
                    break
                delta = response[sent:]
                sent = len(response)
                if delta:
                    produced += 1
                    yield delta
                if produced >= params.max_new_tokens:
                    break
        finally:
            generator.close()

    def count_tokens(self, text: str) -> int:
        tokenizer = self.load().tokenizer
        if self.native:
            return len(tokenizer.encode(text))
        return len(tokenizer.encode(text, add_special_tokens=False))

    @property
    def context_window(self) -> int:
        if self._context_window:
            return self._context_window
        config = self.config if self.native else vars(self.load().model.config)
        for key in ("seq_length", "max_sequence_length", "max_position_embeddings"):
            value = config.get(key)
            if isinstance(value, int) and value > 0:
                return value
        return 2048

    def info(self) -> dict[str, Any]:
        model = self.load().model
        if self.quantize_bits:
            quantization = f"int{self.quantize_bits}" + (" (bitsandbytes)" if self.native else "")
        elif self.checkpoint_bits:
            quantization = f"int{self.checkpoint_bits} checkpoint" + (", de-quantized on load" if self.native else "")
        else:
            quantization = "none"
        return {
            "backend": "chatglm",
            "loader": "native (transformers GlmForCausalLM)" if self.native else "the folder's own code",
            "name": self.name,
            "source": str(self.folder),
            "device": self.device,
            "device_map": getattr(model, "hf_device_map", None) or self.device_map,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "quantization": quantization,
            "parameters": sum(p.numel() for p in model.parameters()),
            "context_window": self.context_window,
        }


class _ChatGLM2Streamer(TokenStreamer):
    """ChatGLM2's ``stream_chat`` as deltas: the whole answer decoded at every token, a text that ends
    in half a character held back, ``process_response`` applied (:class:`ResponseStream`)."""

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        self.response = ResponseStream()
        self.complete = ""

    def show(self, text: str) -> None:
        self.complete = text
        delta = self.response.feed(text)
        if delta:
            self.queue.put(delta)

    def end(self) -> None:
        tail = self.response.finish(self.complete)
        if tail:
            self.queue.put(tail)
        self.queue.put(None)


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None
