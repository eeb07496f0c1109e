"""The validator: one streaming pass that converts, checks, splits and writes a dataset.

Memory stays flat whatever the file size: examples are read, checked and written one at a time,
and what the quality checks need to remember is a fixed-size digest per example (8 bytes of
blake2b) and one token count, not the examples themselves. Findings are capped per code, so a
million bad lines report the first :data:`MAX_PER_CODE` and a count of the rest.

Splits are decided by a hash of each example's prompt, so they are deterministic, stay stable as
rows are appended, and the same prompt never lands on both sides.
"""

from __future__ import annotations

import hashlib
import os
import statistics
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from vertex_tuner import models
from vertex_tuner.dataset import formats, tokens
from vertex_tuner.dataset.findings import Finding, Severity
from vertex_tuner.dataset.reader import iter_csv_rows, iter_lines, split_ranges
from vertex_tuner.dataset.rules import TRUNCATION_CODES, check_example
from vertex_tuner.errors import DatasetError

if TYPE_CHECKING:
    from vertex_tuner.spec import JobSpec

MAX_PER_CODE = 50
MIN_RECOMMENDED_EXAMPLES = 100
TOKEN_ESTIMATE_NOTE = "estimated: ~4 characters per token; Vertex counts exactly"


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
class DatasetFile:
    """A converted Gemini JSONL file, ready to upload."""

    path: Path
    sha256: str
    size: int
    examples: int
    source: str


@dataclass(frozen=True)
class PreparedDataset:
    report: Report
    train: DatasetFile
    validation: DatasetFile | None
    holdout: DatasetFile | None


class _Findings:
    """Findings, capped per code, with a count of what was left out."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self.counts: Counter[str] = Counter()

    def add(self, finding: Finding) -> None:
        self.counts[finding.code] += 1
        if self.counts[finding.code] <= MAX_PER_CODE:
            self.items.append(finding)

    def merge(self, other: _Findings) -> None:
        """Append another part's findings (a later part of the same file)."""
        kept: Counter[str] = Counter(f.code for f in self.items)
        for finding in other.items:
            if kept[finding.code] < MAX_PER_CODE:
                kept[finding.code] += 1
                self.items.append(finding)
        self.counts.update(other.counts)

    def finish(self) -> tuple[list[Finding], list[Finding]]:
        for code, count in sorted(self.counts.items()):
            if count > MAX_PER_CODE:
                severity: Severity = next(f.severity for f in self.items if f.code == code)
                self.items.append(
                    Finding(
                        severity,
                        code,
                        f"and {count - MAX_PER_CODE} more like this",
                        file=self.items[0].file,
                    )
                )
        errors = [f for f in self.items if f.severity == "error"]
        warnings = [f for f in self.items if f.severity == "warning"]
        return errors, warnings


def _digest(data: bytes) -> int:
    # A 64-bit int is the smallest Python object that holds the digest: memory stays flat.
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _prompt_key(example: Mapping[str, Any], method: str) -> bytes:
    """The part of an example that is the prompt: system instruction and turns before the answer."""
    contents = example.get("contents")
    if isinstance(contents, list) and method == "supervised":
        last = max(
            (i for i, c in enumerate(contents) if isinstance(c, dict) and c.get("role") == "model"),
            default=len(contents),
        )
        contents = contents[:last]
    system = example.get("systemInstruction")
    return orjson.dumps([system, example.get("tools"), contents], option=orjson.OPT_SORT_KEYS)


def _answer_key(example: Mapping[str, Any], method: str) -> bytes:
    if method == "preference":
        return orjson.dumps(example.get("completions"), option=orjson.OPT_SORT_KEYS)
    contents = example.get("contents")
    if isinstance(contents, list) and contents:
        return orjson.dumps(contents[-1], option=orjson.OPT_SORT_KEYS)
    return b""


