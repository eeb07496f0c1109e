"""The create lease under attack: stalled uploads, storage brown-outs, lost answers, signals.

The invariant: immediately before a create, under a lease this process has just renewed (a
generation-checked write, never a clock comparison), the job is looked up again; a process that
lost its lease never creates. Two submits share a run store folder, a tuner and a bucket here,
as two CI runners share them in the cloud.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_service import SPEC, example

from vertex_tuner.backends.fake import FakeStorage, FakeTuner
from vertex_tuner.backends.interface import JobState, UploadResult
from vertex_tuner.errors import (
    AmbiguousCreateError,
    ConfigurationError,
    CreateUnconfirmed,
    JobFailed,
    LeaseLost,
    NotFoundError,
    TransientBackendError,
)
from vertex_tuner.events import Event, LeaseLostNotice, LeaseWaiting
from vertex_tuner.retry import RetryOptions
from vertex_tuner.runstore import LocalBlobStore, RunStore
from vertex_tuner.spec import JobSpec, load_spec
from vertex_tuner.tuning import TuningService
from vertex_tuner.tuning.lease import HeldLease
from vertex_tuner.tuning.recording import UNCONFIRMED

FAST = RetryOptions(attempts=3, initial_delay=0.01, max_delay=0.01, jitter=0.0)
#: Short enough that a take-over happens within a test, long enough for a renewal to land.
TTL = 0.6


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def notify(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        with self.lock:
            return [e for e in self.events if isinstance(e, kind)]


class StallingStorage(FakeStorage):
    """The first upload blocks until released: a slow link, or the library's own long retries."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = threading.Event()
        self.release = threading.Event()
        self._first = True

    def upload_file(self, path: Path, uri: str, **kwargs: Any) -> UploadResult:
        if self._first:
            self._first = False
            self.stalled.set()
            assert self.release.wait(30), "the test never released the upload"
        return super().upload_file(path, uri, **kwargs)


class BrownOut(LocalBlobStore):
    """A run store folder whose lease writes fail while ``down`` (this runner's link only)."""

    down = False

    def write(self, key: str, data: bytes, *, if_generation_match: int | None) -> int:
        if self.down and key.startswith("leases/"):
            raise TransientBackendError("503 Service Unavailable (injected)")
        return super().write(key, data, if_generation_match=if_generation_match)


def make_spec(folder: Path) -> JobSpec:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.jsonl").write_bytes(b"\n".join(example(i) for i in range(60)) + b"\n")
    (folder / "spec.yaml").write_text(SPEC.format(budget=50, dropped=0.01))
    return load_spec(folder / "spec.yaml", environ={})


def service(
    blobs: LocalBlobStore,
    tuner: FakeTuner,
    storage: FakeStorage,
    observer: Recorder | None = None,
    **kwargs: Any,
) -> TuningService:
    return TuningService(
        storage=storage,
        tuner=tuner,
        runs=RunStore(blobs, retry=FAST, sleep=lambda _: time.sleep(0.01)),
        project="p",
        location="us-central1",
        retry=FAST,
        observer=observer,
        lease_ttl=TTL,
        **kwargs,
    )


def creates(tuner: FakeTuner) -> int:
    return sum(1 for name, _ in tuner.calls if name == "create")


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[JobSpec, FakeTuner, StallingStorage]]:
    storage = StallingStorage()
    yield make_spec(tmp_path / "spec"), FakeTuner(), storage
    storage.release.set()


