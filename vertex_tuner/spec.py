"""Job specs: the YAML files in ``jobs/`` that say what to tune, from what, and how.

A spec is parsed with PyYAML's node API so that every value keeps the line it came from, then
``${VAR}`` / ``${VAR:-default}`` references are expanded, then pydantic checks the shape
(unknown keys are errors) and :func:`_check_model_rules` checks what the chosen base model
allows. Every problem becomes a :class:`~vertex_tuner.errors.SpecError` that names the file, the
line and the field path, and says what is allowed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import hashlib
import math
import os
import re
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from vertex_tuner import models, names
from vertex_tuner.errors import Location, SpecError
from vertex_tuner.evaluation import judge as judging
from vertex_tuner.vocabulary import RESERVED_LABELS, DatasetFormat, Method

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``6h``, ``90m``, ``1h30m``, ``45s``, ``2d`` or a plain number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value <= 0:
            raise ValueError("must be a positive, finite number of seconds")
        return float(value)
    text = str(value).strip().replace(" ", "")
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None or not any(match.groups()):
        raise ValueError(f"{value!r} is not a duration; write it like 6h, 90m, 1h30m or 45s")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError("must be positive")
    return float(total)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _fraction_or_path(value: float | str | None) -> float | str | None:
    if isinstance(value, float | int) and not isinstance(value, bool):
        if not 0 < value < 1:
            raise ValueError("a fraction must be between 0 and 1 (exclusive), e.g. 0.1")
        return float(value)
    return value


class DatasetSpec(_Model):
    """Where the training data is and how to read it."""

    train: str = Field(description="Path relative to the spec file, or gs://")
    validation: float | str | None = Field(
        default=None, description="A fraction split off train (deterministic), or a path"
    )
    format: DatasetFormat = "auto"
    columns: dict[Literal["prompt", "response", "system"], str] | None = Field(
        default=None, description="CSV/TSV column mapping"
    )
    max_dropped_fraction: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.01,
        description="Fail a finished job when Vertex dropped or truncated more than this share",
    )

    @field_validator("validation")
    @classmethod
    def _validation(cls, v: float | str | None) -> float | str | None:
        return _fraction_or_path(v)


class Hyperparameters(_Model):
    epochs: Annotated[int, Field(ge=1, le=100)] | None = None
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=10)] | None = None
    adapter_size: Literal[1, 2, 4, 8, 16, 32] | None = None
    beta: Annotated[float, Field(gt=0, le=10)] | None = Field(
        default=None, description="Preference tuning only: weight of the KL penalty"
    )
    export_last_checkpoint_only: bool | None = None
    # Reinforcement tuning only (refused for the other methods, where google-genai drops them).
    samples_per_prompt: Annotated[int, Field(ge=1, le=256)] | None = Field(
        default=None, description="Reinforcement: answers sampled per prompt per step (16)"
    )
    batch_size: Annotated[int, Field(ge=1, le=8192)] | None = Field(
        default=None, description="Reinforcement: prompts per step (32)"
    )
    max_output_tokens: Annotated[int, Field(ge=1, le=32_768)] | None = Field(
        default=None, description="Reinforcement: longest sampled answer, thinking included"
    )
    thinking_level: Literal["minimal", "high"] | None = Field(
        default=None, description="Reinforcement on 3.x: thinking while sampling (high)"
    )
    evaluate_interval: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Reinforcement: steps between evaluations (once per epoch)"
    )
    checkpoint_interval: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Reinforcement: steps between checkpoints (once per epoch)"
    )


#: A reinforcement spec's evaluation metrics when it names none.
REINFORCEMENT_METRICS = ("reward",)

#: Hyperparameters only reinforcement tuning takes (google-genai routes them into
#: reinforcementTuningSpec only; for the other methods it drops them or sends them nowhere).
REINFORCEMENT_HYPERPARAMETERS = (
    "samples_per_prompt",
    "batch_size",
    "max_output_tokens",
    "thinking_level",
    "evaluate_interval",
    "checkpoint_interval",
)


class StringMatchReward(_Model):
    """Compare the (parsed) answer with an expression that may name ``{{references.KEY}}``."""

    expression: str
    operation: Literal["exact", "partial", "regex"] = "exact"
    correct: Annotated[float, Field(ge=-1, le=1)] = 1.0
    wrong: Annotated[float, Field(ge=-1, le=1)] = 0.0
    #: Match the value of this first-level key of a JSON answer instead of the whole answer.
    json_key: str | None = None


class JudgeReward(_Model):
    """An autorater: a Gemini model scores each answer by a prompt file; the number it answers
    (extracted by ``parse``) is the reward."""

    model: str = judging.DEFAULT_MODEL
    prompt: str = Field(description="A file with {{prompt}}, {{response}}, {{references.KEY}}")
    parse: str = Field(default=r"(-?\d+(?:\.\d+)?)", description="Regex: the score's group")
    samples: Annotated[int, Field(ge=1, le=8)] | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return names.model(v)


class CloudRunReward(_Model):
    uri: str

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not re.fullmatch(r"https://[a-z0-9.-]+(?:/[A-Za-z0-9._~/-]*)?", v):
            raise ValueError(f"{v!r} is not an https:// Cloud Run URL")
        return v


class RewardSpec(_Model):
    """One reward: a pre-parse, then exactly one scorer."""

    name: str | None = Field(default=None, description="Shown per reward in reward test")
    parse: dict[Literal["regex"], str] | None = Field(
        default=None, description="Extract from the answer first (the last match wins)"
    )
    string_match: StringMatchReward | None = None
    code: str | None = Field(default=None, description="A .py file defining evaluate()")
    judge: JudgeReward | None = None
    cloud_run: CloudRunReward | None = None

    @model_validator(mode="after")
    def _one_scorer(self) -> RewardSpec:
        _check_one_scorer(self)
        return self


_SCORERS = ("string_match", "code", "judge", "cloud_run")
_REFERENCE_RE = re.compile(r"\{\{\s*references\.([A-Za-z0-9_.-]+?)\s*\}\}")
#: string_match.operation → google-genai's MatchOperation.
_MATCH_OPERATIONS = {"exact": "EXACT_MATCH", "partial": "PARTIAL_MATCH", "regex": "REGEX_CONTAINS"}


def _check_one_scorer(reward: RewardSpec) -> None:
    found = [k for k in _SCORERS if getattr(reward, k)]
    if len(found) != 1:
        raise ValueError(
            "a reward has exactly one of string_match, code, judge or cloud_run"
            + (f" (this one has {', '.join(found)})" if found else "")
        )


class WeightedReward(_Model):
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    reward: RewardSpec


class RewardsSpec(RewardSpec):
    """``reward:`` of a reinforcement spec: one reward, or ``weighted:`` several, and the test
    cases ``vertex-tuner reward test`` runs before any step is paid for."""

    weighted: list[WeightedReward] | None = Field(
        default=None, description="Several rewards, combined as Σ wᵢ·rᵢ / Σ wᵢ (at most 16)"
    )
    tests: str | None = Field(
        default=None, description="JSONL of {example, response, expect: 1 | [low, high]}"
    )

    @model_validator(mode="after")
    def _one_scorer(self) -> RewardsSpec:  # replaces RewardSpec's: weighted has none itself
        if self.weighted is None:
            _check_one_scorer(self)
            return self
        if any(getattr(self, k) for k in _SCORERS) or self.parse:
            raise ValueError(
                "weighted: lists the rewards; put parse and the scorer inside each one"
            )
        if not 1 <= len(self.weighted) <= 16:
            raise ValueError("weighted: takes 1 to 16 rewards")
        return self

    def rewards(self) -> list[tuple[float, RewardSpec]]:
        """Each reward with its weight (1 for a single one)."""
        if self.weighted is not None:
            return [(w.weight, w.reward) for w in self.weighted]
        return [(1.0, self)]


class DistillationSpec(_Model):
    teacher_model: str

    @field_validator("teacher_model")
    @classmethod
    def _teacher(cls, v: str) -> str:
        return names.model(v)


class GcpSpec(_Model):
    project: str | None = None
    location: str = "us-central1"
    bucket: str = "vertex-tuner"
    prefix: str = "vertex-tuner"
    service_account: str | None = None
    kms_key_name: str | None = None
    output_uri: str | None = None

    @property
    def base_uri(self) -> str:
        """``gs://bucket/prefix``: where the spec's files go (datasets, batch requests)."""
        return f"gs://{self.bucket}/{self.prefix}".rstrip("/")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        v = v.removeprefix("gs://").rstrip("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", v):
            raise ValueError(
                f"{v!r} is not a bucket name (3-63 lowercase letters, digits, '-', '_', '.')"
            )
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return names.prefix(v.strip("/"))

    # These reach the API host, URL paths and resource names: only the documented forms.
    @field_validator("project")
    @classmethod
    def _project(cls, v: str | None) -> str | None:
        return names.project(v) if v else v

    @field_validator("location")
    @classmethod
    def _location(cls, v: str) -> str:
        return names.location(v)

    @field_validator("service_account")
    @classmethod
    def _service_account(cls, v: str | None) -> str | None:
        return names.service_account(v) if v else v


