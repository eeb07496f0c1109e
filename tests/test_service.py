"""The tuning service with in-package fakes: plans, one job per change, ambiguity, waits, records.

No test sleeps: the service gets a fake clock and a sleep that advances it.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from vertex_tuner.backends.fake import FakeStorage, FakeTuner
from vertex_tuner.backends.interface import JobState
from vertex_tuner.errors import (
    AmbiguousCreateError,
    BudgetExceeded,
    DatasetError,
    JobFailed,
    TransientBackendError,
    WaitTimeout,
)
from vertex_tuner.runstore import LocalBlobStore, RunStore
from vertex_tuner.service import LABEL_FINGERPRINT, TuningService
from vertex_tuner.spec import JobSpec, load_spec

SPEC = """\
name: support-tone
base_model: gemini-2.5-flash
dataset: {{train: data.jsonl, validation: 0.2, max_dropped_fraction: {dropped}}}
hyperparameters: {{epochs: 2, adapter_size: 4}}
gcp: {{project: acme-project, bucket: acme-tuning, prefix: vt}}
budget: {{max_cost_usd: {budget}}}
evaluation: {{holdout: 0.1}}
"""


def example(i: int) -> bytes:
    return orjson.dumps(
        {
            "messages": [
                {"role": "system", "content": "Be warm."},
                {"role": "user", "content": f"Question number {i} about order HH-{i:06d}?"},
                {"role": "assistant", "content": f"Answer {i}: it ships on Thursday."},
            ]
        }
    )


def make_spec(
    tmp_path: Path,
    *,
    rows: int = 120,
    budget: float = 50,
    dropped: float = 0.01,
    extra: bytes = b"",
) -> JobSpec:
    (tmp_path / "data.jsonl").write_bytes(
        b"\n".join(example(i) for i in range(rows)) + b"\n" + extra
    )
    (tmp_path / "spec.yaml").write_text(SPEC.format(budget=budget, dropped=dropped))
    return load_spec(tmp_path / "spec.yaml", environ={})


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tuner(clock: Clock) -> FakeTuner:
    return FakeTuner(clock=clock)


@pytest.fixture
def storage() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def service(tmp_path: Path, tuner: FakeTuner, storage: FakeStorage, clock: Clock) -> TuningService:
    return TuningService(
        storage=storage,
        tuner=tuner,
        runs=RunStore(LocalBlobStore(tmp_path / "runs"), clock=clock),
        project="p",
        location="us-central1",
        clock=clock,
        sleep=clock.sleep,
    )


def creates(tuner: FakeTuner) -> int:
    return sum(1 for name, _ in tuner.calls if name == "create")


def test_submit_creates_waits_and_records(
    service: TuningService, tuner: FakeTuner, storage: FakeStorage, tmp_path: Path
) -> None:
    tuner.script(
        [
            JobState.QUEUED,
            (JobState.RUNNING, "PROCESSING_DATASET"),
            (JobState.RUNNING, "TUNING"),
            JobState.SUCCEEDED,
        ]
    )
    spec = make_spec(tmp_path)
    result = service.submit(spec)
    record = result.record
    assert record is not None
    assert result.created and result.plan.action == "create"
    assert record.state == "SUCCEEDED"
    assert record.tuned_model and record.endpoint
    assert record.train.uri == f"gs://acme-tuning/vt/datasets/{record.train.sha256}.jsonl"
    assert record.validation is not None and record.holdout is not None
    assert record.train.examples + record.validation.examples + record.holdout.examples == 120
    assert record.estimate is not None and record.estimate.epochs == 2
    assert record.labels[LABEL_FINGERPRINT] == record.fingerprint[:40]
    assert record.labels["vertex-tuner-spec"] == "support-tone"
    assert result.bytes_uploaded == sum(
        storage.stat(u).size
        for u in (record.train.uri, record.validation.uri, record.holdout.uri)  # type: ignore[union-attr]
    )
    # The record in the store is the same as the one returned.
    assert service.runs.get(record.run_id).to_json() == record.to_json()
    assert creates(tuner) == 1


def test_unchanged_second_submit_sends_nothing_and_creates_nothing(
    service: TuningService, tuner: FakeTuner, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path)
    first = service.submit(spec)
    second = service.submit(spec)
    assert second.plan.action == "reuse"
    assert second.bytes_uploaded == 0 and not second.created
    assert second.record is not None and first.record is not None
    assert second.record.job_name == first.record.job_name
    assert creates(tuner) == 1


def test_changed_hyperparameter_makes_a_new_job(
    service: TuningService, tuner: FakeTuner, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path)
    service.submit(spec)
    changed = spec.model_copy(
        update={"hyperparameters": spec.hyperparameters.model_copy(update={"epochs": 3})}
    )
    result = service.submit(changed)
    assert result.plan.action == "create"
    assert result.bytes_uploaded == 0  # the data did not change: its objects are reused
    assert creates(tuner) == 2


def test_attaches_to_a_running_job(
    service: TuningService, tuner: FakeTuner, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path)
    tuner.script([JobState.RUNNING])
    first = service.submit(spec, wait=False)
    assert first.record is not None and first.record.state == "QUEUED"
    second = service.submit(spec, wait=False)
    assert second.plan.action == "attach"
    assert second.record is not None and second.record.run_id == first.record.run_id
    assert creates(tuner) == 1


def test_failed_job_blocks_until_retry_failed(
    service: TuningService, tuner: FakeTuner, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path)
    tuner.script([JobState.FAILED])
    with pytest.raises(JobFailed):
        service.submit(spec)
    with pytest.raises(JobFailed, match="--retry-failed") as info:
        service.submit(spec)
    assert "--retry-failed" in (info.value.hint or "")
    assert creates(tuner) == 1
    tuner.script([JobState.SUCCEEDED])
    result = service.submit(spec, retry_failed=True)
    assert result.created and creates(tuner) == 2


def test_ambiguous_create_that_happened_is_found_not_repeated(
    service: TuningService, tuner: FakeTuner, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path)
    tuner.fail_next("create", AmbiguousCreateError("connection reset"), after_effect=True)
    result = service.submit(spec)
    assert creates(tuner) == 1
    assert len(list(tuner.list())) == 1
    assert result.record is not None and result.record.state == "SUCCEEDED"


def test_ambiguous_create_that_did_not_happen_is_created_once(
    service: TuningService, tuner: FakeTuner, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path)
    tuner.fail_next("create", AmbiguousCreateError("503 after send"), after_effect=False)
    service.submit(spec)
    assert len(list(tuner.list())) == 1


def test_rate_limited_create_is_retried_after_retry_after(
    service: TuningService, tuner: FakeTuner, clock: Clock, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path)
    tuner.fail_next("create", TransientBackendError("429", status=429, retry_after=7.0))
    service.submit(spec)
    assert len(list(tuner.list())) == 1
    assert clock.sleeps[0] >= 7.0


def test_over_budget_uploads_nothing(
    service: TuningService, storage: FakeStorage, tuner: FakeTuner, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path, budget=0.0001)
    with pytest.raises(BudgetExceeded) as info:
        service.submit(spec)
    assert info.value.exit_code == 3
    assert list(storage.list("gs://acme-tuning/")) == []
    assert creates(tuner) == 0


def test_invalid_dataset_uploads_nothing(
    service: TuningService, storage: FakeStorage, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path, extra=b'{"messages": [{"role": "user", "content": "hi"}]\n')
    with pytest.raises(DatasetError) as info:
        service.submit(spec)
    assert ":121" in info.value.message
    assert list(storage.list("gs://acme-tuning/")) == []


def test_dry_run_changes_nothing(
    service: TuningService, storage: FakeStorage, tuner: FakeTuner, tmp_path: Path
) -> None:
    result = service.submit(make_spec(tmp_path), dry_run=True)
    assert result.record is None and result.plan.action == "create"
    assert result.plan.request.training_uri.startswith("gs://acme-tuning/vt/datasets/")
    assert list(storage.list("gs://acme-tuning/")) == [] and creates(tuner) == 0


def test_wait_times_out_with_the_job_still_running(
    service: TuningService, tuner: FakeTuner, clock: Clock, tmp_path: Path
) -> None:
    tuner.script([JobState.RUNNING])
    with pytest.raises(WaitTimeout) as info:
        service.submit(make_spec(tmp_path), timeout=600)
    assert info.value.exit_code == 4
    assert "vertex-tuner wait" in (info.value.hint or "")
    # The poll interval grows to its cap instead of hammering the API.
    assert clock.sleeps[:3] == [1.0, 1.5, 2.25]
    assert max(clock.sleeps) <= 60.0
    record = service.runs.list("support-tone")[0]
    assert record.state == "RUNNING"


@pytest.mark.parametrize("state", [JobState.CANCELLED, JobState.EXPIRED])
def test_every_terminal_failure_ends_the_wait(
    service: TuningService, tuner: FakeTuner, tmp_path: Path, state: JobState
) -> None:
    tuner.script([JobState.RUNNING, state])
    with pytest.raises(JobFailed, match=state.value):
        service.submit(make_spec(tmp_path))


def test_partially_succeeded_is_terminal(
    service: TuningService, tuner: FakeTuner, tmp_path: Path
) -> None:
    tuner.script([JobState.RUNNING, JobState.PARTIALLY_SUCCEEDED])
    result = service.submit(make_spec(tmp_path))
    assert result.record is not None and result.record.state == "PARTIALLY_SUCCEEDED"


def test_transient_errors_while_waiting_are_retried(
    service: TuningService, tuner: FakeTuner, tmp_path: Path
) -> None:
    tuner.script([JobState.RUNNING, JobState.SUCCEEDED])
    tuner.fail_next("get", TransientBackendError("503", status=503))
    result = service.submit(make_spec(tmp_path))
    assert result.record is not None and result.record.state == "SUCCEEDED"


def test_too_many_dropped_examples_fail_the_run(
    service: TuningService, tuner: FakeTuner, tmp_path: Path
) -> None:
    from vertex_tuner.backends.fake import FakeOutcome

    tuner.script(
        [JobState.SUCCEEDED],
        FakeOutcome(
            example_count=100, truncated_examples=5, dropped_example_reasons=("too many tokens",)
        ),
    )
    with pytest.raises(JobFailed, match=r"5\.0% of the training examples") as info:
        service.submit(make_spec(tmp_path, dropped=0.01))
    assert "max_dropped_fraction" in (info.value.hint or "")
    record = service.runs.list("support-tone")[0]
    assert record.state == "SUCCEEDED" and record.dropped_fraction == 0.05
    assert record.data_stats is not None
    assert record.data_stats.dropped_example_reasons == ["too many tokens"]
    assert record.billed_tokens == 50_000 * 2


def test_cancel_with_wait_ends_cancelled(
    service: TuningService, tuner: FakeTuner, tmp_path: Path
) -> None:
    tuner.script([JobState.RUNNING])
    result = service.submit(make_spec(tmp_path), wait=False)
    assert result.record is not None
    job = service.cancel(result.record, wait=True)
    assert job.state == JobState.CANCELLED
    assert service.runs.get(result.record.run_id).state == "CANCELLED"
