"""LLM benchmarks: backends side by side, the streaming wrapper's overhead, threads, time to first token.

    .venv/bin/python bench/llm.py [--only backends,wrapper,threads,ttft,streaming] [--tokens 64] [--runs 3]

Every comparison is measured in one run, the two sides alternating, greedy decoding on the same prompt:

- **backends**: llama.cpp vs transformers on the same .gguf (SmolLM2-135M Q4_1 and
  Qwen2.5-Coder-0.5B Q4_K_M; transformers de-quantises it to fp32): decode tokens/s and the peak
  resident memory of each, each side in its own process (so memory is its own).
- **wrapper**: ``ChatLLM.stream`` (the llamacpp backend) vs llama-cpp-python called directly
  (``Llama.create_completion(stream=True)`` on the same prompt tokens), default model: tokens/s.
- **threads**: llama.cpp with 2 threads under four OpenMP waiting settings (ACTIVE: spin;
  PASSIVE: sleep; libgomp's default: spin a while, then sleep; a short GOMP_SPINCOUNT) and with 1
  thread, idle and with another process busy on one core; prefill and decode tokens/s, for each
  bundled model (SmolLM2, the 0.5B, the 1.5B).
- **ttft**: the default model on the sample handbook's 4-passage grounded prompts: time to first
  token split into retrieval, evidence highlights, prefill and the rest; cold (no reuse) vs a second
  question reusing the cached system-prompt prefix; idle vs another process busy.
- **streaming**: the transformers path, ``ChatLLM.stream`` vs raw ``model.generate`` (SmolLM2).

Writes docs/benchmarks/llm.json (each section's figures).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import HANDBOOK_QUESTIONS, git_revision, handbook_services, machine, save_result
from kb_qa.events import Delta, Final, Sources
from kb_qa.settings import PROJECT_DIR

PROMPT = "Explain in a few paragraphs why regular backups matter for a small company."
SMOL = "SmolLM2-135M-Instruct"
QWEN05 = "Qwen2.5-Coder-0.5B-Instruct"


@contextmanager
def busy_core() -> Any:
    """Another process keeping one core busy (a pure-Python loop) while the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def worker(args: argparse.Namespace) -> None:
    """One backend in this process: decode tokens/s and peak memory, printed as JSON."""
    from kb_qa.llm import ChatLLM
    from kb_qa.llm.factory import build_backend
    from kb_qa.settings import load_settings

    llm_cfg: dict[str, Any] = {"backend": args.backend, "model": args.model, "device": "cpu"}
    backend = build_backend(load_settings(overrides={"llm": llm_cfg}))
    backend.load()
    llm = ChatLLM(
        backend=backend, system_prompt="", temperature=0.0, repetition_penalty=1.0, max_new_tokens=args.tokens
    )
    messages = llm.messages(PROMPT)
    rates = []
    text = ""
    for _ in range(args.runs + 1):  # the first run warms up
        first = None
        parts = []
        for delta in llm.stream_text(messages, llm.params()):
            if first is None:
                first = time.perf_counter()
            parts.append(delta)
        end = time.perf_counter()
        text = "".join(parts)
        tokens = backend.count_tokens(text)
        rates.append((tokens - 1) / (end - (first or end)) if tokens > 1 else 0.0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"decode_tokens_per_s": round(statistics.median(rates[1:]), 2), "peak_rss_bytes": peak,
                      "tokens": tokens, "text": text[:80]}))  # fmt: skip


def _run_worker(backend: str, model: str, tokens: int, runs: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "worker", "--backend", backend, "--model", model, "--tokens", str(tokens),
         "--runs", str(runs)],
        capture_output=True, text=True, check=True, cwd=PROJECT_DIR,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def bench_backends(tokens: int, runs: int) -> dict[str, Any]:
    rows = {}
    for model in (SMOL, QWEN05):
        cpp = _run_worker("llamacpp", model, tokens, runs)
        hf = _run_worker("transformers", model, tokens, runs)
        ratio = cpp["decode_tokens_per_s"] / hf["decode_tokens_per_s"]
        rows[model] = {"llamacpp": cpp, "transformers": hf, "decode_ratio": round(ratio, 2)}
        print(
            f"{model}: decode llama.cpp {cpp['decode_tokens_per_s']} vs transformers {hf['decode_tokens_per_s']} "
            f"tokens/s -> {ratio:.2f}x (target >= 3x); peak memory {cpp['peak_rss_bytes'] / 2**20:.0f} vs "
            f"{hf['peak_rss_bytes'] / 2**20:.0f} MiB",
            flush=True,
        )
    return rows


