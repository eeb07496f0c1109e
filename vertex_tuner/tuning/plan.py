"""What a submit will do, worked out without changing anything: pure functions of the spec and data.

The fingerprint covers the converted data, the settings that change the result and the major
version of vertex-tuner; it is written as a job label, so a retried run finds the job it already
created instead of paying twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from vertex_tuner import _version
from vertex_tuner.backends.genai import request_body
from vertex_tuner.backends.interface import Job, TuningRequest
from vertex_tuner.events import Planned
from vertex_tuner.records import Estimate
from vertex_tuner.spec import REINFORCEMENT_HYPERPARAMETERS
from vertex_tuner.vocabulary import (
    FINGERPRINT_LABEL_LENGTH,
    LABEL_FINGERPRINT,
    LABEL_SPEC,
    LABEL_VERSION,
)

if TYPE_CHECKING:
    from vertex_tuner.dataset import PreparedDataset
    from vertex_tuner.records import RunRecord
    from vertex_tuner.spec import JobSpec

PlanAction = Literal["create", "reuse", "attach", "blocked"]


@dataclass(frozen=True)
class Plan:
    """What a submit will do, and why."""

    action: PlanAction
    reason: str
    fingerprint: str
    request: TuningRequest
    estimate: Estimate
    budget_usd: float | None
    #: (local file, gs:// URI) pairs the submit uploads (content-addressed).
    uploads: tuple[tuple[Path, str], ...]
    job: Job | None = None
    #: The run whose tuned model is the base (continuous tuning from ``name@alias``).
    parent_run_id: str | None = None

    @property
    def over_budget(self) -> bool:
        """Whether the cost, at a calibrated estimate's upper end, is over the budget."""
        cost = self.estimate.budget_cost_usd
        return self.budget_usd is not None and cost is not None and cost > self.budget_usd

    def event(self) -> Planned:
        """The plan as the observer hears of it."""
        return Planned(self.action, self.reason, self.fingerprint, self.estimate, self.budget_usd)

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "fingerprint": self.fingerprint,
            "job_name": self.job.name if self.job else None,
            "request": request_json(self.request),
            # What google-genai would POST to Vertex for this request (rendered offline).
            "request_body": request_body(self.request),
            "estimate": self.estimate.model_dump(mode="json"),
            "budget_usd": self.budget_usd,
            "over_budget": self.over_budget,
            "uploads": [{"path": str(p), "uri": u} for p, u in self.uploads],
        }


@dataclass(frozen=True)
class SubmitResult:
    plan: Plan
    record: RunRecord | None
    #: Bytes actually sent to Cloud Storage by this submit.
    bytes_uploaded: int = 0
    created: bool = False


def decide(
    jobs: list[Job], *, force: bool, retry_failed: bool
) -> tuple[PlanAction, str, Job | None]:
    """The action for a fingerprint, given the jobs that carry it (newest first)."""
    if force:
        return "create", "--force: a new job even if one matches", None
    live = [j for j in jobs if not j.state.is_terminal]
    if live:
        return (
            "attach",
            f"job {live[0].name} with this fingerprint is {live[0].state.value}",
            live[0],
        )
    done = [j for j in jobs if j.state.is_success]
    if done:
        return "reuse", f"job {done[0].name} already tuned this data and spec", done[0]
    if jobs and not retry_failed:
        last = jobs[0]
        return (
            "blocked",
            f"the last job with this fingerprint, {last.name}, ended {last.state.value}",
            last,
        )
    if jobs:
        return "create", f"--retry-failed: the last job ended {jobs[0].state.value}", None
    return "create", "no job has tuned this data and spec yet", None


