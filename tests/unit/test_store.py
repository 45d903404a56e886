from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest

from vector_store import FaissStore, StoreBusy, StoreError, WriterLock

DIM = 8


def vec(*values: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(values)] = values
    return v


def add_doc(store: FaissStore, doc: str, vectors: list[np.ndarray]) -> list[int]:
    texts = [f"{doc}-{i}" for i in range(len(vectors))]
    return store.add(doc, texts, [{"ordinal": i} for i in range(len(vectors))], np.stack(vectors))


def test_scores_are_cosine_similarities(tmp_path: Path) -> None:
    store = FaissStore(tmp_path, DIM)
    add_doc(store, "a", [vec(3, 0), vec(1, 1), vec(-2, 0)])
    hits = store.search(vec(10, 0), k=3)
    assert [h.chunk.text for h in hits] == ["a-0", "a-1", "a-2"]
    assert [round(h.score, 4) for h in hits] == [1.0, round(1 / np.sqrt(2), 4), -1.0]


def test_add_replaces_a_documents_chunks_and_delete_removes_them(tmp_path: Path) -> None:
    store = FaissStore(tmp_path, DIM)
    add_doc(store, "a", [vec(1), vec(0, 1)])
    add_doc(store, "b", [vec(0, 0, 1)])
    add_doc(store, "a", [vec(1, 1)])  # a new version of "a"
    assert store.documents() == {"a": 1, "b": 1}
    assert len(store) == 2
    assert store.delete("a") == 1
    assert [h.chunk.doc for h in store.search(vec(1), k=5)] == ["b"]
    assert store.delete("missing") == 0


def test_search_can_be_limited_to_documents(tmp_path: Path) -> None:
    store = FaissStore(tmp_path, DIM)
    add_doc(store, "a", [vec(1), vec(1, 0.1)])
    add_doc(store, "b", [vec(0.9, 0.2)])
    hits = store.search(vec(1), k=5, docs=["b"])
    assert [h.chunk.doc for h in hits] == ["b"]
    assert store.search(vec(1), k=5, docs=["nothing"]) == []


def test_persist_and_reload(tmp_path: Path) -> None:
    store = FaissStore(tmp_path, DIM)
    add_doc(store, "a", [vec(1), vec(0, 1)])
    store.save()
    again = FaissStore.open(tmp_path, DIM)
    assert again.documents() == {"a": 2}
    assert again.search(vec(0, 1), k=1)[0].chunk.text == "a-1"
    # ids keep growing after a reload, never reused
    new_ids = add_doc(again, "b", [vec(0, 0, 1)])
    assert new_ids[0] >= 2


def test_open_refuses_another_dimension(tmp_path: Path) -> None:
    store = FaissStore(tmp_path, DIM)
    add_doc(store, "a", [vec(1)])
    store.save()
    with pytest.raises(StoreError, match="8-d"):
        FaissStore.open(tmp_path, 16)


def test_a_save_interrupted_part_way_leaves_the_previous_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    store = FaissStore(tmp_path, DIM)
    add_doc(store, "a", [vec(1)])
    store.save()
    add_doc(store, "b", [vec(0, 1)])

    def crash(index: object, path: str) -> None:
        Path(path).write_bytes(b"half an index")
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save()
    monkeypatch.undo()
    reloaded = FaissStore.open(tmp_path, DIM)
    assert reloaded.documents() == {"a": 1}
    # the next successful save cleans the leftovers and moves on
    add_doc(reloaded, "c", [vec(0, 0, 1)])
    reloaded.save()
    assert not list(tmp_path.glob("*.tmp"))
    assert FaissStore.open(tmp_path, DIM).documents() == {"a": 1, "c": 1}


def test_old_generations_are_pruned_but_the_previous_one_is_kept(tmp_path: Path) -> None:
    store = FaissStore(tmp_path, DIM)
    for i in range(4):
        add_doc(store, f"d{i}", [vec(1, i)])
        store.save()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "CURRENT", "chunks.3.jsonl", "chunks.4.jsonl", "index.3.faiss", "index.4.faiss",
        "keywords.3.npz", "keywords.4.npz",
    ]  # fmt: skip


def test_a_damaged_current_pointer_is_reported(tmp_path: Path) -> None:
    (tmp_path / "CURRENT").write_text("garbage", encoding="ascii")
    with pytest.raises(StoreError, match="damaged"):
        FaissStore.open(tmp_path, DIM)


def _hold_lock(path: str, held: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event) -> None:
    with WriterLock(Path(path)).hold():
        held.set()
        release.wait(30)


def test_writer_lock_excludes_another_process(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    lock_path = tmp_path / "kb.lock"
    process = context.Process(target=_hold_lock, args=(str(lock_path), held, release))
    process.start()
    try:
        assert held.wait(60)
        with pytest.raises(StoreBusy), WriterLock(lock_path, timeout=0.2).hold():
            pass
    finally:
        release.set()
        process.join(30)
    with WriterLock(lock_path, timeout=5).hold():
        pass


def test_writer_lock_excludes_another_thread(tmp_path: Path) -> None:
    import threading

    order: list[str] = []
    lock = WriterLock(tmp_path / "kb.lock")

    def worker(name: str) -> None:
        with lock.hold():
            order.append(f"{name}-in")
            time.sleep(0.05)
            order.append(f"{name}-out")

    threads = [threading.Thread(target=worker, args=(n,)) for n in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # never two inside at once: every "in" is followed by its own "out"
    assert all(order[i][0] == order[i + 1][0] for i in range(0, len(order), 2))


def test_ivf_option_answers_unfiltered_searches_and_follows_updates(tmp_path: Path) -> None:
    from vector_store import IndexOptions

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(1200, DIM)).astype(np.float32)
    options = IndexOptions("ivf", nprobe=4096, ivf_min_chunks=1000)  # every list probed: exact answers
    store = FaissStore(tmp_path, DIM, options)
    for d in range(12):
        store.add(f"d{d}", [f"t{i}" for i in range(100)], [{}] * 100, vectors[d * 100 : (d + 1) * 100])
    assert not store.approximate  # trained at the first save, once there are enough chunks
    store.save()
    assert store.approximate and (tmp_path / f"ann.{store.generation}.faiss").is_file()
    top = store.search(vectors[250], 1)[0]
    assert top.chunk.doc == "d2" and top.chunk.text == "t50" and top.score == pytest.approx(1.0, abs=1e-5)
    store.delete("d2")
    assert all(h.chunk.doc != "d2" for h in store.search(vectors[250], 20))
    store.save()
    reopened = FaissStore.open(tmp_path, DIM, options)
    assert reopened.approximate
    assert [h.chunk.id for h in reopened.search(vectors[5], 5)] == [h.chunk.id for h in store.search(vectors[5], 5)]
    # filtered searches stay exact; a flat store ignores the IVF file
    assert reopened.search(vectors[5], 3, docs=["d0"])[0].chunk.text == "t5"
    assert not FaissStore.open(tmp_path, DIM).approximate