def bench_wrapper(tokens: int, runs: int) -> dict[str, Any]:
    from kb_qa.llm import ChatLLM
    from kb_qa.llm.factory import build_backend
    from kb_qa.llm.llamacpp_backend import LlamaCppBackend
    from kb_qa.settings import load_settings

    backend = build_backend(load_settings())
    assert isinstance(backend, LlamaCppBackend)
    backend.load()
    llm = ChatLLM(backend=backend, system_prompt="", temperature=0.0, repetition_penalty=1.0, max_new_tokens=tokens)
    messages = llm.messages(PROMPT)
    prompt = backend.prompt_tokens(messages)
    llama = backend.llama

    def direct() -> tuple[float, str]:
        llama.reset()
        first = None
        parts = []
        for chunk in llama.create_completion(prompt, max_tokens=tokens, temperature=0.0, top_k=40, top_p=0.9,
                                             min_p=0.0, repeat_penalty=1.0, stream=True):  # fmt: skip
            if first is None:
                first = time.perf_counter()
            parts.append(chunk["choices"][0]["text"])
        end = time.perf_counter()
        text = "".join(parts)
        return (backend.count_tokens(text) - 1) / (end - (first or end)), text

    def ours() -> tuple[float, str]:
        llama.reset()
        first = None
        parts = []
        for delta in llm.stream_text(messages, llm.params()):
            if first is None:
                first = time.perf_counter()
            parts.append(delta)
        end = time.perf_counter()
        text = "".join(parts)
        return (backend.count_tokens(text) - 1) / (end - (first or end)), text

    direct()
    ours()
    raw_rates, our_rates, same = [], [], True
    for _ in range(runs):
        rate, raw_text = direct()
        raw_rates.append(rate)
        rate, text = ours()
        our_rates.append(rate)
        same &= text == raw_text
    result = {
        "model": backend.name,
        "direct_tokens_per_s": round(statistics.median(raw_rates), 2),
        "ours_tokens_per_s": round(statistics.median(our_rates), 2),
        "ratio": round(statistics.median(our_rates) / statistics.median(raw_rates), 3),
        "same_text": same,
    }
    print(
        f"wrapper: ChatLLM.stream {result['ours_tokens_per_s']} vs llama-cpp-python direct "
        f"{result['direct_tokens_per_s']} tokens/s -> {result['ratio']} (target >= 0.97), same text: {same}",
        flush=True,
    )
    return result


THREADS_SNIPPET = """
import json, sys, time
from llama_cpp import Llama
path, threads = sys.argv[1], int(sys.argv[2])
llm = Llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
text = "The company reimburses travel expenses for employees according to the policy. " * 30
toks = llm.tokenize(text.encode(), add_bos=False, special=False)
best = None
for _ in range(2):
    llm.reset()
    t = time.perf_counter(); first = None; n = 0
    for tok in llm.generate(toks, temp=0.0, top_k=1):
        if first is None: first = time.perf_counter()
        n += 1
        if n >= 48: break
    end = time.perf_counter()
    row = (len(toks) / (first - t), (n - 1) / (end - first))
    best = row if best is None else (max(best[0], row[0]), max(best[1], row[1]))
print(json.dumps({"prompt_tokens": len(toks), "prefill": round(best[0], 1), "decode": round(best[1], 1)}))
"""


