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
"""

from __future__ import annotations

from dataclasses import dataclass

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
    retired: bool = False
    notes: str = ""


_ONLY_US_EU = frozenset({"us-central1", "europe-west4"})

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
        ),
        ModelInfo("gemini-2.5-flash-lite", 131_072, (1, 2, 4, 8, 16), 1.5, True),
        ModelInfo("gemini-2.5-pro", 131_072, (1, 2, 4, 8), 25.0, True),
        ModelInfo(
            "gemini-2.0-flash-001",
            131_072,
            (1, 2, 4, 8),
            3.0,
            False,
            notes="listed only in older copies of the docs; may no longer be tunable",
        ),
        ModelInfo(
            "gemini-2.0-flash-lite-001",
            131_072,
            (1, 2, 4, 8),
            1.0,
            False,
            notes="listed only in older copies of the docs; may no longer be tunable",
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
        ),
    )
}

#: Teacher models for distillation (early access, us-central1 only).
DISTILLATION_TEACHERS = frozenset({"gemini-3.1-pro", "gemini-2.5-pro"})
DISTILLATION_REGION = "us-central1"

#: Preference tuning: max input tokens + max completion tokens.
PREFERENCE_MAX_TOKENS = 128_000


def model_info(model_id: str) -> ModelInfo | None:
    """The table row for a base model id (a ``publishers/google/models/`` prefix is fine)."""
    short = model_id.rsplit("/", 1)[-1]
    return MODELS.get(short)


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
