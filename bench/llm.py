"""LLM streaming benchmark: the LLM class's streaming path against raw ``model.generate``.

    .venv/bin/python bench/llm.py [--tokens 128] [--runs 5]

Same model (the configured one; default the bundled SmolLM2-135M-Instruct), same prompt, greedy
decoding, repetition penalty 1, so both produce the same tokens. Measured in one run, alternating:
- tokens/s: generated tokens / wall time of the whole answer;
- time to first token: raw = ``generate(max_new_tokens=1)``; ours = time until ``ChatLLM.stream``
  yields its first text.
Targets: >= 0.95 of raw tokens/s, <= 50 ms extra time to first token. Writes docs/benchmarks/llm.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import git_revision, machine, save_result
from kb_qa.llm import ChatLLM
from kb_qa.llm.factory import build_backend
from kb_qa.llm.transformers_backend import TransformersBackend
from kb_qa.settings import load_settings

PROMPT = "Explain in a few paragraphs why regular backups matter for a small company."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import torch

    backend = build_backend(load_settings())
    if not isinstance(backend, TransformersBackend):
        raise SystemExit("bench/llm.py measures the in-process transformers backend")
    backend.load()
    llm = ChatLLM(
        backend=backend, system_prompt="", temperature=0.0, repetition_penalty=1.0, max_new_tokens=args.tokens
    )
    messages = llm.messages(PROMPT)
    inputs = backend.prompt_inputs(messages)
    params = llm.params()
    raw_kwargs = {**inputs, **backend.generate_kwargs(params)}
    prompt_length = inputs["input_ids"].shape[1]

    def raw_full() -> tuple[float, int, str]:
        started = time.perf_counter()
        with torch.inference_mode():
            out = backend.model.generate(**raw_kwargs)
        seconds = time.perf_counter() - started
        text = backend.tokenizer.decode(out[0][prompt_length:], skip_special_tokens=True)
        return seconds, out.shape[1] - prompt_length, text

    def raw_first() -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            backend.model.generate(**{**raw_kwargs, "max_new_tokens": 1})
        return time.perf_counter() - started

    def ours_full() -> tuple[float, float, str]:
        started = time.perf_counter()
        first = None
        text = []
        for delta in llm.stream_text(messages, params):
            if first is None:
                first = time.perf_counter() - started
            text.append(delta)
        total = time.perf_counter() - started
        return total, first or total, "".join(text)

    raw_full()
    ours_full()  # warm-up of both paths
    raw_tps, ours_tps, raw_ttft, ours_ttft = [], [], [], []
    same_text = True
    for _ in range(args.runs):
        seconds, tokens, raw_text = raw_full()
        raw_tps.append(tokens / seconds)
        # greedy decoding: both paths produce the same tokens, so the raw count is exact for ours too
        total, first, text = ours_full()
        same_text &= text == raw_text
        ours_tps.append(tokens / total)
        raw_ttft.append(raw_first())
        ours_ttft.append(first)
    result = {
        "machine": machine(),
        "revision": git_revision(),
        "model": backend.name,
        "device": backend.device,
        "dtype": str(backend.torch_dtype),
        "max_new_tokens": args.tokens,
        "generated_tokens": tokens,
        "same_text": same_text,
        "runs": args.runs,
        "raw_tokens_per_s": round(statistics.median(raw_tps), 2),
        "ours_tokens_per_s": round(statistics.median(ours_tps), 2),
        "ratio": round(statistics.median(ours_tps) / statistics.median(raw_tps), 3),
        "raw_ttft_ms": round(1000 * statistics.median(raw_ttft), 1),
        "ours_ttft_ms": round(1000 * statistics.median(ours_ttft), 1),
        "extra_ttft_ms": round(1000 * (statistics.median(ours_ttft) - statistics.median(raw_ttft)), 1),
    }
    print(
        f"tokens/s: ours {result['ours_tokens_per_s']} vs raw generate {result['raw_tokens_per_s']} "
        f"-> {result['ratio']} (target >= 0.95)"
    )
    print(
        f"time to first token: ours {result['ours_ttft_ms']} ms vs raw {result['raw_ttft_ms']} ms "
        f"-> +{result['extra_ttft_ms']} ms (target <= 50 ms)"
    )
    print(f"written {save_result('llm', result)}")


if __name__ == "__main__":
    main()
