"""What each tunable Gemini base model allows, and what tuning it costs.

One table, kept in one place so that a change in Vertex's limits is a one-line edit. Every value
names its source; values that could not be confirmed from a primary source are marked so and
should be re-checked before relying on them for money.

Sources:
- Limits: "About supervised fine-tuning for Gemini models" (Vertex AI docs, supervised-tuning page,
  newest copy read 2026-08), and "Prepare supervised fine-tuning data for Gemini models".
- Preference tuning: "Prepare preference tuning data" (max input + completion tokens 128K).
- Regions: the tuning region-settings page; 3.x models tune only in us-central1 and europe-west4.
- Prices: see :data:`PRICES_AS_OF` and :data:`PRICE_SOURCE`.
- Launch stages and retirement dates: each row's :class:`Lifecycle` names its source and the date
  it was read; :func:`retirement` says, for a given day, how long a base has left.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from vertex_tuner.errors import ConfigurationError

DEFAULT_BASE_MODEL = "gemini-2.5-flash"

#: Regions listed for Gemini tuning (the region-settings page; its list was read incomplete, so an
#: unknown region is a warning, not an error, for 2.x models).
TUNING_REGIONS: frozenset[str] = frozenset(
    {
        "us-central1",
        "us-east1",
        "us-east4",
        "us-east5",
        "us-south1",
        "us-west1",
        "us-west4",
        "northamerica-northeast1",
        "southamerica-east1",
        "europe-west1",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west6",
        "europe-west8",
        "europe-west9",
        "europe-north1",
        "europe-central2",
        "europe-southwest1",
        "asia-east1",
        "asia-east2",
        "asia-northeast1",
        "asia-northeast3",
        "asia-south1",
        "asia-southeast1",
        "australia-southeast1",
        "me-central1",
        "me-west1",
    }
)

#: The date the price table was last checked, and where the figures come from.
PRICES_AS_OF = "2026-08-21"
PRICE_SOURCE = (
    "Vertex AI generative AI pricing page (tuning section), cross-checked against a published "
    "bill for 'Gemini 2.5 flash tuning'; 2.0 and 3.x figures are unconfirmed estimates"
)

MAX_TRAIN_FILE_BYTES = 1024**3
MAX_VALIDATION_EXAMPLES = 5000
MAX_IMAGES_PER_EXAMPLE = 30
MAX_IMAGE_BYTES = 20 * 1024**2


LaunchStage = Literal["GA", "preview"]
RetirementStatus = Literal["ok", "retiring", "retired", "unknown"]

#: A base retiring within this many days draws a warning from ``validate``.
WARN_DAYS = 90

#: The variable that sets "today" for retirement checks (YYYY-MM-DD), for tests and CI.
TODAY_ENV = "VERTEX_TUNER_TODAY"

#: Where the dates below come from.
MODEL_VERSIONS_SOURCE = "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions"
GEMINI_25_NOTICE_SOURCE = (
    "https://gcpstudyhub.com/blog/google-is-retiring-gemini-2-5-on-vertex-ai-what-you-need-to-"
    "know-and-do-before-october-2026"
)
TUNING_MODELS_SOURCE = (
    "https://docs.cloud.google.com/gemini-enterprise-agent-platform/reference/models/tuning.md.txt"
)
#: The day the lifecycle sources above were last read.
LIFECYCLE_AS_OF = dt.date(2026, 12, 1)


@dataclass(frozen=True)
class Lifecycle:
    """A base model's launch stage and retirement, with the source and the day it was read.

    ``retires`` is a confirmed retirement date: the model (and every model tuned on it) stops
    serving that day. ``not_before`` is an announcement without a date: "discontinued no earlier
    than …". Neither: no retirement had been announced when the source was read.
    """

    launch_stage: LaunchStage
    source: str
    as_of: dt.date = LIFECYCLE_AS_OF
    #: False: the launch stage is inferred, not stated by the source.
    launch_stage_confirmed: bool = True
    retires: dt.date | None = None
    not_before: dt.date | None = None
    #: The base to re-tune on when this one retires.
    successor: str | None = None
    notes: str = ""


_UNKNOWN_LIFECYCLE = Lifecycle("preview", TUNING_MODELS_SOURCE, launch_stage_confirmed=False)


@dataclass(frozen=True)
class ModelInfo:
    """The tuning limits of one base model."""

    id: str
    max_tokens_per_example: int
    adapter_sizes: tuple[int, ...]
    #: USD per one million billable training tokens.
    usd_per_million_training_tokens: float
    price_confirmed: bool
    max_train_examples_text: int = 10_000_000
    max_train_examples_multimodal: int = 300_000
    #: ``None``: any region in :data:`TUNING_REGIONS`.
    regions: frozenset[str] | None = None
    supports_cmek: bool = True
    supports_preference: bool = True
    supports_distillation_student: bool = False
    notes: str = ""
    lifecycle: Lifecycle = field(default=_UNKNOWN_LIFECYCLE)
    #: The thinking settings generateContent takes for it: ``budget`` (``thinkingBudget``),
    #: ``level`` (``thinkingLevel``); empty: not a thinking model. See :data:`THINKING_SOURCE`.
    thinking: frozenset[str] = frozenset()


_ONLY_US_EU = frozenset({"us-central1", "europe-west4"})

#: Where the thinking settings per family come from. 2.5 models take a token budget (0 turns
#: thinking off where the model allows it). ``thinking_level`` "use with earlier models shall
#: result in error", and "starting from Gemini 3.5 models, the old thinking_budget will no
#: longer be supported and will result in a user error if set" (google-genai's
#: ``ReinforcementTuningHyperParameters`` and ``CreateTuningJobConfig`` docstrings, which state
#: the generateContent rule); 3.1 takes both (the level is the documented one). 2.0 models do
#: not think. UNCONFIRMED for tuned endpoints: assumed to take what their base takes.
THINKING_SOURCE = "google-genai types.py (ThinkingConfig, ReinforcementTuningHyperParameters)"
_BUDGET = frozenset({"budget"})
_LEVEL = frozenset({"level"})

# Gemini 2.5 on Vertex. Google's model-versions page first gave 2026-06-17 (2.5 Pro and Flash)
# and 2026-07-22 (2.5 Flash-Lite); Google's later notice to customers moved this to "no earlier
# than October 16, 2026", with the confirmed date to be set once Gemini 3 is generally available
# and "at least six months of notice". That notice is the newer Google word, so it is the one
# kept; the older page's dates are superseded. Third-party trackers that report 2.5 withdrawn on
# 2026-12-01 are about the Gemini Developer API, not Vertex, and conflict with each other, so
# they are not used. UNCONFIRMED: re-check Google's deprecations page for the confirmed date.
_GEMINI_25_NOT_BEFORE = dt.date(2026, 10, 16)
_GEMINI_25_NOTES = (
    "Google's notice: a confirmed date follows once Gemini 3 is generally available, with at "
    "least six months of notice (model-versions first said 2026-06-17, 2.5 Flash-Lite "
    "2026-07-22; superseded)"
)
# Gemini 2.0: dates from Google's model-versions page, which no later Google notice moved.
# 3.x: no retirement announced in the sources; the launch stage is not stated there either.


def _gemini_25(successor: str) -> Lifecycle:
    """The 2.5 family's shared notice: GA, to be discontinued no earlier than its date."""
    return Lifecycle(
        "GA",
        GEMINI_25_NOTICE_SOURCE,
        not_before=_GEMINI_25_NOT_BEFORE,
        successor=successor,
        notes=_GEMINI_25_NOTES,
    )


