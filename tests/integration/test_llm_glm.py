"""The GLM path through transformers' native GlmForCausalLM: a tiny randomly initialised model
(small config) with a tokenizer trained inside the test; dtypes and device maps on the CPU."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from kb_qa.llm.base import GenerationParams
from kb_qa.llm.transformers_backend import TransformersBackend

pytestmark = pytest.mark.integration

CHAT_TEMPLATE = (
    "[gMASK]<sop>{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<pad>", "<eos>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>"]


@pytest.fixture(scope="module")
def tiny_glm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GlmConfig, GlmForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-glm")
    corpus = [
        "员工每年享有十五天带薪年假。",
        "Annual leave is fifteen days.",
        "报销需要经理审批。",
        "Hello world!",
    ] * 20
    tokenizer = Tokenizer(models.BPE(unk_token="<eos>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    from tokenizers import decoders

    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(folder))
    config = GlmConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
    )
    torch.manual_seed(0)
    GlmForCausalLM(config).save_pretrained(str(folder))
    return folder


def generate(backend: TransformersBackend, tokens: int = 8) -> str:
    params = GenerationParams(max_new_tokens=tokens, temperature=0.0, repetition_penalty=1.0)
    return "".join(backend.stream([{"role": "user", "content": "年假几天？"}], params, threading.Event()))


@pytest.mark.parametrize(("dtype", "expected"), [("fp32", "float32"), ("bf16", "bfloat16")])
def test_native_glm_generates_in_each_dtype(tiny_glm: Path, dtype: str, expected: str) -> None:
    backend = TransformersBackend(tiny_glm, name="tiny-glm", device="cpu", dtype=dtype).load()
    assert type(backend.model).__name__ == "GlmForCausalLM"
    assert backend.info()["dtype"] == expected
    assert str(next(backend.model.parameters()).dtype) == f"torch.{expected}"
    text = generate(backend)
    assert isinstance(text, str)
    assert generate(backend) == text  # greedy is deterministic
    rendered = backend.tokenizer.decode(backend.prompt_inputs([{"role": "user", "content": "hi"}])["input_ids"][0])
    assert rendered.startswith("[gMASK]<sop><|user|>") and rendered.endswith("<|assistant|>\n")


def test_an_explicit_device_map_places_modules(tiny_glm: Path) -> None:
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu", "model.norm": "cpu",
                  "model.rotary_emb": "cpu", "lm_head": "cpu"}  # fmt: skip
    backend = TransformersBackend(tiny_glm, name="tiny-glm", device="cpu", device_map=device_map).load()
    assert backend.info()["device_map"] == device_map
    assert {str(p.device) for p in backend.model.parameters()} == {"cpu"}
    assert generate(backend, 4) == generate(TransformersBackend(tiny_glm, name="plain", device="cpu").load(), 4)


def test_context_window_comes_from_the_config(tiny_glm: Path) -> None:
    backend = TransformersBackend(tiny_glm, name="tiny-glm", device="cpu")
    assert backend.context_window == 256
    assert TransformersBackend(tiny_glm, name="t", device="cpu", context_window=128).context_window == 128


def test_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    from kb_qa.errors import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="holds no model"):
        TransformersBackend(tmp_path, name="empty", device="cpu")


def test_an_unsupported_gguf_architecture_is_refused(tmp_path: Path) -> None:
    import numpy as np
    from gguf import GGUFWriter

    from kb_qa.errors import ModelUnavailable

    path = tmp_path / "strange.gguf"
    writer = GGUFWriter(str(path), "rwkv7")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelUnavailable, match="'rwkv7' GGUF model, which transformers cannot load"):
        TransformersBackend(path, name="strange", device="cpu")


@pytest.mark.gpu
def test_a_device_map_over_gpu_and_cpu(tiny_glm: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    device_map = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": "cpu", "model.norm": "cpu",
                  "model.rotary_emb": 0, "lm_head": "cpu"}  # fmt: skip
    backend = TransformersBackend(tiny_glm, name="tiny-glm", device="cuda", dtype="fp16", device_map=device_map).load()
    assert set(backend.model.hf_device_map.values()) == {0, "cpu"}
    assert isinstance(generate(backend, 4), str)


@pytest.mark.gpu
@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_bitsandbytes_quantization_on_cuda(tiny_glm: Path, quantization: str) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("bitsandbytes")
    backend = TransformersBackend(tiny_glm, name="tiny-glm", device="cuda", quantization=quantization).load()
    assert backend.info()["quantization"] == quantization
    assert isinstance(generate(backend, 4), str)