def in_thread(func: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = func()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def until(condition: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_a_live_holder_stalled_in_its_upload_keeps_its_lease(
    tmp_path: Path, shared: tuple[JobSpec, FakeTuner, StallingStorage]
) -> None:
    spec, tuner, storage = shared
    first = service(LocalBlobStore(tmp_path / "runs"), tuner, storage)
    watcher = Recorder()
    second = service(LocalBlobStore(tmp_path / "runs"), tuner, storage, watcher)
    one, one_out = in_thread(lambda: first.submit(spec, wait=False))
    assert storage.stalled.wait(10)
    two, two_out = in_thread(lambda: second.submit(spec, wait=False))
    until(lambda: watcher.of(LeaseWaiting))
    time.sleep(TTL * 5)  # five ttls: long enough for any take-over of an unrenewed lease
    assert creates(tuner) == 0 and two.is_alive()
    storage.release.set()
    one.join(20)
    two.join(20)
    assert "error" not in one_out and "error" not in two_out, (one_out, two_out)
    assert one_out["result"].created and not two_out["result"].created
    assert two_out["result"].plan.action == "attach"
    assert two_out["result"].record.run_id == one_out["result"].record.run_id
    assert creates(tuner) == 1
    holder = watcher.of(LeaseWaiting)[0].holder
    assert f"process {os.getpid()}" in holder and "since" in holder


def test_a_holder_that_lost_its_lease_in_a_brown_out_never_creates(
    tmp_path: Path, shared: tuple[JobSpec, FakeTuner, StallingStorage]
) -> None:
    spec, tuner, storage = shared
    cut_off = BrownOut(tmp_path / "runs")
    told = Recorder()
    first = service(cut_off, tuner, storage, told)
    second = service(LocalBlobStore(tmp_path / "runs"), tuner, storage)
    one, one_out = in_thread(lambda: first.submit(spec, wait=False))
    assert storage.stalled.wait(10)
    cut_off.down = True  # its renewals fail from now on
    took_over = second.submit(spec, wait=False)
    assert took_over.created and creates(tuner) == 1
    cut_off.down = False
    storage.release.set()
    one.join(20)
    assert "error" not in one_out, one_out
    resumed = one_out["result"]
    assert not resumed.created and resumed.plan.action in ("attach", "reuse")
    assert resumed.record.job_name == took_over.record.job_name
    assert resumed.record.run_id == took_over.record.run_id
    assert creates(tuner) == 1
    assert told.of(LeaseLostNotice)


def test_force_without_its_lease_stops(
    tmp_path: Path, shared: tuple[JobSpec, FakeTuner, StallingStorage]
) -> None:
    spec, tuner, storage = shared
    cut_off = BrownOut(tmp_path / "runs")
    first = service(cut_off, tuner, storage)
    second = service(LocalBlobStore(tmp_path / "runs"), tuner, storage)
    one, one_out = in_thread(lambda: first.submit(spec, wait=False, force=True))
    assert storage.stalled.wait(10)
    cut_off.down = True
    second.submit(spec, wait=False)
    cut_off.down = False
    storage.release.set()
    one.join(20)
    assert isinstance(one_out.get("error"), LeaseLost)
    assert "--force does not create" in one_out["error"].message
    assert creates(tuner) == 1


def test_confirm_renews_and_a_taken_lease_cannot_be_confirmed(tmp_path: Path) -> None:
    now = [0.0]
    runs = RunStore(LocalBlobStore(tmp_path), clock=lambda: now[0])
    lease = runs.acquire_lease("fp", ttl=30)
    held = HeldLease(runs, lease, clock=lambda: now[0], interval=3600)
    before = held.lease.generation
    held.confirm()
    assert held.lease.generation != before

    def tick(seconds: float) -> None:
        now[0] += seconds

    runs.acquire_lease("fp", ttl=30, wait=60, sleep=tick)  # watched it unrenewed: taken over
    with pytest.raises(LeaseLost, match="taken over"):
        held.confirm()


def test_a_lease_unrenewable_for_its_ttl_counts_as_lost(tmp_path: Path) -> None:
    now = [0.0]
    blobs = BrownOut(tmp_path)
    runs = RunStore(blobs, clock=lambda: now[0], retry=FAST, sleep=lambda _: None)
    held = HeldLease(runs, runs.acquire_lease("fp", ttl=30), clock=lambda: now[0], interval=3600)
    blobs.down = True
    now[0] = 10
    with pytest.raises(TransientBackendError):
        held.renew()  # within the ttl: a failure, not yet a loss
    now[0] = 31
    with pytest.raises(LeaseLost, match="whole ttl"):
        held.renew()
    blobs.down = False
    with pytest.raises(LeaseLost):
        held.confirm()  # once lost, never found again


def test_a_lost_create_answer_and_a_failed_look_up_leave_a_pending_record(
    tmp_path: Path,
) -> None:
    spec = make_spec(tmp_path / "spec")
    tuner = FakeTuner()
    svc = service(LocalBlobStore(tmp_path / "runs"), tuner, FakeStorage())
    tuner.fail_next("create", AmbiguousCreateError("503 after send"), after_effect=True)
    # The three look-ups before the create (plan, lease taken, lease confirmed) answer; the one
    # after the lost answer fails for good.
    svc.find_jobs = _failing_after(svc.find_jobs, calls=3)  # type: ignore[method-assign]
    with pytest.raises(CreateUnconfirmed) as caught:
        svc.submit(spec, wait=False)
    assert creates(tuner) == 1  # never tried again while it could not look
    assert "may exist" in caught.value.message and "recorded as run" in caught.value.message
    assert f"vertex-tuner submit {spec.spec_path}" in (caught.value.hint or "")
    (pending,) = svc.runs.list("support-tone")
    assert pending.state == UNCONFIRMED and pending.job_name is None
    for follow_up in (lambda: svc.wait(pending, timeout=1), lambda: svc.refresh(pending)):
        with pytest.raises(NotFoundError, match="never confirmed") as told:
            follow_up()
        assert f"vertex-tuner submit {spec.spec_path}" in (told.value.hint or "")
    with pytest.raises(NotFoundError, match="never confirmed"):
        svc.cancel(pending)
    # The next submit finds the job and records it under the same run: one record, one job.
    again = service(LocalBlobStore(tmp_path / "runs"), tuner, FakeStorage())
    result = again.submit(spec, wait=False)
    assert result.plan.action == "attach" and not result.created
    assert result.record is not None and result.record.run_id == pending.run_id
    (recorded,) = again.runs.list("support-tone")
    assert recorded.job_name == result.record.job_name
    assert creates(tuner) == 1


def test_a_pending_record_whose_create_never_happened_is_used_by_the_next_create(
    tmp_path: Path,
) -> None:
    spec = make_spec(tmp_path / "spec")
    tuner = FakeTuner()
    svc = service(LocalBlobStore(tmp_path / "runs"), tuner, FakeStorage())
    tuner.fail_next("create", AmbiguousCreateError("503 after send"), after_effect=False)
    svc.find_jobs = _failing_after(svc.find_jobs, calls=3)  # type: ignore[method-assign]
    with pytest.raises(CreateUnconfirmed):
        svc.submit(spec, wait=False)
    (pending,) = svc.runs.list("support-tone")
    result = service(LocalBlobStore(tmp_path / "runs"), tuner, FakeStorage()).submit(
        spec, wait=False
    )
    assert result.created and result.record is not None
    assert result.record.run_id == pending.run_id
    assert [r.job_name for r in svc.runs.list("support-tone")] == [result.record.job_name]


@pytest.mark.parametrize("flag", ["force", "retry_failed"])
@pytest.mark.parametrize("happened", [True, False], ids=["created", "not-created"])
def test_a_503_on_create_never_picks_up_an_older_job(
    tmp_path: Path, flag: str, happened: bool
) -> None:
    spec = make_spec(tmp_path / "spec")
    tuner = FakeTuner()
    tuner.script([JobState.FAILED])
    svc = service(LocalBlobStore(tmp_path / "runs"), tuner, FakeStorage())
    with pytest.raises(JobFailed):
        svc.submit(spec)
    (old,) = svc.runs.list("support-tone")
    tuner.fail_next("create", AmbiguousCreateError("503 after send"), after_effect=happened)
    result = svc.submit(spec, wait=False, **{flag: True})
    assert result.record is not None and result.record.job_name != old.job_name
    assert result.created
    assert creates(tuner) == 3 - happened  # the second create only when the first did not land
    assert len({j.name for j in tuner.list()}) == 2


def _failing_after(find: Any, *, calls: int) -> Any:
    count = [0]

    def wrapped(fingerprint: str) -> Any:
        count[0] += 1
        if count[0] > calls:
            raise TransientBackendError("503 Service Unavailable (after every retry)")
        return find(fingerprint)

    return wrapped


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from vertex_tuner.cli import install_signal_handlers
    from vertex_tuner.runstore import LocalBlobStore, RunStore
    from vertex_tuner.tuning.lease import HeldLease

    install_signal_handlers()
    runs = RunStore(LocalBlobStore(Path(sys.argv[1])))
    try:
        with HeldLease(runs, runs.acquire_lease("fp", ttl=600)):
            print("held", flush=True)
            time.sleep(60)
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_releases_the_lease(tmp_path: Path, name: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"held\n"
    assert (tmp_path / "leases" / "fp.json").exists()
    process.send_signal(getattr(signal, name))
    assert process.wait(timeout=20) == 130
    process.stdout.close()
    assert not (tmp_path / "leases" / "fp.json").exists()


@pytest.mark.parametrize("value", ["0", "-5", "abc", "inf", "nan", "7200"])
def test_a_lease_ttl_setting_out_of_range_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vertex_tuner.wiring import lease_ttl

    monkeypatch.setenv("VERTEX_TUNER_LEASE_TTL", value)
    with pytest.raises(ConfigurationError, match="VERTEX_TUNER_LEASE_TTL"):
        lease_ttl()
    monkeypatch.setenv("VERTEX_TUNER_LEASE_TTL", "2.5")
    assert lease_ttl() == 2.5
    monkeypatch.delenv("VERTEX_TUNER_LEASE_TTL")
    assert lease_ttl() == 60


def test_a_renewed_lease_still_says_since_when_it_has_been_held(tmp_path: Path) -> None:
    from vertex_tuner.runstore import LeaseHolder

    runs = RunStore(LocalBlobStore(tmp_path / "runs"))
    lease = runs.acquire_lease("fp", ttl=30)
    renewed = runs.renew_lease(runs.renew_lease(lease))
    found = runs.blobs.read(lease.key)
    assert found is not None
    holder = LeaseHolder.read(found[0], found[1])
    assert holder.acquired_at is not None and renewed.renewals == 2
    assert f"since {holder.acquired_at}" in holder.describe()