MODELS: dict[str, ModelInfo] = {
    m.id: m
    for m in (
        ModelInfo(
            "gemini-2.5-flash",
            131_072,
            (1, 2, 4, 8, 16),
            5.0,
            True,
            supports_distillation_student=True,
            lifecycle=_gemini_25("gemini-3.5-flash"),
            thinking=_BUDGET,
        ),
        ModelInfo(
            "gemini-2.5-flash-lite",
            131_072,
            (1, 2, 4, 8, 16),
            1.5,
            True,
            lifecycle=_gemini_25("gemini-3.5-flash-lite"),
            thinking=_BUDGET,
        ),
        ModelInfo(
            "gemini-2.5-pro",
            131_072,
            (1, 2, 4, 8),
            25.0,
            True,
            lifecycle=_gemini_25("gemini-3.5-flash"),
            thinking=_BUDGET,
        ),
        ModelInfo(
            "gemini-2.0-flash-001",
            131_072,
            (1, 2, 4, 8),
            3.0,
            False,
            notes="listed only in older copies of the docs; may no longer be tunable",
            lifecycle=Lifecycle(
                "GA",
                MODEL_VERSIONS_SOURCE,
                retires=dt.date(2026, 2, 5),
                successor="gemini-3.5-flash",
            ),
        ),
        ModelInfo(
            "gemini-2.0-flash-lite-001",
            131_072,
            (1, 2, 4, 8),
            1.0,
            False,
            notes="listed only in older copies of the docs; may no longer be tunable",
            lifecycle=Lifecycle(
                "GA",
                MODEL_VERSIONS_SOURCE,
                retires=dt.date(2026, 2, 25),
                successor="gemini-3.5-flash-lite",
            ),
        ),
        ModelInfo(
            "gemini-3.1-flash-lite",
            131_072,
            (1, 2, 4, 8, 16),
            1.5,
            False,
            regions=_ONLY_US_EU,
            supports_cmek=False,
            notes="serving through the us/eu multi-region endpoints only",
            thinking=_BUDGET | _LEVEL,
        ),
        ModelInfo(
            "gemini-3.5-flash",
            131_072,
            (1, 2, 4, 8, 16),
            5.0,
            False,
            regions=_ONLY_US_EU,
            supports_cmek=False,
            notes="serving through the us/eu multi-region endpoints only",
            thinking=_LEVEL,
        ),
        ModelInfo(
            "gemini-3.5-flash-lite",
            131_072,
            (1, 2, 4, 8, 16),
            1.5,
            False,
            regions=_ONLY_US_EU,
            supports_cmek=False,
            notes="serving through the us/eu multi-region endpoints only",
            thinking=_LEVEL,
        ),
    )
}

