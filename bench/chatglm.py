"""What loading a ChatGLM2 folder natively costs: seconds and memory per GB of checkpoint.

No ChatGLM2-6B weights exist here, so the benchmark writes a ChatGLM2 folder in the official layout
(``../shared/fixtures/chatglm2-tiny``'s config, code and tokenizer, the sizes raised: hidden 2048,
ffn 6912, 8 layers, vocab 65024 — about 0.86 B parameters, 3.4 GB of fp32 ``pytorch_model.bin``)
with random weights, then loads it as a user's folder is loaded (``ChatGLMBackend(...).load()``:
read, rename and split the tensors in memory, build ``GlmForCausalLM``) and reports the seconds, the
peak resident memory and the time to the first token of a short answer on the CPU. The real
chatglm2-6b is 12.5 GB in fp16 (6.2 B parameters); scale by GB read.

    .venv/bin/python bench/chatglm.py [--layers 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, git_revision, machine, save_result


def write_folder(target: Path, layers: int) -> float:
    """A ChatGLM2 folder with random weights; returns the checkpoint's size in GB."""
    import torch

    fixture = SHARED.parent / "fixtures" / "chatglm2-tiny"
    shutil.copytree(fixture, target)
    for path in target.iterdir():
        path.chmod(0o644)
    config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    hidden, ffn, heads, groups, head_dim, vocab = 2048, 6912, 16, 2, 128, 65024
    config.update(hidden_size=hidden, ffn_hidden_size=ffn, num_attention_heads=heads, multi_query_group_num=groups,
                  kv_channels=head_dim, num_layers=layers, padded_vocab_size=vocab, seq_length=8192)  # fmt: skip
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.02

    qkv = heads * head_dim + 2 * groups * head_dim
    state = {"transformer.embedding.word_embeddings.weight": rand(vocab, hidden),
             "transformer.encoder.final_layernorm.weight": torch.ones(hidden),
             "transformer.output_layer.weight": rand(vocab, hidden)}  # fmt: skip
    for i in range(layers):
        prefix = f"transformer.encoder.layers.{i}."
        state.update({
            prefix + "input_layernorm.weight": torch.ones(hidden),
            prefix + "self_attention.query_key_value.weight": rand(qkv, hidden),
            prefix + "self_attention.query_key_value.bias": rand(qkv),
            prefix + "self_attention.dense.weight": rand(hidden, heads * head_dim),
            prefix + "post_attention_layernorm.weight": torch.ones(hidden),
            prefix + "mlp.dense_h_to_4h.weight": rand(2 * ffn, hidden),
            prefix + "mlp.dense_4h_to_h.weight": rand(hidden, ffn),
        })  # fmt: skip
    torch.save(state, str(target / "pytorch_model.bin"))
    return (target / "pytorch_model.bin").stat().st_size / 1e9


def load(folder: Path) -> dict[str, object]:
    """Load the folder as a user's is loaded (in its own process, so that memory is the load's)."""
    from kb_qa.llm.chatglm_backend import ChatGLMBackend

    started = time.perf_counter()
    backend = ChatGLMBackend(folder, name=folder.name, device="cpu").load()
    load_s = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import threading

    from kb_qa.llm.base import GenerationParams

    started = time.perf_counter()  # to the first text, or to the end if the random model stops at once
    params = GenerationParams(max_new_tokens=8, temperature=0.0, repetition_penalty=1.0)
    stream = backend.stream([{"role": "user", "content": "年假可以顺延几天？"}], params, threading.Event())
    first = next(iter(stream), "")
    return {
        "parameters": sum(p.numel() for p in backend.model.parameters()),
        "load_s": round(load_s, 1),
        "peak_rss_mib": round(peak_mib),
        "first_token_s": round(time.perf_counter() - started, 2),
        "first_text": first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--load", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.load:
        print(json.dumps(load(args.load)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "chatglm2-synthetic"
        gigabytes = write_folder(folder, args.layers)
        child = subprocess.run([sys.executable, __file__, "--load", str(folder)], capture_output=True, text=True)
        if child.returncode:
            raise SystemExit(f"loading failed:\n{child.stderr[-3000:]}")
        loaded = json.loads(child.stdout.strip().splitlines()[-1])
    result = {
        "machine": machine(), "revision": git_revision(), "layers": args.layers,
        "checkpoint_gb": round(gigabytes, 2), **loaded, "load_s_per_gb": round(loaded["load_s"] / gigabytes, 1),
    }  # fmt: skip
    print(json.dumps(result, ensure_ascii=False, indent=1))
    save_result("chatglm", result)


if __name__ == "__main__":
    main()
