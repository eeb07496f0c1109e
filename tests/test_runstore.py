"""The run store: atomic records, generation preconditions, leases and alias history."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from records_support import run_record

from vertex_tuner.errors import (
    LeaseHeld,
    LeaseLost,
    NotFoundError,
    PreconditionFailed,
    VertexTunerError,
)
from vertex_tuner.records import DatasetRef, RunRecord
from vertex_tuner.runstore import BlobStore, LocalBlobStore, RunStore


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

    with pytest.raises(LeaseHeld, match="still running"):
        store.acquire_lease("fp", ttl=60, wait=10, sleep=tick)
    # The holder died: a waiter that watches the lease unchanged for its ttl takes it over.
    taken = store.acquire_lease("fp", ttl=60, wait=120, sleep=tick)
    assert taken.owner != lease.owner
    store.release_lease(lease)  # a stale release must not free the new holder's lease
    with pytest.raises(LeaseHeld):
        store.acquire_lease("fp", ttl=60, wait=0, sleep=tick)
    store.release_lease(taken)
    store.acquire_lease("fp", wait=0, sleep=tick)


def test_a_renewed_lease_is_never_taken_over(tmp_path: Path) -> None:
    now = [1000.0]
    holder = RunStore(LocalBlobStore(tmp_path), clock=lambda: now[0])
    lease = holder.acquire_lease("fp", ttl=60)
    seen: list[tuple[str, float]] = []

    def renew_while_waiting(seconds: float) -> None:
        nonlocal lease
        now[0] += seconds
        if int(now[0]) % 20 == 0:  # the holder renews every third of its ttl
            lease = holder.renew_lease(lease)

    waiter = RunStore(LocalBlobStore(tmp_path), clock=lambda: now[0])
    with pytest.raises(LeaseHeld, match=r"process \d+ on .* holds lease leases/fp.json"):
        waiter.acquire_lease(
            "fp",
            ttl=60,
            wait=600,
            sleep=renew_while_waiting,
            on_wait=lambda who, left: seen.append((who.describe(), left)),
        )
    assert now[0] >= 1600  # ten ttls went by, and the live holder kept its lease
    assert len(seen) == 1 and seen[0][1] == 60  # said once, with how long it would be kept
    assert holder.renew_lease(lease).renewals == lease.renewals + 1


def test_no_clock_of_another_machine_is_compared(tmp_path: Path) -> None:
    """A holder whose clock is 20 minutes behind (its ``expires_at`` long past by ours) keeps
    its lease while it renews it; a waiter only ever measures time on its own clock."""
    behind = [1000.0]
    ahead = [1000.0 + 1200]
    holder = RunStore(LocalBlobStore(tmp_path), clock=lambda: behind[0])
    lease = holder.acquire_lease("fp", ttl=60)

    def both(seconds: float) -> None:
        nonlocal lease
        behind[0] += seconds
        ahead[0] += seconds
        if int(behind[0]) % 30 == 0:
            lease = holder.renew_lease(lease)

    waiter = RunStore(LocalBlobStore(tmp_path), clock=lambda: ahead[0])
    with pytest.raises(LeaseHeld):
        waiter.acquire_lease("fp", ttl=60, wait=300, sleep=both)


def test_a_lease_taken_over_cannot_be_renewed_by_its_old_holder(tmp_path: Path) -> None:
    now = [1000.0]
    store = RunStore(LocalBlobStore(tmp_path), clock=lambda: now[0])
    old = store.acquire_lease("fp", ttl=5)

    def tick(seconds: float) -> None:
        now[0] += seconds

    new = store.acquire_lease("fp", ttl=5, wait=30, sleep=tick)
    with pytest.raises(LeaseLost, match="taken over"):
        store.renew_lease(old)
    assert store.renew_lease(new).generation != new.generation


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b'{"ttl": "soon", "pid": true}', b'{"ttl": 1e308}'],
    ids=["damaged", "not-an-object", "wrong-types", "huge-ttl"],
)
def test_a_lease_file_of_any_shape_is_waited_for_then_taken(tmp_path: Path, body: bytes) -> None:
    now = [1000.0]
    store = RunStore(LocalBlobStore(tmp_path), clock=lambda: now[0])
    (tmp_path / "leases").mkdir()
    (tmp_path / "leases" / "fp.json").write_bytes(body)

    def tick(seconds: float) -> None:
        now[0] += seconds

    lease = store.acquire_lease("fp", wait=7200, sleep=tick)
    assert 1060 <= now[0] <= 1000 + 3600 + 2  # the default ttl, or the longest a lease may ask
    assert orjson.loads((tmp_path / "leases" / "fp.json").read_bytes())["owner"] == lease.owner


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


# --- the layout: lookups by key and prefix, the old layout, damaged records ------------------


class CountingBlobStore(BlobStore):
    """A blob store that counts the calls made to it, by kind (and lists by prefix)."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.location = inner.location
        self.calls: Counter[str] = Counter()
        self.listed: list[str] = []
        self._lock = threading.Lock()

    def _count(self, kind: str) -> None:
        with self._lock:
            self.calls[kind] += 1

    def reset(self) -> None:
        self.calls.clear()
        self.listed.clear()

    def read(self, key: str) -> tuple[bytes, int] | None:
        self._count("read")
        return self.inner.read(key)

    def write(self, key: str, data: bytes, *, if_generation_match: int | None) -> int:
        self._count("write")
        return self.inner.write(key, data, if_generation_match=if_generation_match)

    def delete(self, key: str, *, if_generation_match: int | None = None) -> None:
        self._count("delete")
        self.inner.delete(key, if_generation_match=if_generation_match)

    def keys(self, prefix: str) -> Iterator[str]:
        self._count("list")
        self.listed.append(prefix)
        return self.inner.keys(prefix)