#: Teacher models for distillation (early access, us-central1 only).
DISTILLATION_TEACHERS = frozenset({"gemini-3.1-pro", "gemini-2.5-pro"})
DISTILLATION_REGION = "us-central1"

#: Preference tuning: max input tokens + max completion tokens.
PREFERENCE_MAX_TOKENS = 128_000

#: Reinforcement tuning (Pre-GA): input tokens per prompt, training prompts, validation prompts
#: ("Max 5,000 training examples"; validation 500 on the en/ja pages, uncertain) — the RFT
#: dataset page (docs.cloud.google.com/…/reinforcement-tuning/…/tuning-dataset).
REINFORCEMENT_MAX_TOKENS = 32_768
REINFORCEMENT_MAX_EXAMPLES = 5_000
REINFORCEMENT_MAX_VALIDATION = 500
#: Answers sampled per step (batch_size × samples_per_prompt): "divisible by 16 and ≤ 8,192 for
#: text, or ≤ 1,024 for multimodal" (the RFT hyperparameters page).
REINFORCEMENT_STEP_SAMPLES = 8_192
REINFORCEMENT_MEDIA_STEP_SAMPLES = 1_024


@dataclass(frozen=True)
class InferencePrice:
    """USD per one million tokens of generateContent on a base (and on models tuned on it:
    "inference on tuned models is charged at the same rate as the base models")."""

    input: float
    output: float
    confirmed: bool = False


#: Online list prices (prompts up to 200K tokens), from the public price list at
#: https://github.com/simonw/llm-prices (data/google.json), which transcribes Google's pricing
#: page; UNCONFIRMED against the Vertex AI pricing page for each model. Batch prediction is
#: :data:`BATCH_DISCOUNT` off ("Batch processing is offered at a 50% discounted rate compared
#: to real-time inference", Vertex batch-prediction docs). Thinking tokens bill as output.
#: 3.x models have no price here: their evaluation cost is said to be unknown.
INFERENCE_PRICES: dict[str, InferencePrice] = {
    "gemini-2.5-pro": InferencePrice(1.25, 10.0),
    "gemini-2.5-flash": InferencePrice(0.30, 2.50),
    "gemini-2.5-flash-lite": InferencePrice(0.10, 0.40),
    "gemini-2.0-flash-001": InferencePrice(0.10, 0.40),
    "gemini-2.0-flash-lite-001": InferencePrice(0.075, 0.30),
}
INFERENCE_PRICE_SOURCE = (
    "public list prices (github.com/simonw/llm-prices, transcribing Google's pricing page), "
    "unconfirmed for Vertex; batch 50% off"
)
BATCH_DISCOUNT = 0.5


