"""The real ChatGLM2-6B folder layout, against the official code's own outputs.

``../shared/fixtures/chatglm2-tiny`` is a ChatGLM2-6B folder exactly as users download it (the
model repository's code files unchanged, the official config shrunk, random weights) with
``reference_outputs.json``: what the official code produced with it under transformers 4.30.2.
The folder is used in place, read-only, as a user's folder is. Skipped when ../shared is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from kb_qa.llm import ChatLLM
from kb_qa.llm.base import GenerationParams
from kb_qa.llm.chatglm2_native import ResponseStream, is_chatglm2, unpack_int4
from kb_qa.llm.chatglm_backend import ChatGLMBackend, chatglm_device_map, native_module_names

pytestmark = pytest.mark.integration

SHARED = Path(os.environ.get("KBQA_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")).parent
FOLDER = SHARED / "fixtures" / "chatglm2-tiny"
if not FOLDER.is_dir():
    pytest.skip("../shared/fixtures/chatglm2-tiny is absent", allow_module_level=True)

REFERENCE: dict[str, Any] = json.loads((FOLDER / "reference_outputs.json").read_text(encoding="utf-8"))
CASES = REFERENCE["cases"]


@pytest.fixture(scope="module")
def backend() -> ChatGLMBackend:
    return ChatGLMBackend(FOLDER, name="chatglm2-6b", device="cpu").load()


def messages(case: dict[str, Any]) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for question, answer in case["history"]:
        turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [*turns, {"role": "user", "content": case["query"]}]


def reference_length(case: dict[str, Any]) -> int:
    return 16  # make_reference.py: max_length = prompt length + 16


def test_the_folder_is_recognised_and_loaded_natively(backend: ChatGLMBackend) -> None:
    assert is_chatglm2(FOLDER) and backend.native
    assert type(backend.model).__name__ == "GlmForCausalLM"
    info = backend.info()
    assert info["loader"].startswith("native") and info["dtype"] == "float32" and info["quantization"] == "none"
    assert backend.context_window == 2048  # the config's seq_length


@pytest.mark.parametrize("case", CASES, ids=[c["query"] for c in CASES])
def test_prompt_and_input_ids_equal_the_official_tokenizers(backend: ChatGLMBackend, case: dict[str, Any]) -> None:
    assert backend.tokenizer.build_prompt(case["query"], case["history"]) == case["prompt"]
    assert backend.prompt_ids(messages(case)) == case["input_ids"]


@pytest.mark.parametrize("case", CASES, ids=[c["query"] for c in CASES])
def test_last_position_logits_equal_the_official_models(backend: ChatGLMBackend, case: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        logits = backend.model(input_ids=torch.tensor([case["input_ids"]])).logits[0, -1]
    top = torch.topk(logits, 5)
    assert top.indices.tolist() == case["last_logits_top5_ids"]
    assert top.values.tolist() == pytest.approx(case["last_logits_top5_values"], abs=1e-3)
    assert float(logits.sum()) == pytest.approx(case["last_logits_sum"], abs=1e-2)


@pytest.mark.parametrize("case", CASES, ids=[c["query"] for c in CASES])
def test_greedy_answers_through_chat_llm_equal_the_official_chat(backend: ChatGLMBackend, case: dict[str, Any]) -> None:
    llm = ChatLLM(backend=backend, system_prompt="", temperature=0.0, repetition_penalty=1.0,
                  max_new_tokens=reference_length(case))  # fmt: skip
    history = [list(pair) for pair in case["history"]]
    chunks = list(llm.stream(case["query"], history=history))
    invoked = llm.invoke(case["query"], history=history)
    # stream_chat's last response; chat() also keeps a half character cut off at the length limit
    assert "".join(chunks) == invoked == case["greedy_stream_chat_final"]
    assert case["greedy_chat_response"].rstrip("\ufffd") == invoked
    assert len(chunks) > 3  # streamed token by token, not at the end


def test_a_system_prompt_goes_in_front_of_the_first_question(backend: ChatGLMBackend) -> None:
    ids = backend.prompt_ids([{"role": "system", "content": "请用中文回答。"}, {"role": "user", "content": "你好"}])
    assert ids == backend.tokenizer.prefix + backend.tokenizer.encode("[Round 1]\n\n问：请用中文回答。\n\n你好\n\n答：")


def test_cancel_stops_the_stream_and_counts_use_the_models_tokenizer(backend: ChatGLMBackend) -> None:
    cancel = threading.Event()
    received = []
    params = GenerationParams(max_new_tokens=64, temperature=0.0, repetition_penalty=1.0)
    for delta in backend.stream([{"role": "user", "content": "你好"}], params, cancel):
        received.append(delta)
        if len(received) == 2:
            cancel.set()
    assert len(received) == 2
    assert backend.count_tokens("年假可以顺延几天？") == len(backend.tokenizer.sp.encode("年假可以顺延几天？"))


def test_process_response_on_a_stream() -> None:
    stream = ResponseStream()
    pieces = [" ", " 今年", "是 ", "[[训练", "时间]]", "，好 ", "  "]
    full, out = "", []
    for piece in pieces:
        full += piece
        out.append(stream.feed(full))
    out.append(stream.finish(full))
    assert "".join(out) == "今年是 2023年，好"


def test_the_device_map_fits_the_native_models_modules(backend: ChatGLMBackend) -> None:
    names = {name for name, _ in backend.model.named_modules()}
    layers = backend.model.config.num_hidden_layers
    assert native_module_names(layers) <= names
    device_map = chatglm_device_map(native_module_names(layers), layers, num_gpus=2)
    assert device_map["model.embed_tokens"] == 0 and device_map["lm_head"] == 0
    assert device_map[f"model.layers.{layers - 1}"] == 1
    for param_name, _ in backend.model.named_parameters():  # each parameter placed exactly once
        owners = [m for m in device_map if param_name == m or param_name.startswith(m + ".")]
        assert len(owners) == 1, param_name


def _quantize_like_the_official_code(weight: Any, bits: int) -> tuple[Any, Any]:
    """quantization.py's QuantizedLinear on a CPU: per-row scale, round, and for 4 bits pack two
    values per byte high nibble first (its compress_int4_weight kernel)."""
    import torch

    scale = weight.abs().max(dim=-1).values / (2 ** (bits - 1) - 1)
    values = torch.round(weight / scale[:, None]).to(torch.int8)
    if bits == 4:
        pairs = values.reshape(values.shape[0], -1, 2)
        values = ((pairs[..., 0] << 4) | (pairs[..., 1] & 0x0F)).to(torch.int8)
    return values, scale


@pytest.mark.parametrize("bits", [4, 8])
def test_an_int_checkpoint_is_dequantized_on_load(tmp_path: Path, backend: ChatGLMBackend, bits: int) -> None:
    """chatglm2-6b-int4/-int8 store each layer's four linear weights as int8 plus a per-row scale
    (config quantization_bit); this folder is made from the tiny one the way quantize() makes them."""
    import torch

    folder = tmp_path / f"chatglm2-6b-int{bits}"
    shutil.copytree(FOLDER, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    state = torch.load(str(FOLDER / "pytorch_model.bin"), map_location="cpu", weights_only=True)
    restored = {}
    for key in [k for k in state if k.endswith(".weight") and ("self_attention." in k or ".mlp." in k)]:
        state[key], state[key[: -len("weight")] + "weight_scale"] = _quantize_like_the_official_code(state[key], bits)
        restored[key] = state[key]
    torch.save(state, str(folder / "pytorch_model.bin"))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "quantization_bit": bits}), encoding="utf-8")

    quantized = ChatGLMBackend(folder, name=folder.name, device="cpu").load()
    assert "checkpoint" in quantized.info()["quantization"]
    layer = quantized.model.model.layers[0]
    original = backend.model.model.layers[0]
    error = (layer.mlp.down_proj.weight - original.mlp.down_proj.weight).detach().abs().max()
    step = original.mlp.down_proj.weight.detach().abs().max() / (2 ** (bits - 1) - 1)
    assert 0 < float(error) <= float(step) / 2 + 1e-6  # rounding error only: unpacked in the right order
    ids = torch.tensor([CASES[0]["input_ids"]])
    with torch.no_grad():
        logits = quantized.model(input_ids=ids).logits[0, -1]
    near = torch.tensor(CASES[0]["last_logits_top5_values"])
    assert (logits[CASES[0]["last_logits_top5_ids"]] - near).abs().max() < (0.05 if bits == 8 else 0.5)


def test_unpacking_int4_reads_the_high_nibble_first() -> None:
    import torch

    packed = torch.tensor([[0x7F, -0x80 + 0x01, 0x0F]], dtype=torch.int8)  # (7,-1) (-8,1) (0,-1)
    assert unpack_int4(packed).tolist() == [[7, -1, -8, 1, 0, -1]]


def test_chatglm3_and_other_folders_go_to_their_own_code(tmp_path: Path) -> None:
    folder = tmp_path / "chatglm3-6b"
    shutil.copytree(FOLDER, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    code = folder / "tokenization_chatglm.py"
    code.write_text(code.read_text(encoding="utf-8") + "\n# <|observation|>\n", encoding="utf-8")
    assert not is_chatglm2(folder)
    from kb_qa.errors import ModelUnavailable

    # the official code of this generation does not run under transformers 5: one line saying what to do
    with pytest.raises(ModelUnavailable, match=r"does not run under transformers .* llm\.backend: llamacpp"):
        ChatGLMBackend(folder, name="chatglm3-6b", device="cpu").load()


def test_a_truncated_weight_file_names_itself(tmp_path: Path) -> None:
    folder = tmp_path / "chatglm2-6b"
    shutil.copytree(FOLDER, folder)
    weights = folder / "pytorch_model.bin"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:1000])
    from kb_qa.errors import ModelUnavailable

    with pytest.raises(ModelUnavailable, match=r"pytorch_model\.bin.*download it again"):
        ChatGLMBackend(folder, name="chatglm2-6b", device="cpu").load()


def test_quantization_without_a_gpu_says_what_to_do() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from kb_qa.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        ChatGLMBackend(FOLDER, name="chatglm2-6b", device="cpu", quantize_bits=4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_on_the_gpu_keeps_the_top_token(dtype: str) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    gpu = ChatGLMBackend(FOLDER, name="chatglm2-6b", device="cuda", dtype=dtype).load()
    ids = torch.tensor([CASES[2]["input_ids"]], device="cuda")
    with torch.no_grad():
        logits = gpu.model(input_ids=ids).logits[0, -1].float()
    assert int(logits.argmax()) == CASES[2]["last_logits_top5_ids"][0]
