"""STAND-IN for ChatGLM2-6B's modeling_chatglm.py (tests only; no real model, no weights that mean anything).

It has ChatGLM2's module names (so device maps can be computed and applied exactly as for the
real model) and implements the published interface kb-qa uses: ``chat``, ``stream_chat``
(yielding the growing response and the new history) and ``quantize(bits)``. Its answers are
deterministic echoes, and every call is recorded in ``self.calls`` for the tests to inspect.
"""

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration_standin import StandInChatGLMConfig


class Embedding(nn.Module):
    def __init__(self, config: StandInChatGLMConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, config.hidden_size)


class Encoder(nn.Module):
    def __init__(self, config: StandInChatGLMConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size) for _ in range(config.num_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size)


class RotaryEmbedding(nn.Module):
    def __init__(self, config: StandInChatGLMConfig) -> None:
        super().__init__()
        self.register_buffer("inv_freq", torch.ones(config.hidden_size // 2))


class Transformer(nn.Module):
    def __init__(self, config: StandInChatGLMConfig) -> None:
        super().__init__()
        self.embedding = Embedding(config)
        self.rotary_pos_emb = RotaryEmbedding(config)
        self.encoder = Encoder(config)
        self.output_layer = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False)


class StandInChatGLMModel(PreTrainedModel):
    config_class = StandInChatGLMConfig
    base_model_prefix = "transformer"

    def __init__(self, config: StandInChatGLMConfig) -> None:
        super().__init__(config)
        self.transformer = Transformer(config)
        self.calls: list[tuple[Any, ...]] = []
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass

    def quantize(self, bits: int) -> "StandInChatGLMModel":
        self.calls.append(("quantize", bits))
        self.config.quantization_bit = bits
        return self

    def half(self) -> "StandInChatGLMModel":
        self.calls.append(("half",))
        return super().half()

    def float(self) -> "StandInChatGLMModel":
        self.calls.append(("float",))
        return super().float()

    def stream_chat(self, tokenizer: Any, query: str, history: Any = None, **kwargs: Any) -> Any:
        history = list(history or [])
        self.calls.append(
            ("stream_chat", query, [list(h) if isinstance(h, (list, tuple)) else h for h in history], kwargs)
        )
        answer = f"你问的是：{query}（此前{len(history)}轮）"
        response = ""
        for character in answer:
            response += character
            yield response, [*history, (query, response)]

    def chat(self, tokenizer: Any, query: str, history: Any = None, **kwargs: Any) -> tuple[str, Any]:
        *_, last = self.stream_chat(tokenizer, query, history, **kwargs)
        return last
