"""The run store: atomic records, generation preconditions, leases and alias history."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from records_support import run_record

from vertex_tuner.errors import NotFoundError, PreconditionFailed, VertexTunerError
from vertex_tuner.records import DatasetRef, RunRecord
from vertex_tuner.runstore import LocalBlobStore, RunStore


def record(
    run_id: str,
    *,
    fingerprint: str = "f" * 64,
    created: str = "2026-01-01T00:00:00Z",
    job: str | None = "projects/p/locations/l/tuningJobs/1",
) -> RunRecord:
    return run_record(
        run_id,
        fingerprint=fingerprint,
        job_name=job,
        created_at=created,
        updated_at=created,
        train=DatasetRef(uri="gs://b/t.jsonl", sha256="a" * 64, size=10, examples=3),
    )


def test_generation_preconditions(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    g1 = blobs.write("k.json", b"1", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        blobs.write("k.json", b"2", if_generation_match=0)
    g2 = blobs.write("k.json", b"2", if_generation_match=g1)
    assert g2 > g1
    with pytest.raises(PreconditionFailed):
        blobs.write("k.json", b"3", if_generation_match=g1)
    assert blobs.read("k.json") == (b"2", g2)
    blobs.delete("k.json", if_generation_match=g2)
    assert blobs.read("k.json") is None
    # A generation is never reused after a delete.
    assert blobs.write("k.json", b"4", if_generation_match=0) > g2


def test_keys_and_bad_keys(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    blobs.write("runs/a.json", b"{}", if_generation_match=None)
    blobs.write("runs/b.json", b"{}", if_generation_match=None)
    blobs.write("aliases/x.json", b"{}", if_generation_match=None)
    assert list(blobs.keys("runs/")) == ["runs/a.json", "runs/b.json"]
    with pytest.raises(ValueError):
        blobs.read("../escape")


def test_records_round_trip_and_lookups(tmp_path: Path) -> None:
    store = RunStore(LocalBlobStore(tmp_path))
    store.save(record("r1", created="2026-01-01T00:00:00Z"))
    store.save(
        record(
            "r2",
            fingerprint="e" * 64,
            created="2026-02-01T00:00:00Z",
            job="projects/p/locations/l/tuningJobs/2",
        )
    )
    assert [r.run_id for r in store.list()] == ["r2", "r1"]
    assert store.get("r1").train.examples == 3
    found = store.by_fingerprint("e" * 64)
    assert found is not None and found.run_id == "r2"
    job = store.by_job("projects/p/locations/l/tuningJobs/1")
    assert job is not None and job.run_id == "r1"
    with pytest.raises(NotFoundError):
        store.get("missing")


def test_damaged_record_is_a_clear_error(tmp_path: Path) -> None:
    store = RunStore(LocalBlobStore(tmp_path))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "bad.json").write_text("{not json")
    with pytest.raises(VertexTunerError, match="damaged"):
        store.get("bad")


def test_lease_excludes_and_expires(tmp_path: Path) -> None:
    now = [1000.0]
    store = RunStore(LocalBlobStore(tmp_path), clock=lambda: now[0])
    lease = store.acquire_lease("fp", ttl=60)

    def tick(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(VertexTunerError, match="still running"):
        store.acquire_lease("fp", ttl=60, wait=10, sleep=tick)
    now[0] += 120  # the holder died: its lease has expired
    taken = store.acquire_lease("fp", ttl=60, wait=0, sleep=tick)
    assert taken.owner != lease.owner
    store.release_lease(lease)  # a stale release must not free the new holder's lease
    with pytest.raises(VertexTunerError):
        store.acquire_lease("fp", ttl=60, wait=0, sleep=tick)
    store.release_lease(taken)
    store.acquire_lease("fp", wait=0, sleep=tick)


def test_alias_promote_rollback_history(tmp_path: Path) -> None:
    store = RunStore(LocalBlobStore(tmp_path))
    for run in ("r1", "r2", "r3"):
        store.set_alias("support-tone", "production", run)
    assert store.aliases("support-tone")["production"].run_id == "r3"
    assert store.set_alias("support-tone", "production", None).run_id == "r2"
    assert store.set_alias("support-tone", "production", None).run_id == "r1"
    with pytest.raises(NotFoundError):
        store.set_alias("support-tone", "production", None)
    history = store.aliases("support-tone")["production"].history
    assert [h["action"] for h in history] == ["promote"] * 3 + ["rollback"] * 2
    assert [h["previous"] for h in history] == [None, "r1", "r2", "r3", "r2"]


def test_concurrent_promotes_lose_no_update(tmp_path: Path) -> None:
    stores = [RunStore(LocalBlobStore(tmp_path)) for _ in range(8)]
    barrier = threading.Barrier(len(stores))

    def promote(i: int) -> None:
        barrier.wait()
        for j in range(5):
            stores[i].set_alias("support-tone", "production", f"r{i}-{j}", max_attempts=200)

    threads = [threading.Thread(target=promote, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = stores[0].aliases("support-tone")["production"].history
    assert len(history) == 40
    assert sorted(h["run_id"] for h in history) == sorted(
        f"r{i}-{j}" for i in range(8) for j in range(5)
    )
    # Each entry's "previous" is the entry before it: no update was lost or interleaved.
    assert all(history[k]["previous"] == history[k - 1]["run_id"] for k in range(1, 40))
