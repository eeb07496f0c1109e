"""The console observer renders every event, on a terminal and in a CI log, and escapes markup."""

from __future__ import annotations

import io
import typing
from dataclasses import fields

import pytest
from records_support import run_record
from rich.console import Console

from vertex_tuner import events
from vertex_tuner.backends.interface import Job, JobState, UploadResult
from vertex_tuner.cli._progress import ConsoleObserver
from vertex_tuner.dataset import Report
from vertex_tuner.records import Estimate

JOB = Job(
    name="projects/p/locations/l/tuningJobs/[bold]7", state=JobState.RUNNING, steps_completed=3
)
RECORD = run_record("r-1", job_name=JOB.name)

#: One instance of every event type, and a piece of what the CI-log rendering must say.
SAMPLES: list[tuple[events.Event, str | None]] = [
    (events.DatasetPrepared(Report(ok=True, errors=[], warnings=[], stats={})), None),
    (
        events.Planned(
            "create", "no job yet [x]", "f" * 64, Estimate(billable_tokens=10, epochs=2), 5.0
        ),
        "no job yet [x]",
    ),
    (events.UploadStarted("gs://b/d.jsonl", 10), None),
    (events.UploadProgress("gs://b/d.jsonl", 5, 10), None),
    (
        events.UploadDone(
            UploadResult(
                uri="gs://b/[d].jsonl",
                size=10,
                bytes_sent=10,
                skipped=False,
                crc32c="x",
                generation=1,
            )
        ),
        "gs://b/[d].jsonl",
    ),
    (events.JobCreated(JOB), "created projects/p/locations/l/tuningJobs/[bold]7"),
    (events.CreateAmbiguous("503 [/x]", 1), "503 [/x]"),
    (events.JobFound(JOB), "after an ambiguous create"),
    (events.Recorded(RECORD), None),
    (events.StateChanged(JOB, RECORD), "[bold]7: RUNNING"),
    (events.CancelRequested(JOB.name), "cancel requested"),
    (events.Retried("get", "429 [red]", 2), "retrying get (attempt 3): 429 [red]"),
    (
        events.GenerationFailed("base", 4, "quota [/]"),
        "base: held-out example 4 got no answer: quota [/]",
    ),
    (events.GenerationProgress("base", 5, 5), "generated 5 answers from base (1 failed)"),
    (events.Step("support-tone", "evaluate", "r-1"), "support-tone: evaluate — r-1"),
    (
        events.EvaluationPlanned("r-1", "80 requests (online), ≈ $0.01 (at most $0.02) [x]"),
        "evaluating: 80 requests (online), ≈ $0.01 (at most $0.02) [x]",
    ),
    (
        events.BatchState("tuned", "projects/p/batchPredictionJobs/[9]", "RUNNING", 40),
        "tuned: batch job projects/p/batchPredictionJobs/[9] (40 prompts): RUNNING",
    ),
    (
        events.BatchState("base", "jobs/1", "SUCCEEDED", 40, attached=True),
        "base: attached to jobs/1 (40 prompts): SUCCEEDED",
    ),
    (
        events.LeaseWaiting("process 7 on [ci] (since 12:00:00Z)", 42.4),
        "another submit of this job is running: process 7 on [ci] (since 12:00:00Z); if it "
        "stops renewing its lease, it is taken over in 42s",
    ),
    (
        events.LeaseLostNotice("lease leases/fp.json was taken over"),
        "lease leases/fp.json was taken over; nothing is created without it",
    ),
]


def test_every_event_type_has_a_sample() -> None:
    union = set(typing.get_args(events.Event))
    assert {type(e) for e, _ in SAMPLES} == union
    for kind in union:
        assert kind.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert fields(kind)


def test_the_ci_log_says_each_event_in_plain_text_with_markup_escaped() -> None:
    out = io.StringIO()
    observer = ConsoleObserver(Console(file=out, force_terminal=False, width=200))
    for event, _ in SAMPLES:
        observer.notify(event)
    text = out.getvalue()
    for _, expected in SAMPLES:
        if expected is not None:
            assert expected in text
    assert observer.record is RECORD


@pytest.mark.parametrize("quiet", [False, True])
def test_a_terminal_gets_bars_and_nothing_raises(quiet: bool) -> None:
    out = io.StringIO()
    observer = ConsoleObserver(Console(file=out, force_terminal=True, width=120), quiet=quiet)
    for event, _ in SAMPLES:
        observer.notify(event)
    observer.notify(events.GenerationProgress("tuned", 1, 3))
    observer.notify(events.GenerationProgress("tuned", 3, 3))
    observer.close()
    if quiet:
        assert out.getvalue() == ""


def test_the_wait_counts_epochs_against_the_spec_s_total() -> None:
    from dataclasses import replace

    record = RECORD.model_copy(update={"hyperparameters": {"epochs": 3}})
    job = replace(JOB, epochs_completed=1)
    out = io.StringIO()
    ConsoleObserver(Console(file=out, force_terminal=False, width=200)).notify(
        events.StateChanged(job, record)
    )
    assert "RUNNING (epoch 1/3, step 3)" in out.getvalue()
    live = io.StringIO()
    observer = ConsoleObserver(Console(file=live, force_terminal=True, width=120))
    observer.notify(events.StateChanged(job, record))
    assert observer._progress is not None
    (task,) = observer._progress.tasks
    assert (task.completed, task.total) == (1, 3)
    observer.close()
