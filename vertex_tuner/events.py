"""What the tuning service and the evaluator tell an observer while they work.

Every event is a frozen dataclass, and :data:`Event` is their union, so an observer that matches
on them can be checked for completeness by mypy (the console's does: a new event without a
handler there is a type error, not a silently missing line). Observers must not raise; the
service never depends on what they do.

Python callers pass their own observer (any object with ``notify(event)``) to
:class:`~vertex_tuner.tuning.TuningService`, :class:`~vertex_tuner.evaluation.runner.Evaluator`
or :func:`vertex_tuner.retrain`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import Job, UploadResult
    from vertex_tuner.dataset import Report
    from vertex_tuner.records import Estimate, RunRecord

# --- tuning -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetPrepared:
    """The spec's data was read, converted and validated (``report.ok`` may be False)."""

    report: Report


@dataclass(frozen=True)
class Planned:
    """What a submit will do, and why (see :class:`~vertex_tuner.tuning.plan.Plan`)."""

    action: str
    reason: str
    fingerprint: str
    estimate: Estimate
    budget_usd: float | None


@dataclass(frozen=True)
class UploadStarted:
    uri: str
    size: int


@dataclass(frozen=True)
class UploadProgress:
    uri: str
    done: int
    total: int


@dataclass(frozen=True)
class UploadDone:
    result: UploadResult


@dataclass(frozen=True)
class JobCreated:
    job: Job


@dataclass(frozen=True)
class CreateAmbiguous:
    """A create failed in a way that may have created the job; it is looked up before retrying."""

    error: str
    attempt: int


@dataclass(frozen=True)
class JobFound:
    """The look-up after an ambiguous create found the job: no second one is created."""

    job: Job


@dataclass(frozen=True)
class LeaseWaiting:
    """Another submit of the same job holds the create lease; this one waits for it.

    ``holder`` says who (process, host, since when, as the holder wrote it); ``seconds`` is how
    long the lease would still be kept if its holder stopped renewing it now.
    """

    holder: str
    seconds: float


@dataclass(frozen=True)
class LeaseLostNotice:
    """The create lease was taken over (or could not be renewed): nothing is created under it."""

    message: str


@dataclass(frozen=True)
class Recorded:
    """The run record was written (the job exists; a killed process can be resumed)."""

    record: RunRecord


@dataclass(frozen=True)
class StateChanged:
    """The job's state, sub-state or step count changed while it was followed."""

    job: Job
    record: RunRecord


@dataclass(frozen=True)
class CancelRequested:
    job_name: str


@dataclass(frozen=True)
class Retried:
    """A call failed with a transient error and is about to be tried again."""

    call: str
    error: str
    attempt: int


# --- evaluation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationProgress:
    """One more held-out prompt answered (or failed for good) by one target; or, with
    ``scoring``, one more answer scored (by the reward: ``target`` is what scores)."""

    target: str
    done: int
    total: int
    scoring: bool = False


@dataclass(frozen=True)
class GenerationFailed:
    """A held-out prompt got no answer from a target after every retry."""

    target: str
    index: int
    error: str


@dataclass(frozen=True)
class EvaluationPlanned:
    """An evaluation's requests and estimated cost, said before its first prompt is sent."""

    run_id: str
    #: One line: requests, online or batch, the cost with its upper end.
    summary: str


@dataclass(frozen=True)
class BatchState:
    """A target's batch prediction job was created, found, or moved to another state."""

    target: str
    job_name: str
    state: str
    #: Held-out prompts the job answers (the rest came from the cache).
    requests: int
    #: Whether this evaluation attached to a job an earlier one created.
    attached: bool = False


# --- the release loop ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """The release loop moved on to its next step (submit, wait, evaluate, promote)."""

    spec: str
    step: str
    detail: str = ""


Event = (
    DatasetPrepared
    | Planned
    | UploadStarted
    | UploadProgress
    | UploadDone
    | JobCreated
    | CreateAmbiguous
    | JobFound
    | LeaseWaiting
    | LeaseLostNotice
    | Recorded
    | StateChanged
    | CancelRequested
    | Retried
    | GenerationProgress
    | GenerationFailed
    | EvaluationPlanned
    | BatchState
    | Step
)


class Observer(Protocol):
    """Told about progress; the CLI renders it, services may log it. Must not raise."""

    def notify(self, event: Event) -> None: ...


class SilentObserver:
    """The observer used when none is given."""

    def notify(self, event: Event) -> None:
        return None


__all__ = [
    "BatchState",
    "CancelRequested",
    "CreateAmbiguous",
    "DatasetPrepared",
    "EvaluationPlanned",
    "Event",
    "GenerationFailed",
    "GenerationProgress",
    "JobCreated",
    "JobFound",
    "LeaseLostNotice",
    "LeaseWaiting",
    "Observer",
    "Planned",
    "Recorded",
    "Retried",
    "SilentObserver",
    "StateChanged",
    "Step",
    "UploadDone",
    "UploadProgress",
    "UploadStarted",
]