JOB = "projects/p/locations/l/tuningJobs/{}"


@pytest.fixture
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of records are written here; their durability is not what is tested."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def many(count: int, specs: int) -> list[RunRecord]:
    """``count`` runs spread over ``specs`` specs, each with its own job and fingerprint."""
    return [
        run_record(
            f"run-{i:04d}",
            spec_name=f"spec-{i % specs:02d}",
            fingerprint=f"{i:064x}",
            job_name=JOB.format(i),
            created_at=f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
        )
        for i in range(count)
    ]


def write_old_layout(blobs: BlobStore, records: list[RunRecord]) -> None:
    """What a store written before the job and spec pointers holds: records, fingerprints."""
    for r in records:
        blobs.write(f"runs/{r.run_id}.json", orjson.dumps(r.to_json()), if_generation_match=None)
        pointer = orjson.dumps({"run_id": r.run_id, "job_name": r.job_name})
        blobs.write(f"fingerprints/{r.fingerprint}.json", pointer, if_generation_match=None)


def newest_first(records: list[RunRecord]) -> list[str]:
    """The order the one-by-one reading of ``runs/`` gave: by key, then newest first."""
    ordered = sorted(records, key=lambda r: f"runs/{r.run_id}.json")
    ordered.sort(key=lambda r: r.created_at, reverse=True)
    return [r.run_id for r in ordered]


@pytest.mark.usefixtures("no_fsync")
def test_fresh_store_finds_a_job_and_a_spec_by_key(tmp_path: Path) -> None:
    blobs = CountingBlobStore(LocalBlobStore(tmp_path))
    writer = RunStore(blobs)
    records = many(200, 10)
    for r in records:
        writer.save(r)
    # One look at an empty runs/ when the first record was written; never a read of records.
    assert blobs.listed == ["runs/"]
    assert (tmp_path / "layout.json").is_file()
    assert (tmp_path / "jobs/projects/p/locations/l/tuningJobs/7.json").is_file()
    assert (tmp_path / "specs/spec-03/run-0013.json").is_file()

    blobs.reset()
    store = RunStore(blobs)  # a new process: nothing remembered
    found = store.by_job(JOB.format(123))
    assert found is not None and found.run_id == "run-0123"
    assert blobs.calls["read"] <= 3 and blobs.calls["list"] == 0

    blobs.reset()
    assert RunStore(blobs).by_job(JOB.format(999)) is None  # not recorded: no scan either
    assert blobs.calls["read"] <= 3 and blobs.calls["list"] == 0

    blobs.reset()
    spec = RunStore(blobs).list("spec-04")
    assert [r.run_id for r in spec] == newest_first(
        [r for r in records if r.spec_name == "spec-04"]
    )
    assert len(spec) == 20
    assert blobs.calls["read"] <= 20 + 2 and blobs.calls["list"] == 1
    assert blobs.listed == ["specs/spec-04/"]

    blobs.reset()
    assert [r.run_id for r in RunStore(blobs).list()] == newest_first(records)
    assert RunStore(blobs).list("no-such-spec") == []


@pytest.mark.usefixtures("no_fsync")
def test_parallel_list_keeps_the_sequential_order(tmp_path: Path) -> None:
    records = many(120, 3)
    # Ties in created_at, which must keep the order by run id as the one-by-one read did.
    records += [
        run_record(f"tie-{c}", spec_name="spec-01", created_at="2026-01-01T00:00:30Z")
        for c in "dacb"
    ]
    store = RunStore(LocalBlobStore(tmp_path), workers=16)
    for r in records:
        store.save(r)
    sequential = RunStore(LocalBlobStore(tmp_path), workers=1)
    for name in (None, "spec-00", "spec-01"):
        expected = newest_first([r for r in records if name is None or r.spec_name == name])
        assert [r.run_id for r in RunStore(LocalBlobStore(tmp_path)).list(name)] == expected
        assert [r.run_id for r in sequential.list(name)] == expected