def _answer_text(example: Mapping[str, Any]) -> str:
    contents = example.get("contents")
    if isinstance(contents, list) and contents and isinstance(contents[-1], dict):
        parts = contents[-1].get("parts") or []
        return "".join(p.get("text", "") for p in parts if isinstance(p, dict))[:80]
    return ""


def _side(prompt_digest: int, holdout: float, validation: float) -> str:
    u = prompt_digest / 2**64
    if u < holdout:
        return "holdout"
    if u < holdout + validation:
        return "validation"
    return "train"


class _Writer:
    """Writes canonical JSONL while hashing it."""

    def __init__(self, path: Path | None, source: str) -> None:
        self.path = path
        self.source = source
        self.file: IO[bytes] | None = path.open("wb") if path else None
        self.hash = hashlib.sha256()
        self.size = 0
        self.examples = 0

    def write(self, example: Mapping[str, Any]) -> None:
        data = orjson.dumps(example) + b"\n"
        self.hash.update(data)
        self.size += len(data)
        self.examples += 1
        if self.file is not None:
            self.file.write(data)

    def close(self) -> DatasetFile | None:
        if self.file is None or self.path is None:
            return None
        self.file.close()
        return DatasetFile(self.path, self.hash.hexdigest(), self.size, self.examples, self.source)


@dataclass
class _Scan:
    """Everything one pass over a file remembers."""

    method: str
    model: models.ModelInfo
    file: str
    findings: _Findings
    fmt: str | None = None
    examples: int = 0
    size_bytes: int = 0
    images: int = 0
    input_tokens: array[int] = field(default_factory=lambda: array("q"))
    output_tokens: array[int] = field(default_factory=lambda: array("q"))
    lines: array[int] = field(default_factory=lambda: array("q"))
    billable: int = 0
    truncated: int = 0
    #: prompt digest -> answer digest << 32 | first line (see :func:`_remember`).
    answers: dict[int, int] = field(default_factory=dict)
    outputs: Counter[int] = field(default_factory=Counter)
    output_names: dict[int, str] = field(default_factory=dict)


