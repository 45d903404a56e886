"""Retrieval quality on PostgreSQL against the folder store: the same evaluation, three storages.

    .venv/bin/python bench/store_parity.py [--sets squad-dev cmrc2018-trial]

For each set, `kb-qa eval retrieval` at passage level (every method) and article level (hybrid, the
default; the set's docs/ through the normal pipeline) on: the folder store (FAISS exact + BM25
files), PostgreSQL with exact dense search (``storage.exact: true``) and PostgreSQL with HNSW at the
default ``storage.ef_search``. The embedding model is loaded once and shared. Target (issue 14):
hit@5 and MRR@10 within 0.005 of the folder store. A real PostgreSQL 18.6 + pgvector 0.8.6 is started
by this script. Writes docs/benchmarks/store_parity.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import git_revision, machine, require_shared, save_result
from kb_qa.evaluation import METHODS, build_article_kb, evaluate_retrieval, load_set
from kb_qa.pgserver import LocalPostgres
from kb_qa.services import build_embeddings, build_services
from kb_qa.settings import load_settings

STORAGES = {
    "folder": {"backend": "folder"},
    "postgres exact": {"backend": "postgres", "exact": True},
    "postgres hnsw": {"backend": "postgres", "exact": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["squad-dev", "cmrc2018-trial"])
    args = parser.parse_args()
    shared = require_shared()
    embeddings = build_embeddings(load_settings())
    embeddings.warm_up()
    results: dict[str, Any] = {"machine": machine(), "revision": git_revision(), "sets": {}}
    with tempfile.TemporaryDirectory(prefix="kbqa-parity-") as tmp:
        server = LocalPostgres(Path(tmp) / "postgres")
        server.start()
        try:
            for set_name in args.sets:
                data = load_set(shared / "eval" / set_name)
                table: dict[str, Any] = {}
                for label, storage in STORAGES.items():
                    database = f"{set_name.replace('-', '_')}_{label.replace(' ', '_')}"
                    url = server.create_database(database)
                    settings = load_settings(overrides={
                        "paths": {"kb_root": str(Path(tmp) / database)},
                        "storage": {**storage, "url": url},
                    })  # fmt: skip
                    services = build_services(settings, embeddings=embeddings)
                    started = time.perf_counter()
                    passage = evaluate_retrieval(data, services.retriever, methods=METHODS, level="passage")
                    build_article_kb(services.knowledge_bases, data, "eval")
                    article = evaluate_retrieval(
                        data, services.retriever, methods=("hybrid",), level="article", knowledge_base="eval"
                    )
                    services.close()
                    table[label] = {
                        "passage": passage.methods,
                        "article": article.methods,
                        "seconds": round(time.perf_counter() - started, 1),
                    }
                    hybrid, whole = passage.methods["hybrid"], article.methods["hybrid"]
                    print(
                        f"{set_name} {label}: passage hybrid hit@5 {hybrid['hit@5']:.4f} "
                        f"MRR@10 {hybrid['mrr@10']:.4f}; article hybrid hit@5 {whole['hit@5']:.4f} "
                        f"MRR@10 {whole['mrr@10']:.4f}",
                        flush=True,
                    )
                results["sets"][set_name] = table
        finally:
            server.stop("immediate")
    path = save_result("store_parity", results)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
