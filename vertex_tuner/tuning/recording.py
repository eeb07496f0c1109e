"""Run records from jobs: what was tuned from what, and what Vertex said about it.

A record is written as soon as its job exists (so a killed process can be resumed) and updated
as the job moves on. These are pure functions of a record and a job, apart from
:func:`git_commit`, which asks git (or GitHub Actions) which commit the spec came from.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vertex_tuner import _version
from vertex_tuner.backends.interface import Job, JobState
from vertex_tuner.errors import JobFailed
from vertex_tuner.records import (
    DatasetRef,
    DataStatsRecord,
    ErrorRecord,
    RunRecord,
    iso,
)
from vertex_tuner.vocabulary import LABEL_FINGERPRINT, LABEL_SPEC

if TYPE_CHECKING:
    from vertex_tuner.dataset import DatasetFile, PreparedDataset
    from vertex_tuner.spec import JobSpec
    from vertex_tuner.tuning.plan import Plan

#: The share of dropped or truncated examples that fails a run when the spec says nothing.
DEFAULT_MAX_DROPPED_FRACTION = 0.01


#: The state of a pending record: a create whose answer was lost and whose job could not be
#: looked up. The next submit of the spec finds the job (or creates it) under the same run id.
UNCONFIRMED = "CREATE_UNCONFIRMED"


def new_record(
    spec: JobSpec,
    prepared: PreparedDataset,
    plan: Plan,
    job: Job,
    *,
    now: float,
    sandbox: bool,
    project: str | None,
    location: str | None,
    run_id: str | None = None,
) -> RunRecord:
    """The first record of a run: the spec, the data as uploaded, the request and the job.

    ``run_id`` keeps the id of an earlier record of the same job (a bare or pending one)."""
    record = pending_record(
        spec,
        prepared,
        plan,
        now=now,
        sandbox=sandbox,
        project=project,
        location=location,
        run_id=run_id,
    )
    return update_record(record, job, now=now)


def pending_record(
    spec: JobSpec,
    prepared: PreparedDataset,
    plan: Plan,
    *,
    now: float,
    sandbox: bool,
    project: str | None,
    location: str | None,
    run_id: str | None = None,
) -> RunRecord:
    """A run's record before its job is known (state :data:`UNCONFIRMED`, no job name)."""
    stamp = iso(now)
    uris = dict(plan.uploads)

    def ref(item: DatasetFile | None) -> DatasetRef | None:
        if item is None:
            return None
        return DatasetRef(
            uri=uris.get(item.path),
            sha256=item.sha256,
            size=item.size,
            examples=item.examples,
            source=item.source,
        )

    train = ref(prepared.train)
    assert train is not None
    run_stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return RunRecord(
        run_id=run_id or f"{spec.name}-{run_stamp}-{plan.fingerprint[:8]}",
        spec_name=spec.name,
        spec_path=str(spec.spec_path),
        spec_digest=spec.digest(),
        fingerprint=plan.fingerprint,
        tool_version=_version.__version__,
        git_commit=git_commit(spec.base_dir),
        sandbox=sandbox,
        project=project,
        location=location,
        state=UNCONFIRMED,
        created_at=stamp,
        updated_at=stamp,
        method=spec.method,
        base_model=plan.request.base_model,
        parent_run_id=plan.parent_run_id,
        display_name=plan.request.display_name,
        description=plan.request.description,
        labels=dict(plan.request.labels),
        hyperparameters=spec.hyperparameters.model_dump(mode="json", exclude_none=True),
        train=train,
        validation=ref(prepared.validation),
        holdout=ref(prepared.holdout),
        estimate=plan.estimate,
    )