def compute_fingerprint(spec: JobSpec, prepared: PreparedDataset, base_model: str) -> str:
    """sha256 of the converted data, the settings that change the result and the major version."""
    body = {
        "train": prepared.train.sha256,
        "validation": prepared.validation.sha256 if prepared.validation else None,
        "spec": {**spec.result_fields(), "base_model": base_model},
        "tool_major": _version.__version__.split(".")[0],
    }
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def uploads_for(spec: JobSpec, prepared: PreparedDataset) -> dict[str, tuple[Path, str]]:
    """Role → (local file, content-addressed gs:// URI) for each file a submit uploads."""
    base = spec.gcp.base_uri
    out: dict[str, tuple[Path, str]] = {}
    for role, item, folder in (
        ("train", prepared.train, "datasets"),
        ("validation", prepared.validation, "datasets"),
        ("holdout", prepared.holdout, "holdout"),
    ):
        if item is not None:
            out[role] = (item.path, f"{base}/{folder}/{item.sha256}.jsonl")
    return out


def build_request(
    spec: JobSpec,
    prepared: PreparedDataset,
    base_model: str,
    fingerprint: str,
    uploads: dict[str, tuple[Path, str]],
) -> TuningRequest:
    """The tuning request for a spec whose data is (or will be) at ``uploads``' URIs."""
    hp = spec.hyperparameters
    labels = {
        **spec.labels,
        LABEL_SPEC: spec.name,
        LABEL_FINGERPRINT: fingerprint[:FINGERPRINT_LABEL_LENGTH],
        LABEL_VERSION: _version.__version__.replace(".", "-"),
    }
    digests = f"train sha256:{prepared.train.sha256[:16]} ({prepared.train.examples} examples)"
    if prepared.validation is not None:
        digests += (
            f", validation sha256:{prepared.validation.sha256[:16]} "
            f"({prepared.validation.examples})"
        )
    description = f"{spec.description} [{digests}; vertex-tuner {_version.__version__}]".strip()
    validation = uploads.get("validation")
    return TuningRequest(
        method=spec.method,
        base_model=base_model,
        training_uri=uploads["train"][1],
        validation_uri=validation[1] if validation else None,
        display_name=spec.name,
        description=description,
        labels=labels,
        epochs=hp.epochs,
        learning_rate_multiplier=hp.learning_rate_multiplier,
        adapter_size=hp.adapter_size,
        beta=hp.beta,
        teacher_model=spec.distillation.teacher_model if spec.distillation else None,
        checkpoint_id=spec.base_checkpoint,
        kms_key_name=spec.gcp.kms_key_name,
        service_account=spec.gcp.service_account,
        output_uri=spec.gcp.output_uri,
        export_last_checkpoint_only=hp.export_last_checkpoint_only,
        reinforcement=_reinforcement(spec),
    )


def _reinforcement(spec: JobSpec) -> dict[str, Any] | None:
    """The reward and step settings of a reinforcement spec, as the request carries them."""
    if spec.method != "reinforcement":
        return None
    hp = spec.hyperparameters
    settings = {name: getattr(hp, name) for name in REINFORCEMENT_HYPERPARAMETERS}
    return {"reward": spec.reward_payload(), **{k: v for k, v in settings.items() if v is not None}}


#: Epochs the estimate assumes when ``hyperparameters.epochs`` is unset. Vertex then picks its
#: own ("leave unset to use the recommended value"); no default is documented, per model or at
#: all (Google's notebook assumes 4, a third-party README 3: both unconfirmed), so the estimate
#: assumes 1 and says so. The record's billed tokens use the epochs the job reports.
ASSUMED_EPOCHS = 1
ASSUMED_EPOCHS_NOTE = (
    "hyperparameters.epochs is unset: Vertex picks the epoch count and documents no default, "
    f"so this assumes {ASSUMED_EPOCHS} epoch(s); the cost grows with each epoch Vertex adds"
)
DEFAULT_NOTE = "estimated locally: about 4 characters per token"