def inference_price(model_id: str) -> InferencePrice | None:
    """The generateContent price of a base model id (None: not in the table)."""
    return INFERENCE_PRICES.get(model_id.rsplit("/", 1)[-1])


def model_info(model_id: str) -> ModelInfo | None:
    """The table row for a base model id (a ``publishers/google/models/`` prefix is fine)."""
    short = model_id.rsplit("/", 1)[-1]
    return MODELS.get(short)


def thinking_problem(
    info: ModelInfo, *, budget: int | None, level: str | None
) -> tuple[str, str, str] | None:
    """Why ``info`` would refuse these thinking settings: (the setting, what is wrong, what to
    set instead); None when it takes them."""
    if budget is not None and "budget" not in info.thinking:
        instead = "thinking_level: minimal" if "level" in info.thinking else "no thinking setting"
        why = "does not think" if not info.thinking else "takes thinking_level, not a budget"
        return "thinking_budget", f"{info.id} {why}", f"use {instead}"
    if level is not None and "level" not in info.thinking:
        instead = "thinking_budget: 0" if "budget" in info.thinking else "no thinking setting"
        why = "does not think" if not info.thinking else "takes thinking_budget, not a level"
        return "thinking_level", f"{info.id} {why}", f"use {instead}"
    return None


def carry_thinking(
    settings: Mapping[str, object], to: ModelInfo
) -> tuple[dict[str, object], str | None]:
    """Generation settings for a new base: a thinking setting the new base does not take is
    mapped to the one it does at the same intent (off or lowest ↔ ``minimal``; any other budget
    or level to the new base's default, dropped). Also says what changed, or None."""
    out = dict(settings)
    budget, level = out.get("thinking_budget"), out.get("thinking_level")
    if budget is not None and "budget" not in to.thinking:
        del out["thinking_budget"]
        if budget == 0 and "level" in to.thinking:
            out["thinking_level"] = "minimal"
            return out, f"thinking_budget 0 → thinking_level minimal ({to.id} takes levels)"
        return out, f"thinking_budget {budget} dropped ({to.id} does not take a budget)"
    if level is not None and "level" not in to.thinking:
        del out["thinking_level"]
        if level == "minimal" and "budget" in to.thinking:
            out["thinking_budget"] = 0
            return out, f"thinking_level minimal → thinking_budget 0 ({to.id} takes budgets)"
        return out, f"thinking_level {level} dropped ({to.id} does not take a level)"
    return out, None


def is_tuned_model_name(model: str) -> bool:
    """Whether ``model`` names a tuned model (``projects/…/models/ID[@V]``) rather than a base."""
    return model.startswith("projects/") and "/models/" in model


def resource_location(name: str) -> str | None:
    """The ``locations/X`` of a resource name (``projects/P/locations/X/endpoints/E``), if any.

    A tuned 3.x model is served from the ``us``/``eu`` multi-region endpoints, not from the region
    it was tuned in, so a call goes to the location its endpoint's name says (an assumption that
    docs/sandbox.md lists, with the cloud test that would settle it).
    """
    parts = name.split("/")
    if len(parts) >= 4 and parts[0] == "projects" and parts[2] == "locations":
        return parts[3] or None
    return None


def estimate_cost_usd(billable_tokens: int, model_id: str) -> float | None:
    """Dollars for ``billable_tokens`` (already times epochs); None for an unknown model."""
    info = model_info(model_id)
    if info is None:
        return None
    return billable_tokens / 1_000_000 * info.usd_per_million_training_tokens


def today(environ: Mapping[str, str] | None = None) -> dt.date:
    """The day retirement is judged on: ``$VERTEX_TUNER_TODAY`` (YYYY-MM-DD) when set, for tests
    and CI, else the current date in UTC."""
    env = os.environ if environ is None else environ
    value = env.get(TODAY_ENV, "").strip()
    if not value:
        return dt.datetime.now(dt.UTC).date()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(
            f"{TODAY_ENV}={value!r} is not a date",
            hint=f"write it as YYYY-MM-DD, e.g. 2026-12-02, or unset {TODAY_ENV}",
        ) from None