def test_spec_names_that_are_prefixes_do_not_mix(tmp_path: Path) -> None:
    store = RunStore(LocalBlobStore(tmp_path))
    store.save(run_record("a", spec_name="support"))
    store.save(run_record("b", spec_name="support-tone", fingerprint="e" * 64))
    store.save(run_record("c", spec_name="support-tone-v2", fingerprint="d" * 64))
    fresh = RunStore(LocalBlobStore(tmp_path))
    assert [r.run_id for r in fresh.list("support")] == ["a"]
    assert [r.run_id for r in fresh.list("support-tone")] == ["b"]
    assert [r.run_id for r in fresh.list("support-tone-v2")] == ["c"]


def test_old_layout_is_read_then_migrated_once(tmp_path: Path) -> None:
    inner = LocalBlobStore(tmp_path)
    records = many(30, 3)
    write_old_layout(inner, records)
    blobs = CountingBlobStore(inner)

    store = RunStore(blobs)
    found = store.by_job(JOB.format(4))
    assert found is not None and found.run_id == "run-0004"
    assert blobs.listed == ["runs/"] and blobs.calls["read"] >= 30  # the full read, this once
    assert (tmp_path / "layout.json").is_file()

    for second in (store, RunStore(blobs)):  # this process, and the next
        blobs.reset()
        found = second.by_job(JOB.format(5))
        assert found is not None and found.run_id == "run-0005"
        assert blobs.calls["read"] <= 3 and blobs.calls["list"] == 0
        blobs.reset()
        names = [r.run_id for r in second.list("spec-01")]
        assert names == newest_first([r for r in records if r.spec_name == "spec-01"])
        assert blobs.listed == ["specs/spec-01/"] and blobs.calls["read"] <= 10 + 1


def test_old_layout_list_by_name_migrates_and_first_save_migrates(tmp_path: Path) -> None:
    records = many(12, 2)
    write_old_layout(LocalBlobStore(tmp_path / "a"), records)
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "a"))
    expected = newest_first([r for r in records if r.spec_name == "spec-00"])
    assert [r.run_id for r in RunStore(blobs).list("spec-00")] == expected
    blobs.reset()
    assert [r.run_id for r in RunStore(blobs).list("spec-00")] == expected
    assert blobs.listed == ["specs/spec-00/"]

    # A save into an old store migrates it first, so its new pointers are not the only ones.
    write_old_layout(LocalBlobStore(tmp_path / "b"), records)
    store = RunStore(LocalBlobStore(tmp_path / "b"))
    store.save(run_record("new", spec_name="spec-00", created_at="2027-01-01T00:00:00Z"))
    fresh = RunStore(LocalBlobStore(tmp_path / "b"))
    assert [r.run_id for r in fresh.list("spec-00")] == ["new", *expected]
    found = fresh.by_job(JOB.format(3))
    assert found is not None and found.run_id == "run-0003"


def test_old_layout_read_only_is_still_read(tmp_path: Path) -> None:
    class ReadOnly(CountingBlobStore):
        def write(self, key: str, data: bytes, *, if_generation_match: int | None) -> int:
            self._count("write")
            raise PermissionError(13, "read-only", key)

    write_old_layout(LocalBlobStore(tmp_path), many(6, 2))
    blobs = ReadOnly(LocalBlobStore(tmp_path))
    store = RunStore(blobs)
    found = store.by_job(JOB.format(2))
    assert found is not None and found.run_id == "run-0002"
    assert [r.run_id for r in store.list("spec-01")] == ["run-0005", "run-0003", "run-0001"]
    assert not (tmp_path / "layout.json").exists()


def test_damaged_record_is_skipped_in_list_but_raises_in_get(tmp_path: Path) -> None:
    store = RunStore(LocalBlobStore(tmp_path))
    for r in many(6, 2):
        store.save(r)
    store.blobs.write("runs/run-0002.json", b"{not json", if_generation_match=None)
    store.blobs.write("runs/run-0004.json", b'{"run_id": 4}', if_generation_match=None)
    fresh = RunStore(LocalBlobStore(tmp_path))
    assert [r.run_id for r in fresh.list("spec-00")] == ["run-0000"]
    assert len(fresh.skipped) == 2
    assert "run-0002" in fresh.skipped[0] and "run-0004" in fresh.skipped[1]
    assert [r.run_id for r in fresh.list("spec-01")] == ["run-0005", "run-0003", "run-0001"]
    assert fresh.skipped == []
    assert len(fresh.list()) == 4 and len(fresh.skipped) == 2
    with pytest.raises(VertexTunerError, match="run-0002 is damaged"):
        fresh.get("run-0002")
    with pytest.raises(VertexTunerError, match="damaged"):
        fresh.by_job(JOB.format(4))  # the record asked for by name is not passed over


