"""Two `kb-qa serve` processes (real uvicorn, loopback) on one PostgreSQL database and one shared root
folder: stateless replicas. What one is told, the other knows at once; one writer per knowledge base
across them; a replica killed mid-upload leaves no half document behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kb_qa.api.local import free_port
from kb_qa.settings import PROJECT_DIR
from tests.helpers import SAMPLES

pytestmark = pytest.mark.integration


class Replica:
    def __init__(self, root: Path, url: str, log: Path) -> None:
        self.port = free_port("127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "KBQA_KB_ROOT": str(root),
            "KBQA_STORAGE__BACKEND": "postgres",
            "KBQA_STORAGE__URL": url,
            "KBQA_RETRIEVAL__SCORE_THRESHOLD": "0",
            "KBQA_LLM__BACKEND": "transformers",
            "KBQA_LLM__MODEL": "SmolLM2-135M-Instruct",
            "KBQA_LLM__DEVICE": "cpu",
        }
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(PROJECT_DIR / "main.py"), "serve", "--port", str(self.port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.client = httpx.Client(base_url=self.base, timeout=120)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the replica exited; see its log"
            try:
                if self.client.get("/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"replica on {self.port} not ready in {timeout} s")

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


@pytest.fixture()
def replicas(tmp_path: Path, pg_url: str) -> Iterator[tuple[Replica, Replica]]:
    root = tmp_path / "shared-root"
    pair = (Replica(root, pg_url, tmp_path / "a.log"), Replica(root, pg_url, tmp_path / "b.log"))
    try:
        for replica in pair:
            replica.wait_ready()
        yield pair
    finally:
        for replica in pair:
            replica.stop()


def upload(replica: Replica, *paths: Path) -> httpx.Response:
    files = [("files", (p.name, p.read_bytes())) for p in paths]
    return replica.client.post("/knowledge_bases/hb/documents", files=files)


def test_what_one_replica_is_told_the_other_knows(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    assert a.client.post("/knowledge_bases", json={"name": "hb"}).status_code == 201
    assert [kb["name"] for kb in b.client.get("/knowledge_bases").json()] == ["hb"]
    response = upload(a, SAMPLES / "员工手册.md", SAMPLES / "employee-handbook.md")
    assert response.status_code == 200, response.text
    listed = {d["path"]: d["status"] for d in b.client.get("/knowledge_bases/hb/documents").json()}
    assert listed == {"员工手册.md": "indexed", "employee-handbook.md": "indexed"}
    question = {"query": "年假没休完可以顺延吗？", "top_k": 1}
    hits = b.client.post("/knowledge_bases/hb/search", json=question).json()["passages"]
    assert hits[0]["document"] == "员工手册.md" and "顺延5天" in hits[0]["text"]
    content = b.client.get("/knowledge_bases/hb/documents/员工手册.md/content")
    assert content.status_code == 200 and content.content == (SAMPLES / "员工手册.md").read_bytes()
    # a removal through the second is gone for the first at once
    assert b.client.delete("/knowledge_bases/hb/documents/员工手册.md").status_code == 204
    hits = a.client.post("/knowledge_bases/hb/search", json={**question, "top_k": 4}).json()["passages"]
    assert all(h["document"] != "员工手册.md" for h in hits)
    # a rebuild job started on one runs there; the other shows its progress and its end (the database)
    job = a.client.post("/knowledge_bases/hb/rebuild").json()
    state = wait_for_job(b, job["id"])
    assert state["status"] == "done" and state["report"]["kb"] == "hb", state
    assert job["id"] in [j["id"] for j in b.client.get("/jobs").json()]


def wait_for_job(replica: Replica, job_id: str, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = replica.client.get(f"/jobs/{job_id}").json()
        if state["status"] in ("done", "failed"):
            return state  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {state['status']} after {timeout} s")


def notes(folder: Path, files: int = 12) -> list[Path]:
    """Enough text to keep a writer busy embedding for a while."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        path = folder / f"notes-{i:02d}.md"
        path.write_text("\n\n".join(f"## Note {i}.{j}\n\n" + f"Item {j} of file {i}. " * 40 for j in range(40)),
                        encoding="utf-8")  # fmt: skip
        paths.append(path)
    return paths


def test_jobs_outlive_the_replica_that_ran_them(replicas: tuple[Replica, Replica], tmp_path: Path, pg_url: str) -> None:
    a, b = replicas
    assert a.client.post("/knowledge_bases", json={"name": "hb"}).status_code == 201
    content = tmp_path / "shared-root" / "hb" / "content"
    notes(content)  # files put in the knowledge base's folder: a rebuild indexes them
    job = a.client.post("/knowledge_bases/hb/rebuild").json()
    deadline = time.monotonic() + 60
    while b.client.get(f"/jobs/{job['id']}").json()["done"] == 0:  # progress, seen from the other replica
        assert time.monotonic() < deadline
        time.sleep(0.2)
    a.process.send_signal(signal.SIGKILL)  # a crash in the middle of the job
    a.process.wait(30)
    state = wait_for_job(b, job["id"], timeout=15)  # as soon as the server has seen the connection go
    assert state["status"] == "failed" and state["error"]["code"] == "interrupted", state
    assert "start it again" in state["error"]["message"]
    assert b.client.get("/knowledge_bases/hb").json()["chunk_count"] == 0  # nothing half-written
    # run again on the survivor; a replica started afterwards still lists both jobs
    again = b.client.post("/knowledge_bases/hb/rebuild").json()
    assert wait_for_job(b, again["id"], timeout=300)["status"] == "done"
    c = Replica(tmp_path / "shared-root", pg_url, tmp_path / "c.log")
    try:
        c.wait_ready()
        listed = {j["id"]: j["status"] for j in c.client.get("/jobs").json()}
        assert listed == {job["id"]: "failed", again["id"]: "done"}
        assert c.client.get("/knowledge_bases/hb").json()["document_count"] == 12
    finally:
        c.stop()


def test_a_replica_killed_mid_upload_leaves_no_half_document(replicas: tuple[Replica, Replica], tmp_path: Path) -> None:
    a, b = replicas
    assert a.client.post("/knowledge_bases", json={"name": "hb"}).status_code == 201
    big = notes(tmp_path / "notes")

    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the replica dies under it
            upload(a, *big)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(3.0)  # the upload is being embedded: its transaction is open, its lock held
    a.process.send_signal(signal.SIGKILL)
    a.process.wait(30)
    sender.join(60)
    # it was killed while indexing (its files had been moved in), not before
    assert any((tmp_path / "shared-root" / "hb" / "content").glob("notes-*.md"))
    # nothing of it is visible through the other replica: no document rows, no chunks
    assert b.client.get("/knowledge_bases/hb/documents").json() == []
    assert b.client.get("/knowledge_bases/hb").json()["chunk_count"] == 0
    # the dead writer's lock went with its connection: the next upload completes
    response = upload(b, SAMPLES / "employee-handbook.md")
    assert response.status_code == 200, response.text
    assert [d["path"] for d in b.client.get("/knowledge_bases/hb/documents").json()] == ["employee-handbook.md"]