@dataclass(frozen=True)
class Retirement:
    """Where one base model stands on ``today``: retired, retiring soon, or not announced.

    A confirmed date counts the day itself as retired (the model stops serving that day). An
    announcement with only a "no earlier than" date has no ``days_left``; once that date is
    within reach, the base counts as retiring, since Google may then set the date at any time.
    """

    model: str
    today: dt.date
    #: None: the model is not in the table.
    lifecycle: Lifecycle | None

    @property
    def date(self) -> dt.date | None:
        """The confirmed retirement date."""
        return self.lifecycle.retires if self.lifecycle else None

    @property
    def not_before(self) -> dt.date | None:
        """The announced "no earlier than" date, when there is no confirmed one."""
        if self.lifecycle is None or self.lifecycle.retires is not None:
            return None
        return self.lifecycle.not_before

    @property
    def days_left(self) -> int | None:
        """Days from ``today`` to the confirmed date (0 on the day, negative after it)."""
        return (self.date - self.today).days if self.date else None

    @property
    def retired(self) -> bool:
        return self.date is not None and self.date <= self.today

    def within(self, days: int) -> bool:
        """Whether the base retires within ``days`` of ``today`` (or already has)."""
        if self.date is not None:
            return (self.date - self.today).days <= days
        if self.not_before is not None:
            return (self.not_before - self.today).days <= days
        return False

    def status(self, days: int = WARN_DAYS) -> RetirementStatus:
        if self.lifecycle is None:
            return "unknown"
        if self.retired:
            return "retired"
        return "retiring" if self.within(days) else "ok"

    @property
    def source(self) -> str:
        if self.lifecycle is None:
            return "not in vertex-tuner's model table"
        return f"{self.lifecycle.source}, read {self.lifecycle.as_of.isoformat()}"

    @property
    def action(self) -> str:
        """What to do about it."""
        if self.lifecycle is None:
            return (
                f"check {self.model}'s retirement date on Google's model-versions page "
                f"({MODEL_VERSIONS_SOURCE})"
            )
        if not self.within(WARN_DAYS) and not self.retired:
            return "nothing yet"
        successor = self.lifecycle.successor or DEFAULT_BASE_MODEL
        action = (
            f"re-tune on a newer base: set base_model to a newer model (e.g. {successor}) "
            "and submit"
        )
        info = MODELS.get(successor)
        if info is not None and info.regions is not None:
            # Worth saying up front: a spec in another region, or with a CMEK key, must change.
            action += f"; {successor} tunes only in {' and '.join(sorted(info.regions))}"
            if not info.supports_cmek:
                action += ", without CMEK"
        return action

    @property
    def message(self) -> str:
        """The date, its source and what to do, in one sentence."""
        if self.lifecycle is None:
            return f"{self.model} has no known retirement date; {self.action}"
        if self.date is not None:
            left = self.days_left
            assert left is not None
            if self.retired:
                when = f"{self.model} was retired on {self.date.isoformat()}"
                if left == 0:
                    when = f"{self.model} retires today, {self.date.isoformat()}"
                when += ": it can no longer be tuned and models tuned on it stop serving"
            else:
                when = f"{self.model} retires on {self.date.isoformat()}, in {left} day" + (
                    "s" if left != 1 else ""
                )
        elif self.not_before is not None:
            when = (
                f"{self.model} is announced for discontinuation no earlier than "
                f"{self.not_before.isoformat()}, date not yet confirmed"
            )
        else:
            when = f"no retirement of {self.model} was announced"
        return f"{when} (source: {self.source}); {self.action}"


def retirement(model: str | ModelInfo, today: dt.date) -> Retirement:
    """Where ``model`` (an id, a ``publishers/google/models/`` name or a table row) stands on
    ``today``."""
    info = model if isinstance(model, ModelInfo) else model_info(model)
    model_id = info.id if info else str(model).rsplit("/", 1)[-1]
    return Retirement(model_id, today, info.lifecycle if info else None)