class BudgetSpec(_Model):
    max_cost_usd: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


class WaitSpec(_Model):
    timeout: float = Field(default=6 * 3600.0, description="e.g. 6h, 90m")
    poll_interval_max: float = Field(default=60.0, description="Longest pause between polls")

    @field_validator("timeout", "poll_interval_max", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("poll_interval_max")
    @classmethod
    def _poll(cls, v: float) -> float:
        # Vertex's quota for reads is per minute: polling faster than each second only burns it.
        if v < 1:
            raise ValueError("must be at least 1s (polling faster only spends the read quota)")
        return v


class JudgeSpec(_Model):
    """The ``judge`` metric's settings: which model judges, by what rubric, on how many examples.

    The rubric is the judge's instructions; the outputs it judges never join them (see
    :mod:`vertex_tuner.evaluation.judge`).
    """

    model: str = Field(default=judging.DEFAULT_MODEL, description="The judging Gemini model id")
    rubric: str = Field(
        default=judging.DEFAULT_RUBRIC,
        description=f"What a better answer is (at most {judging.MAX_RUBRIC_CHARS} characters)",
    )
    samples: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="How many held-out examples the judge sees (default: all)"
    )

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        # It becomes part of the generateContent path: the allowlisted model-id form, and only
        # a publisher model (a tuned model has no generateContent of its own; an alias would
        # need resolving against the run store first).
        names.model(v)
        if v.startswith("projects/") or "@" in v or not v.startswith("gemini-"):
            raise ValueError(
                f"{v!r} is not a Gemini model id; the judge is a Gemini model such as "
                f"{judging.DEFAULT_MODEL}"
            )
        return v

    @field_validator("rubric")
    @classmethod
    def _rubric(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the rubric is empty; say what makes one answer better than another")
        if len(v) > judging.MAX_RUBRIC_CHARS:
            raise ValueError(
                f"the rubric has {len(v)} characters; keep it to {judging.MAX_RUBRIC_CHARS} (it is "
                "sent twice for every judged example)"
            )
        return v


ThinkingLevel = Literal["minimal", "low", "medium", "high"]


class GenerationSpec(_Model):
    """How every evaluated model is called, and how services call the promoted one.

    Stored with each verdict and returned by :func:`vertex_tuner.resolve`, so a service calls
    the model the way it was evaluated. Google advises thinking off or at its lowest for
    supervised-tuned models: ``thinking_budget: 0`` on 2.5 models, ``thinking_level: minimal``
    on 3.x.
    """

    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] = 0.0
    max_output_tokens: Annotated[int, Field(ge=1, le=65_536)] | None = None
    thinking_budget: Annotated[int, Field(ge=-1, le=32_768)] | None = Field(
        default=None, description="Gemini 2.5: tokens of thinking; 0 off, -1 dynamic"
    )
    thinking_level: ThinkingLevel | None = Field(
        default=None, description="Gemini 3.x: minimal, low, medium or high"
    )

    @model_validator(mode="after")
    def _one_thinking_setting(self) -> GenerationSpec:
        if self.thinking_budget is not None and self.thinking_level is not None:
            raise ValueError(
                "set thinking_budget (Gemini 2.5) or thinking_level (Gemini 3.x), not both"
            )
        return self

    def settings(self) -> dict[str, Any]:
        """The settings that are set, as the generator takes them (and verdicts record them)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class EvaluationSpec(_Model):
    holdout: float | str | None = None
    metrics: list[str] = Field(default_factory=lambda: ["exact_match", "rouge_l"])
    promote_if: str | None = None
    max_examples: Annotated[int, Field(ge=1)] | None = None
    concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    json_schema: str | None = Field(default=None, description="Path to a JSON Schema file")
    label_field: str | None = Field(
        default=None, description="For JSON outputs: the field that holds the label"
    )
    judge: JudgeSpec | None = Field(
        default=None,
        description="Settings of the judge metric; its defaults apply when metrics names judge",
    )
    confidence: Annotated[float, Field(gt=0.5, lt=1.0, allow_inf_nan=False)] = Field(
        default=0.95,
        description="Confidence of the paired bootstrap intervals and of significant(...)",
    )
    generation: GenerationSpec = Field(
        default_factory=GenerationSpec,
        description="How every target is called (and how services call the promoted model)",
    )
    mode: Literal["online", "batch", "auto"] = Field(
        default="online",
        description="online: generateContent per prompt; batch: Vertex batch prediction (half "
        "the price, off the online quota); auto: batch from batch_threshold requests",
    )
    batch_threshold: Annotated[int, Field(ge=1)] = Field(
        default=1000, description="mode auto: batch when the evaluation sends this many requests"
    )
    batch_timeout: float = Field(
        default=24 * 3600.0, description="How long to follow batch jobs (e.g. 24h)"
    )
    max_qps: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None, description="Online: at most this many requests a second, all targets"
    )
    max_cost_usd: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None, description="Refuse an evaluation estimated above this (nothing is sent)"
    )

    @field_validator("batch_timeout", mode="before")
    @classmethod
    def _batch_timeout(cls, v: Any) -> float:
        return parse_duration(v)

    @model_validator(mode="before")
    @classmethod
    def _judge_defaults(cls, data: Any) -> Any:
        # The judge metric without a judge section: the defaults, so settings.judge is set
        # whenever the metric is evaluated.
        if (
            isinstance(data, dict)
            and isinstance(data.get("metrics"), list)
            and "judge" in data["metrics"]
            and data.get("judge") is None
        ):
            return {**data, "judge": {}}
        return data

    @field_validator("judge")
    @classmethod
    def _judge(cls, v: JudgeSpec | None, info: ValidationInfo) -> JudgeSpec | None:
        metrics = info.data.get("metrics")
        if v is not None and metrics is not None and "judge" not in metrics:
            raise ValueError(
                "evaluation.judge configures the judge metric, which evaluation.metrics does "
                "not name; add judge to evaluation.metrics (or remove evaluation.judge)"
            )
        return v

    @field_validator("holdout")
    @classmethod
    def _holdout(cls, v: float | str | None) -> float | str | None:
        return _fraction_or_path(v)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        known = _known_metrics()
        if known is not None:
            unknown = [m for m in v if m not in known]
            if unknown:
                raise ValueError(
                    f"unknown metric {', '.join(unknown)}; known: {', '.join(sorted(known))}"
                )
        if not v:
            raise ValueError("name at least one metric")
        return v

    @field_validator("promote_if")
    @classmethod
    def _gate(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        from vertex_tuner.evaluation.gate import parse_gate

        # The gate may only read metrics this spec evaluates (when they passed their own check).
        metrics = info.data.get("metrics")
        try:
            parse_gate(v, metrics=metrics)
        except ValueError as exc:
            raise ValueError(f"invalid gate: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _metric_options(self) -> EvaluationSpec:
        from vertex_tuner.evaluation.metrics import check_metric_options

        try:
            # Here json_schema is a path (read when evaluating), so only its presence counts.
            schema: dict[str, Any] | None = {} if self.json_schema is not None else None
            check_metric_options(
                self.metrics, {"json_schema": schema, "label_field": self.label_field}
            )
        except SpecError as exc:
            raise ValueError(f"{exc.message}; {exc.hint}" if exc.hint else exc.message) from exc
        return self


def _known_metrics() -> frozenset[str] | None:
    try:
        from vertex_tuner.evaluation.metrics import known_metric_names
    except ImportError:  # pragma: no cover - the evaluation package is part of the install
        return None
    return frozenset(known_metric_names())


class JobSpec(_Model):
    """A job spec, as written in ``jobs/*.yaml``.

    ``base_checkpoint`` (top level, next to ``base_model`` because it qualifies it) is for
    continuous tuning: the checkpoint id of the tuned model in ``base_model`` to start from
    (sent as ``preTunedModel.checkpointId`` through google-genai's
    ``CreateTuningJobConfig.pre_tuned_model_checkpoint_id``). Leave it unset to start from the
    tuned model's default checkpoint. It is allowed only when ``base_model`` is a tuned model
    (``projects/…/models/ID[@V]``) or an alias (``name@alias``).
    """

    name: str
    description: str = ""
    base_model: str = models.DEFAULT_BASE_MODEL
    base_checkpoint: str | None = Field(
        default=None,
        description="Continuous tuning: the checkpoint id of the tuned base model to start from",
    )
    method: Method = "supervised"
    dataset: DatasetSpec
    hyperparameters: Hyperparameters = Hyperparameters()
    distillation: DistillationSpec | None = None
    reward: RewardsSpec | None = Field(
        default=None, description="Reinforcement tuning: the reward and its test cases"
    )
    gcp: GcpSpec = GcpSpec()
    labels: dict[str, str] = Field(default_factory=dict)
    budget: BudgetSpec = BudgetSpec()
    wait: WaitSpec = WaitSpec()
    evaluation: EvaluationSpec | None = None
    registry: str | None = Field(
        default=None, description="Run store: a local path or gs://bucket/prefix"
    )

    #: The file this spec was read from; set by :func:`load_spec`.
    spec_path: Path = Field(default=Path("spec.yaml"), exclude=True)

    @field_validator("base_model")
    @classmethod
    def _base_model(cls, v: str) -> str:
        return names.model(v)

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str | None) -> str | None:
        return names.registry(v) if v else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return names.spec_name(v)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _LABEL_KEY_RE.fullmatch(key):
                raise ValueError(
                    f"label key {key!r} must start with a lowercase letter and use only "
                    "lowercase letters, digits, '_' and '-' (at most 63 characters)"
                )
            if not _LABEL_VALUE_RE.fullmatch(str(value)):
                raise ValueError(
                    f"label {key}={value!r}: values use only lowercase letters, digits, "
                    "'_' and '-' (at most 63 characters)"
                )
            if key in RESERVED_LABELS:
                raise ValueError(f"label key {key!r} is set by vertex-tuner itself")
        if len(v) > 60:
            raise ValueError("at most 60 labels (Vertex allows 64 and vertex-tuner sets 3)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _reinforcement_metrics(cls, data: Any) -> Any:
        # A reinforcement prompt has references, not an answer: its evaluation is scored by the
        # spec's own reward unless the spec names its metrics.
        evaluation = data.get("evaluation") if isinstance(data, dict) else None
        if (
            isinstance(data, dict)
            and data.get("method") == "reinforcement"
            and isinstance(evaluation, dict)
            and "metrics" not in evaluation
        ):
            return {**data, "evaluation": {**evaluation, "metrics": list(REINFORCEMENT_METRICS)}}
        return data

    @model_validator(mode="after")
    def _method_fields(self) -> JobSpec:
        if self.method == "distillation" and self.distillation is None:
            raise ValueError("method 'distillation' needs distillation.teacher_model")
        if self.method != "distillation" and self.distillation is not None:
            raise ValueError("the distillation section is only for method 'distillation'")
        if self.method == "reinforcement" and self.reward is None:
            raise ValueError(
                "method 'reinforcement' needs a reward: section, e.g. reward: {string_match: "
                "{expression: '{{references.answer}}'}, tests: rewards/cases.jsonl}"
            )
        if self.method != "reinforcement" and self.reward is not None:
            raise ValueError("the reward section is only for method 'reinforcement'")
        # Settings a method does not take (beta outside preference, …) are refused by
        # _check_model_rules, which can point at the field's line.
        return self

    # --- derived values -------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        return self.spec_path.parent

    def resolve_path(self, path: str) -> Path:
        """A dataset path relative to the spec file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def is_continuous(self) -> bool:
        """Whether the base is a tuned model (or an alias of one) rather than a Gemini base."""
        return models.is_tuned_model_name(self.base_model) or "@" in self.base_model

    def result_fields(self) -> dict[str, Any]:
        """The normalised fields that change what a job produces (part of the fingerprint)."""
        return {
            # The name is the tuned model's display name: another name is another model.
            "name": self.name,
            "base_model": self.base_model,
            "method": self.method,
            "hyperparameters": self.hyperparameters.model_dump(mode="json"),
            "teacher_model": self.distillation.teacher_model if self.distillation else None,
            # Only when set, so fingerprints of specs without it do not change.
            **({"reward": self.reward_fingerprint()} if self.reward else {}),
            "kms_key_name": self.gcp.kms_key_name,
            # Only when set, so fingerprints of specs without it do not change.
            **({"base_checkpoint": self.base_checkpoint} if self.base_checkpoint else {}),
        }

    def reward_payload(self) -> dict[str, Any]:
        """The reward as google-genai's typed configs take it (field names of
        ``SingleReinforcementTuningRewardConfig`` / ``CompositeReinforcementTuningRewardConfig``),
        with the code and judge prompt files read in. ``{"single": {...}}`` or
        ``{"composite": {...}}``."""
        assert self.reward is not None
        rewards = self.reward.rewards()
        if self.reward.weighted is None:
            return {"single": self._one_reward(rewards[0][1], "reward")}
        return {
            "composite": {
                "weighted_reward_configs": [
                    {"weight": w, "reward_config": self._one_reward(r, f"reward.weighted[{i}]")}
                    for i, (w, r) in enumerate(rewards)
                ]
            }
        }

    def _one_reward(self, reward: RewardSpec, where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if reward.name:
            out["reward_name"] = reward.name
        if reward.parse:
            out["parse_response_config"] = {
                "parse_type": "REGEX_EXTRACT",
                "regex_extract_expression": reward.parse["regex"],
            }
        if reward.string_match is not None:
            match = reward.string_match
            expression = {"match_operation": _MATCH_OPERATIONS[match.operation]}
            expression["expression"] = match.expression
            scorer: dict[str, Any] = {
                "correct_answer_reward": match.correct,
                "wrong_answer_reward": match.wrong,
            }
            if match.json_key is not None:
                scorer["json_match_expression"] = {
                    "key_name": match.json_key,
                    "value_string_match_expression": expression,
                }
            else:
                scorer["string_match_expression"] = expression
            out["string_match_reward_scorer"] = scorer
        elif reward.code is not None:
            snippet = self._reward_file(reward.code, f"{where}.code")
            out["code_execution_reward_scorer"] = {"python_code_snippet": snippet}
        elif reward.judge is not None:
            judge = reward.judge
            prompt = self._reward_file(judge.prompt, f"{where}.judge.prompt")
            config: dict[str, Any] = {"autorater_model": judge.model}
            if judge.samples is not None:
                config["sampling_count"] = judge.samples
            out["autorater_scorer"] = {
                "autorater_prompt": prompt,
                "autorater_config": config,
                "autorater_response_parse_config": {
                    "parse_type": "REGEX_EXTRACT",
                    "regex_extract_expression": judge.parse,
                },
                "parsed_response_conversion_scorer": {},
            }
        elif reward.cloud_run is not None:
            out["cloud_run_reward_scorer"] = {"cloud_run_uri": reward.cloud_run.uri}
        return out

    def _reward_file(self, path: str, field: str) -> str:
        try:
            return self.resolve_path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{field}: cannot read {path}: {exc}") from None

    def step_shape(self) -> tuple[int, int]:
        """Reinforcement: ``(batch_size, samples_per_prompt)`` as the job runs them (Vertex's
        defaults 32 and 16 where the spec sets none)."""
        hp = self.hyperparameters
        return hp.batch_size or 32, hp.samples_per_prompt or 16

    def step_samples(self) -> int | None:
        """Reinforcement: answers sampled per step, ``batch_size × samples_per_prompt``; None
        for the other methods."""
        if self.method != "reinforcement":
            return None
        batch, samples = self.step_shape()
        return batch * samples

    def reward_references(self) -> list[str]:
        """The ``references`` keys the reward reads (``{{references.KEY}}`` in a string match
        or in a judge prompt): every training example must have each. A code or Cloud Run
        reward reads what it likes; its test cases are what check it."""
        if self.reward is None:
            return []
        found: set[str] = set()
        for _, reward in self.reward.rewards():
            texts = [reward.string_match.expression] if reward.string_match else []
            if reward.judge is not None:
                # An unreadable prompt file is reported when the spec loads.
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    texts.append(self.resolve_path(reward.judge.prompt).read_text("utf-8"))
            for text in texts:
                found.update(_REFERENCE_RE.findall(text))
        return sorted(found)

    def reward_fingerprint(self) -> dict[str, Any]:
        """The reward as it changes a job: its settings, and the bytes of every file it reads
        (a changed reward script or judge prompt is another job; the test cases are not)."""
        assert self.reward is not None
        body = self.reward.model_dump(mode="json", exclude={"tests"})
        files = {}
        for _, reward in self.reward.rewards():
            for path in (reward.code, reward.judge.prompt if reward.judge else None):
                if path:
                    try:
                        data = self.resolve_path(path).read_bytes()
                    except OSError:
                        data = b""
                    files[path] = hashlib.sha256(data).hexdigest()
        return {"settings": body, "files": files}

    def digest(self) -> str:
        """sha256 of the whole normalised spec (for the record, not the fingerprint)."""
        body = self.model_dump(mode="json")
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


# --- loading ------------------------------------------------------------------------------


#: Deeper than this is no spec: refuse it rather than recurse (a 3,000-deep document is an attack).
MAX_DEPTH = 32


def _compose(text: str, file: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise SpecError(
            f"the YAML is nested too deeply (a spec needs at most {MAX_DEPTH} levels)",
            location=Location(file),
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(
            f"invalid YAML: {problem}",
            location=Location(file, line),
            hint="check indentation and quoting around this line",
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", location=Location(file)) from None


_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


def _build(
    node: yaml.Node,
    path: tuple[str | int, ...],
    lines: dict[tuple[str | int, ...], int],
    expand: _Expander,
) -> Any:
    lines[path] = node.start_mark.line + 1
    here = Location(expand.file, node.start_mark.line + 1, _dotted(path) or None)
    # An alias (*name) makes one node appear twice: refused, so an "alias bomb" (a billion laughs)
    # cannot make loading a spec take the machine's memory.
    if id(node) in expand.seen:
        raise SpecError(
            "YAML aliases (&anchor / *alias) are not allowed in specs",
            location=here,
            hint="write the value out where it is used",
        )
    expand.seen.add(id(node))
    if len(path) > MAX_DEPTH:
        raise SpecError(f"nested deeper than {MAX_DEPTH} levels", location=here)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        raise SpecError(f"the YAML tag {node.tag!r} is not allowed in specs", location=here)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            child = (*path, key)
            if key in out:
                raise SpecError(
                    f"duplicate key {key!r}",
                    location=Location(expand.file, key_node.start_mark.line + 1, _dotted(child)),
                )
            lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, lines, expand)
            lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), lines, expand) for i, item in enumerate(node.value)]
    try:
        value = expand.loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:  # an unknown tag (!!python/object, !foo), a bad timestamp
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"invalid YAML value: {problem}", location=here) from None
    if isinstance(value, str):
        return expand(value, path, node.start_mark.line + 1)
    return value


class _Expander:
    """Expands ``${VAR}`` and ``${VAR:-default}`` in string values."""

    def __init__(self, file: str, environ: Mapping[str, str], lenient_sections: frozenset[str]):
        self.file = file
        self.environ = environ
        #: Builds scalars with YAML's own type resolution (ints, floats, bools, dates).
        self.loader = yaml.SafeLoader("")
        self.lenient_sections = lenient_sections
        #: Field paths whose variables were unset and left empty (lenient sections only).
        self.unresolved: dict[str, str] = {}
        #: Nodes already built (an alias would build one twice).
        self.seen: set[int] = set()

    def __call__(self, text: str, path: tuple[str | int, ...], line: int) -> str | None:
        if "${" not in text:
            return text
        missing: list[str] = []

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = self.environ.get(name)
            if value not in (None, ""):
                return value
            if default is not None:
                return default
            missing.append(name)
            return ""

        expanded = _VAR_RE.sub(replace, text)
        if missing:
            field = _dotted(path)
            if path and path[0] in self.lenient_sections:
                self.unresolved[field] = missing[0]
                return None
            hint = f"export {missing[0]}=… or write ${{{missing[0]}:-default}} in the spec"
            if path and path[0] == "gcp":
                hint += "; or add --sandbox to try it without Google Cloud"
            raise SpecError(
                f"environment variable {missing[0]} is not set",
                location=Location(self.file, line, field),
                hint=hint,
            )
        return expanded


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def retarget(
    spec: JobSpec, base_model: str, *, today: dt.date | None = None
) -> tuple[JobSpec, list[str]]:
    """The spec on another Gemini base (``retrain --base-model``), checked against that base's
    rules, and what had to change to fit it.

    Hyperparameters are kept: Google publishes a mapping only from Gemini 1.5 Flash to 2.5
    Flash (its migration notebook), and advises against assuming legacy settings carry over,
    so the change is said rather than guessed. A thinking setting the new base does not take
    is mapped to the one it does at the same intent (see :func:`models.carry_thinking`); an
    adapter size it does not offer is an error, to be chosen by the user.
    """
    file = display_path(spec.spec_path)
    flag = f"--base-model {base_model}"

    def refuse(message: str, hint: str | None = None) -> SpecError:
        return SpecError(f"{flag}: {message}", location=Location(file), hint=hint)

    try:
        names.model(base_model)
    except ValueError as exc:
        raise refuse(str(exc)) from None
    info = models.model_info(base_model)
    if info is None or models.is_tuned_model_name(base_model) or "@" in base_model:
        raise refuse(
            "re-tuning needs a Gemini base from vertex-tuner's model table",
            hint="use one of " + ", ".join(sorted(models.MODELS)),
        )
    if spec.is_continuous:
        raise refuse(
            f"{spec.name} continues from a tuned model ({spec.base_model}); re-tuning starts "
            "over on a Gemini base",
            hint=f"set base_model: {base_model} in {file} (the tuned model's data is not reused)",
        )
    if base_model == spec.base_model:
        raise refuse(f"{spec.name} is already tuned on {base_model}")
    changes = [
        f"base_model {spec.base_model} → {base_model}",
        "hyperparameters kept as the spec sets them: Google publishes no mapping from "
        f"{spec.base_model} to {base_model}",
    ]
    body = spec.model_dump(mode="json")
    body["base_model"] = base_model
    if spec.evaluation is not None:
        carried, change = models.carry_thinking(spec.evaluation.generation.settings(), info)
        body["evaluation"]["generation"] = carried
        if change:
            changes.append(f"evaluation.generation: {change}")
    try:
        moved = JobSpec.model_validate({**body, "spec_path": spec.spec_path})
    except ValidationError as exc:
        raise refuse(str(exc)) from None
    try:
        _check_model_rules(moved, file, {}, models.today() if today is None else today)
    except SpecError as exc:
        problem = exc.problems[0][1]
        raise SpecError(f"{flag}: {problem}", location=exc.location, hint=exc.hint) from None
    return moved, changes


def display_path(path: Path) -> str:
    """A path as messages show it: relative to the working folder when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_spec(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    offline: bool = False,
    today: dt.date | None = None,
) -> JobSpec:
    """Read, expand and check a job spec.

    ``offline`` is for uses that never reach Google Cloud (``validate``, ``--sandbox``): an unset
    variable inside the ``gcp`` section then leaves that field empty instead of failing, since
    those settings are not used there. Everywhere else an unset variable is an error.

    ``today`` is the day a base model's retirement is judged on (default
    :func:`vertex_tuner.models.today`: ``$VERTEX_TUNER_TODAY``, else the UTC date).
    """
    spec_path = Path(path)
    file = display_path(spec_path)
    try:
        text = spec_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            "no such spec file",
            location=Location(file),
            hint="specs live in jobs/*.yaml; check the path",
        ) from None
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"the spec is not UTF-8 text ({exc.reason})", location=Location(file)
        ) from None
    except OSError as exc:
        raise SpecError(f"cannot read the spec: {exc.strerror}", location=Location(file)) from None

    expand = _Expander(
        file,
        os.environ if environ is None else environ,
        frozenset({"gcp"}) if offline else frozenset(),
    )
    node = _compose(text, file)
    if node is None:
        raise SpecError(
            "the spec is empty",
            location=Location(file, 1),
            hint="start from jobs/support_tone.yaml",
        )
    lines: dict[tuple[str | int, ...], int] = {}
    data = _build(node, (), lines, expand)
    if not isinstance(data, dict):
        raise SpecError(
            "a spec must be a mapping of keys to values",
            location=Location(file, node.start_mark.line + 1),
        )
    _drop_none_in_lenient(data, expand.unresolved)
    try:
        spec = JobSpec.model_validate({**data, "spec_path": spec_path})
    except ValidationError as exc:
        raise _spec_error(exc, file, lines) from None
    _check_model_rules(spec, file, lines, models.today() if today is None else today)
    return spec


def _drop_none_in_lenient(data: dict[str, Any], unresolved: Mapping[str, str]) -> None:
    for field in unresolved:
        parts = field.split(".")
        target: Any = data
        for part in parts[:-1]:
            target = target.get(part) if isinstance(target, dict) else None
        if isinstance(target, dict) and target.get(parts[-1]) is None:
            target.pop(parts[-1], None)


def _spec_error(
    exc: ValidationError, file: str, lines: Mapping[tuple[str | int, ...], int]
) -> SpecError:
    problems: list[tuple[Location, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        line = _nearest_line(loc, lines)
        message = _pydantic_message(err)
        problems.append((Location(file, line, _dotted(loc) or None), message))
    first_loc, first_msg = problems[0]
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return SpecError(
        first_msg + more,
        location=first_loc,
        problems=problems,
        hint="see the spec reference in the README (section 'Job specs')",
    )


def _nearest_line(
    loc: tuple[str | int, ...], lines: Mapping[tuple[str | int, ...], int]
) -> int | None:
    for n in range(len(loc), -1, -1):
        line = lines.get(loc[:n])
        if line is not None:
            return line
    return None


def _pydantic_message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        loc = tuple(err["loc"])
        known = _keys_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        if close:
            return f"unknown key; did you mean {close[0]!r}?"
        if known:
            return "unknown key; the keys here are " + ", ".join(sorted(known))
        return "unknown key; check its spelling against the spec reference"
    if kind == "missing":
        return "this key is required"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys a spec may have at ``loc`` (a path of field names), for suggestions."""
    model: Any = JobSpec
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def _check_method_settings(
    spec: JobSpec, error: Callable[[tuple[str, ...], str, str | None], SpecError]
) -> None:
    """Settings the chosen method does not take, which google-genai or Vertex would drop."""
    if spec.hyperparameters.beta is not None and spec.method != "preference":
        raise error(
            ("hyperparameters", "beta"),
            f"hyperparameters.beta is only for method 'preference' (this spec's method is "
            f"{spec.method!r})",
            "remove hyperparameters.beta or set method: preference",
        )
    _check_reinforcement_settings(spec, error)
    _check_evaluation_metrics(spec, error)
    if spec.method == "distillation" and spec.budget.max_cost_usd is not None:
        # The dataset is prompts only: the teacher writes the answers during the job, so the
        # tokens the job bills are unknown before it runs and the local estimate would be $0.
        raise error(
            ("budget", "max_cost_usd"),
            "budget.max_cost_usd cannot be estimated for distillation: the teacher model writes "
            "the training answers during the job, so their tokens (and the cost) are unknown "
            "beforehand",
            "remove budget.max_cost_usd; cap spending with a Cloud Billing budget instead",
        )
    if (
        spec.method == "distillation"
        and spec.hyperparameters.export_last_checkpoint_only is not None
    ):
        # google-genai sends it as distillationSpec.exportLastCheckpointOnly, a field Vertex's
        # DistillationSpec does not have (aiplatform v1beta1 discovery document).
        raise error(
            ("hyperparameters", "export_last_checkpoint_only"),
            "hyperparameters.export_last_checkpoint_only is not available for method "
            "'distillation'",
            "remove it: Vertex's distillation spec has no such setting",
        )


def _check_evaluation_metrics(
    spec: JobSpec, error: Callable[[tuple[str, ...], str, str | None], SpecError]
) -> None:
    """Metrics the method's held-out set cannot be scored by: without this the evaluation
    would fail after the job, an hour and a bill later."""
    from vertex_tuner.evaluation.metrics import METRICS

    if spec.evaluation is None:
        return
    where = ("evaluation", "metrics")
    for name in spec.evaluation.metrics:
        metric = METRICS[name]
        if spec.method != "reinforcement" and metric.reward:
            raise error(
                where,
                f"the {name} metric scores answers with a reinforcement spec's reward; this "
                f"spec's method is {spec.method!r}",
                f"remove {name} from evaluation.metrics (e.g. use exact_match or rouge_l)",
            )
        if spec.method != "reinforcement":
            continue
        if metric.reads == "answer":
            raise error(
                where,
                f"the {name} metric compares with a written answer, and a reinforcement "
                "held-out prompt has references, not an answer",
                "use reward (the spec's reward, scored by Vertex), json_valid, json_schema, "
                "output_length, or label_accuracy with label_field naming a references key",
            )
        if metric.reads == "label" and not spec.evaluation.label_field:
            raise error(
                where,
                f"the {name} metric of a reinforcement spec reads its label from the "
                "prompt's references, and evaluation.label_field does not say which",
                "set evaluation.label_field to a references key (e.g. label_field: priority)",
            )


def _check_reward(
    spec: JobSpec, error: Callable[[tuple[str, ...], str, str | None], SpecError]
) -> None:
    """The reward as google-genai's own typed configs read it (a setting they would not take
    is an error here, at the reward's line), and its files readable."""
    from vertex_tuner.backends.genai import check_reward_payload

    try:
        payload = spec.reward_payload()
    except ValueError as exc:
        raise error(("reward",), str(exc), "check the path, relative to the spec file") from None
    problem = check_reward_payload(payload)
    if problem is not None:
        raise error(("reward",), f"google-genai does not take this reward: {problem}", None)
    assert spec.reward is not None
    if spec.reward.tests is not None and not spec.resolve_path(spec.reward.tests).is_file():
        raise error(
            ("reward", "tests"),
            f"reward.tests: no such file {spec.reward.tests}",
            "write one JSON object per line: {example, response, expect}",
        )


def _check_reinforcement_settings(
    spec: JobSpec, error: Callable[[tuple[str, ...], str, str | None], SpecError]
) -> None:
    """What reinforcement tuning takes and the others do not, and the reverse; and the
    documented limits of a step (batch_size × samples_per_prompt)."""
    hp = spec.hyperparameters
    if spec.method != "reinforcement":
        for name in REINFORCEMENT_HYPERPARAMETERS:
            if getattr(hp, name) is not None:
                raise error(
                    ("hyperparameters", name),
                    f"hyperparameters.{name} is only for method 'reinforcement'; google-genai "
                    f"would not send it for {spec.method!r}",
                    f"remove hyperparameters.{name}",
                )
        return
    if hp.export_last_checkpoint_only is not None:
        # google-genai serializes it only into the supervised and preference specs.
        raise error(
            ("hyperparameters", "export_last_checkpoint_only"),
            "hyperparameters.export_last_checkpoint_only is not sent for method 'reinforcement' "
            "(google-genai drops it)",
            "remove it; set checkpoint_interval to control checkpoints",
        )
    if spec.budget.max_cost_usd is not None:
        raise error(
            ("budget", "max_cost_usd"),
            "budget.max_cost_usd cannot be held for reinforcement tuning: Google publishes no "
            "price for it, so vertex-tuner has none to estimate with",
            "remove budget.max_cost_usd; cap spending with a Cloud Billing budget instead",
        )
    batch, samples = spec.step_shape()
    product = batch * samples
    if product % 16 or product > models.REINFORCEMENT_STEP_SAMPLES:
        which = "batch_size" if hp.batch_size is not None else "samples_per_prompt"
        raise error(
            ("hyperparameters", which),
            f"batch_size × samples_per_prompt is {batch} × {samples} = {product}; Vertex needs "
            "a multiple of 16, at most 8,192 (1,024 with images or other media)",
            "e.g. batch_size: 32, samples_per_prompt: 16",
        )
    if (
        hp.checkpoint_interval
        and hp.evaluate_interval
        and (hp.checkpoint_interval % hp.evaluate_interval)
    ):
        raise error(
            ("hyperparameters", "checkpoint_interval"),
            f"checkpoint_interval {hp.checkpoint_interval} is not a multiple of "
            f"evaluate_interval {hp.evaluate_interval}; Google recommends checkpoint_interval = "
            "evaluate_interval × N so every checkpoint has an evaluation",
            f"e.g. checkpoint_interval: {hp.evaluate_interval * 2}",
        )


_KMS_LOCATION_RE = re.compile(r"(?:^|/)locations/([^/]+)/")


def _check_kms_region(
    spec: JobSpec, error: Callable[[tuple[str, ...], str, str | None], SpecError]
) -> None:
    """A CMEK key must be in the job's region; Vertex otherwise refuses the job with a 400."""
    key = spec.gcp.kms_key_name
    if not key:
        return
    match = _KMS_LOCATION_RE.search(key)
    if match is None:
        raise error(
            ("gcp", "kms_key_name"),
            f"{key!r} is not a Cloud KMS key name",
            "write it as projects/P/locations/REGION/keyRings/RING/cryptoKeys/KEY",
        )
    region = match.group(1)
    if region != spec.gcp.location:
        raise error(
            ("gcp", "kms_key_name"),
            f"the key is in {region}, but the job runs in {spec.gcp.location}: Vertex needs the "
            "CMEK key in the job's region",
            f"use a key under locations/{spec.gcp.location}/, or set gcp.location: {region}",
        )


def _check_model_rules(
    spec: JobSpec, file: str, lines: Mapping[tuple[str | int, ...], int], today: dt.date
) -> None:
    """What the chosen base model allows: adapter sizes, regions, CMEK, methods; and that it
    has not retired by ``today``."""

    def error(path: tuple[str, ...], message: str, hint: str | None = None) -> SpecError:
        return SpecError(
            message, location=Location(file, _nearest_line(path, lines), _dotted(path)), hint=hint
        )

    _check_method_settings(spec, error)
    _check_kms_region(spec, error)
    if spec.reward is not None:
        _check_reward(spec, error)
    if spec.base_checkpoint is not None and not spec.is_continuous:
        raise error(
            ("base_checkpoint",),
            "base_checkpoint is only for continuous tuning: base_model must be a tuned model "
            f"or an alias, not the Gemini base {spec.base_model!r}",
            "remove base_checkpoint, or set base_model to projects/…/models/ID@V or name@alias",
        )
    if spec.is_continuous:
        # A tuned model or an alias: its limits are its base model's, checked at submit time.
        return
    info = models.model_info(spec.base_model)
    if info is None:
        known = ", ".join(sorted(models.MODELS))
        raise error(
            ("base_model",),
            f"{spec.base_model!r} is not a tunable Gemini model",
            hint=f"use one of {known}, a tuned model (projects/…/models/ID@V) or an "
            "alias (name@alias)",
        )
    retirement = models.retirement(info, today)
    if retirement.retired:
        raise error(("base_model",), retirement.message)
    if spec.hyperparameters.thinking_level is not None and "level" not in info.thinking:
        raise error(
            ("hyperparameters", "thinking_level"),
            f"{info.id} takes no thinking_level (google-genai: 'use with earlier models shall "
            "result in error')",
            "remove hyperparameters.thinking_level, or tune a 3.x model",
        )
    if spec.evaluation is not None and spec.evaluation.max_cost_usd is not None:
        judge = spec.evaluation.judge
        for model_id, where in (
            (info.id, ("base_model",)),
            *(((judge.model, ("evaluation", "judge", "model")),) if judge else ()),
        ):
            if models.inference_price(model_id) is None:
                raise error(
                    ("evaluation", "max_cost_usd"),
                    f"evaluation.max_cost_usd cannot be held: vertex-tuner has no price for "
                    f"{model_id} ({'.'.join(where)})",
                    "remove evaluation.max_cost_usd, or use a model with a price in the table "
                    "(vertex_tuner/models.py, INFERENCE_PRICES)",
                )
    if spec.evaluation is not None:
        generation = spec.evaluation.generation
        problem = models.thinking_problem(
            info, budget=generation.thinking_budget, level=generation.thinking_level
        )
        if problem is not None:
            setting, message, hint = problem
            raise error(("evaluation", "generation", setting), message, hint)
    size = spec.hyperparameters.adapter_size
    if size is not None and size not in info.adapter_sizes:
        allowed = ", ".join(str(s) for s in info.adapter_sizes)
        raise error(
            ("hyperparameters", "adapter_size"),
            f"adapter size {size} is not available for {info.id}",
            hint=f"{info.id} allows {allowed}",
        )
    location = spec.gcp.location
    if info.regions is not None and location not in info.regions:
        raise error(
            ("gcp", "location"),
            f"{info.id} cannot be tuned in {location}",
            hint=f"use one of {', '.join(sorted(info.regions))}",
        )
    if spec.gcp.kms_key_name and not info.supports_cmek:
        raise error(
            ("gcp", "kms_key_name"),
            f"{info.id} does not support customer-managed encryption keys (CMEK)",
            hint="remove gcp.kms_key_name or pick a 2.5 model",
        )
    if spec.gcp.output_uri is not None:
        # TuningJob.outputUri: "only available and required for open source models" (the
        # aiplatform v1beta1 discovery document and google-genai's TuningJob.output_uri).
        raise error(
            ("gcp", "output_uri"),
            f"gcp.output_uri is only for open models; Vertex does not take it for {info.id}",
            hint="remove gcp.output_uri; a Gemini job reports its tuned model and endpoint itself",
        )
    if spec.method == "preference" and not info.supports_preference:
        raise error(("method",), f"{info.id} does not support preference tuning")
    if spec.method == "distillation":
        if not info.supports_distillation_student:
            raise error(
                ("base_model",),
                f"{info.id} cannot be a distillation student",
                hint="distillation students: "
                + ", ".join(
                    m.id for m in models.MODELS.values() if m.supports_distillation_student
                ),
            )
        if location != models.DISTILLATION_REGION:
            raise error(
                ("gcp", "location"), f"distillation runs only in {models.DISTILLATION_REGION}"
            )
        assert spec.distillation is not None
        if spec.distillation.teacher_model not in models.DISTILLATION_TEACHERS:
            raise error(
                ("distillation", "teacher_model"),
                f"{spec.distillation.teacher_model!r} is not a distillation teacher",
                hint="use one of " + ", ".join(sorted(models.DISTILLATION_TEACHERS)),
            )