# OpenMP waiting settings compared: spin forever, sleep at once, libgomp's own default (spin
# ~300,000 rounds, then sleep), and a short spin before sleeping
WAIT_SETTINGS = {
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "libgomp default": {},
    "GOMP_SPINCOUNT=20000": {"GOMP_SPINCOUNT": "20000"},
}


def bench_threads(models: list[str]) -> dict[str, Any]:
    from kb_qa.bundled import find_bundled
    from kb_qa.provision import smollm2_gguf

    rows = []
    for name in models:
        bundled = find_bundled(name)
        model = (PROJECT_DIR / ".cache" / "models" / bundled.file_name) if bundled else smollm2_gguf()
        for load in ("idle", "busy"):
            for setting, extra in [*WAIT_SETTINGS.items(), ("1 thread", {})]:
                threads = 1 if setting == "1 thread" else 2
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
                env.update(extra)
                command = [sys.executable, "-c", THREADS_SNIPPET, str(model), str(threads)]
                if load == "busy":
                    with busy_core():
                        out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
                else:
                    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
                row = {"model": name, "load": load, "setting": setting, "threads": threads,
                       **json.loads(out.stdout.splitlines()[-1])}  # fmt: skip
                rows.append(row)
                print(
                    f"threads: {name} {load:4} {setting:21} {threads}: prefill {row['prefill']} tokens/s, "
                    f"decode {row['decode']} tokens/s",
                    flush=True,
                )
    return {"models": models, "rows": rows}


def bench_ttft(runs: int) -> dict[str, Any]:
    from kb_qa.llm.llamacpp_backend import LlamaCppBackend

    with tempfile.TemporaryDirectory() as root:
        services = handbook_services(root)
        qa = services.qa
        backend = qa.llm.backend
        assert isinstance(backend, LlamaCppBackend)
        backend.load()
        rows = []
        for load in ("idle", "busy"):
            for reuse in (False, True):
                for question in HANDBOOK_QUESTIONS[:runs]:
                    if not reuse:
                        backend.llama.reset()  # nothing cached: the whole prompt is prefilled
                    else:  # the previous question left the shared system-prompt prefix in the cache
                        qa.ask(HANDBOOK_QUESTIONS[-1], knowledge_bases=["handbook"],
                               generation={"temperature": 0.0, "max_new_tokens": 1})  # fmt: skip
                    row = _timed_answer(qa, backend, question, load)
                    row["reuse"] = reuse
                    rows.append(row)
        summary = {}
        for load in ("idle", "busy"):
            for reuse in (False, True):
                picked = [r for r in rows if r["load"] == load and r["reuse"] == reuse]
                key = f"{load}-{'reuse' if reuse else 'cold'}"
                fields = ("sources_ms", "prefill_ms", "first_token_ms", "prompt_tokens", "reused")
                summary[key] = {k: round(statistics.median(r[k] for r in picked), 1) for k in fields}
                s = summary[key]
                print(
                    f"ttft {key:12}: sources after {s['sources_ms']} ms, first token {s['first_token_ms']} ms "
                    f"(prefill {s['prefill_ms']} ms of {s['prompt_tokens']} prompt tokens, {s['reused']} reused)",
                    flush=True,
                )
    return {"model": backend.name, "n_threads": backend.n_threads, "summary": summary, "rows": rows}


def _timed_answer(qa: Any, backend: Any, question: str, load: str) -> dict[str, Any]:
    llama = backend.llama
    cached_before = llama.n_tokens
    prefix_before = list(llama._input_ids[:cached_before])
    started = time.perf_counter()
    sources_at = first_at = None
    run = busy_core() if load == "busy" else _nothing()
    with run:
        for event in qa.stream(question, knowledge_bases=["handbook"],
                               generation={"temperature": 0.0, "max_new_tokens": 8}):  # fmt: skip
            now = time.perf_counter()
            if isinstance(event, Sources) and sources_at is None:
                sources_at = now
            elif isinstance(event, Delta) and first_at is None:
                first_at = now
            elif isinstance(event, Final):
                final = event.answer
    messages_tokens = len(llama._input_ids[: llama.n_tokens])
    reused = 0
    for a, b in zip(prefix_before, llama._input_ids, strict=False):
        if a != b:
            break
        reused += 1
    first_ms = 1000 * ((first_at or time.perf_counter()) - started)
    sources_ms = 1000 * ((sources_at or started) - started)
    return {
        "question": question,
        "load": load,
        "sources_ms": sources_ms,
        "first_token_ms": first_ms,
        "prefill_ms": final["timings"].get("first_token_ms", 0.0),
        "highlights_ms": final["timings"].get("highlights_ms", 0.0),
        "retrieval_ms": final["timings"].get("retrieval_ms", 0.0),
        "prompt_tokens": messages_tokens,
        "reused": reused,
    }