def test_damaged_record_in_an_old_store_is_skipped(tmp_path: Path) -> None:
    records = many(4, 1)
    write_old_layout(LocalBlobStore(tmp_path), records)
    (tmp_path / "runs" / "bad.json").write_text("[1, 2]")
    store = RunStore(LocalBlobStore(tmp_path))
    assert [r.run_id for r in store.list("spec-00")] == newest_first(records)
    assert len(store.skipped) == 1 and "bad.json" in store.skipped[0]
    found = store.by_job(JOB.format(1))
    assert found is not None and found.run_id == "run-0001"


def test_identical_pointers_are_not_written_again(tmp_path: Path) -> None:
    blobs = CountingBlobStore(LocalBlobStore(tmp_path))
    store = RunStore(blobs)
    first = run_record("r1", job_name=JOB.format(1))
    store.save(first)
    blobs.reset()
    store.save(first.model_copy(update={"state": "RUNNING"}))
    assert blobs.calls["write"] == 1  # the record alone

    # Another process that read the record (status, wait) writes only the record as well.
    blobs.reset()
    other = RunStore(blobs)
    found = other.by_job(JOB.format(1))
    assert found is not None
    other.save(found.model_copy(update={"state": "SUCCEEDED"}))
    assert blobs.calls["write"] == 1
    assert other.get("r1").state == "SUCCEEDED"

    # A changed pointer is written: a job named later moves to its own key.
    blobs.reset()
    planned = run_record("r2", fingerprint="e" * 64, job_name=None)
    other.save(planned)
    other.save(planned.model_copy(update={"job_name": JOB.format(2)}))
    found = RunStore(blobs).by_job(JOB.format(2))
    assert found is not None and found.run_id == "r2"
    latest = RunStore(blobs).by_fingerprint("e" * 64)
    assert latest is not None and latest.job_name == JOB.format(2)


def test_job_keys_are_safe(tmp_path: Path) -> None:
    store = RunStore(LocalBlobStore(tmp_path))
    odd = ["projects/../locations/./tuningJobs/..", "a//b", "/lead", "plain", "x/y.json"]
    for i, name in enumerate(odd):
        store.save(run_record(f"odd-{i}", fingerprint=f"{i:064x}", job_name=name))
    fresh = RunStore(LocalBlobStore(tmp_path))
    for i, name in enumerate(odd):
        found = fresh.by_job(name)
        assert found is not None and found.run_id == f"odd-{i}"
    assert fresh.by_job("a/b") is None and fresh.by_job("") is None
    assert all(tmp_path in p.parents for p in tmp_path.rglob("*"))


@pytest.mark.parametrize(
    "content",
    [b"", b"{trunc", b"[]", b'{"aliases": []}', b'{"aliases": {"production": {"run_id": 5}}}'],
)
def test_a_damaged_alias_file_is_named_and_never_overwritten(
    tmp_path: Path, content: bytes
) -> None:
    store = RunStore(LocalBlobStore(tmp_path))
    path = tmp_path / "aliases" / "demo.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(VertexTunerError, match=r"aliases/demo.json is damaged"):
        store.aliases("demo")
    with pytest.raises(VertexTunerError, match=r"will not overwrite"):
        store.set_alias("demo", "production", "r-1")
    assert path.read_bytes() == content


class CountingBlobs(LocalBlobStore):
    """Counts record reads, to show what a listing costs."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.record_reads = 0

    def read(self, key: str) -> tuple[bytes, int] | None:
        if key.startswith("runs/"):
            self.record_reads += 1
        return super().read(key)


def test_listing_the_newest_runs_reads_only_those(tmp_path: Path) -> None:
    blobs = CountingBlobs(tmp_path)
    store = RunStore(blobs)
    for day in range(1, 53):  # a year of weekly runs
        stamp = f"2026{(day - 1) // 4 + 1:02d}{(day - 1) % 4 * 7 + 1:02d}-000000"
        store.save(
            run_record(
                f"support-tone-{stamp}-{day:08x}",
                fingerprint=f"{day:064x}",
                created_at=f"2026-01-01T00:00:{day % 60:02d}Z",
            )
        )
    fresh = RunStore(blobs)
    blobs.record_reads = 0
    newest = fresh.list("support-tone", newest=5)
    assert blobs.record_reads == 5
    assert [r.run_id for r in newest] == sorted(
        (r.run_id for r in fresh.list("support-tone")), reverse=True
    )[:5]
    assert fresh.list("support-tone", newest=0) == []
