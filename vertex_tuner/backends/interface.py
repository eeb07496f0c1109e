"""The interfaces between the tuning service and the outside world.

The service talks to three collaborators, each behind an abstract class here: :class:`Storage`
(Cloud Storage), :class:`Tuner` (Vertex tuning jobs) and :class:`Generator` (generateContent);
the validator may be handed a fourth, :class:`TokenCounter` (countTokens).
Adapters for the real Google clients live in :mod:`vertex_tuner.backends.gcs` and
:mod:`vertex_tuner.backends.genai`; in-memory fakes for unit tests in
:mod:`vertex_tuner.backends.fake`. The types crossing these interfaces are frozen dataclasses of
our own, so nothing above this layer imports ``google.*``.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vertex_tuner.vocabulary import Method

if TYPE_CHECKING:
    from pathlib import Path


#: Called with (bytes sent so far, total bytes) while an upload runs.
ProgressCallback = Callable[[int, int], None]


class JobState(str, enum.Enum):  # noqa: UP042 (str() of a member stays what it was)
    """A tuning job's state, as Vertex names it without the ``JOB_STATE_`` prefix."""

    UNSPECIFIED = "UNSPECIFIED"
    QUEUED = "QUEUED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    PAUSED = "PAUSED"
    EXPIRED = "EXPIRED"
    UPDATING = "UPDATING"
    PARTIALLY_SUCCEEDED = "PARTIALLY_SUCCEEDED"

    @classmethod
    def parse(cls, value: str | None) -> JobState:
        """Map ``JOB_STATE_RUNNING``, ``RUNNING`` or an unknown string to a member."""
        if not value:
            return cls.UNSPECIFIED
        name = value.removeprefix("JOB_STATE_")
        try:
            return cls(name)
        except ValueError:
            return cls.UNSPECIFIED

    @property
    def is_terminal(self) -> bool:
        """Whether the job will not change state again.

        google-genai's ``has_ended`` leaves out PARTIALLY_SUCCEEDED; we do not.
        """
        return self in TERMINAL_STATES

    @property
    def is_success(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.PARTIALLY_SUCCEEDED)


TERMINAL_STATES = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.EXPIRED,
        JobState.PARTIALLY_SUCCEEDED,
    }
)


@dataclass(frozen=True)
class Checkpoint:
    checkpoint_id: str
    epoch: int | None = None
    step: int | None = None
    endpoint: str | None = None


@dataclass(frozen=True)
class DataStats:
    """What Vertex reports about the dataset it tuned on, for any tuning method.

    Supervised jobs report ``supervisedTuningDataStats``, preference jobs
    ``preferenceOptimizationDataStats``, distillation ``distillationDataStats.trainingDatasetStats``
    and reinforcement ``reinforcementTuningDataStats``; all map onto these fields.
    ``truncated_examples`` is the number of examples dropped or truncated.
    """

    example_count: int | None = None
    billable_tokens: int | None = None
    tuning_step_count: int | None = None
    truncated_examples: int = 0
    #: 1-based indices of dropped examples; see ``indices_are_sample``.
    truncated_example_indices: tuple[int, ...] = ()
    dropped_example_reasons: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict)
    #: Which stats message these came from: supervised, preference, distillation, reinforcement.
    method: str | None = None
    #: Vertex documents the indices as "a partial sample": more examples may have been dropped.
    indices_are_sample: bool = False
    #: The method reports no dropped count, so ``truncated_examples`` is the number of sampled
    #: indices: at least that many were dropped.
    count_is_lower_bound: bool = False


@dataclass(frozen=True)
class Job:
    """One tuning job, as read from Vertex."""

    name: str
    state: JobState
    sub_state: str | None = None
    display_name: str | None = None
    description: str | None = None
    base_model: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    tuned_model: str | None = None
    endpoint: str | None = None
    checkpoints: tuple[Checkpoint, ...] = ()
    data_stats: DataStats | None = None
    error_code: int | None = None
    error_message: str | None = None
    create_time: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    update_time: str | None = None
    epochs_completed: int | None = None
    steps_completed: int | None = None
    #: The epoch count of the job's hyperparameters: the one sent, or Vertex's choice.
    epochs: int | None = None


