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

``--soak SECONDS`` (issue 15: 600) runs a soak with faults instead: 2 clients upload (one upload in
ten a damaged or crafted file from bench/crafted.py), 1 deletes what was uploaded, 4 search, 1
streams answers and 1 polls /health, all at once; afterwards the registry, the index and the
knowledge base's files must agree with what the clients were told, and the server's memory is
sampled every 5 s (flat = the last minute within 10 % of the second). Writes docs/benchmarks/soak.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import HANDBOOK_QUESTIONS, git_revision, handbook_services, machine, memory_mb, save_result
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
    parser.add_argument("--soak", type=float, default=0, help="run the soak with faults for this many seconds")
    args = parser.parse_args()
    if args.soak:
        soak(args.soak)
        return
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


class Soak:
    """What the soak's clients were told, and what went wrong."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.indexed: set[str] = set()  # documents the server said it added and that were not deleted since
        self.refused: set[str] = set()  # crafted files the server refused
        self.counts: dict[str, int] = {}
        self.server_errors: list[str] = []

    def count(self, what: str, response: httpx.Response | None = None) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1
            if response is not None and response.status_code >= 500:
                self.server_errors.append(f"{what}: {response.status_code} {response.text[:200]}")


def crafted_files() -> list[tuple[str, bytes]]:
    from bench.crafted import CRAFTED

    crafted = [(name, make()) for name, make in CRAFTED if name != "one-line.txt"]  # that one is real text
    return [*crafted, ("damaged.docx", b"PK\x03\x04" + b"\x00" * 200)]


def soak_upload(base: str, stop: threading.Event, state: Soak, worker: int, crafted: list[tuple[str, bytes]]) -> None:
    with httpx.Client(base_url=base, timeout=300) as client:
        i = 0
        while not stop.is_set():
            i += 1
            crafted_turn = i % 10 == 0
            if crafted_turn:
                name, data = crafted[(i // 10 + worker) % len(crafted)]
                name = f"w{worker}-{i}-{name}"
            else:
                name = f"w{worker}-{i}.md"
                data = f"# Soak {worker} {i}\n\nFact number {worker}-{i}: the meeting room {i} has {i % 17} chairs.\n"
                data = data.encode()
            response = client.post("/knowledge_bases/handbook/documents", files=[("files", (name, data))])
            state.count("upload", response)
            added = response.status_code == 200 and response.json()["files"][0]["action"] == "added"
            with state.lock:
                if crafted_turn:
                    (state.indexed if added else state.refused).add(name)  # indexed: checked below
                    state.counts["crafted_indexed"] = state.counts.get("crafted_indexed", 0) + added
                elif added:
                    state.indexed.add(name)
                else:
                    state.counts["good_refused"] = state.counts.get("good_refused", 0) + 1


def soak_delete(base: str, stop: threading.Event, state: Soak) -> None:
    with httpx.Client(base_url=base, timeout=300) as client:
        while not stop.is_set():
            time.sleep(1.0)
            with state.lock:
                victim = min(state.indexed, default=None)
            if victim is None:
                continue
            response = client.delete(f"/knowledge_bases/handbook/documents/{victim}")
            state.count("delete", response)
            if response.status_code == 204:
                with state.lock:
                    state.indexed.discard(victim)


def soak_search(base: str, stop: threading.Event, state: Soak, offset: int) -> None:
    with httpx.Client(base_url=base, timeout=300) as client:
        i = offset
        while not stop.is_set():
            question = HANDBOOK_QUESTIONS[i % len(HANDBOOK_QUESTIONS)] if i % 2 else f"meeting room {i % 50} chairs"
            state.count("search", client.post("/knowledge_bases/handbook/search", json={"query": question}))
            i += 1


def soak_chat(base: str, stop: threading.Event, state: Soak) -> None:
    with httpx.Client(base_url=base, timeout=300) as client:
        i = 0
        while not stop.is_set():
            body = {"question": HANDBOOK_QUESTIONS[i % len(HANDBOOK_QUESTIONS)], "knowledge_base": "handbook",
                    "stream": True, "max_tokens": 24, "temperature": 0}  # fmt: skip
            with client.stream("POST", "/chat", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("event: error"):
                        state.count("chat_error_event")
                state.count("chat", response)
            i += 1


def soak_health(base: str, stop: threading.Event, state: Soak, times: list[float], memory: list[float]) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        last_sample = 0.0
        while not stop.is_set():
            started = time.perf_counter()
            state.count("health", client.get("/health"))
            times.append((time.perf_counter() - started) * 1000)
            if started - last_sample >= 5:
                memory.append(memory_mb())
                last_sample = started
            time.sleep(0.1)


def soak(seconds: float) -> None:
    state = Soak()
    crafted = crafted_files()
    health: list[float] = []
    memory: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kbqa-soak-") as tmp:
        services = handbook_services(tmp, llm={"model": "SmolLM2-135M-Instruct", "max_concurrent": 1, "max_queue": 8})
        handbook = {r.path for r in services.knowledge_bases.files("handbook")}
        with serving(create_app(services.settings, services=services)) as base:
            httpx.post(f"{base}/chat", json={"question": "warm up", "max_tokens": 4}, timeout=300)
            workers: list[tuple[object, tuple]] = [(soak_upload, (base, state, w, crafted)) for w in range(2)]
            workers += [(soak_delete, (base, state)), (soak_chat, (base, state))]
            workers += [(soak_search, (base, state, i)) for i in range(4)]
            workers += [(soak_health, (base, state, health, memory))]
            print(f"soak: {seconds:.0f} s, 2 uploading (1 in 10 crafted), 1 deleting, 4 searching, 1 streaming "
                  "answers, /health every 100 ms", flush=True)  # fmt: skip
            run_phase(seconds, workers)
        kb = services.knowledge_bases
        listed = {r.path: r for r in kb.files("handbook")}
        indexed = {p for p, r in listed.items() if r.status == "indexed"}
        store = kb.reader("handbook").documents()
        content = {p.relative_to(kb.content_dir("handbook")).as_posix()
                   for p in kb.content_dir("handbook").rglob("*") if p.is_file()}  # fmt: skip
        expected = state.indexed | handbook
        agreement = {
            "listed_indexed_equals_what_clients_were_told": indexed == expected,
            "index_equals_listing": set(store) == indexed and all(store[p] == listed[p].chunk_count for p in store),
            # every listed document has its file (the handbook's live in the folder it was built from),
            # and no file in the knowledge base's folder is unlisted
            "files_equal_listing": all(Path(r.source).is_file() for r in listed.values()) and content <= set(listed),
            "crafted_never_indexed": not (state.refused & set(store)),
        }
        minute = max(1, int(60 / 5))
        second_minute = memory[minute : 2 * minute] or memory
        last_minute = memory[-minute:]
        flat = abs(statistics.mean(last_minute) - statistics.mean(second_minute)) <= 0.10 * statistics.mean(
            second_minute
        )
        result = {
            "machine": machine(), "revision": git_revision(), "seconds": seconds, "requests": state.counts,
            "server_errors": len(state.server_errors), "server_error_examples": state.server_errors[:5],
            "documents_at_end": len(indexed), "uploads_refused": len(state.refused), "agreement": agreement,
            "health": percentiles(health), "memory_mb": {"first": memory[0], "second_minute": statistics.mean(
                second_minute), "last_minute": statistics.mean(last_minute), "max": max(memory), "flat": flat},
        }  # fmt: skip
        if not agreement["files_equal_listing"]:
            result["files_difference"] = {"not_listed": sorted(content - set(listed))[:10], "without_file": sorted(
                p for p, r in listed.items() if not Path(r.source).is_file())[:10]}  # fmt: skip
        if indexed != expected:
            result["difference"] = {
                "missing": sorted(expected - indexed)[:10],
                "extra": sorted(indexed - expected)[:10],
            }
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"written: {save_result('soak', result)}")


if __name__ == "__main__":
    main()