def estimate(spec: JobSpec, prepared: PreparedDataset) -> Estimate:
    """Tokens and cost as the validator estimated them, for the plan and the record.

    When the data was counted exactly (:func:`vertex_tuner.dataset.validate.count_exactly`),
    the figures are the calibrated ones, with their low and high ends. When the spec leaves
    ``hyperparameters.epochs`` unset the count is an assumption (:data:`ASSUMED_EPOCHS`), and
    the estimate's ``note`` says so.
    """
    stats = prepared.report.stats
    if spec.method == "reinforcement":
        return reinforcement_estimate(spec, prepared)
    set_epochs = spec.hyperparameters.epochs
    epochs = int(set_epochs or stats.get("epochs") or ASSUMED_EPOCHS)
    calibration = stats.get("calibration")
    first = calibrated_note(calibration) if calibration else DEFAULT_NOTE
    note = first if set_epochs else f"{first}; {ASSUMED_EPOCHS_NOTE}"
    common: dict[str, Any] = {
        "epochs": epochs,
        "price_per_million": stats.get("price_per_million"),
        "prices_as_of": stats.get("prices_as_of"),
        "note": note,
    }
    if not calibration:
        return Estimate(
            billable_tokens=int(stats.get("billable_tokens", 0)),
            cost_usd=stats.get("estimated_cost_usd"),
            **common,
        )
    return Estimate(
        billable_tokens=int(calibration["billable_tokens"]),
        billable_tokens_low=int(calibration["billable_tokens_low"]),
        billable_tokens_high=int(calibration["billable_tokens_high"]),
        cost_usd=calibration.get("cost_usd"),
        cost_low_usd=calibration.get("cost_low_usd"),
        cost_high_usd=calibration.get("cost_high_usd"),
        calibrated_on=int(calibration["examples"]),
        counted_by=str(calibration["counted_by"]),
        estimated_tokens=int(stats.get("billable_tokens", 0)),
        **common,
    )


#: Vertex caps a reinforcement run at this many steps ("The total training run is capped at
#: 500 steps", the RFT hyperparameters page); batch and samples default to 32 and 16.
RFT_MAX_STEPS = 500
RFT_DEFAULT_BATCH = 32
RFT_DEFAULT_SAMPLES = 16
RFT_DEFAULT_OUTPUT = 32_768


def reinforcement_estimate(spec: JobSpec, prepared: PreparedDataset) -> Estimate:
    """The size of a reinforcement run: steps, answers sampled, and an upper bound of the
    tokens they read and write. Google publishes no price for it, so there is no cost.

    Steps: ``ceil(prompts × epochs / batch_size)``, at most 500; Vertex's default epochs are
    ``min(110 × batch / prompts, 10)`` (the hyperparameters page). Each step samples
    ``batch_size × samples_per_prompt`` answers, each reading its prompt and writing at most
    ``max_output_tokens`` (thinking included).
    """
    hp = spec.hyperparameters
    stats = prepared.report.stats
    prompts = max(1, int(prepared.train.examples or stats.get("examples", 0) or 1))
    batch = hp.batch_size or RFT_DEFAULT_BATCH
    samples = hp.samples_per_prompt or RFT_DEFAULT_SAMPLES
    epochs = hp.epochs or max(1, min(round(110 * batch / prompts), 10))
    steps = min(RFT_MAX_STEPS, -(-prompts * epochs // batch))
    answers = steps * batch * samples
    longest_prompt = int((stats.get("input_tokens") or {}).get("max", 0))
    bound = answers * (longest_prompt + (hp.max_output_tokens or RFT_DEFAULT_OUTPUT))
    note = (
        f"reinforcement: {steps:,} steps × {batch} prompts × {samples} samples = {answers:,} "
        f"sampled answers, at most {bound:,} tokens read and written; Google publishes no price "
        "for reinforcement tuning, so there is no cost estimate"
    )
    return Estimate(billable_tokens=bound, epochs=int(epochs), cost_usd=None, note=note)


def calibrated_note(calibration: dict[str, Any]) -> str:
    return (
        f"calibrated on {calibration['examples']:,} examples counted by {calibration['counted_by']}"
    )


def is_calibrated(estimate: Estimate) -> bool:
    return estimate.calibrated_on is not None


def epochs_assumed(estimate: Estimate) -> bool:
    """Whether the estimate's epoch count is an assumption (the spec set none)."""
    return ASSUMED_EPOCHS_NOTE in estimate.note


def request_json(request: TuningRequest) -> dict[str, Any]:
    out = asdict(request)
    out["labels"] = dict(request.labels)
    return {k: v for k, v in out.items() if v is not None}
