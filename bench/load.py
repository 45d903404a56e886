"""Load on the HTTP API: concurrent clients against the real server on loopback.

    .venv/bin/python bench/load.py [--seconds 15] [--clients 1 4 8]

Serves the real app (uvicorn, default models: multilingual-e5-small and SmolLM2-135M on the CPU)
over the sample handbook knowledge base, then measures, each phase for ``--seconds``:

1. search only, with 1, 4 and 8 concurrent clients (POST /knowledge_bases/handbook/search with
   questions in Chinese and English): requests/s, p50, p99;
2. a mix: 2 clients streaming grounded answers (POST /chat, stream, 48 new tokens) back to back,
   4 clients searching: answers/min, search p50/p99 under that load;
3. ``GET /health`` every 100 ms while nothing runs, and during the mix: p50, p99, max.

Writes docs/benchmarks/load.json. No target is asserted; docs/benchmarks.md quotes the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import HANDBOOK_QUESTIONS, git_revision, handbook_services, machine, save_result
from kb_qa.api import create_app
from kb_qa.api.local import serving


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    array = np.array(values)
    return {
        "p50_ms": round(float(np.percentile(array, 50)), 2),
        "p99_ms": round(float(np.percentile(array, 99)), 2),
        "max_ms": round(float(array.max()), 2),
    }


def search_loop(base: str, stop: threading.Event, times: list[float], offset: int) -> None:
    with httpx.Client(base_url=base, timeout=120) as client:
        i = offset
        while not stop.is_set():
            started = time.perf_counter()
            response = client.post(
                "/knowledge_bases/handbook/search", json={"query": HANDBOOK_QUESTIONS[i % len(HANDBOOK_QUESTIONS)]}
            )
            response.raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
            i += 1


def chat_loop(base: str, stop: threading.Event, answers: list[float], offset: int) -> None:
    with httpx.Client(base_url=base, timeout=300) as client:
        i = offset
        while not stop.is_set():
            body = {"question": HANDBOOK_QUESTIONS[i % len(HANDBOOK_QUESTIONS)], "knowledge_base": "handbook",
                    "stream": True, "max_tokens": 48, "temperature": 0}  # fmt: skip
            started = time.perf_counter()
            with client.stream("POST", "/chat", json=body) as response:
                if response.status_code == 429:
                    time.sleep(0.2)
                    continue
                response.raise_for_status()
                for _ in response.iter_lines():
                    pass
            answers.append((time.perf_counter() - started) * 1000)
            i += 1


def health_loop(base: str, stop: threading.Event, times: list[float]) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get("/health").raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
            time.sleep(0.1)


def run_phase(seconds: float, workers: list[tuple[object, tuple]]) -> None:
    stop = threading.Event()
    threads = [threading.Thread(target=target, args=(*args[:1], stop, *args[1:])) for target, args in workers]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kbqa-load-") as tmp:
        services = handbook_services(tmp, llm={"max_concurrent": 1, "max_queue": 8})
        settings = services.settings
        results: dict[str, object] = {}
        with serving(create_app(settings, services=services)) as base:
            run_all(base, args, results)
    path = save_result("load", {"machine": machine(), "revision": git_revision(), "seconds": args.seconds, **results})
    print(f"written: {path}")


def run_all(base: str, args: argparse.Namespace, results: dict[str, object]) -> None:
    httpx.post(f"{base}/knowledge_bases/handbook/search", json={"query": "warm up"}, timeout=60)
    httpx.post(f"{base}/chat", json={"question": "warm up", "max_tokens": 4}, timeout=120)

    idle: list[float] = []
    run_phase(min(args.seconds, 5), [(health_loop, (base, idle))])
    results["health_idle"] = percentiles(idle)
    print(f"/health idle: {results['health_idle']}", flush=True)

    for clients in args.clients:
        times: list[float] = []
        run_phase(args.seconds, [(search_loop, (base, times, i)) for i in range(clients)])
        row = {"clients": clients, "requests": len(times), "per_s": round(len(times) / args.seconds, 1),
               **percentiles(times)}  # fmt: skip
        results[f"search_{clients}"] = row
        print(f"search, {clients} clients: {row}", flush=True)

    searches: list[float] = []
    answers: list[float] = []
    during: list[float] = []
    workers = [(chat_loop, (base, answers, i)) for i in range(2)]
    workers += [(search_loop, (base, searches, i)) for i in range(4)]
    workers += [(health_loop, (base, during))]
    run_phase(args.seconds * 2, workers)
    results["mix"] = {
        "answers": len(answers),
        "answers_per_min": round(len(answers) / (args.seconds * 2) * 60, 1),
        "answer_median_ms": round(statistics.median(answers), 1) if answers else None,
        "searches_per_s": round(len(searches) / (args.seconds * 2), 1),
        "search": percentiles(searches),
        "health": percentiles(during),
    }
    print(f"mix (2 streaming answers + 4 searching): {results['mix']}", flush=True)


if __name__ == "__main__":
    main()
