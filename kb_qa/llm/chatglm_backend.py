"""The ChatGLM family (ChatGLM-6B, ChatGLM2-6B, -32k, -int4, ChatGLM3) through its own remote code.

Follows the official ChatGLM2-6B usage:

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    model = AutoModel.from_pretrained(path, trust_remote_code=True).half().cuda()   # GPU, ~13 GB fp16
    model = AutoModel.from_pretrained(path, trust_remote_code=True).float()         # CPU
    model = AutoModel.from_pretrained(path, trust_remote_code=True).to("mps")       # Apple
    model = AutoModel.from_pretrained(path, trust_remote_code=True).quantize(4).cuda()  # small cards
    response, history = model.chat(tokenizer, query, history=history)
    for response, history in model.stream_chat(tokenizer, query, history): ...

and, for several GPUs, the repository's ``load_model_on_gpus``: the model in fp16 dispatched by
accelerate over a device map in which the word embeddings, the final layer norm, the output layer
and the rotary embedding sit on GPU 0 and the transformer layers are spread evenly after them
(:func:`chatglm_device_map`). The -int4/-int8 checkpoints are quantized already and load as they are.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kb_qa.errors import ConfigError, ModelUnavailable
from kb_qa.hf import offline_and_quiet
from kb_qa.llm.base import ChatBackend, GenerationParams, Message, to_pairs
from kb_qa.placement import resolve_device

log = logging.getLogger(__name__)

# module names in ChatGLM2/3 (first) and ChatGLM-6B (second) that the official loader pins to GPU 0
_PINNED = [
    ("transformer.embedding.word_embeddings", "transformer.word_embeddings"),
    ("transformer.encoder.final_layernorm", "transformer.final_layernorm"),
    ("transformer.output_layer", "lm_head"),
    ("transformer.rotary_pos_emb", None),
    ("lm_head", None),
]


def chatglm_device_map(module_names: set[str], num_layers: int, num_gpus: int) -> dict[str, int]:
    """The official ``auto_configure_device_map``, generalised to any layer count and both layouts.

    Embeddings, final norm and output layer count as two "layers" on GPU 0; the transformer
    layers fill GPUs in order, ``(num_layers + 2) / num_gpus`` each.
    """
    if num_gpus < 1:
        raise ConfigError("llm.num_gpus must be at least 1")
    v2 = "transformer.encoder" in module_names
    device_map: dict[str, int] = {}
    for new_name, old_name in _PINNED:
        name = new_name if v2 else old_name
        if name and name in module_names:
            device_map[name] = 0
    layer_prefix = "transformer.encoder.layers" if v2 else "transformer.layers"
    per_gpu = (num_layers + 2) / num_gpus
    used, target = 2, 0
    for index in range(num_layers):
        if used >= per_gpu:
            target += 1
            used = 0
        device_map[f"{layer_prefix}.{index}"] = min(target, num_gpus - 1)
        used += 1
    return device_map


class ChatGLMBackend(ChatBackend):
    """A ChatGLM checkpoint in a local folder, loaded with its own code (``trust_remote_code``).

    :param model: the checkpoint folder (ChatGLM2-6B, chatglm2-6b-int4, chatglm3-6b, …).
    :param device: auto | cpu | cuda | mps.
    :param quantize_bits: 4 or 8 to quantize with the model's own ``quantize``; None for none.
    :param num_gpus: more than 1 splits the model over GPUs as ``load_model_on_gpus`` does.
    :param device_map: an explicit map (module name -> GPU index) instead of the balanced one.
    """

    def __init__(
        self,
        model: Path,
        *,
        name: str,
        device: str = "auto",
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
        self.device = resolve_device(device, num_gpus=num_gpus)
        if quantize_bits and self.device != "cuda":
            log.warning("ChatGLM's own quantization kernels run on CUDA; on %s it may be slow or fail", self.device)
        self.quantize_bits = quantize_bits
        self.num_gpus = num_gpus
        self.device_map = device_map
        self._context_window = context_window
        self.model: Any = None
        self.tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self) -> ChatGLMBackend:
        with self._lock:
            if self.model is not None:
                return self
            from transformers import AutoModel, AutoTokenizer

            offline_and_quiet()
            path = str(self.folder)
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
                model = AutoModel.from_pretrained(path, trust_remote_code=True)
            except (OSError, ValueError, ImportError) as exc:
                raise ModelUnavailable(f"cannot load ChatGLM from {self.folder}: {exc}") from exc
            if self.quantize_bits and not getattr(model.config, "quantization_bit", 0):
                model = model.quantize(self.quantize_bits)
            model = self._place(model)
            self.model, self.tokenizer = model.eval(), tokenizer
            return self

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

    @property
    def _uses_role_history(self) -> bool:
        # ChatGLM3's chat() takes role dicts; ChatGLM-6B/ChatGLM2 take (question, answer) pairs
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

    def stream(self, messages: list[Message], params: GenerationParams, cancel: threading.Event) -> Iterator[str]:
        self.load()
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
        return len(self.load().tokenizer.encode(text, add_special_tokens=False))

    @property
    def context_window(self) -> int:
        if self._context_window:
            return self._context_window
        config = self.load().model.config
        for key in ("seq_length", "max_sequence_length", "max_position_embeddings"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048

    def info(self) -> dict[str, Any]:
        model = self.load().model
        return {
            "backend": "chatglm",
            "name": self.name,
            "source": str(self.folder),
            "device": self.device,
            "device_map": getattr(model, "hf_device_map", None) or self.device_map,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "quantization": f"int{self.quantize_bits}" if self.quantize_bits else
            (f"int{model.config.quantization_bit}" if getattr(model.config, "quantization_bit", 0) else "none"),
            "parameters": sum(p.numel() for p in model.parameters()),
            "context_window": self.context_window,
        }  # fmt: skip
