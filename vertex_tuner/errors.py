"""The exceptions vertex-tuner raises.

Every error a user can cause or meet derives from :class:`VertexTunerError`, and each carries a
message that says what failed, where, and what to do next. Errors from google-genai,
google-cloud-storage and the network are translated into this tree at the adapter boundary, so
callers never need to import a Google exception type::

    VertexTunerError
    ├── SpecError                 the job spec is invalid (file, line, field)
    ├── DatasetError              the dataset cannot be read or fails validation
    ├── BudgetExceeded            the cost estimate is over budget.max_cost_usd
    ├── GateFailed                the evaluation gate did not pass
    ├── SmokeTestFailed           the model to promote did not answer a service's call
    ├── NotFoundError             a run, job, alias or object does not exist
    ├── ConfigurationError        credentials, project or sandbox are missing or broken
    ├── Detached                  interrupted while following work that keeps running
    └── BackendError              a cloud call failed
        ├── TransientBackendError     worth retrying (429, 5xx, reset, timeout)
        │   └── AmbiguousCreateError  a create may or may not have happened
        ├── PreconditionFailed        a generation precondition did not hold
        ├── JobFailed                 the tuning job ended FAILED, CANCELLED or EXPIRED
        └── WaitTimeout               the wall-clock limit passed; the job is still running
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every exit code of the ``vertex-tuner`` command, and what it means: the one source the CLI,
#: the retrain summary and the README's table (held to this by a test) take them from.
EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_BUDGET = 3
EXIT_TIMEOUT = 4
EXIT_GATE = 5
EXIT_SMOKE = 6
EXIT_INTERRUPTED = 130
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done",
    EXIT_INVALID: "invalid input (spec or dataset), or the job failed, was cancelled or expired, "
    "or Vertex dropped more than `dataset.max_dropped_fraction`",
    EXIT_USAGE: "usage error (unknown flag, missing argument)",
    EXIT_BUDGET: "the cost estimate is over `budget.max_cost_usd` (nothing was uploaded)",
    EXIT_TIMEOUT: "the wait timed out; the job is still running in Vertex "
    "(resume with `vertex-tuner wait JOB`)",
    EXIT_GATE: "the evaluation gate failed (the alias was not moved)",
    EXIT_SMOKE: "the smoke test failed: the model did not answer when called the way a service "
    "calls it (the alias was not moved)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); a created job keeps running, and the message says "
    "how to resume",
}


class VertexTunerError(Exception):
    """The root of every error vertex-tuner raises on purpose."""

    #: The process exit code the CLI uses for this error.
    exit_code: int = EXIT_INVALID

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


@dataclass(frozen=True)
class Location:
    """Where a problem is: a file, a 1-based line, and a dotted field path."""

    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        place = self.file or ""
        if self.line is not None:
            place = f"{place}:{self.line}" if place else f"line {self.line}"
        if self.field:
            place = f"{place}: {self.field}" if place else self.field
        return place


class SpecError(VertexTunerError):
    """A job spec cannot be loaded: bad YAML, an unknown key, a value out of range."""

    def __init__(
        self,
        message: str,
        *,
        location: Location | None = None,
        hint: str | None = None,
        problems: list[tuple[Location, str]] | None = None,
    ) -> None:
        self.location = location or Location()
        #: Every problem found, when there is more than one.
        self.problems = problems or [(self.location, message)]
        where = str(self.location)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)


class DatasetError(VertexTunerError):
    """A dataset cannot be read, or it has errors Vertex would reject."""


class BudgetExceeded(VertexTunerError):
    """The estimated cost of a job is over the spec's budget."""

    exit_code = EXIT_BUDGET


class GateFailed(VertexTunerError):
    """The evaluation gate (``evaluation.promote_if``) did not hold."""

    exit_code = EXIT_GATE


class SmokeTestFailed(VertexTunerError):
    """The model an alias was to move to did not answer when called as a service calls it."""

    exit_code = EXIT_SMOKE


class NotFoundError(VertexTunerError):
    """A run, job, alias or object that was asked for does not exist."""


class ConfigurationError(VertexTunerError):
    """Credentials, project, bucket or the sandbox are missing or unusable."""


class BackendError(VertexTunerError):
    """A call to Vertex AI or Cloud Storage failed."""

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        #: The HTTP status, when the failure came with one.
        self.status = status


class TransientBackendError(BackendError):
    """A failure that is worth retrying: 429, 5xx, a reset connection, a timeout."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint=hint, status=status)
        #: Seconds the server asked us to wait (a ``Retry-After`` header), if any.
        self.retry_after = retry_after


class AmbiguousCreateError(TransientBackendError):
    """A create failed in a way that leaves open whether the server acted on it.

    A timeout, a reset or a 5xx after the request was sent: the job may exist. Never retry the
    create blindly; look the job up by its fingerprint first.
    """


class PreconditionFailed(BackendError):
    """A write with a generation precondition lost a race (HTTP 412)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, status=412)


class JobFailed(BackendError):
    """A tuning job ended in FAILED, CANCELLED or EXPIRED, or dropped too much data."""

    def __init__(
        self,
        message: str,
        *,
        job_name: str | None = None,
        state: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.job_name = job_name
        self.state = state


class WaitTimeout(BackendError):
    """The wall-clock limit of a wait passed; the job is still running in Vertex."""

    exit_code = EXIT_TIMEOUT

    def __init__(self, message: str, *, job_name: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.job_name = job_name


class Detached(VertexTunerError):
    """Ctrl-C (or SIGTERM) while following work that keeps running in Vertex: nothing is lost,
    and the hint says how to attach again."""

    exit_code = EXIT_INTERRUPTED


class LeaseLost(VertexTunerError):
    """A submit can no longer prove it holds its create lease (another took it over, or the
    lease could not be renewed in time); it must not create a job."""


class CreateUnconfirmed(BackendError):
    """A create's answer was lost and the look-up that would tell whether it happened failed:
    the job may exist. The create is not tried again; a pending run record stands for it."""


class LeaseHeld(VertexTunerError):
    """Another submit of the same job held the create lease for as long as this one waited."""
