"""Run records: what was tuned from what, kept for every job vertex-tuner submits or attaches to.

A record is written when a job is created (so a killed process can be resumed), and rewritten as
the job moves on. Records are pydantic models at the storage boundary; unknown keys written by a
newer version are kept when an older version rewrites the record.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class DatasetRef(_Record):
    """One dataset file as uploaded: where, which bytes, how many examples."""

    uri: str | None = None
    sha256: str
    size: int
    examples: int
    source: str | None = None


class Estimate(_Record):
    """Billable tokens and cost before the job runs: estimated locally, or calibrated on a
    sample counted exactly (then with a low and a high end)."""

    billable_tokens: int
    epochs: int
    cost_usd: float | None = None
    price_per_million: float | None = None
    prices_as_of: str | None = None
    note: str = "estimated locally: about 4 characters per token"
    #: The interval of a calibrated estimate (``billable_tokens`` is then its central figure).
    billable_tokens_low: int | None = None
    billable_tokens_high: int | None = None
    cost_low_usd: float | None = None
    cost_high_usd: float | None = None
    #: How many examples the calibration counted exactly, and who counted them.
    calibrated_on: int | None = None
    counted_by: str | None = None
    #: The local estimate a calibrated figure was scaled from.
    estimated_tokens: int | None = None

    @property
    def budget_cost_usd(self) -> float | None:
        """The cost ``budget.max_cost_usd`` is held to: a calibrated estimate's upper end."""
        return self.cost_high_usd if self.cost_high_usd is not None else self.cost_usd


class DataStatsRecord(_Record):
    example_count: int | None = None
    billable_tokens: int | None = None
    tuning_step_count: int | None = None
    truncated_examples: int = 0
    truncated_example_indices: list[int] = Field(default_factory=list)
    dropped_example_reasons: list[str] = Field(default_factory=list)
    #: The method reports only a sample of dropped indices: at least this many were dropped.
    count_is_lower_bound: bool = False


class ErrorRecord(_Record):
    code: int | None = None
    message: str


class RunRecord(_Record):
    """Everything known about one tuning job and the inputs that made it."""

    run_id: str
    spec_name: str
    spec_path: str | None = None
    spec_digest: str
    fingerprint: str
    tool_version: str
    git_commit: str | None = None
    sandbox: bool = False
    project: str | None = None
    location: str | None = None

    job_name: str | None = None
    state: str = "PLANNED"
    sub_state: str | None = None
    created_at: str
    updated_at: str
    job_create_time: str | None = None
    job_end_time: str | None = None

    method: str
    base_model: str
    #: Continuous tuning: the run whose tuned model ``base_model`` is (lineage).
    parent_run_id: str | None = None
    #: A re-tune on a new base (``retrain --base-model``): ``from_base``, ``to_base``,
    #: ``reason``, ``changes``, and ``replaces``, the run ``NAME@production`` served when it
    #: was evaluated against it.
    lineage: dict[str, Any] | None = None
    display_name: str
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)

    train: DatasetRef
    validation: DatasetRef | None = None
    holdout: DatasetRef | None = None

    tuned_model: str | None = None
    endpoint: str | None = None
    checkpoints: list[dict[str, Any]] = Field(default_factory=list)
    #: When ``vertex-tuner prune`` deleted the tuned model (every version of it, its endpoint
    #: and checkpoint endpoints with it); None: not deleted by vertex-tuner.
    model_deleted_at: str | None = None

    estimate: Estimate | None = None
    data_stats: DataStatsRecord | None = None
    #: Billable tokens Vertex reported, times epochs.
    billed_tokens: int | None = None
    dropped_fraction: float | None = None

    error: ErrorRecord | None = None
    #: The latest evaluation, everything but its per-example outputs.
    evaluation: dict[str, Any] | None = None
    #: Every evaluation of the run, oldest first, as short entries that name what each judged
    #: (see :mod:`vertex_tuner.evaluation.verdicts`); the full ones are kept apart, never
    #: overwritten.
    evaluations: list[dict[str, Any]] = Field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def iso(ts: float) -> str:
    """A UTC timestamp as records, leases and aliases write it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def human_seconds(seconds: float) -> str:
    """``90`` → ``1.5m``: a duration for messages."""
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    if seconds >= 60:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
