"""From a job spec to the validated, converted files a submit uploads.

The dataset package knows nothing of job specs; this is where a spec's ``dataset``,
``evaluation.holdout``, ``hyperparameters.epochs`` and ``budget`` become :class:`Validator`
arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vertex_tuner import models
from vertex_tuner.dataset import PreparedDataset, Validator
from vertex_tuner.errors import DatasetError
from vertex_tuner.spec import display_path

if TYPE_CHECKING:
    from vertex_tuner.dataset.tokens import TokenCounter
    from vertex_tuner.spec import JobSpec


def prepare(
    spec: JobSpec, workdir: Path, *, counter: TokenCounter | None = None
) -> PreparedDataset:
    """Validate the spec's data, convert it and write the train/validation/holdout files.

    With a ``counter``, the examples near the limit and a calibration sample are counted
    exactly (:func:`vertex_tuner.dataset.validate.count_exactly`, which can also be applied
    afterwards to what this returns).
    """
    if spec.dataset.train.startswith("gs://"):
        raise DatasetError(
            f"{spec.spec_path}: dataset.train is a gs:// URI; validate needs a local copy",
            hint="download it first (gcloud storage cp) and point dataset.train at the file",
        )
    base = spec.base_model
    if spec.is_continuous:
        base = models.DEFAULT_BASE_MODEL  # limits of the tuned model's family (2.5 Flash)
    validator = Validator(
        model=base,
        method=spec.method,
        fmt=spec.dataset.format,
        columns={str(k): v for k, v in spec.dataset.columns.items()}
        if spec.dataset.columns
        else None,
        references=spec.reward_references(),
        step_samples=spec.step_samples(),
    )

    def where(value: float | str | None) -> float | Path | None:
        if isinstance(value, str):
            return spec.resolve_path(value)
        return value

    holdout = spec.evaluation.holdout if spec.evaluation else None
    train = spec.resolve_path(spec.dataset.train)
    workdir.mkdir(parents=True, exist_ok=True)
    return validator.run(
        train,
        display=display_path(train),
        workdir=workdir,
        validation=where(spec.dataset.validation),
        holdout=where(holdout),
        epochs=spec.hyperparameters.epochs,
        budget_usd=spec.budget.max_cost_usd,
        counter=counter,
    )


def require_valid(spec: JobSpec, prepared: PreparedDataset) -> PreparedDataset:
    """The prepared dataset, or a DatasetError naming the first error and the full report."""
    if prepared.report.ok:
        return prepared
    errors = prepared.report.errors
    first = errors[0]
    where = (
        f"{first.file or spec.dataset.train}:{first.line}"
        if first.line
        else (first.file or spec.dataset.train)
    )
    raise DatasetError(
        f"the dataset has {len(errors)} error(s); first: {where}: {first.message}",
        hint=f"run `vertex-tuner validate {spec.spec_path}` for the full report; "
        "nothing was uploaded",
    )