@dataclass(frozen=True)
class TuningRequest:
    """Everything needed to create one tuning job."""

    method: Method
    #: A base model id (``gemini-2.5-flash``) or a tuned model (``projects/…/models/ID[@V]``).
    base_model: str
    training_uri: str
    display_name: str
    description: str
    labels: Mapping[str, str]
    validation_uri: str | None = None
    epochs: int | None = None
    learning_rate_multiplier: float | None = None
    adapter_size: int | None = None
    beta: float | None = None
    teacher_model: str | None = None
    checkpoint_id: str | None = None
    kms_key_name: str | None = None
    service_account: str | None = None
    output_uri: str | None = None
    export_last_checkpoint_only: bool | None = None
    #: Reinforcement tuning: the reward payload (see ``JobSpec.reward_payload``) and the
    #: step settings (samples_per_prompt, batch_size, max_output_tokens, thinking_level,
    #: evaluate_interval, checkpoint_interval), as google-genai names them.
    reinforcement: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RewardScore:
    """What Vertex's ``validateReinforcementTuningReward`` said of one (example, answer)."""

    overall: float | None
    #: reward name -> its reward (None when it failed), and its error or extra info.
    details: Mapping[str, tuple[float | None, str | None]] = field(default_factory=dict)
    error: str | None = None

    @property
    def problem(self) -> str | None:
        """Why this is not a score: Vertex's error, a reward that failed, or no overall; None
        when it is one."""
        if self.error:
            return self.error
        for name, (value, why) in self.details.items():
            if value is None:
                return f"{name}: {why or 'failed'}"
        if self.overall is None:
            return "Vertex returned no overall reward"
        return None


class Tuner(ABC):
    """Vertex AI tuning jobs: create, read, list, cancel."""

    @abstractmethod
    def create(self, request: TuningRequest) -> Job:
        """Create a job. Not idempotent: raises AmbiguousCreateError when the outcome is unknown."""

    @abstractmethod
    def get(self, name: str) -> Job:
        """Read a job by its full resource name; NotFoundError when there is none."""

    @abstractmethod
    def list(self, *, labels: Mapping[str, str] | None = None) -> Iterator[Job]:
        """Jobs in the project and location, newest first, filtered by exact label values."""

    @abstractmethod
    def cancel(self, name: str) -> None:
        """Ask Vertex to cancel a job (best effort: the job goes through CANCELLING)."""

    @abstractmethod
    def delete_model(self, name: str) -> None:
        """Delete a tuned model: ``projects/…/models/ID``, every version of it (an ``@V`` in
        ``name`` is dropped, since Vertex deletes whole models), and its deployments.

        NotFoundError when there is no such model. Safe to repeat: a repeat after a lost answer
        finds the model gone.
        """


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int
    generation: int
    crc32c: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class UploadResult:
    uri: str
    generation: int
    size: int
    bytes_sent: int
    #: True when an object with this name was already there and nothing was sent.
    skipped: bool
    crc32c: str | None = None


class Storage(ABC):
    """Cloud Storage objects named by ``gs://bucket/path`` URIs."""

    @abstractmethod
    def stat(self, uri: str) -> ObjectInfo | None:
        """The object's metadata, or None when it does not exist."""

    @abstractmethod
    def upload_file(
        self,
        path: Path,
        uri: str,
        *,
        if_generation_match: int | None = 0,
        progress: ProgressCallback | None = None,
    ) -> UploadResult:
        """Upload a file; with ``if_generation_match=0`` an existing object is left as it is.

        With the default precondition an existing object is not an error: the result says
        ``skipped=True`` and ``bytes_sent=0``. The upload's CRC32C is checked by the adapter.
        """

    @abstractmethod
    def read(self, uri: str) -> tuple[bytes, int]:
        """The object's bytes and generation; NotFoundError when it does not exist."""

    @abstractmethod
    def write(self, uri: str, data: bytes, *, if_generation_match: int | None) -> int:
        """Write bytes under a generation precondition (0: must not exist); returns the generation.

        Raises PreconditionFailed when the precondition does not hold.
        """

    @abstractmethod
    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        """Delete an object; a missing object is not an error."""

    @abstractmethod
    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        """Objects whose URI starts with ``prefix_uri``."""


