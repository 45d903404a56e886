"""ChatGLM2-6B (and -32k, -int4, -int8) without its own code: transformers' native GLM classes.

ChatGLM2's official code (``modeling_chatglm.py``) was written for transformers 4.30 and does not
run under the transformers this project uses (its tokenizer fails on ``vocab_size`` being read
during ``__init__``; its model reads ``config.max_length``, and its ``stream_generate`` calls
generation internals that changed). The architecture itself is what transformers ships as
``GlmForCausalLM`` (GLM-4 kept ChatGLM2's design): RMSNorm, multi-query attention with a bias on
the query/key/value projection, rotary embedding on the first half of each head's dimensions
with interleaved pairs, SwiGLU. So a ChatGLM2 folder is loaded like this, every time, in memory:

- **weights**: the official state dict (``pytorch_model*.bin`` or ``*.safetensors``, sharded or
  not) renamed to GLM's module names; the fused ``query_key_value`` is split into q/k/v (views, no
  copy). The -int4/-int8 checkpoints (``quantization_bit`` in config.json) are de-quantized on
  load exactly as the official CPU kernels do (int4: high nibble first, both sign-extended, times
  the row's ``weight_scale``). Nothing is written to disk; the cost is the time to read the files.
- **tokenizer**: the folder's ``tokenizer.model`` through sentencepiece, with ChatGLM2's five
  special tokens after the vocabulary ([MASK] [gMASK] [sMASK] sop eop) and its ``[gMASK] sop``
  prefix, as ``tokenization_chatglm.py`` does.
- **prompt**: ChatGLM2's ``build_prompt``: ``[Round n]\\n\\n问：…\\n\\n答：`` per turn.
- **answer**: ``process_response`` (strip; ``[[训练时间]]`` → ``2023年``), streamed.

tests/integration/test_llm_chatglm2_real.py checks all of it against what the official code
produces under transformers 4.30.2 (``../shared/fixtures/chatglm2-tiny/reference_outputs.json``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kb_qa.errors import ModelUnavailable

SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop")
TRAINING_TIME = ("[[训练时间]]", "2023年")  # the official process_response replacement


def read_config(folder: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"{folder}/config.json cannot be read: {exc}") from exc
    return config


def is_chatglm2(folder: Path) -> bool:
    """A ChatGLM2-6B style folder (also -32k, -int4, -int8): model_type chatglm with the v2 layout
    (multi-query attention, RMSNorm) and ChatGLM2's tokenizer (not ChatGLM3's role tokens)."""
    if not (folder / "config.json").is_file() or not (folder / "tokenizer.model").is_file():
        return False
    config = read_config(folder)
    v2 = config.get("model_type") == "chatglm" and "multi_query_attention" in config and "padded_vocab_size" in config
    code = folder / "tokenization_chatglm.py"
    chatglm3 = code.is_file() and "<|observation|>" in code.read_text(encoding="utf-8", errors="replace")
    return bool(v2 and config.get("rmsnorm", True) and not chatglm3)


def glm_config(config: dict[str, Any]) -> Any:
    """transformers' GlmConfig for a ChatGLM2 config.json."""
    from transformers import GlmConfig

    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("kv_channels") or config["hidden_size"] // heads)
    groups = int(config["multi_query_group_num"]) if config.get("multi_query_attention") else heads
    unsupported = [
        key
        for key, fine in (
            ("add_bias_linear", not config.get("add_bias_linear", False)),
            ("apply_residual_connection_post_layernorm", not config.get("apply_residual_connection_post_layernorm")),
            ("post_layer_norm", config.get("post_layer_norm", True)),
            ("pre_seq_len", not config.get("pre_seq_len")),
        )
        if not fine
    ]
    if unsupported:
        raise ModelUnavailable(
            f"this ChatGLM2 config sets {', '.join(unsupported)}, which the native loader does not map"
        )
    eos = config.get("eos_token_id", 2)
    return GlmConfig(
        vocab_size=int(config["padded_vocab_size"]),
        hidden_size=int(config["hidden_size"]),
        intermediate_size=int(config["ffn_hidden_size"]),
        num_hidden_layers=int(config["num_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=groups,
        head_dim=head_dim,
        max_position_embeddings=int(config.get("seq_length", 2048)),
        rms_norm_eps=float(config.get("layernorm_epsilon", 1e-5)),
        attention_bias=bool(config.get("add_qkv_bias", True)),
        tie_word_embeddings=False,
        pad_token_id=config.get("pad_token_id", 0),
        eos_token_id=eos,
        bos_token_id=None,
        # ChatGLM2: RotaryEmbedding(kv_channels // 2), base 10000 (rope_ratio scales it in -32k variants)
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0 * float(config.get("rope_ratio", 1.0)),
            "partial_rotary_factor": 0.5,
        },
    )


# ----------------------------------------------------------------- weights
def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files (safetensors preferred), in order."""
    for pattern in ("model*.safetensors", "pytorch_model*.bin"):
        files = sorted(folder.glob(pattern))
        if files:
            return files
    raise ModelUnavailable(
        f"{folder} has config.json but no weights (model*.safetensors or pytorch_model*.bin); "
        "download the whole THUDM/chatglm2-6b repository into it"
    )


def read_state_dict(folder: Path) -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {}
    for file in weight_files(folder):
        try:
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                state.update(load_file(str(file)))
            else:
                state.update(torch.load(str(file), map_location="cpu", weights_only=True, mmap=True))
        except Exception as exc:  # a truncated or foreign file: say which one
            raise ModelUnavailable(f"cannot read {file.name} in {folder}: {exc}; download it again") from exc
    return state


def unpack_int4(packed: Any) -> Any:
    """int8 bytes holding two 4-bit values each (high nibble first) → int8 values in -8..7, as the
    official ``extract_int4_weight_to_float`` reads them."""
    import torch

    high = packed >> 4  # arithmetic shift: sign-extends the high nibble
    low = (packed << 4) >> 4  # the low nibble moved up and back: sign-extended too
    return torch.stack((high, low), dim=-1).reshape(packed.shape[0], packed.shape[1] * 2)


def dequantize(weight: Any, scale: Any, bits: int, dtype: Any) -> Any:
    values = unpack_int4(weight) if bits == 4 else weight
    return values.to(dtype) * scale.to(dtype)[:, None]


def convert_state_dict(state: dict[str, Any], config: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """The official ChatGLM2 tensors under GlmForCausalLM's names (quantized weights restored)."""
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("kv_channels") or config["hidden_size"] // heads)
    groups = int(config["multi_query_group_num"]) if config.get("multi_query_attention") else heads
    q_size, kv_size = heads * head_dim, groups * head_dim
    bits = int(config.get("quantization_bit") or 0)
    renames = {
        ".self_attention.dense.": ".self_attn.o_proj.",
        ".mlp.dense_h_to_4h.": ".mlp.gate_up_proj.",
        ".mlp.dense_4h_to_h.": ".mlp.down_proj.",
    }
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        if key.endswith(".weight_scale") or key.endswith("rotary_pos_emb.inv_freq"):
            continue  # scales are folded in below; the rotary table is computed from the config
        if bits and key.endswith(".weight") and key[: -len("weight")] + "weight_scale" in state:
            tensor = dequantize(tensor, state[key[: -len("weight")] + "weight_scale"], bits, dtype)
        if key == "transformer.embedding.word_embeddings.weight":
            out["model.embed_tokens.weight"] = tensor
        elif key == "transformer.encoder.final_layernorm.weight":
            out["model.norm.weight"] = tensor
        elif key == "transformer.output_layer.weight":
            out["lm_head.weight"] = tensor
        elif key.startswith("transformer.encoder.layers."):
            name = "model.layers." + key[len("transformer.encoder.layers.") :]
            if ".self_attention.query_key_value." in name:
                kind = name.rsplit(".", 1)[1]
                base = name.replace(f".self_attention.query_key_value.{kind}", ".self_attn.")
                q, k, v = tensor.split([q_size, kv_size, kv_size], dim=0)
                out[f"{base}q_proj.{kind}"], out[f"{base}k_proj.{kind}"], out[f"{base}v_proj.{kind}"] = q, k, v
                continue
            for old, new in renames.items():
                name = name.replace(old, new)
            out[name] = tensor
        else:
            raise ModelUnavailable(
                f"unexpected tensor {key!r} in the ChatGLM2 checkpoint (P-tuning prefixes are not supported)"
            )
    return out


# ----------------------------------------------------------------- tokenizer
class ChatGLM2Tokenizer:
    """ChatGLM2's tokenizer (tokenization_chatglm.py) on sentencepiece, without transformers."""

    def __init__(self, model_file: Path) -> None:
        try:
            from sentencepiece import SentencePieceProcessor
        except ImportError as exc:
            raise ModelUnavailable("ChatGLM's tokenizer needs sentencepiece: pip install sentencepiece") from exc
        self.sp = SentencePieceProcessor(model_file=str(model_file))
        size = self.sp.vocab_size()
        self.special = {token: size + i for i, token in enumerate(SPECIAL_TOKENS)}
        self.eos_id = self.sp.eos_id()
        self.prefix = [self.special["[gMASK]"], self.special["sop"]]

    @staticmethod
    def build_prompt(query: str, history: Sequence[Sequence[str]] = ()) -> str:
        prompt = ""
        for i, (old_query, response) in enumerate(history):
            prompt += f"[Round {i + 1}]\n\n问：{old_query}\n\n答：{response}\n\n"
        return prompt + f"[Round {len(history) + 1}]\n\n问：{query}\n\n答："

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def prompt_ids(self, query: str, history: Sequence[Sequence[str]] = ()) -> list[int]:
        return self.prefix + self.encode(self.build_prompt(query, history))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        # the official decode drops its special tokens and bos/eos/pad (their pieces decode to "")
        size = self.sp.vocab_size()
        return str(self.sp.decode([int(i) for i in ids if 0 <= int(i) < size]))


def process_response(text: str) -> str:
    return text.strip().replace(*TRAINING_TIME)


class ResponseStream:
    """ChatGLM2's ``process_response`` applied to a growing answer, as deltas.

    Leading spaces are dropped, trailing spaces and a tail that could become ``[[训练时间]]`` are
    held back until the text after them arrives; at the end what is held back is stripped."""

    def __init__(self) -> None:
        self.sent = ""

    def feed(self, full: str) -> str:
        text = full.lstrip().replace(*TRAINING_TIME)
        keep = len(text) - len(text.rstrip())
        marker = TRAINING_TIME[0]
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:size]):
                keep = max(keep, size)
                break
        ready = text[: len(text) - keep]
        if not ready.startswith(self.sent):
            return ""  # never take back what was sent
        delta, self.sent = ready[len(self.sent) :], ready
        return delta

    def finish(self, full: str) -> str:
        text = process_response(full)
        if not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta
