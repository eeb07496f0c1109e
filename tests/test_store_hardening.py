"""The run store and Cloud Storage adapter under a rate limit, lost answers and bad objects.

Cloud Storage allows about one write per second to one object and sometimes acts on a request
whose answer never arrives; these tests drive :class:`RunStore` through a blob store that fails
on cue, and the google-cloud-storage adapter through its error translation and the sandbox.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.api_core import exceptions as gexc
from records_support import run_record

from vertex_tuner.backends.fake import FakeStorage
from vertex_tuner.errors import (
    BackendError,
    ConfigurationError,
    DatasetError,
    NotFoundError,
    PreconditionFailed,
    TransientBackendError,
    VertexTunerError,
)
from vertex_tuner.records import DatasetRef, RunRecord
from vertex_tuner.retry import RetryOptions
from vertex_tuner.runstore import BlobStore, LocalBlobStore, RunStore, StorageBlobStore
from vertex_tuner.sandbox import SandboxInfo, storage_client

FAST = RetryOptions(attempts=4, initial_delay=0.01, max_delay=0.01, jitter=0.0)


def record(
    run_id: str = "r1", *, updated: str = "2026-01-01T00:00:00Z", **changes: Any
) -> RunRecord:
    base = run_record(
        run_id,
        fingerprint="f" * 64,
        job_name="projects/p/locations/l/tuningJobs/1",
        created_at="2026-01-01T00:00:00Z",
        updated_at=updated,
        train=DatasetRef(uri="gs://b/t.jsonl", sha256="a" * 64, size=10, examples=3),
    )
    return base.model_copy(update=changes) if changes else base


@dataclass
class _Fault:
    error: Exception
    #: The store acts first, then the error is raised: an answer lost on the way back.
    after_effect: bool


class FlakyBlobs(BlobStore):
    """A local blob store that counts writes per key and fails chosen calls on cue."""

    def __init__(self, root: Path) -> None:
        self.inner = LocalBlobStore(root)
        self.location = self.inner.location
        self.writes: Counter[str] = Counter()
        #: Per operation, what its next calls do: a fault, or None to pass.
        self.faults: dict[str, list[_Fault | None]] = {}

    def fail_next(self, op: str, error: Exception, *, after_effect: bool = False) -> None:
        self.faults.setdefault(op, []).append(_Fault(error, after_effect))

    def _run(self, op: str, func: Callable[[], Any]) -> Any:
        queue = self.faults.get(op)
        fault = queue.pop(0) if queue else None
        if fault is not None and not fault.after_effect:
            raise fault.error
        result = func()
        if fault is not None:
            raise fault.error
        return result

    def read(self, key: str) -> tuple[bytes, int] | None:
        found: tuple[bytes, int] | None = self._run("read", lambda: self.inner.read(key))
        return found

    def write(self, key: str, data: bytes, *, if_generation_match: int | None) -> int:
        def go() -> int:
            generation = self.inner.write(key, data, if_generation_match=if_generation_match)
            self.writes[key] += 1
            return generation

        generation: int = self._run("write", go)
        return generation

    def delete(self, key: str, *, if_generation_match: int | None = None) -> None:
        self._run("delete", lambda: self.inner.delete(key, if_generation_match=if_generation_match))

    def keys(self, prefix: str) -> Iterator[str]:
        return self.inner.keys(prefix)


def unavailable() -> TransientBackendError:
    return TransientBackendError("write gs://b/k: 503 Service Unavailable", status=503)


@pytest.fixture
def blobs(tmp_path: Path) -> FlakyBlobs:
    return FlakyBlobs(tmp_path / "store")


def store(blobs: BlobStore, sleeps: list[float] | None = None) -> RunStore:
    return RunStore(
        blobs, retry=FAST, sleep=(sleeps.append if sleeps is not None else lambda _: None)
    )


# --- 1a: no rewrite of an unchanged record ------------------------------------------------


def test_a_save_after_an_identical_save_makes_no_write(blobs: FlakyBlobs) -> None:
    runs = RunStore(blobs)  # today's constructor: this fails on the assertion, not a TypeError
    runs.save(record())
    before = sum(blobs.writes.values())
    runs.save(record(updated="2026-01-01T00:00:05Z"))  # only updated_at differs
    assert sum(blobs.writes.values()) == before
    assert blobs.writes["runs/r1.json"] == 1


def test_a_changed_record_is_written(blobs: FlakyBlobs) -> None:
    runs = RunStore(blobs)
    runs.save(record())
    runs.save(record(updated="2026-01-01T00:00:05Z", state="RUNNING"))
    assert blobs.writes["runs/r1.json"] == 2
    assert runs.get("r1").state == "RUNNING"


def test_a_record_read_by_another_instance_is_not_written_back_unchanged(
    blobs: FlakyBlobs,
) -> None:
    RunStore(blobs).save(record())
    reader = RunStore(blobs)
    read = reader.get("r1")
    reader.save(read.model_copy(update={"updated_at": "2026-01-02T00:00:00Z"}))
    assert blobs.writes["runs/r1.json"] == 1
    assert sum(n for k, n in blobs.writes.items() if k != "layout.json") == 4  # 3 pointers + run


# --- 1b: idempotent writes are retried ----------------------------------------------------


def test_a_record_write_failing_once_succeeds_on_retry_without_real_sleep(
    blobs: FlakyBlobs,
) -> None:
    sleeps: list[float] = []
    runs = store(blobs, sleeps)
    runs.save(record(run_id="warmup"))  # writes layout.json and the shared pointers
    blobs.fail_next("write", TransientBackendError("429 Too Many Requests", status=429))
    runs.save(record())
    assert sleeps == [pytest.approx(0.01)]
    assert RunStore(blobs).get("r1") == record()


def test_a_429_with_retry_after_is_honoured(blobs: FlakyBlobs) -> None:
    sleeps: list[float] = []
    blobs.fail_next("write", TransientBackendError("429", status=429, retry_after=2.0))
    store(blobs, sleeps).save(record())
    assert sleeps == [2.0]


def test_a_store_that_stays_unavailable_gives_up_after_the_policys_attempts(
    blobs: FlakyBlobs,
) -> None:
    sleeps: list[float] = []
    runs = store(blobs, sleeps)
    runs.save(record(run_id="warmup"))
    for _ in range(FAST.attempts):
        blobs.fail_next("write", unavailable())
    with pytest.raises(TransientBackendError):
        runs.save(record())
    assert len(sleeps) == FAST.attempts - 1
    # Nothing was remembered as written: the next save writes the record.
    runs.save(record())
    assert RunStore(blobs).get("r1") == record()


def test_a_permanent_error_is_not_retried(blobs: FlakyBlobs) -> None:
    sleeps: list[float] = []
    blobs.fail_next("write", BackendError("403 Forbidden", status=403))
    with pytest.raises(BackendError, match="403"):
        store(blobs, sleeps).save(record())
    assert sleeps == []


# --- 2: lost answers on precondition writes -----------------------------------------------


def test_a_lease_write_whose_answer_is_lost_is_recognised_as_ours(blobs: FlakyBlobs) -> None:
    runs = store(blobs)
    blobs.fail_next("write", unavailable(), after_effect=True)
    lease = runs.acquire_lease("fp", wait=0, sleep=lambda _: None)
    found = blobs.inner.read("leases/fp.json")
    assert found is not None
    assert orjson.loads(found[0])["owner"] == lease.owner
    assert found[1] == lease.generation
    # Someone else is still kept out, and our release frees it.
    with pytest.raises(VertexTunerError, match="another submit"):
        store(blobs).acquire_lease("fp", wait=0, sleep=lambda _: None)
    runs.release_lease(lease)
    assert blobs.inner.read("leases/fp.json") is None


def test_a_lost_lease_answer_and_a_failing_read_back_still_end_acquired(
    blobs: FlakyBlobs,
) -> None:
    runs = store(blobs)
    blobs.fail_next("write", unavailable(), after_effect=True)
    # The first read is the loop's look at the lease; the second, the read-back, fails.
    blobs.faults["read"] = [None, _Fault(unavailable(), after_effect=False)]
    lease = runs.acquire_lease("fp", wait=0, sleep=lambda _: None)
    found = blobs.inner.read("leases/fp.json")
    assert found is not None and orjson.loads(found[0])["owner"] == lease.owner
    assert found[1] == lease.generation
    assert blobs.writes["leases/fp.json"] == 1


def test_a_lease_held_by_another_is_not_taken_for_ours_after_a_transient_error(
    blobs: FlakyBlobs,
) -> None:
    other = store(blobs).acquire_lease("fp", wait=0, sleep=lambda _: None)
    runs = store(blobs)
    blobs.fail_next("read", unavailable())  # the first look fails once, then retried
    with pytest.raises(VertexTunerError, match="another submit"):
        runs.acquire_lease("fp", wait=0, sleep=lambda _: None)
    found = blobs.inner.read("leases/fp.json")
    assert found is not None and orjson.loads(found[0])["owner"] == other.owner


def test_an_expired_lease_taken_over_with_a_lost_answer_is_ours(blobs: FlakyBlobs) -> None:
    now = [1000.0]
    first = RunStore(blobs, clock=lambda: now[0], retry=FAST, sleep=lambda _: None)
    first.acquire_lease("fp", ttl=10, wait=0, sleep=lambda _: None)
    second = RunStore(blobs, clock=lambda: now[0], retry=FAST, sleep=lambda _: None)

    def tick(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 1009:  # the take-over write is next: its answer is lost
            blobs.fail_next("write", unavailable(), after_effect=True)

    lease = second.acquire_lease("fp", ttl=10, wait=60, sleep=tick)
    found = blobs.inner.read("leases/fp.json")
    assert found is not None and orjson.loads(found[0])["owner"] == lease.owner


def test_a_release_whose_answer_is_lost_is_fine(blobs: FlakyBlobs) -> None:
    runs = store(blobs)
    lease = runs.acquire_lease("fp", wait=0, sleep=lambda _: None)
    blobs.fail_next("delete", unavailable(), after_effect=True)
    runs.release_lease(lease)
    assert blobs.inner.read("leases/fp.json") is None
    store(blobs).acquire_lease("fp", wait=0, sleep=lambda _: None)  # free for the next one


def test_a_release_that_keeps_failing_leaves_the_lease_to_expire(blobs: FlakyBlobs) -> None:
    runs = store(blobs)
    lease = runs.acquire_lease("fp", wait=0, sleep=lambda _: None)
    for _ in range(FAST.attempts):
        blobs.fail_next("delete", unavailable())
    runs.release_lease(lease)  # no error: the submit has done its work
    assert blobs.inner.read("leases/fp.json") is not None


def test_an_alias_write_whose_answer_is_lost_is_not_applied_twice(blobs: FlakyBlobs) -> None:
    runs = store(blobs)
    blobs.fail_next("write", unavailable(), after_effect=True)
    entry = runs.set_alias("support", "prod", "r1", actor="ci")
    assert entry.run_id == "r1"
    assert [e["run_id"] for e in runs.aliases("support")["prod"].history] == ["r1"]


def test_the_layout_marker_write_with_a_lost_answer_is_fine(blobs: FlakyBlobs) -> None:
    blobs.fail_next("write", unavailable(), after_effect=True)  # the first write: layout.json
    runs = store(blobs)
    runs.save(record())
    assert blobs.writes["layout.json"] == 1
    assert RunStore(blobs).by_job("projects/p/locations/l/tuningJobs/1") == record()


def test_through_the_storage_port_a_lost_lease_answer_is_ours() -> None:
    storage = FakeStorage()
    runs = store(StorageBlobStore(storage, "gs://b/runs"))
    storage.fail_next("write", unavailable(), after_effect=True)
    lease = runs.acquire_lease("fp", wait=0, sleep=lambda _: None)
    data, generation = storage.read("gs://b/runs/leases/fp.json")
    assert orjson.loads(data)["owner"] == lease.owner and generation == lease.generation


# --- 3: translating google-cloud-storage's errors -----------------------------------------


class _Response:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


def _data_corruption() -> Exception:
    from google.cloud.storage.exceptions import DataCorruption

    return DataCorruption(None, "Checksum mismatch while uploading")


def _media_data_corruption() -> Exception:
    from google.resumable_media.common import DataCorruption

    return DataCorruption(None, "Checksum mismatch while uploading")


TRANSLATIONS: list[
    tuple[str, Callable[[], Exception], type[Exception], int | None, float | None]
] = [
    (
        "429 with Retry-After",
        lambda: gexc.TooManyRequests("slow down", response=_Response({"Retry-After": "7"})),
        TransientBackendError,
        429,
        7.0,
    ),
    ("429", lambda: gexc.TooManyRequests("slow down"), TransientBackendError, 429, None),
    (
        "429 with a date in Retry-After",
        lambda: gexc.TooManyRequests(
            "slow", response=_Response({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})
        ),
        TransientBackendError,
        429,
        None,
    ),
    ("500", lambda: gexc.InternalServerError("oops"), TransientBackendError, 500, None),
    ("503", lambda: gexc.ServiceUnavailable("down"), TransientBackendError, 503, None),
    ("408", lambda: gexc.from_http_status(408, "slow"), TransientBackendError, 408, None),
    ("412", lambda: gexc.PreconditionFailed("changed"), PreconditionFailed, 412, None),
    ("404", lambda: gexc.NotFound("gone"), NotFoundError, None, None),
    ("401", lambda: gexc.Unauthorized("who"), ConfigurationError, None, None),
    ("403", lambda: gexc.Forbidden("no"), ConfigurationError, None, None),
    ("400", lambda: gexc.BadRequest("bad"), BackendError, 400, None),
    ("connection reset", lambda: ConnectionResetError("reset"), TransientBackendError, None, None),
    ("timeout", lambda: TimeoutError("timed out"), TransientBackendError, None, None),
    ("DataCorruption", _data_corruption, TransientBackendError, None, None),
    ("resumable-media DataCorruption", _media_data_corruption, TransientBackendError, None, None),
    (
        "RetryError",
        lambda: gexc.RetryError("Timeout of 120.0s exceeded", gexc.ServiceUnavailable("down")),
        TransientBackendError,
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("raised", "expected", "status", "retry_after"),
    [pytest.param(*row[1:], id=row[0]) for row in TRANSLATIONS],
)
def test_translate(
    raised: Callable[[], Exception],
    expected: type[Exception],
    status: int | None,
    retry_after: float | None,
) -> None:
    from vertex_tuner.backends.gcs import translate

    error = translate(raised(), what="write gs://b/k")
    assert type(error) is expected
    assert isinstance(error, VertexTunerError)
    assert error.message.startswith("write gs://b/k: ")
    if isinstance(error, BackendError):
        assert error.status == status
    if isinstance(error, TransientBackendError):
        assert error.retry_after == retry_after


def test_translated_messages_say_what_happened() -> None:
    from vertex_tuner.backends.gcs import translate

    corrupted = translate(_data_corruption(), what="upload gs://b/t.jsonl")
    assert "corrupted in transit" in str(corrupted) and "retried" in str(corrupted)
    gave_up = translate(
        gexc.RetryError("Timeout of 120.0s exceeded", gexc.ServiceUnavailable("down")),
        what="read gs://b/k",
    )
    assert "Cloud Storage unavailable" in str(gave_up) and "down" in str(gave_up)


def test_crc32c_of_a_file_matches_cloud_storages_encoding(tmp_path: Path) -> None:
    from vertex_tuner.backends.gcs import crc32c_of

    path = tmp_path / "f"
    path.write_bytes(b"hello world")
    assert crc32c_of(path) == "yZRlqg=="  # gsutil hash -c of "hello world"


# --- 3: an existing object must hold the local file's bytes -------------------------------


@pytest.mark.sandbox
def test_an_existing_object_is_checked_before_an_upload_is_skipped(
    sandbox_info: SandboxInfo, tmp_path: Path
) -> None:
    from vertex_tuner.backends.gcs import GcsStorage

    storage = GcsStorage(storage_client(sandbox_info), create_missing_buckets=True)
    local = tmp_path / "train.jsonl"
    local.write_bytes(os.urandom(4096))

    same = "gs://hardening-tests/same.jsonl"
    first = storage.upload_file(local, same)
    again = storage.upload_file(local, same)
    assert (again.skipped, again.bytes_sent, again.generation) == (True, 0, first.generation)

    truncated = "gs://hardening-tests/truncated.jsonl"
    storage.write(truncated, local.read_bytes()[:1000], if_generation_match=0)
    with pytest.raises(DatasetError, match="size 1000 bytes, the local file has 4096") as info:
        storage.upload_file(local, truncated)
    assert truncated in info.value.message
    assert info.value.hint is not None and "delete the object" in info.value.hint

    different = "gs://hardening-tests/different.jsonl"
    storage.write(different, os.urandom(4096), if_generation_match=0)
    with pytest.raises(DatasetError, match="CRC32C") as info:
        storage.upload_file(local, different)
    assert different in info.value.message and str(local) in info.value.message