@contextmanager
def _nothing() -> Any:
    yield


def bench_streaming(tokens: int, runs: int) -> dict[str, Any]:
    import torch

    from kb_qa.llm import ChatLLM
    from kb_qa.llm.factory import build_backend
    from kb_qa.llm.transformers_backend import TransformersBackend
    from kb_qa.settings import load_settings

    backend = build_backend(load_settings(overrides={"llm": {"backend": "transformers", "model": SMOL}}))
    assert isinstance(backend, TransformersBackend)
    backend.load()
    llm = ChatLLM(backend=backend, system_prompt="", temperature=0.0, repetition_penalty=1.0, max_new_tokens=tokens)
    messages = llm.messages(PROMPT)
    inputs = backend.prompt_inputs(messages)
    params = llm.params()
    raw_kwargs = {**inputs, **backend.generate_kwargs(params)}
    prompt_length = inputs["input_ids"].shape[1]

    def raw_full() -> tuple[float, int]:
        started = time.perf_counter()
        with torch.inference_mode():
            out = backend.model.generate(**raw_kwargs)
        return time.perf_counter() - started, out.shape[1] - prompt_length

    def ours_full() -> float:
        started = time.perf_counter()
        for _ in llm.stream_text(messages, params):
            pass
        return time.perf_counter() - started

    raw_full()
    ours_full()
    raw_tps, ours_tps = [], []
    for _ in range(runs):
        seconds, n = raw_full()
        raw_tps.append(n / seconds)
        ours_tps.append(n / ours_full())
    result = {
        "model": SMOL,
        "raw_tokens_per_s": round(statistics.median(raw_tps), 2),
        "ours_tokens_per_s": round(statistics.median(ours_tps), 2),
        "ratio": round(statistics.median(ours_tps) / statistics.median(raw_tps), 3),
    }
    print(f"transformers streaming: ours {result['ours_tokens_per_s']} vs raw {result['raw_tokens_per_s']} "
          f"-> {result['ratio']} (target >= 0.95)")  # fmt: skip
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        parser = argparse.ArgumentParser()
        parser.add_argument("worker")
        parser.add_argument("--backend")
        parser.add_argument("--model")
        parser.add_argument("--tokens", type=int)
        parser.add_argument("--runs", type=int)
        worker(parser.parse_args())
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="backends,wrapper,threads,ttft,streaming")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads-models", default=f"{SMOL},{QWEN05},Qwen2.5-Coder-1.5B-Instruct",
                        help="models the threads section measures")  # fmt: skip
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    path = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "llm.json"
    sections = ("backends", "wrapper", "threads", "ttft", "streaming")
    earlier = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    result: dict[str, Any] = {k: v for k, v in earlier.items() if k in sections}  # other sections stay as measured
    result.update({"machine": machine(), "revision": git_revision()})
    if "backends" in wanted:
        result["backends"] = bench_backends(args.tokens, args.runs)
    if "wrapper" in wanted:
        result["wrapper"] = bench_wrapper(args.tokens, args.runs)
    if "threads" in wanted:
        result["threads"] = bench_threads(args.threads_models.split(","))
    if "ttft" in wanted:
        result["ttft"] = bench_ttft(args.runs)
    if "streaming" in wanted:
        result["streaming"] = bench_streaming(args.tokens, args.runs)
    print(f"written {save_result('llm', result)}")


if __name__ == "__main__":
    main()
