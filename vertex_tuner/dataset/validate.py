"""The validator: one streaming pass that converts, checks, splits and writes a dataset.

:mod:`.scan` reads the file (in byte ranges on several cores when it is large), :mod:`.quality`
looks at the data as a whole, and this module adds the file-level limits, the token and cost
estimate, and the report. Memory does not depend on the examples' size: 12 bytes per example
(20 for a long one) and at most :data:`~vertex_tuner.dataset.findings.MAX_PER_CODE` findings
per code.

Splits are decided by a hash of each example's prompt, so they are deterministic, stay stable as
rows are appended, and the same prompt never lands on both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from vertex_tuner import models
from vertex_tuner.dataset import quality
from vertex_tuner.dataset.findings import MAX_PER_CODE, Finding, FindingList
from vertex_tuner.dataset.reader import split_ranges
from vertex_tuner.dataset.scan import (
    SIDES,
    DatasetFile,
    Part,
    PartJob,
    detect_first,
    is_csv,
    processes,
    run_parts,
    scan,
    threshold,
)
from vertex_tuner.errors import DatasetError
from vertex_tuner.vocabulary import DATASET_FORMATS, METHODS

__all__ = [
    "MAX_PER_CODE",
    "MIN_RECOMMENDED_EXAMPLES",
    "PARALLEL_MIN_BYTES",
    "TOKEN_ESTIMATE_NOTE",
    "DatasetFile",
    "PreparedDataset",
    "Report",
    "Validator",
    "validate_file",
]

MIN_RECOMMENDED_EXAMPLES = quality.MIN_RECOMMENDED_EXAMPLES
TOKEN_ESTIMATE_NOTE = "estimated: ~4 characters per token; Vertex counts exactly"
#: Files at least this large are validated in parallel, one byte range per process.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024
#: This process's share of a parallel file against a worker's 1.0: a little more, because a
#: worker spends its first tenth of a second starting.
MAIN_SHARE = 1.15
#: Above this many validation examples, Vertex also wants them to be at most 30% of training.
VALIDATION_SHARE_FROM = 1000


@dataclass(frozen=True)
class Report:
    """What the validator found, and the figures it measured."""

    ok: bool
    errors: list[Finding]
    warnings: list[Finding]
    stats: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": [f.to_json() for f in self.errors],
            "warnings": [f.to_json() for f in self.warnings],
            "stats": self.stats,
        }


@dataclass(frozen=True)
class PreparedDataset:
    report: Report
    train: DatasetFile
    validation: DatasetFile | None
    holdout: DatasetFile | None


class Validator:
    """Validate (and optionally convert and split) one dataset."""

    def __init__(
        self,
        *,
        model: str,
        method: str,
        fmt: str = "auto",
        columns: Mapping[str, str] | None = None,
    ) -> None:
        info = models.model_info(model)
        if info is None:
            raise DatasetError(
                f"unknown base model {model!r}",
                hint="use one of " + ", ".join(sorted(models.MODELS)),
            )
        if method not in METHODS:
            raise DatasetError(
                f"unknown tuning method {method!r}", hint="use " + ", ".join(METHODS)
            )
        if fmt not in DATASET_FORMATS:
            raise DatasetError(
                f"unknown dataset format {fmt!r}", hint="use " + ", ".join(DATASET_FORMATS)
            )
        self.model = info
        self.method = method
        self.fmt = fmt
        self.columns = dict(columns) if columns else None

    def _job(
        self,
        path: Path,
        display: str,
        *,
        byte_range: tuple[int, int] | None = None,
        detected: str | None = None,
        fractions: tuple[float, float] = (0.0, 0.0),
        outputs: dict[str, Path] | None = None,
    ) -> PartJob:
        return PartJob(
            path=path,
            byte_range=byte_range,
            fmt=self.fmt,
            detected=detected,
            columns=self.columns,
            method=self.method,
            model=self.model,
            display=display,
            fractions=fractions,
            outputs=outputs,
        )

    def _scan_train(
        self, train: Path, display: str, workdir: Path | None, fractions: tuple[float, float]
    ) -> Part:
        size = train.stat().st_size
        count = processes()
        ranges: list[tuple[int, int] | None] = [None]
        if count > 1 and size >= PARALLEL_MIN_BYTES and not is_csv(train, self.fmt):
            ranges = list(split_ranges(train, [MAIN_SHARE] + [1.0] * (count - 1)))
        found = detect_first(train) if len(ranges) > 1 and self.fmt == "auto" else None
        jobs = []
        for k, byte_range in enumerate(ranges):
            outputs = None
            if workdir is not None:
                # The first part writes the final files; later ones are appended to them.
                name = "{side}.jsonl" if k == 0 else f".part{k}-{{side}}.jsonl"
                outputs = {side: workdir / name.format(side=side) for side in SIDES}
            # A range after the line that settled the format starts with it; the range that
            # holds that line settles it just as a single pass would.
            detected = found[0] if found and byte_range and found[1] < byte_range[0] else None
            jobs.append(
                self._job(
                    train,
                    display,
                    byte_range=byte_range,
                    detected=detected,
                    fractions=fractions,
                    outputs=outputs,
                )
            )
        return run_parts(jobs)

    def run(
        self,
        train: Path,
        *,
        display: str,
        workdir: Path | None = None,
        validation: float | Path | None = None,
        holdout: float | Path | None = None,
        epochs: int | None = None,
        budget_usd: float | None = None,
    ) -> PreparedDataset:
        """Validate ``train`` and, with a ``workdir``, write the converted files there.

        ``validation`` and ``holdout`` are fractions of ``train`` to set aside, or separate
        files, checked the same way and for prompts that are also in ``train``.
        """
        if not train.is_file():
            raise DatasetError(
                f"{display}: no such dataset file",
                hint="dataset.train is relative to the spec file",
            )
        for role, value in (("validation", validation), ("holdout", holdout)):
            if isinstance(value, Path) and not value.is_file():
                raise DatasetError(
                    f"{value}: no such {role} file",
                    hint="paths in the spec are relative to the spec file",
                )
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        findings = FindingList()
        size = train.stat().st_size
        if size > models.MAX_TRAIN_FILE_BYTES:
            findings.add(
                Finding(
                    "error",
                    "file-too-large",
                    f"{size / 1024**3:.2f} GB; Vertex takes at most 1 GB per file: split it",
                    file=display,
                )
            )
        fractions = (
            holdout if isinstance(holdout, float) else 0.0,
            validation if isinstance(validation, float) else 0.0,
        )
        if sum(fractions) >= 1:
            raise DatasetError(
                f"evaluation.holdout ({fractions[0]}) and dataset.validation ({fractions[1]}) "
                "together set aside all of the training data",
                hint="keep their sum well below 1, e.g. 0.1 each",
            )
        part = self._scan_train(train, display, workdir, fractions)
        findings.extend(part.findings)
        if size == 0 or (not part.count and not findings.counts):
            findings.add(Finding("error", "empty-file", "the file has no examples", file=display))
        read_answers = partial(
            quality.answers_at,
            train,
            fmt=part.fmt or "",
            method=self.method,
            columns=self.columns,
        )
        quality.duplicates(part, findings, display, read_answers)
        quality.whole_file(part, findings, display)
        outputs: dict[str, DatasetFile | None] = {**dict.fromkeys(SIDES), **part.outputs}
        counts = dict(part.examples)
        kept_from = threshold(sum(fractions))  # digests below it were set aside
        for role, value in (("validation", validation), ("holdout", holdout)):
            if not isinstance(value, Path):
                continue
            job = self._job(
                value,
                str(value),
                outputs={"train": workdir / f"{role}.jsonl"} if workdir else None,
            )
            other = scan(job)
            findings.extend(other.findings)
            quality.leakage(other, part, kept_from.__le__, role, findings, str(value), display)
            if other.outputs:
                outputs[role] = other.outputs["train"]
            counts[role] = other.count
        self._limits(counts, part, findings, display)
        stats = self._stats(part, counts, size, epochs, budget_usd, findings, display)
        stats.update(findings.totals())
        errors, warnings = findings.finish()
        report = Report(ok=not errors, errors=errors, warnings=warnings, stats=stats)
        if workdir is None:
            placeholder = DatasetFile(train, "", size, counts["train"], display)
            return PreparedDataset(report, placeholder, None, None)
        train_file = outputs["train"]
        assert train_file is not None
        validation_file, holdout_file = outputs["validation"], outputs["holdout"]
        return PreparedDataset(
            report,
            train_file,
            validation_file if validation_file and validation_file.examples else None,
            holdout_file if holdout_file and holdout_file.examples else None,
        )

    def _limits(
        self, counts: dict[str, int], part: Part, findings: FindingList, display: str
    ) -> None:
        n_validation, n_train = counts["validation"], counts["train"]
        over_share = n_validation > VALIDATION_SHARE_FROM and n_validation > 0.3 * n_train
        if n_validation > models.MAX_VALIDATION_EXAMPLES or over_share:
            findings.add(
                Finding(
                    "error",
                    "too-many-validation-examples",
                    f"{n_validation:,} validation examples; Vertex takes at most "
                    f"{models.MAX_VALIDATION_EXAMPLES:,}, and above {VALIDATION_SHARE_FROM:,} "
                    f"no more than 30% of the training examples ({n_train:,}): "
                    "lower dataset.validation",
                    file=display,
                )
            )
        limit = (
            self.model.max_train_examples_multimodal
            if part.multimodal
            else self.model.max_train_examples_text
        )
        if n_train > limit:
            kind = "multimodal" if part.multimodal else "text"
            findings.add(
                Finding(
                    "error",
                    "too-many-examples",
                    f"{n_train:,} examples; {self.model.id} takes at most {limit:,} {kind} "
                    "examples",
                    file=display,
                )
            )

    def _stats(
        self,
        part: Part,
        counts: dict[str, int],
        size: int,
        epochs: int | None,
        budget_usd: float | None,
        findings: FindingList,
        display: str,
    ) -> dict[str, Any]:
        n_epochs = epochs or 1
        per_epoch = part.billable["train"]
        billable = per_epoch * n_epochs
        cost = models.estimate_cost_usd(billable, self.model.id)
        stats: dict[str, Any] = {
            "format": part.fmt,
            "model": self.model.id,
            "method": self.method,
            "bytes": size,
            "examples": part.count,
            "train_examples": counts["train"],
            "validation_examples": counts["validation"],
            "holdout_examples": counts["holdout"],
            "input_tokens": quality.distribution(part.input_counts),
            "output_tokens": quality.distribution(part.output_counts),
            "billable_tokens_per_epoch": per_epoch,
            "epochs": n_epochs,
            "billable_tokens": billable,
            "estimated_cost_usd": round(cost, 4) if cost is not None else None,
            "price_per_million": self.model.usd_per_million_training_tokens,
            "price_confirmed": self.model.price_confirmed,
            "prices_as_of": models.PRICES_AS_OF,
            "price_source": models.PRICE_SOURCE,
            "token_estimate": TOKEN_ESTIMATE_NOTE,
            "truncated_examples_expected": part.truncated,
        }
        if budget_usd is not None:
            stats["budget_usd"] = budget_usd
            if cost is not None and cost > budget_usd:
                findings.add(
                    Finding(
                        "warning",
                        "over-budget",
                        f"estimated ${cost:,.2f} is over budget.max_cost_usd "
                        f"${budget_usd:,.2f}; submit will refuse it",
                        file=display,
                    )
                )
        return stats


def validate_file(
    path: Path,
    *,
    model: str = models.DEFAULT_BASE_MODEL,
    method: str = "supervised",
    fmt: str = "auto",
    columns: Mapping[str, str] | None = None,
) -> Report:
    """Check a bare dataset file against a base model's limits."""
    validator = Validator(model=model, method=method, fmt=fmt, columns=columns)
    return validator.run(path, display=str(path)).report
