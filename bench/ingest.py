"""Ingestion benchmark: (a) pipeline vs raw encode, (b) vs the plain LangChain pipeline, (c) re-run cost.

    .venv/bin/python bench/ingest.py            # everything (about 15 minutes on 2 cores)
    .venv/bin/python bench/ingest.py --no-plain # skip the slow plain-LangChain runs

Corpus: the Markdown files of ../shared/data/corpus/zh-laws and corpus/fastapi-docs/docs/zh.
(a) end-to-end chunks/s of `KnowledgeBaseService.rebuild` against `encode` of the same final chunk
    texts by the same model object (same precision, batch size and prefixes); target >= 0.9.
(b) end-to-end seconds of the plain pipeline a user writes from LangChain's docs (TextLoader ->
    RecursiveCharacterTextSplitter(250, 50) -> HuggingFaceEmbeddings -> FAISS.from_documents) on the
    same files with the same model, against ours; target >= 2x. Retrieval quality of both is measured
    on the shared QA sets (article-level docs/, hit@5 = a top-5 chunk contains a gold answer).
(c) a second rebuild of the unchanged corpus against the first; target <= 2%.
(d) files read in parser processes (ingest.isolate_parsers, the default) against in this process:
    end-to-end rebuild seconds of the same corpus, alternating; target: within 5 %.
    `--only-isolation` runs (d) alone.
Prints the figures and writes docs/benchmarks/ingest.json (docs/benchmarks.md quotes them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import contains_answer, copy_tree, git_revision, load_queries, machine, require_shared, save_result
from kb_qa.services import Services, build_embeddings, build_services
from kb_qa.settings import load_settings


def our_services(root: Path, precision: str = "auto", *, isolate: bool = True, embeddings: object = None) -> Services:
    settings = load_settings(
        environ=dict(os.environ),
        overrides={"paths": {"kb_root": str(root)}, "embedding": {"precision": precision},
                   "ingest": {"isolate_parsers": isolate}},
    )  # fmt: skip
    return build_services(settings, embeddings=embeddings or build_embeddings(settings))  # type: ignore[arg-type]


def isolation_cost(work: Path, corpus: Path, services: Services, rounds: int) -> dict:
    """(d): the same rebuild with files read in parser processes and in this process, alternating."""
    inside = our_services(work / "kb-inside", isolate=False, embeddings=services.embeddings)
    times: dict[str, list[float]] = {"processes": [], "in_process": []}
    for svc in (services, inside):
        svc.knowledge_bases.create("iso")
        svc.knowledge_bases.rebuild("iso", corpus)  # warm: parser processes started, caches filled
    for round_number in range(rounds):
        for which, svc in (("processes", services), ("in_process", inside)):
            started = time.perf_counter()
            report = svc.knowledge_bases.rebuild("iso", corpus, recreate=True)
            times[which].append(time.perf_counter() - started)
            assert not report.failed, report.failed
        print(f"(d) round {round_number + 1}: processes {times['processes'][-1]:.1f}s, "
              f"in process {times['in_process'][-1]:.1f}s", flush=True)  # fmt: skip
    best = {k: min(v) for k, v in times.items()}
    result = {
        "processes_seconds": round(best["processes"], 2),
        "in_process_seconds": round(best["in_process"], 2),
        "cost": round(best["processes"] / best["in_process"] - 1, 4),
        "all": {k: [round(t, 2) for t in v] for k, v in times.items()},
    }
    print(f"(d) parser processes {best['processes']:.1f}s vs in process {best['in_process']:.1f}s "
          f"-> cost {100 * result['cost']:+.1f}% (target <= +5%)")  # fmt: skip
    return result


def final_texts(services: Services, name: str) -> list[str]:
    store = services.knowledge_bases.reader(name)
    texts = []
    for doc in sorted(store.documents()):
        for chunk in store.chunks_of(doc):
            heading = chunk.metadata.get("heading") or ""
            prefix = services.settings.splitter.heading_prefix and heading
            texts.append(f"{heading}\n{chunk.text}" if prefix else chunk.text)
    return texts


def plain_pipeline(files: list[Path], model_path: Path) -> tuple[object, int, float, float]:
    from langchain_community.document_loaders import TextLoader
    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    started = time.perf_counter()
    embeddings = HuggingFaceEmbeddings(model_name=str(model_path))
    embeddings.embed_query("warm up")
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    documents = []
    for path in files:
        documents += TextLoader(str(path), encoding="utf-8").load()
    chunks = RecursiveCharacterTextSplitter(chunk_size=250, chunk_overlap=50).split_documents(documents)
    store = FAISS.from_documents(chunks, embeddings)
    return store, len(chunks), time.perf_counter() - started, load_seconds


def hit_at_5_ours(services: Services, name: str, queries: list[dict]) -> float:
    hits = 0
    for q in queries:
        found = services.retriever.retrieve(q["text"], [name], top_k=5, method="dense")
        hits += any(contains_answer(h.text, q["answers"]) for h in found)
    return hits / len(queries)


def hit_at_5_plain(store: object, queries: list[dict]) -> float:
    hits = 0
    for q in queries:
        found = store.similarity_search(q["text"], k=5)  # type: ignore[attr-defined]
        hits += any(contains_answer(d.page_content, q["answers"]) for d in found)
    return hits / len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-plain", action="store_true", help="skip the plain LangChain pipeline runs")
    parser.add_argument("--queries", type=int, default=600, help="questions per QA set for hit@5 (default 600)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds; best kept (default 2)")
    parser.add_argument("--only-isolation", action="store_true", help="run (d) alone")
    args = parser.parse_args()
    shared = require_shared()
    result: dict = {"machine": machine(), "revision": git_revision()}
    with tempfile.TemporaryDirectory(prefix="kbqa-bench-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        files = copy_tree(
            [
                (shared / "corpus" / "zh-laws", "zh-laws"),
                (shared / "corpus" / "fastapi-docs" / "docs" / "zh", "fastapi-zh"),
            ],
            corpus,
        )
        services = our_services(work / "kb")
        embeddings = services.embeddings
        embeddings.warm_up()
        embeddings.encode_passages(["warm up"] * 8)
        print(
            f"corpus: {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.2f} MB; "
            f"model {embeddings.name} on {embeddings.device} in {embeddings.precision}"
        )
        result["d"] = isolation_cost(work, corpus, services, max(args.rounds, 3))
        if args.only_isolation:
            path = save_result("ingest-isolation", result)
            print(f"written {path}")
            return
        kb = services.knowledge_bases
        kb.create("bench")
        # Alternate the pipelines for --rounds rounds and keep each one's best time: this VM's
        # speed drifts by tens of percent over minutes, and the best of several runs is the figure
        # least disturbed by it. Every time measured is recorded.
        ours_times, raw_times, plain_times = [], [], []
        chunks = plain_chunks = 0
        for round_number in range(args.rounds):
            started = time.perf_counter()
            report = kb.rebuild("bench", corpus, recreate=round_number > 0)
            ours_times.append(time.perf_counter() - started)
            assert not report.failed, report.failed
            chunks = report.embedded_chunks
            texts = final_texts(services, "bench")
            assert len(texts) == chunks
            started = time.perf_counter()
            embeddings.encode_passages(texts)
            raw_times.append(time.perf_counter() - started)
            if not args.no_plain:
                _store, plain_chunks, seconds, _ = plain_pipeline(files, embeddings.model_path)
                plain_times.append(seconds)
            print(
                f"round {round_number + 1}: ours {ours_times[-1]:.1f}s, raw encode {raw_times[-1]:.1f}s"
                + (f", plain {plain_times[-1]:.1f}s" if plain_times else ""),
                flush=True,
            )
        ours_seconds, raw_seconds = min(ours_times), min(raw_times)
        started = time.perf_counter()
        second = kb.rebuild("bench")
        second_seconds = time.perf_counter() - started
        assert second.embedded_chunks == 0
        result["a"] = {
            "chunks": chunks,
            "pipeline_seconds": round(ours_seconds, 2),
            "pipeline_chunks_per_s": round(chunks / ours_seconds, 1),
            "raw_encode_seconds": round(raw_seconds, 2),
            "raw_chunks_per_s": round(chunks / raw_seconds, 1),
            "ratio": round(raw_seconds / ours_seconds, 3),
            "precision": embeddings.precision,
            "batch_size": embeddings.batch_size,
            "all_pipeline_seconds": [round(t, 2) for t in ours_times],
            "all_raw_seconds": [round(t, 2) for t in raw_times],
        }
        result["c"] = {
            "first_seconds": round(ours_seconds, 2),
            "second_seconds": round(second_seconds, 3),
            "ratio": round(second_seconds / ours_seconds, 4),
        }
        print(
            f"(a) pipeline {chunks / ours_seconds:.1f} chunks/s vs raw encode {chunks / raw_seconds:.1f} chunks/s "
            f"-> ratio {raw_seconds / ours_seconds:.3f} (target >= 0.9)"
        )
        print(
            f"(c) unchanged rebuild {second_seconds:.3f}s vs first {ours_seconds:.1f}s "
            f"-> {100 * second_seconds / ours_seconds:.2f}% (target <= 2%)"
        )

        if not args.no_plain:
            plain_seconds = min(plain_times)
            result["b"] = {
                "plain_chunks": plain_chunks,
                "plain_seconds": round(plain_seconds, 2),
                "ours_seconds": round(ours_seconds, 2),
                "speedup": round(plain_seconds / ours_seconds, 2),
                "all_plain_seconds": [round(t, 2) for t in plain_times],
            }
            print(
                f"(b) plain LangChain {plain_seconds:.1f}s ({plain_chunks} chunks, "
                f"{plain_chunks / plain_seconds:.1f} chunks/s) vs ours {ours_seconds:.1f}s -> "
                f"{plain_seconds / ours_seconds:.2f}x (target >= 2x)"
            )
            quality = {}
            for set_name in ("squad-dev", "cmrc2018-trial"):
                set_dir = shared / "eval" / set_name
                queries = load_queries(set_dir, args.queries)
                kb.create(set_name)
                kb.rebuild(set_name, set_dir / "docs")
                ours = hit_at_5_ours(services, set_name, queries)
                plain_store, _, _, _ = plain_pipeline(sorted((set_dir / "docs").glob("*.txt")), embeddings.model_path)
                plain = hit_at_5_plain(plain_store, queries)
                quality[set_name] = {
                    "queries": len(queries),
                    "ours_hit@5": round(ours, 4),
                    "plain_hit@5": round(plain, 4),
                }
                print(f"    {set_name}: hit@5 ours {ours:.3f} vs plain {plain:.3f} ({len(queries)} questions)")
            result["b"]["quality"] = quality
    path = save_result("ingest", result)
    print(f"written {path}")


if __name__ == "__main__":
    main()
