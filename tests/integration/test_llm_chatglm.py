"""The ChatGLM remote-code path, against a STAND-IN checkpoint (tests/llm_fixtures/chatglm_standin).

ChatGLM2-6B folders load natively and are tested against the real official files and their
reference outputs (test_llm_chatglm2_real.py). Other ChatGLM folders (ChatGLM-6B, ChatGLM3-6B) go
through their own code; no such code that runs under transformers 5 exists here, so the folder
these tests build holds a stand-in that implements the published interface (``chat``,
``stream_chat``, ``quantize``) and ChatGLM2/3's module names (for the official device map). The
backend loads it as it loads such a folder: ``AutoTokenizer``/``AutoModel.from_pretrained(path,
trust_remote_code=True)``.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from kb_qa.llm import ChatLLM
from kb_qa.llm.base import GenerationParams
from kb_qa.llm.chatglm_backend import ChatGLMBackend, chatglm_device_map

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parent.parent / "llm_fixtures" / "chatglm_standin"


@pytest.fixture()
def standin(tmp_path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, PreTrainedTokenizerFast

    folder = tmp_path / "chatglm2-6b-standin"
    folder.mkdir()
    for name in ("configuration_standin.py", "modeling_standin.py"):
        shutil.copy(FIXTURE / name, folder / name)
    config = {
        "model_type": "chatglm_standin",
        "architectures": ["StandInChatGLMModel"],
        "auto_map": {
            "AutoConfig": "configuration_standin.StandInChatGLMConfig",
            "AutoModel": "modeling_standin.StandInChatGLMModel",
        },
        "num_layers": 28,
        "hidden_size": 8,
        "seq_length": 32768,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    vocab = {"<unk>": 0, "<pad>": 1, **{c: i + 2 for i, c in enumerate("你好年假几天abcdefghijklmnopqrstuvwxyz")}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>").save_pretrained(
        str(folder)
    )
    model_class = AutoConfig.from_pretrained(str(folder), trust_remote_code=True)
    from transformers import AutoModel

    AutoModel.from_config(model_class, trust_remote_code=True).save_pretrained(str(folder))
    return folder


def test_loads_through_remote_code_on_the_cpu_in_fp32(standin: Path) -> None:
    backend = ChatGLMBackend(standin, name="chatglm2-6b", device="cpu").load()
    assert type(backend.model).__name__ == "StandInChatGLMModel"
    assert ("float",) in backend.model.calls and ("half",) not in backend.model.calls
    info = backend.info()
    assert info["backend"] == "chatglm" and info["dtype"] == "float32" and info["quantization"] == "none"
    assert backend.context_window == 32768


def test_quantize_goes_through_the_models_own_method(standin: Path) -> None:
    backend = ChatGLMBackend(standin, name="chatglm2-6b", device="cpu", quantize_bits=4).load()
    assert ("quantize", 4) in backend.model.calls
    assert backend.info()["quantization"] == "int4"


def test_stream_chat_gives_deltas_with_history_pairs_and_the_system_prompt(standin: Path) -> None:
    backend = ChatGLMBackend(standin, name="chatglm2-6b", device="cpu").load()
    llm = ChatLLM(backend=backend, system_prompt="请用中文回答。", temperature=0.0)
    chunks = list(llm.stream("年假几天？", history=[["你好", "你好！"]]))
    assert len(chunks) > 5 and all(chunks)
    assert "".join(chunks) == "你问的是：年假几天？（此前1轮）"
    call = next(c for c in backend.model.calls if c[0] == "stream_chat")
    assert call[1] == "年假几天？"
    assert call[2] == [["请用中文回答。\n\n你好", "你好！"]]  # ChatGLM2 has no system role
    assert call[3]["do_sample"] is False
    # without history the instruction goes in front of the question itself
    assert llm.invoke("年假几天？", stop=["（"]) == "你问的是：请用中文回答。\n\n年假几天？"


def test_a_cancelled_stream_closes_the_models_generator(standin: Path) -> None:
    backend = ChatGLMBackend(standin, name="chatglm2-6b", device="cpu").load()
    cancel = threading.Event()
    received = []
    for delta in backend.stream([{"role": "user", "content": "你好"}], GenerationParams(), cancel):
        received.append(delta)
        if len(received) == 2:
            cancel.set()
    assert len(received) == 2


def test_the_official_device_map_fits_the_models_module_names(standin: Path) -> None:
    backend = ChatGLMBackend(standin, name="chatglm2-6b", device="cpu").load()
    names = {name for name, _ in backend.model.named_modules()}
    device_map = chatglm_device_map(names, ChatGLMBackend.num_layers(backend.model), num_gpus=2)
    assert set(device_map) <= names  # every entry names a real module
    assert device_map["transformer.embedding.word_embeddings"] == 0
    assert device_map["transformer.output_layer"] == 0
    assert device_map["transformer.encoder.layers.27"] == 1
    # every parameter is covered by exactly one entry, as accelerate's dispatch requires
    for param_name, _ in backend.model.named_parameters():
        owners = [m for m in device_map if param_name.startswith(m + ".")]
        assert len(owners) == 1, param_name


@pytest.mark.gpu
def test_split_over_two_gpus(standin: Path) -> None:
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    backend = ChatGLMBackend(standin, name="chatglm2-6b", device="cuda", num_gpus=2).load()
    assert set(backend.model.hf_device_map.values()) == {0, 1}


def test_a_folder_without_a_checkpoint_says_what_to_do(tmp_path: Path) -> None:
    from kb_qa.errors import ModelUnavailable

    with pytest.raises(ModelUnavailable, match=r"point llm\.model at it"):
        ChatGLMBackend(tmp_path, name="chatglm2-6b")