@dataclass(frozen=True)
class Generation:
    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None


class Generator(ABC):
    """generateContent against a base model or a tuned endpoint."""

    @abstractmethod
    def generate(
        self,
        model: str,
        contents: Sequence[Mapping[str, Any]],
        *,
        system_instruction: str | None = None,
        temperature: float | None = 0.0,
        max_output_tokens: int | None = None,
        response_schema: Mapping[str, Any] | None = None,
        thinking_budget: int | None = None,
        thinking_level: str | None = None,
    ) -> Generation:
        """Generate one reply. ``model`` is a base model id or ``projects/…/endpoints/ID``.

        ``contents`` is Gemini ``contents`` JSON (``[{"role": "user", "parts": [{"text": …}]}]``).
        ``response_schema``: a Vertex ``Schema`` the reply follows; the reply is then JSON.
        ``thinking_budget`` (Gemini 2.5) and ``thinking_level`` (3.x: ``minimal``, ``low``,
        ``medium``, ``high``) set the model's thinking; unset, the model's default.
        """


class TokenCounter(ABC):
    """countTokens: exact token counts of a request, free and paced to its quota.

    It is the validator's :class:`vertex_tuner.dataset.tokens.TokenCounter` (a protocol the
    dataset package defines, so it imports nothing from here).
    """

    #: Who counts, as findings name it: ``Vertex``, ``the sandbox emulator``, ``a fake``.
    source: str = "Vertex"

    @abstractmethod
    def count(
        self,
        model: str,
        contents: Sequence[Mapping[str, Any]],
        *,
        system_instruction: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Total tokens of ``contents`` (Gemini ``Content`` JSON) with a system instruction
        (a ``Content``) and tools (``Tool`` JSON), as base model ``model`` counts them."""


@dataclass(frozen=True)
class BatchJob:
    """A Vertex batch prediction job, as far as evaluation needs it."""

    name: str
    display_name: str
    state: JobState
    model: str
    #: The folder the job writes ``predictions*.jsonl`` to (``outputInfo.gcsOutputDirectory``).
    output_dir: str | None = None
    succeeded: int = 0
    failed: int = 0
    incomplete: int = 0
    error: str | None = None


class BatchPredictor(ABC):
    """Vertex batch prediction for Gemini: a JSONL of ``{"request": GenerateContentRequest}``
    lines in Cloud Storage in, a JSONL of requests and responses out."""

    @abstractmethod
    def create(self, model: str, source_uri: str, dest_prefix: str, display_name: str) -> BatchJob:
        """Create a job. ``model``: a base model id, or a tuned model's resource name
        (``projects/…/models/ID[@V]``: batch prediction takes the model, not its endpoint)."""

    @abstractmethod
    def get(self, name: str) -> BatchJob:
        """Read a job by its full resource name; NotFoundError when there is none."""

    @abstractmethod
    def find(self, display_name: str) -> list[BatchJob]:
        """Jobs with exactly this display name, newest first."""

    @abstractmethod
    def cancel(self, name: str) -> None:
        """Ask Vertex to cancel a job (best effort)."""


class RewardValidator(ABC):
    """Reinforcement rewards scored the way a tuning job scores them, with no job."""

    @abstractmethod
    def validate_reward(
        self, example: Mapping[str, Any], response: Mapping[str, Any], reward: Mapping[str, Any]
    ) -> RewardScore:
        """Score ``response`` (a Gemini ``Content``) for ``example`` (a dataset line) with the
        reward payload (``JobSpec.reward_payload``)."""