def _examples(
    path: Path,
    fmt: str,
    columns: Mapping[str, str] | None,
    scan: _Scan,
    byte_range: tuple[int, int, int] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Converted examples of one file; problems become findings on the scan."""
    add = scan.findings.add
    if fmt == "csv" or (fmt == "auto" and path.suffix.lower() in (".csv", ".tsv")):
        scan.fmt = "csv"
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        mapping: dict[str, str | None] | None = None
        for line, row, error in iter_csv_rows(path, delimiter=delimiter):
            if error is not None or row is None:
                add(
                    Finding(
                        "error", "bad-csv", error or "unreadable row", line=line, file=scan.file
                    )
                )
                continue
            if mapping is None:
                try:
                    mapping = formats.csv_columns(list(row), columns)
                except formats.ConversionError as exc:
                    add(
                        Finding(
                            "error",
                            exc.code,
                            exc.message,
                            line=1,
                            file=scan.file,
                            field="dataset.columns",
                        )
                    )
                    return
            yield line, formats.from_csv_row(row, mapping)
        return
    start, end, first_line = byte_range or (0, None, 1)
    for line, raw in iter_lines(path, start=start, end=end, first_line=first_line):
        scan.size_bytes += len(raw) + 1
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            msg = str(exc)
            if "utf-8" in msg.lower() or "surrogate" in msg.lower():
                add(
                    Finding(
                        "error",
                        "not-utf8",
                        "the line is not valid UTF-8; save the file as UTF-8",
                        line=line,
                        file=scan.file,
                    )
                )
            else:
                add(
                    Finding(
                        "error",
                        "bad-json",
                        f"not valid JSON: {msg[:120]}",
                        line=line,
                        file=scan.file,
                    )
                )
            continue
        kind = formats.detect(obj)
        if scan.fmt is None:
            if fmt != "auto":
                scan.fmt = fmt
            elif kind is None:
                add(
                    Finding(
                        "error",
                        "unknown-format",
                        "cannot tell the format of this line "
                        "(expected contents, messages, input_text/output_text or "
                        "prompt/completion)",
                        line=line,
                        file=scan.file,
                    )
                )
                continue
            else:
                scan.fmt = kind
        elif fmt == "auto" and kind is not None and kind != scan.fmt:
            add(
                Finding(
                    "error",
                    "mixed-formats",
                    f"this line is {kind} but the file started "
                    f"as {scan.fmt}; use one format per file",
                    line=line,
                    file=scan.file,
                )
            )
            continue
        try:
            yield line, formats.convert(obj, scan.fmt)
        except formats.ConversionError as exc:
            add(Finding("error", exc.code, exc.message, line=line, file=scan.file, field=exc.field))


def _remember(scan: _Scan, prompt: int, answer: int, line: int) -> None:
    """Index a prompt; the same prompt again is a duplicate, or a conflict if its answer differs.

    The index maps a prompt digest to its answer digest and first line packed into one int
    (``answer << 32 | line``): one small object per example keeps memory flat.
    """
    packed = answer << 32 | line
    earlier = scan.answers.setdefault(prompt, packed)
    if earlier == packed:
        return
    first = earlier & 0xFFFFFFFF
    if earlier >> 32 == answer:
        message, code = f"the same example as line {first}", "duplicate"
    else:
        message, code = (
            f"the same prompt as line {first} with a different answer",
            ("conflicting-answers"),
        )
    scan.findings.add(Finding("warning", code, message, line=line, file=scan.file))


def _check(scan: _Scan, line: int, example: dict[str, Any]) -> tuple[int, int] | None:
    """Rules and quality bookkeeping; (prompt digest, billable tokens) when it may be written."""
    if scan.method == "preference":
        n_in, n_out = tokens.preference_tokens(example)
        billable = n_in + n_out
    else:
        n_in, n_out, billable = tokens.measure(example)
    problems = check_example(
        example, method=scan.method, model=scan.model, line=line, measured=(n_in, n_out)
    )
    hard = False
    for finding in problems:
        scan.findings.add(
            Finding(
                finding.severity,
                finding.code,
                finding.message,
                line=line,
                file=scan.file,
                field=finding.field,
            )
        )
        if finding.code in TRUNCATION_CODES:
            scan.truncated += 1
        elif finding.severity == "error":
            hard = True
    if hard:
        return None
    scan.examples += 1
    scan.billable += billable
    scan.input_tokens.append(n_in)
    scan.output_tokens.append(n_out)
    scan.lines.append(line)
    prompt = _digest(_prompt_key(example, scan.method))
    answer = _digest(_answer_key(example, scan.method))
    _remember(scan, prompt, answer, line)
    if len(scan.outputs) <= 50 or answer in scan.outputs:
        scan.outputs[answer] += 1
        scan.output_names.setdefault(answer, _answer_text(example))
    return prompt, billable


def _distribution(values: array[int]) -> dict[str, int]:
    if not values:
        return {"min": 0, "median": 0, "p95": 0, "max": 0}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
        "max": ordered[-1],
    }


def _quality(scan: _Scan, *, is_train: bool) -> None:
    add = scan.findings.add
    if is_train and 0 < scan.examples < MIN_RECOMMENDED_EXAMPLES:
        add(
            Finding(
                "warning",
                "few-examples",
                f"only {scan.examples} training examples; start with at least "
                f"{MIN_RECOMMENDED_EXAMPLES}",
                file=scan.file,
            )
        )
    if scan.examples >= 20 and len(scan.outputs) <= 20:
        top, count = scan.outputs.most_common(1)[0]
        share = count / scan.examples
        names = ", ".join(f"{scan.output_names[k]!r} ({n})" for k, n in scan.outputs.most_common(5))
        add(
            Finding(
                "warning",
                "few-distinct-outputs",
                f"only {len(scan.outputs)} distinct answers across {scan.examples} examples "
                f"({names}); a classification task? check the labels are balanced",
                file=scan.file,
            )
        )
        if share >= 0.6:
            add(
                Finding(
                    "warning",
                    "skewed-labels",
                    f"{share:.0%} of examples have the answer {scan.output_names[top]!r}; "
                    "the tuned model may learn to always say it",
                    file=scan.file,
                )
            )
    totals = [a + b for a, b in zip(scan.input_tokens, scan.output_tokens, strict=True)]
    if len(totals) >= 20:
        median = statistics.median(totals)
        limit = max(median * 8, 512)
        for index, total in enumerate(totals):
            if total > limit:
                add(
                    Finding(
                        "warning",
                        "length-outlier",
                        f"~{total:,} tokens, more than 8× the median ({median:,.0f}); "
                        "check it is not a paste error",
                        file=scan.file,
                        line=scan.lines[index],
                    )
                )


#: Files at least this large are validated in parallel, one byte range per core.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024
SIDES = ("train", "validation", "holdout")


@dataclass
class _Part:
    """What one pass over a byte range of the training file learned (sent between processes)."""

    scan: _Scan
    examples: dict[str, int]
    billable: dict[str, int]
    files: dict[str, Path | None]
    #: The scan's prompt index as flat arrays (prompt digests, answer digests, lines) when
    #: the part crosses a process boundary: far smaller to send than a dict.
    packed: tuple[array[int], array[int], array[int]] | None = None

    def pack(self) -> _Part:
        answers = self.scan.answers
        self.packed = (
            array("Q", answers.keys()),
            array("Q", (v >> 32 for v in answers.values())),
            array("q", (v & 0xFFFFFFFF for v in answers.values())),
        )
        self.scan.answers = {}
        return self

    def index(self) -> Iterator[tuple[int, int, int]]:
        """(prompt digest, answer digest, first line) triples."""
        if self.packed is None:
            return ((p, v >> 32, v & 0xFFFFFFFF) for p, v in self.scan.answers.items())
        return zip(*self.packed, strict=True)


@dataclass(frozen=True)
class _PartJob:
    path: Path
    byte_range: tuple[int, int, int] | None
    fmt: str
    detected: str | None
    columns: dict[str, str] | None
    method: str
    model: models.ModelInfo
    display: str
    fractions: tuple[float, float]  # (holdout, validation)
    out_prefix: Path | None


def _scan_part(job: _PartJob) -> _Part:
    """Check, split and write the examples of one byte range (runs in a worker process too)."""
    scan = _Scan(job.method, job.model, job.display, _Findings(), fmt=job.detected)
    files = {
        side: (Path(f"{job.out_prefix}-{side}.jsonl") if job.out_prefix else None) for side in SIDES
    }
    writers = {side: _Writer(files[side], job.display) for side in SIDES}
    billable = dict.fromkeys(SIDES, 0)
    holdout, validation = job.fractions
    for line, example in _examples(job.path, job.fmt, job.columns, scan, job.byte_range):
        checked = _check(scan, line, example)
        if checked is None:
            continue
        prompt, tokens_billable = checked
        side = _side(prompt, holdout, validation)
        writers[side].write(example)
        billable[side] += tokens_billable
    for writer in writers.values():
        if writer.file is not None:
            writer.file.close()
    return _Part(scan, {side: writers[side].examples for side in SIDES}, billable, files)


def _merge(parts: list[_Part]) -> _Part:
    """One part's view of the whole file, in line order, with cross-part duplicates found."""
    base = parts[0]
    scan = base.scan
    if base.packed is not None:
        scan.answers = {p: a << 32 | line for p, a, line in base.index()}
        base.packed = None
    for part in parts[1:]:
        other = part.scan
        scan.findings.merge(other.findings)
        # A later part's first sightings may repeat an earlier part's prompts.
        for prompt, answer, line in part.index():
            _remember(scan, prompt, answer, line)
        part.packed = None
        for key, count in other.outputs.items():
            if len(scan.outputs) <= 50 or key in scan.outputs:
                scan.outputs[key] += count
                scan.output_names.setdefault(key, other.output_names.get(key, ""))
        scan.input_tokens.extend(other.input_tokens)
        scan.output_tokens.extend(other.output_tokens)
        scan.lines.extend(other.lines)
        scan.examples += other.examples
        scan.size_bytes += other.size_bytes
        scan.images += other.images
        scan.billable += other.billable
        scan.truncated += other.truncated
        scan.fmt = scan.fmt or other.fmt
        for side in SIDES:
            base.examples[side] += part.examples[side]
            base.billable[side] += part.billable[side]
    return base


def _detect_first(path: Path) -> str | None:
    """The format of the first parseable line, so every part reads the file the same way."""
    for _, raw in iter_lines(path):
        if raw.strip():
            try:
                return formats.detect(orjson.loads(raw))
            except orjson.JSONDecodeError:
                return None
    return None


def _scan_part_packed(job: _PartJob) -> _Part:
    return _scan_part(job).pack()


def _workers() -> int:
    """Processes for a large file: both cores by default; VERTEX_TUNER_WORKERS=1 keeps one
    process (about half the memory, half the speed)."""
    configured = os.environ.get("VERTEX_TUNER_WORKERS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return min(2, os.cpu_count() or 1)


def _run_parts(jobs: list[_PartJob]) -> list[_Part]:
    if len(jobs) == 1:
        return [_scan_part(jobs[0])]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the caller may have threads (a sandbox, a progress bar).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context) as pool:
        return list(pool.map(_scan_part_packed, jobs))


def _join(files: list[Path | None], target: Path, source: str) -> DatasetFile:
    """Concatenate part files in order into ``target``, hashing as it goes."""
    digest = hashlib.sha256()
    size = 0
    lines = 0
    with target.open("wb") as out:
        for part in files:
            if part is None or not part.exists():
                continue
            with part.open("rb") as f:
                while chunk := f.read(4 * 1024 * 1024):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            part.unlink()
    return DatasetFile(target, digest.hexdigest(), size, lines, source)


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
        self.model = info
        self.method = method
        self.fmt = fmt
        self.columns = columns

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
        findings = _Findings()
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        if not train.is_file():
            raise DatasetError(
                f"{display}: no such dataset file",
                hint="dataset.train is relative to the spec file",
            )
        size = train.stat().st_size
        if size > models.MAX_TRAIN_FILE_BYTES:
            findings.add(
                Finding(
                    "error",
                    "file-too-large",
                    f"{size / 1024**3:.2f} GB; Vertex takes at most 1 GB per file",
                    file=display,
                )
            )
        fractions = {
            "validation": validation if isinstance(validation, float) else 0.0,
            "holdout": holdout if isinstance(holdout, float) else 0.0,
        }
        is_csv = self.fmt == "csv" or (
            self.fmt == "auto" and train.suffix.lower() in (".csv", ".tsv")
        )
        workers = _workers()
        ranges: list[tuple[int, int, int] | None] = [None]
        if not is_csv and workers > 1 and size >= PARALLEL_MIN_BYTES:
            ranges = list(split_ranges(train, workers))
        detected = None if is_csv or len(ranges) == 1 else _detect_first(train)
        jobs = [
            _PartJob(
                path=train,
                byte_range=r,
                fmt=self.fmt,
                detected=detected,
                columns=dict(self.columns) if self.columns else None,
                method=self.method,
                model=self.model,
                display=display,
                fractions=(fractions["holdout"], fractions["validation"]),
                out_prefix=workdir / f".part{k}" if workdir else None,
            )
            for k, r in enumerate(ranges)
        ]
        parts = _run_parts(jobs)
        merged = _merge(parts)
        scan = merged.scan
        findings.merge(scan.findings)
        scan.findings = findings
        # Each role's file: the joined parts of the training file's split ...
        outputs: dict[str, DatasetFile | None] = dict.fromkeys(SIDES)
        counts = dict(merged.examples)
        if workdir is not None:
            for side in SIDES:
                outputs[side] = _join(
                    [part.files[side] for part in parts], workdir / f"{side}.jsonl", display
                )
        if size == 0 or (scan.examples == 0 and not findings.counts):
            findings.add(Finding("error", "empty-file", "the file has no examples", file=display))
        _quality(scan, is_train=True)
        # ... or a separate file, checked the same way and for leakage (its fraction is 0).
        for role, value in (("validation", validation), ("holdout", holdout)):
            if not isinstance(value, Path):
                continue
            writer = _Writer(workdir / f"{role}.jsonl" if workdir else None, str(value))
            other = _Scan(self.method, self.model, str(value), findings, fmt=None)
            for line, example in _examples(value, self.fmt, self.columns, other):
                checked = _check(other, line, example)
                if checked is None:
                    continue
                if checked[0] in scan.answers:
                    severity: Severity = "error" if role == "holdout" else "warning"
                    findings.add(
                        Finding(
                            severity,
                            f"{role}-leakage",
                            f"this prompt is also in the training data ({display})",
                            line=line,
                            file=str(value),
                        )
                    )
                writer.write(example)
            outputs[role] = writer.close()
            counts[role] = writer.examples
        n_validation = counts["validation"]
        if n_validation > models.MAX_VALIDATION_EXAMPLES:
            findings.add(
                Finding(
                    "error",
                    "too-many-validation-examples",
                    f"{n_validation} validation examples; Vertex takes at most "
                    f"{models.MAX_VALIDATION_EXAMPLES}",
                    file=display,
                )
            )
        limit = (
            self.model.max_train_examples_multimodal
            if scan.images
            else self.model.max_train_examples_text
        )
        n_train = merged.examples["train"]
        if n_train > limit:
            findings.add(
                Finding(
                    "error",
                    "too-many-examples",
                    f"{n_train:,} examples; {self.model.id} takes at most {limit:,}",
                    file=display,
                )
            )
        n_epochs = epochs or 1
        per_epoch = merged.billable["train"]
        billable = per_epoch * n_epochs
        cost = models.estimate_cost_usd(billable, self.model.id)
        stats: dict[str, Any] = {
            "format": scan.fmt,
            "model": self.model.id,
            "method": self.method,
            "bytes": size,
            "examples": scan.examples,
            "train_examples": n_train,
            "validation_examples": n_validation,
            "holdout_examples": counts["holdout"],
            "input_tokens": _distribution(scan.input_tokens),
            "output_tokens": _distribution(scan.output_tokens),
            "billable_tokens_per_epoch": per_epoch,
            "epochs": n_epochs,
            "billable_tokens": billable,
            "estimated_cost_usd": round(cost, 4) if cost is not None else None,
            "price_per_million": self.model.usd_per_million_training_tokens,
            "price_confirmed": self.model.price_confirmed,
            "prices_as_of": models.PRICES_AS_OF,
            "price_source": models.PRICE_SOURCE,
            "token_estimate": TOKEN_ESTIMATE_NOTE,
            "truncated_examples_expected": scan.truncated,
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
        errors, warnings = findings.finish()
        report = Report(ok=not errors, errors=errors, warnings=warnings, stats=stats)
        if workdir is None:
            placeholder = DatasetFile(train, "", size, n_train, display)
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


def prepare(spec: JobSpec, workdir: Path) -> PreparedDataset:
    """Validate the spec's data, convert it and write the train/validation/holdout files."""
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
        display=_display(train),
        workdir=workdir,
        validation=where(spec.dataset.validation),
        holdout=where(holdout),
        epochs=spec.hyperparameters.epochs,
        budget_usd=spec.budget.max_cost_usd,
    )


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
