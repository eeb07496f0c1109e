"""The validator: one streaming pass that converts, checks, splits and writes a dataset.

:mod:`.scan` reads the file (in byte ranges on several cores when it is large), :mod:`.quality`
looks at the data as a whole, and this module adds the file-level limits, the token and cost
estimate, and the report. Memory does not depend on the examples' size: 12 bytes per example
(20 for a long one) and at most :data:`~vertex_tuner.dataset.findings.MAX_PER_CODE` findings
per code.

Splits are decided by a hash of each example's prompt, so they are deterministic, stay stable as
rows are appended, and the same prompt never lands on both sides.

Token figures are estimates (:mod:`.tokens`). Given a :class:`~.tokens.TokenCounter`,
:func:`count_exactly` then counts what the estimate cannot settle: each example whose estimate is
within :data:`EXACT_MARGIN` of the per-example limit, whose finding then gives the exact count,
and a seeded sample of :data:`CALIBRATION_SAMPLE` examples that calibrates the billable-token
estimate, with an interval. The scan only notes those examples' lines; they are read again, and
only they, when counting.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from vertex_tuner import models
from vertex_tuner.dataset import formats, quality, tokens
from vertex_tuner.dataset.findings import MAX_PER_CODE, Finding, FindingList
from vertex_tuner.dataset.gemini import FILE_DATA_KEYS, system_of
from vertex_tuner.dataset.reader import iter_csv_rows, iter_lines
from vertex_tuner.dataset.scan import (
    SIDES,
    DatasetFile,
    Part,
    PartJob,
    processes,
    run_parts,
    scan,
    settled_format,
    split_file,
    threshold,
)
from vertex_tuner.errors import BackendError, DatasetError, TransientBackendError
from vertex_tuner.vocabulary import DATASET_FORMATS, METHODS

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = [
    "CALIBRATION_SAMPLE",
    "CALIBRATION_SEED",
    "EXACT_MARGIN",
    "MAX_PER_CODE",
    "MIN_RECOMMENDED_EXAMPLES",
    "PARALLEL_MIN_BYTES",
    "TOKEN_ESTIMATE_NOTE",
    "DatasetFile",
    "ExactWork",
    "PreparedDataset",
    "Report",
    "Validator",
    "count_exactly",
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
#: Examples whose estimate is within this share of the per-example limit, below or above it, are
#: counted exactly when a counter is given: at ~4 characters a token a single turn of English
#: chat is off by up to about 30% either way, so past this margin the estimate settles it.
EXACT_MARGIN = 0.30
#: Examples counted exactly to calibrate the billable-token estimate ...
CALIBRATION_SAMPLE = 300
#: ... picked at random with this seed, so the same file gives the same sample and interval.
CALIBRATION_SEED = 0
#: countTokens requests in flight at once (the counter paces them to its quota).
COUNT_CONCURRENCY = 8


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
class ExactWork:
    """What counting one scanned file exactly needs: a few line numbers, kept from the scan."""

    path: Path
    display: str
    fmt: str
    method: str
    columns: dict[str, str] | None
    model: str
    #: The per-example limit the file was checked against.
    limit: int
    #: (line, estimated tokens) of each example within :data:`EXACT_MARGIN` of ``limit``.
    near: tuple[tuple[int, int], ...]
    #: Lines of the calibration sample (of the training file only), and the seed that chose them.
    sample: tuple[int, ...] = ()
    seed: int = CALIBRATION_SEED


@dataclass(frozen=True)
class PreparedDataset:
    report: Report
    train: DatasetFile
    validation: DatasetFile | None
    holdout: DatasetFile | None
    #: What :func:`count_exactly` needs, per file scanned (empty when nothing was read).
    exact: tuple[ExactWork, ...] = field(default=(), compare=False)


class Validator:
    """Validate (and optionally convert and split) one dataset."""

    def __init__(
        self,
        *,
        model: str,
        method: str,
        fmt: str = "auto",
        columns: Mapping[str, str] | None = None,
        calibration_sample: int = CALIBRATION_SAMPLE,
        seed: int = CALIBRATION_SEED,
        references: Collection[str] = (),
        step_samples: int | None = None,
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
        self.calibration_sample = calibration_sample
        self.seed = seed
        self.limit = {
            "preference": models.PREFERENCE_MAX_TOKENS,
            "reinforcement": models.REINFORCEMENT_MAX_TOKENS,
        }.get(method, info.max_tokens_per_example)
        #: The ``references`` keys the reward reads: every example must have each.
        self.references = tuple(sorted(set(references)))
        #: Reinforcement: answers sampled per step (batch_size × samples_per_prompt), which
        #: Vertex holds to 1,024 when a prompt has media.
        self.step_samples = step_samples

    def _exact_work(self, path: Path, display: str, part: Part, *, sample: bool) -> ExactWork:
        """The near-limit examples of a scanned part (and, for training, the sample's lines)."""
        margin = EXACT_MARGIN * self.limit
        near = tuple(
            (line, total)
            for line, total in zip(part.long_lines, part.long_totals, strict=True)
            if abs(total - self.limit) <= margin
        )
        return ExactWork(
            path=path,
            display=display,
            fmt=part.fmt or "",
            method=self.method,
            columns=self.columns,
            model=self.model.id,
            limit=self.limit,
            near=near,
            sample=_sample_lines(part, self.calibration_sample, self.seed) if sample else (),
            seed=self.seed,
        )

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
        if count > 1 and size >= PARALLEL_MIN_BYTES:
            ranges = list(split_file(train, self.fmt, [MAIN_SHARE] + [1.0] * (count - 1)))
        found = settled_format(train, self.fmt) if len(ranges) > 1 else None
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
        counter: tokens.TokenCounter | None = None,
    ) -> PreparedDataset:
        """Validate ``train`` and, with a ``workdir``, write the converted files there.

        ``validation`` and ``holdout`` are fractions of ``train`` to set aside, or separate
        files, checked the same way and for prompts that are also in ``train``. With a
        ``counter``, the examples near the limit and a calibration sample are then counted
        exactly (:func:`count_exactly`).
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
        quality.whole_file(part, findings, display, self.method)
        exact = [self._exact_work(train, display, part, sample=True)]
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
            exact.append(self._exact_work(value, str(value), other, sample=False))
        self._limits(counts, part, findings, display)
        media_limited = (self.step_samples or 0) > models.REINFORCEMENT_MEDIA_STEP_SAMPLES
        if self.method == "reinforcement" and (self.references or media_limited):
            _reinforcement_pass(
                train,
                part.fmt or "",
                self.references,
                self.step_samples if media_limited else None,
                findings,
                display,
            )
        stats = self._stats(part, counts, size, epochs, budget_usd, findings, display)
        stats.update(findings.totals())
        errors, warnings = findings.finish()
        report = Report(ok=not errors, errors=errors, warnings=warnings, stats=stats)
        if workdir is None:
            placeholder = DatasetFile(train, "", size, counts["train"], display)
            prepared = PreparedDataset(report, placeholder, None, None, tuple(exact))
        else:
            train_file = outputs["train"]
            assert train_file is not None
            validation_file, holdout_file = outputs["validation"], outputs["holdout"]
            prepared = PreparedDataset(
                report,
                train_file,
                validation_file if validation_file and validation_file.examples else None,
                holdout_file if holdout_file and holdout_file.examples else None,
                tuple(exact),
            )
        return count_exactly(prepared, counter) if counter is not None else prepared

    def _limits(
        self, counts: dict[str, int], part: Part, findings: FindingList, display: str
    ) -> None:
        n_validation, n_train = counts["validation"], counts["train"]
        if self.method == "reinforcement":
            self._reinforcement_limits(n_train, n_validation, findings, display)
            return
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

    @staticmethod
    def _reinforcement_limits(
        n_train: int, n_validation: int, findings: FindingList, display: str
    ) -> None:
        """Reinforcement tuning's own caps (``models.REINFORCEMENT_MAX_*``)."""
        if n_train > models.REINFORCEMENT_MAX_EXAMPLES:
            findings.add(
                Finding(
                    "error",
                    "too-many-examples",
                    f"{n_train:,} prompts; reinforcement tuning takes at most "
                    f"{models.REINFORCEMENT_MAX_EXAMPLES:,} training examples",
                    file=display,
                )
            )
        if n_validation > models.REINFORCEMENT_MAX_VALIDATION:
            findings.add(
                Finding(
                    "error",
                    "too-many-validation-examples",
                    f"{n_validation:,} validation prompts; reinforcement tuning takes at most "
                    f"{models.REINFORCEMENT_MAX_VALIDATION:,}: lower dataset.validation",
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
        # Reinforcement tuning bills the answers sampled during the job, at no published price.
        cost = (
            None
            if self.method == "reinforcement"
            else models.estimate_cost_usd(billable, self.model.id)
        )
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
    counter: tokens.TokenCounter | None = None,
) -> Report:
    """Check a bare dataset file against a base model's limits (counting exactly with a
    ``counter``: see :func:`count_exactly`)."""
    validator = Validator(model=model, method=method, fmt=fmt, columns=columns)
    return validator.run(path, display=str(path), counter=counter).report


def _reinforcement_pass(
    path: Path,
    fmt: str,
    keys: Sequence[str],
    step_samples: int | None,
    findings: FindingList,
    display: str,
) -> None:
    """A finding per example whose ``references`` lack a key the reward reads, and one for the
    first prompt with media when ``step_samples`` (given only when over the media limit) is too
    many for it. A second pass over the file, affordable because reinforcement datasets hold at
    most 5,000 prompts; lines that are not objects were reported by the scan already."""
    if fmt not in ("gemini", ""):
        return
    media: list[int] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            if step_samples is not None and _has_file_data(obj):
                media.append(number)
            given = obj.get("references")
            have = given if isinstance(given, dict) else {}
            for key in keys:
                if key not in have:
                    findings.add(
                        Finding(
                            "error",
                            "missing-reference",
                            f"the reward reads {{{{references.{key}}}}}, and this example's "
                            f"references have no {key!r}",
                            line=number,
                            field=f"references.{key}",
                            file=display,
                        )
                    )
    if media:
        limit = models.REINFORCEMENT_MEDIA_STEP_SAMPLES
        findings.add(
            Finding(
                "error",
                "media-step-limit",
                f"{len(media)} prompt(s) have fileData parts (this is the first), and with media "
                f"Vertex samples at most {limit:,} answers a step; batch_size × "
                f"samples_per_prompt is {step_samples:,}: lower hyperparameters.batch_size or "
                "samples_per_prompt (e.g. batch_size: 16, samples_per_prompt: 16)",
                line=media[0],
                field="contents",
                file=display,
            )
        )


_FILE_DATA = frozenset(FILE_DATA_KEYS)


def _has_file_data(example: Mapping[str, Any]) -> bool:
    """Whether a prompt's system instruction or turns have a fileData part (either spelling)."""
    contents = example.get("contents")
    turns = [system_of(example), *(contents if isinstance(contents, list) else [])]
    for turn in turns:
        parts = turn.get("parts") if isinstance(turn, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict) and not _FILE_DATA.isdisjoint(part):
                return True
    return False


def _sample_lines(part: Part, size: int, seed: int) -> tuple[int, ...]:
    """The lines of ``size`` accepted examples picked at random with ``seed`` (all when fewer)."""
    sizes = [len(lines) for lines in part.prompt_lines]
    total = sum(sizes)
    if total == 0 or size <= 0:
        return ()
    picks = sorted(random.Random(seed).sample(range(total), min(size, total)))
    out: list[int] = []
    bucket, start = 0, 0
    for pick in picks:
        while pick >= start + sizes[bucket]:
            start += sizes[bucket]
            bucket += 1
        out.append(part.prompt_lines[bucket][pick - start])
    return tuple(sorted(out))


def _examples_at(work: ExactWork, lines: set[int]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, converted example) for each of ``lines`` (examples the scan accepted), in order:
    one pass over the file that parses only those lines."""
    if not lines:
        return
    if work.fmt == "csv":
        delimiter = "\t" if work.path.suffix.lower() == ".tsv" else ","
        mapping = None
        for line, row, _ in iter_csv_rows(work.path, delimiter=delimiter):
            if row is None:
                continue
            if mapping is None:
                mapping = formats.csv_columns(list(row), work.columns)
            if line in lines:
                yield line, formats.from_csv_row(row, mapping)
        return
    last = max(lines)
    for line, raw in iter_lines(work.path):
        if line in lines:
            yield line, formats.convert(orjson.loads(raw), work.fmt)
        if line >= last:
            return


#: (estimated tokens, exact tokens, estimated billable tokens) of one counted example.
Counted = tuple[int, int, int]


#: Count requests that may fail after every retry (the example keeps its estimate) before the
#: count stops: a few, or this share of the examples to count, whichever is more.
MAX_COUNT_FAILURES = 3
MAX_COUNT_FAILED_SHARE = 0.05


def _count_lines(
    work: ExactWork, lines: set[int], counter: tokens.TokenCounter
) -> tuple[dict[int, Counted], int]:
    """Each line's counts, and how many examples the counter refused (they keep their estimate).

    At most :data:`COUNT_CONCURRENCY` requests run at once and twice that many examples are held,
    so memory stays small however large the examples are.
    """
    out: dict[int, Counted] = {}
    refused = 0
    failed: list[TransientBackendError] = []
    pending: dict[Future[int], tuple[int, int, int]] = {}

    def collect(futures: set[Future[int]]) -> None:
        nonlocal refused
        for future in futures:
            line, estimate, billable = pending.pop(future)
            try:
                out[line] = (estimate, future.result(), billable)
            except TransientBackendError as exc:
                # A failure that outlasted the retries leaves that example estimated; when
                # more than a few do, the count stops (the service is down, not one request).
                failed.append(exc)
                if len(failed) > max(MAX_COUNT_FAILURES, MAX_COUNT_FAILED_SHARE * len(lines)):
                    raise TransientBackendError(
                        f"countTokens failed for {len(failed)} examples after every retry "
                        f"(last: {exc.message})",
                        hint="try again later, or submit with --no-exact-tokens to use the "
                        "estimate",
                    ) from None
                refused += 1
            except BackendError as exc:
                # One request Vertex refuses (a file it cannot read, say) leaves that example
                # estimated.
                if exc.status != 400:
                    raise
                refused += 1

    # Imported here: threads serve only exact counting, and the import is about a hundredth of a
    # second of every validation that does not count.
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=COUNT_CONCURRENCY, thread_name_prefix="count-tokens")
    try:
        for line, example in _examples_at(work, lines):
            request = tokens.counted_request(example, work.method)
            if not request.contents:
                continue
            future = pool.submit(
                counter.count,
                work.model,
                request.contents,
                system_instruction=request.system_instruction,
                tools=request.tools,
            )
            pending[future] = (line, request.estimate, request.billable)
            if len(pending) >= 2 * COUNT_CONCURRENCY:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            collect(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out, refused


def _over_limit(work: ExactWork, line: int, exact: int, source: str) -> Finding:
    if work.method == "preference":
        message = (
            f"{exact:,} tokens (counted by {source}) is over the {work.limit:,} limit for input "
            "plus completion"
        )
    else:
        message = (
            f"{exact:,} tokens (counted by {source}) is over {work.model}'s limit of "
            f"{work.limit:,} per example; Vertex truncates it"
        )
    return Finding("error", "too-many-tokens", message, line=line, file=work.display)


def count_exactly(prepared: PreparedDataset, counter: tokens.TokenCounter) -> PreparedDataset:
    """The prepared dataset with its near-limit examples and a calibration sample counted by
    ``counter``.

    An example within :data:`EXACT_MARGIN` of the limit is judged on its exact count: its
    ``too-many-tokens`` finding comes, stays or goes by it, and says who counted. The sample's
    exact/estimated ratio (:func:`~.tokens.calibrate`) scales the billable tokens and the cost
    to a central figure and an interval; ``budget.max_cost_usd`` is held to the interval's
    upper end. The files written are not touched: only the report changes.
    """
    report = prepared.report
    if not prepared.exact:
        return prepared
    stats = dict(report.stats)
    findings = FindingList.reopen(report.errors, report.warnings, stats.get("counts_by_code", {}))
    source = counter.source
    near = over = refused = 0
    truncated = int(stats.get("truncated_examples_expected") or 0)
    samples: list[Counted] = []
    for work in prepared.exact:
        wanted = {line for line, _ in work.near} | set(work.sample)
        counted, missed = _count_lines(work, wanted, counter)
        refused += missed
        for line, _ in work.near:
            if line not in counted:
                continue
            estimate, exact, _ = counted[line]
            near += 1
            was, now = estimate > work.limit, exact > work.limit
            if was:
                findings.discard("too-many-tokens", work.display, line)
            if now:
                over += 1
                findings.add(_over_limit(work, line, exact, source))
            truncated += int(now) - int(was)
        samples += [counted[line] for line in work.sample if line in counted]
    stats["truncated_examples_expected"] = max(truncated, 0)
    stats["exact_tokens"] = {
        "counted_by": source,
        "margin": EXACT_MARGIN,
        "near_limit_examples": near,
        "over_limit_examples": over,
        "not_counted": refused,
    }
    train = prepared.exact[0]
    calibration = tokens.calibrate(samples, seed=train.seed)
    within = f"within {EXACT_MARGIN:.0%} of the limit"
    note = "estimated: ~4 characters per token; " + (
        f"the {near:,} example(s) {within} counted by {source}"
        if near
        else f"no example {within}, none counted"
    )
    if calibration is not None:
        billable = int(stats.get("billable_tokens") or 0)
        mid, low, high = calibration.scale(billable)
        costs = [models.estimate_cost_usd(n, train.model) for n in (mid, low, high)]
        stats["calibration"] = {
            "counted_by": source,
            "examples": calibration.examples,
            "seed": calibration.seed,
            "confidence": tokens.CONFIDENCE,
            "ratio": round(calibration.ratio, 4),
            "ratio_low": round(calibration.low, 4),
            "ratio_high": round(calibration.high, 4),
            "billable_tokens": mid,
            "billable_tokens_low": low,
            "billable_tokens_high": high,
            "cost_usd": _cents(costs[0]),
            "cost_low_usd": _cents(costs[1]),
            "cost_high_usd": _cents(costs[2]),
        }
        note += (
            f"; billable ≈ {mid:,} tokens ({low:,}–{high:,}, calibrated on "
            f"{calibration.examples:,} examples counted by {source})"
        )
        budget = stats.get("budget_usd")
        if budget is not None and costs[2] is not None:
            # Held to the interval's upper end, as submit holds the plan.
            if findings.counts.get("over-budget"):
                findings.discard("over-budget", train.display, None)
            if costs[2] > budget:
                findings.add(
                    Finding(
                        "warning",
                        "over-budget",
                        f"estimated ${costs[0] or 0:,.2f} (up to ${costs[2]:,.2f}, calibrated) "
                        f"is over budget.max_cost_usd ${budget:,.2f}; submit will refuse it",
                        file=train.display,
                    )
                )
    stats["token_estimate"] = note
    stats.update(findings.totals())
    errors, warnings = findings.finish()
    revised = Report(ok=not errors, errors=errors, warnings=warnings, stats=stats)
    return replace(prepared, report=revised)


def _cents(cost: float | None) -> float | None:
    return round(cost, 4) if cost is not None else None