def update_record(record: RunRecord, job: Job, *, now: float) -> RunRecord:
    """The record with what the job says now: state, model, endpoint, statistics, errors."""
    stats = job.data_stats
    data_stats = record.data_stats
    billed = record.billed_tokens
    dropped = record.dropped_fraction
    if stats is not None:
        data_stats = DataStatsRecord(
            example_count=stats.example_count,
            billable_tokens=stats.billable_tokens,
            tuning_step_count=stats.tuning_step_count,
            truncated_examples=stats.truncated_examples,
            truncated_example_indices=list(stats.truncated_example_indices),
            dropped_example_reasons=list(stats.dropped_example_reasons),
            count_is_lower_bound=stats.count_is_lower_bound,
        )
        epochs = billed_epochs(record, job)
        if stats.billable_tokens is not None:
            billed = stats.billable_tokens * epochs
        total = stats.example_count or record.train.examples
        if total:
            dropped = stats.truncated_examples / total
    error = (
        ErrorRecord(code=job.error_code, message=job.error_message) if job.error_message else None
    )
    return record.model_copy(
        update={
            "job_name": job.name,
            "state": job.state.value,
            "sub_state": job.sub_state,
            "updated_at": iso(now),
            "job_create_time": job.create_time or record.job_create_time,
            "job_end_time": job.end_time,
            "tuned_model": job.tuned_model or record.tuned_model,
            "endpoint": job.endpoint or record.endpoint,
            "checkpoints": [
                {
                    "checkpoint_id": c.checkpoint_id,
                    "epoch": c.epoch,
                    "step": c.step,
                    "endpoint": c.endpoint,
                }
                for c in job.checkpoints
            ]
            or record.checkpoints,
            "data_stats": data_stats,
            "billed_tokens": billed,
            "dropped_fraction": dropped,
            "error": error,
        }
    )


def billed_epochs(record: RunRecord, job: Job) -> int:
    """The epochs to multiply Vertex's per-epoch billable tokens by.

    What the job reports first (its ``hyperParameters.epochCount``: the count sent, or the one
    Vertex chose when the spec set none), then the epochs a finished job completed, and only then
    the estimate's (which may be an assumption).
    """
    if job.epochs:
        return job.epochs
    if job.state.is_success and job.epochs_completed:
        return job.epochs_completed
    return record.estimate.epochs if record.estimate else 1


def bare_record(job: Job, now: float) -> RunRecord:
    """A record for a job vertex-tuner did not submit from here (read-only use)."""
    stamp = iso(now)
    return RunRecord(
        run_id=job.name.rsplit("/", 1)[-1],
        spec_name=job.labels.get(LABEL_SPEC, "unknown"),
        spec_digest="",
        fingerprint=job.labels.get(LABEL_FINGERPRINT, ""),
        tool_version=_version.__version__,
        job_name=job.name,
        created_at=stamp,
        updated_at=stamp,
        method="supervised",
        base_model=job.base_model or "",
        display_name=job.display_name or "",
        train=DatasetRef(sha256="", size=0, examples=0),
        state=job.state.value,
    )


def check_outcome(record: RunRecord, max_dropped_fraction: float | None) -> None:
    """JobFailed unless the job succeeded and Vertex dropped no more than the limit."""
    limit = DEFAULT_MAX_DROPPED_FRACTION if max_dropped_fraction is None else max_dropped_fraction
    state = JobState.parse(record.state)
    if not state.is_success:
        detail = f": {record.error.message}" if record.error else ""
        raise JobFailed(
            f"{record.job_name} ended {state.value}{detail}",
            job_name=record.job_name,
            state=state.value,
            hint=f"the run record is {record.run_id}; see `vertex-tuner show {record.run_id}`",
        )
    if record.dropped_fraction is not None and record.dropped_fraction > limit:
        reasons = "; ".join(record.data_stats.dropped_example_reasons) if record.data_stats else ""
        at_least = (
            "at least " if record.data_stats and record.data_stats.count_is_lower_bound else ""
        )
        raise JobFailed(
            f"Vertex dropped or truncated {at_least}{record.dropped_fraction:.1%} of the training "
            f"examples (limit {limit:.1%}){': ' + reasons if reasons else ''}",
            job_name=record.job_name,
            state=state.value,
            hint="shorten the long examples (`vertex-tuner validate` lists them) or raise "
            "dataset.max_dropped_fraction",
        )


def git_commit(folder: Path) -> str | None:
    """The commit the spec came from: GITHUB_SHA in Actions, else ``git rev-parse HEAD``."""
    sha = os.environ.get("GITHUB_SHA")
    if sha:
        return sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
