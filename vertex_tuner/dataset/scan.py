"""One pass over a dataset file, or over one byte range of it, in this process or a worker.

Each line is parsed with orjson and handed to a fast check (:mod:`.fastpath`) that proves a
well-formed text example valid without converting it; only the rest take the full path that
converts, applies :func:`~vertex_tuner.dataset.rules.check_example` and explains each problem.
What a pass keeps is a :class:`Part`: findings (capped per code), token counters and, per
accepted example, an 8-byte prompt digest and its line in flat arrays. Memory does not grow with
the examples' size, only by 12 bytes per example (20 for a long one).

Large files are cut into byte ranges at line starts (:func:`run_parts`): this process scans the
first while worker processes scan the others, and the parts are appended in order. A worker
numbers lines from its range's first line, so no one has to count lines ahead; appending shifts
them.
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import re
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import subprocess

from vertex_tuner import models
from vertex_tuner.dataset import fastpath, formats, keys, tokens
from vertex_tuner.dataset.findings import Finding, FindingList
from vertex_tuner.dataset.gemini import is_media
from vertex_tuner.dataset.nesting import TOO_DEEP_MESSAGE, nests_deeper
from vertex_tuner.dataset.reader import (
    LongLine,
    ReadStopped,
    iter_blocks,
    iter_csv_fields,
    iter_line_starts,
    split_csv_ranges,
    split_ranges,
)
from vertex_tuner.dataset.rules import TRUNCATION_CODES, check_example

SIDES = ("train", "validation", "holdout")
#: Distinct answers counted exactly; past this many the data is not a classification, and
#: counting stops (so it costs nothing per example after the first few).
LABELS_KEPT = 51


@dataclass(frozen=True)
class DatasetFile:
    """A converted Gemini JSONL file, ready to upload."""

    path: Path
    sha256: str
    size: int
    examples: int
    source: str


class Writer:
    """Writes canonical JSONL (orjson bytes and ``\\n``) while hashing it.

    Lines are gathered and written and hashed a block at a time: one call per example would
    cost more than the example's conversion.
    """

    BLOCK = 1024 * 1024

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self.file: IO[bytes] = path.open("wb")
        self.hash = hashlib.sha256()
        self.size = 0
        self.examples = 0
        self.pending: list[bytes] = []
        self.pending_size = 0

    def write(self, example: Mapping[str, Any]) -> None:
        data = orjson.dumps(example) + b"\n"
        self.pending.append(data)
        self.pending_size += len(data)
        self.examples += 1
        if self.pending_size >= self.BLOCK:
            self._flush()

    def _flush(self) -> None:
        block = b"".join(self.pending)
        self.hash.update(block)
        self.file.write(block)
        self.size += len(block)
        self.pending = []
        self.pending_size = 0

    def append_file(self, other: DatasetFile) -> None:
        """Append a later part's file (then remove it), as if its lines were written here."""
        self._flush()
        with other.path.open("rb") as f:
            while block := f.read(self.BLOCK):
                self.hash.update(block)
                self.file.write(block)
                self.size += len(block)
        self.examples += other.examples
        other.path.unlink()

    def close(self) -> DatasetFile:
        self._flush()
        self.file.close()
        return DatasetFile(self.path, self.hash.hexdigest(), self.size, self.examples, self.source)


@dataclass(frozen=True)
class PartJob:
    """One byte range of one file to scan (pickled to a worker process)."""

    path: Path
    #: (start, end) bytes; None: the whole file.
    byte_range: tuple[int, int] | None
    fmt: str
    #: The file's format, when a line before this range settled it.
    detected: str | None
    columns: dict[str, str] | None
    method: str
    model: models.ModelInfo
    display: str
    #: (holdout, validation) fractions of the examples to set aside by prompt digest.
    fractions: tuple[float, float]
    #: Where to write the converted examples of each side; None: do not write.
    outputs: dict[str, Path] | None


#: Prompt digests are kept in this many buckets (by their first byte), so that finding repeats
#: needs a set of one bucket at a time, never of every example at once.
BUCKETS = 256
#: Examples up to this many tokens can never be length outliers (the outlier bar is at least
#: this high), so only longer ones are remembered for that check.
LONG_TOKENS = 512


def _buckets() -> list[bytearray]:
    return [bytearray() for _ in range(BUCKETS)]


def _line_buckets() -> list[array[int]]:
    return [array("I") for _ in range(BUCKETS)]


@dataclass
class Part:
    """What one pass over a byte range learned: everything the report needs.

    Per accepted example it keeps 12 bytes (its prompt digest and line, bucketed by the
    digest's first byte), and 8 more for an example over :data:`LONG_TOKENS` tokens; token
    counts go straight into counters.
    """

    findings: FindingList
    fmt: str | None = None
    #: Lines in the range, blank ones included (to number the next range's lines).
    lines_read: int = 0
    #: Examples accepted (with or without truncation).
    count: int = 0
    #: Per bucket, the 8-byte prompt digests of its examples, in line order ...
    prompts: list[bytearray] = field(default_factory=_buckets)
    #: ... and their lines.
    prompt_lines: list[array[int]] = field(default_factory=_line_buckets)
    #: Line and total tokens of each example over LONG_TOKENS, in line order.
    long_lines: array[int] = field(default_factory=lambda: array("I"))
    long_totals: array[int] = field(default_factory=lambda: array("I"))
    #: How many examples have each input, output and total token count: mergeable sketches,
    #: counted where the part was scanned (so on every core at once).
    input_counts: Counter[int] = field(default_factory=Counter)
    output_counts: Counter[int] = field(default_factory=Counter)
    total_counts: Counter[int] = field(default_factory=Counter)
    #: Token counts of the examples since the last :meth:`flush` (a block's worth).
    pending_in: array[int] = field(default_factory=lambda: array("I"))
    pending_out: array[int] = field(default_factory=lambda: array("I"))
    examples: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SIDES, 0))
    billable: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SIDES, 0))
    truncated: int = 0
    multimodal: int = 0
    #: Answer key -> examples with that answer, for the first :data:`LABELS_KEPT` answers.
    labels: dict[bytes, int] = field(default_factory=dict)
    #: Whether more distinct answers were seen than ``labels`` holds.
    many_labels: bool = False
    #: The converted file of each side (empty when not writing).
    outputs: dict[str, DatasetFile] = field(default_factory=dict)
    #: Whether the reading stopped before the range's end (a CSV's broken quoting, a line over
    #: the limit, columns it lacks): what a single pass read after it, it never read.
    stopped: bool = False
    #: The first part's writers, still open while later parts are appended (never pickled).
    open_writers: dict[str, Writer] | None = None
    #: (line, byte offset) of a few lines, about one per 128 KiB, that a row starts on: where
    #: the lines of some examples can be read again without reading all the lines before them.
    starts: list[tuple[int, int]] = field(default_factory=list)

    def remember(self, line: int, digest: bytes, n_in: int, n_out: int) -> None:
        """Keep what the whole-file checks need of one accepted example (the hot loop in
        :func:`_scan` does the same inline)."""
        bucket = digest[0]
        self.prompts[bucket] += digest
        self.prompt_lines[bucket].append(line)
        self.pending_in.append(n_in)
        self.pending_out.append(n_out)
        if n_in + n_out > LONG_TOKENS:
            self.long_lines.append(line)
            self.long_totals.append(n_in + n_out)

    def flush(self) -> None:
        """Count the pending token figures into the counters."""
        if self.pending_in:
            self.count += len(self.pending_in)
            self.input_counts.update(self.pending_in)
            self.output_counts.update(self.pending_out)
            self.total_counts.update(map(int.__add__, self.pending_in, self.pending_out))
            del self.pending_in[:]
            del self.pending_out[:]

    def extend(self, other: Part) -> None:
        """Append the part that follows this one in the file."""
        offset = self.lines_read
        shift = offset.__add__
        self.findings.extend(other.findings, line_offset=offset)
        self.fmt = self.fmt or other.fmt
        self.lines_read += other.lines_read
        self.count += other.count
        for b in range(BUCKETS):
            self.prompts[b] += other.prompts[b]
            self.prompt_lines[b].extend(array("I", map(shift, other.prompt_lines[b])))
        self.long_lines.extend(array("I", map(shift, other.long_lines)))
        self.long_totals.extend(other.long_totals)
        self.input_counts.update(other.input_counts)
        self.output_counts.update(other.output_counts)
        self.total_counts.update(other.total_counts)
        for side in SIDES:
            self.examples[side] += other.examples[side]
            self.billable[side] += other.billable[side]
        self.starts += [(line + offset, at) for line, at in other.starts]
        self.truncated += other.truncated
        self.multimodal += other.multimodal
        self.many_labels |= other.many_labels
        self.stopped |= other.stopped
        for label, count in other.labels.items():
            if label in self.labels:
                self.labels[label] += count
            elif len(self.labels) < LABELS_KEPT:
                self.labels[label] = count
            else:
                self.many_labels = True


def digests(prompts: bytearray) -> array[int]:
    """8-byte prompt digests as integers (native byte order: for equality only)."""
    values = array("Q")
    values.frombytes(prompts)
    return values


_POSITION = re.compile(r": line \d+ column (\d+) \(char \d+\)$")


def threshold(fraction: float) -> bytes:
    """The prompt digest below which an example falls in a set-aside of ``fraction``."""
    return min(int(fraction * 2**64), 2**64 - 1).to_bytes(8, "big")


class Scanner:
    """The full path for one part: conversion, every rule, and the explanation of each problem."""

    def __init__(self, job: PartJob, part: Part) -> None:
        self.job = job
        self.part = part
        self.add = part.findings.add
        self.fmt = job.detected or (None if job.fmt == "auto" else job.fmt)
        part.fmt = self.fmt
        self.writers: dict[str, Writer] | None = (
            {side: Writer(path, job.display) for side, path in job.outputs.items()}
            if job.outputs
            else None
        )
        holdout, validation = job.fractions
        self.split = holdout > 0 or validation > 0
        self.holdout_below = threshold(holdout)
        self.validation_below = threshold(holdout + validation)

    def finding(self, code: str, message: str, line: int | None, field: str | None = None) -> None:
        self.add(Finding("error", code, message, line=line, file=self.job.display, field=field))

    def side(self, digest: bytes) -> str:
        if not self.split:
            return "train"
        if digest < self.holdout_below:
            return "holdout"
        if digest < self.validation_below:
            return "validation"
        return "train"

    def bad_line(self, line: int, raw: bytes, exc: orjson.JSONDecodeError) -> None:
        """A line orjson could not parse: too long to read, blank (fine), not UTF-8, nested
        deeper than orjson parses, or not JSON. ``raw`` may end with its ``\\n``."""
        if isinstance(raw, LongLine):
            self.too_long(line, raw, "it was skipped")
            return
        if not raw.strip():
            return
        if raw.endswith(b"\n"):
            # The position orjson gives may count the newline: the line is read without it.
            try:
                orjson.loads(raw[:-1])
            except orjson.JSONDecodeError as again:
                exc = again
        message = str(exc)
        if "not valid UTF-8" in message:
            self.finding("not-utf8", "the line is not valid UTF-8; save the file as UTF-8", line)
            return
        # orjson says "depth limit exceeded" (older releases: "recursion limit").
        if "depth limit" in message or "recursion limit" in message:
            self.finding("json-too-deep", TOO_DEEP_MESSAGE, line)
            return
        # orjson says where as "line 1 column 7 (char 6)": within this line, so only the column.
        where = _POSITION.search(message)
        if where:
            message = f"{message[: where.start()]} at column {where.group(1)}"
        self.finding("bad-json", f"not valid JSON: {message[:160]}", line)

    def too_long(self, line: int, raw: LongLine, then: str) -> None:
        """A line the reader skipped for its length (``then`` says what was read after it)."""
        self.finding(
            "line-too-long",
            f"the line is {raw.size:,} bytes, over the {raw.limit / 1024**2:g} MiB a line may "
            f"hold (an example at a model's token limit is well under 1 MB); {then}: check the "
            "file holds one example per line",
            line,
        )

    def line(self, line: int, obj: Any) -> None:
        """A parsed JSONL line the fast path did not accept."""
        if not isinstance(obj, dict):
            self.finding("not-an-object", "each line must be a JSON object", line)
            return
        kind = formats.detect(obj)
        if self.fmt is None:
            if kind is None:
                self.finding(
                    "unknown-format",
                    "cannot tell the format of this line (expected contents, messages, "
                    "input_text/output_text or prompt/completion)",
                    line,
                )
                return
            self.fmt = self.part.fmt = kind
        elif self.job.fmt == "auto" and kind is not None and kind != self.fmt:
            self.finding(
                "mixed-formats",
                f"this line is {kind} but the file started as {self.fmt}; use one format per file",
                line,
            )
            return
        try:
            example = formats.convert(obj, self.fmt)
        except formats.ConversionError as exc:
            self.finding(exc.code, exc.message, line, exc.field)
            return
        # The converted example is what gets written (as its keys and in the converted file):
        # a chat line's other fields are dropped, so only what is kept has to be shallow enough.
        if nests_deeper(example):
            self.finding("json-too-deep", TOO_DEEP_MESSAGE, line)
            return
        self.example(line, example, source=obj)

    def example(
        self,
        line: int,
        example: dict[str, Any],
        *,
        source: Any = None,
        columns: Mapping[str, str | None] | None = None,
    ) -> None:
        """A converted example: apply the rules; remember and write it when Vertex takes it.

        ``source`` is the line as parsed (a CSV row, with its ``columns``): findings name its
        fields, not the converted example's.
        """
        method = self.job.method
        if method == "preference":
            n_in, n_out = tokens.preference_tokens(example)
            billable = n_in + n_out
        else:
            n_in, n_out, billable = tokens.measure(example)
        problems = check_example(
            example, method=method, model=self.job.model, line=line, measured=(n_in, n_out)
        )
        if problems:
            translate = formats.source_paths(self.fmt or "", source, columns)
            for f in problems:
                message, where = f.message, f.field
                if translate is not None:
                    message = translate(message)
                    where = translate(where) if where is not None else None
                self.add(
                    Finding(
                        f.severity, f.code, message, line=line, file=self.job.display, field=where
                    )
                )
        # Vertex still trains on an example it truncates; any other error and it rejects it.
        if any(f.severity == "error" and f.code not in TRUNCATION_CODES for f in problems):
            return
        part = self.part
        if any(f.code in TRUNCATION_CODES for f in problems):
            part.truncated += 1
        if _has_media(example):
            part.multimodal += 1
        digest = keys.prompt_digest(keys.prompt_key(example, method))
        part.remember(line, digest, n_in, n_out)
        if not part.many_labels:
            self.label(keys.answer_key(example, method))
        side = self.side(digest)
        part.examples[side] += 1
        part.billable[side] += billable
        if self.writers is not None:
            self.writers[side].write(example)

    def accept(
        self, line: int, result: fastpath.FastResult, convert: Callable[[], dict[str, Any]]
    ) -> None:
        """An example the fast path took (``convert`` gives its converted form, to write): what
        the hot loop in :func:`_scan` does inline."""
        key, answer, n_in, n_out, billable, media = result
        digest = keys.prompt_digest(orjson.dumps(key))
        part = self.part
        part.remember(line, digest, n_in, n_out)
        if media:
            part.multimodal += 1
        if not part.many_labels:
            self.label(b"" if answer is None else orjson.dumps(answer, option=orjson.OPT_SORT_KEYS))
        side = self.side(digest)
        part.examples[side] += 1
        part.billable[side] += billable
        if self.writers is not None:
            self.writers[side].write(convert())

    def label(self, answer: bytes) -> None:
        labels = self.part.labels
        if answer in labels:
            labels[answer] += 1
        elif len(labels) < LABELS_KEPT:
            labels[answer] = 1
        else:
            self.part.many_labels = True

    def close(self, *, keep_open: bool = False) -> dict[str, Writer] | None:
        """Finish the part; with ``keep_open``, hand back the writers (for later parts' files)
        instead of closing them."""
        part = self.part
        part.flush()
        if self.writers is None or keep_open:
            return self.writers
        part.outputs = {side: w.close() for side, w in self.writers.items()}
        return None


def _has_media(example: Mapping[str, Any]) -> bool:
    contents = example.get("contents")
    if not isinstance(contents, list):
        return False
    for content in contents:
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if is_media(part):
                return True
    return False


def is_csv(path: Path, fmt: str) -> bool:
    return fmt == "csv" or (fmt == "auto" and path.suffix.lower() in (".csv", ".tsv"))


def _scan_csv(job: PartJob, scanner: Scanner) -> None:
    delimiter = "\t" if job.path.suffix.lower() == ".tsv" else ","
    scanner.fmt = scanner.part.fmt = "csv"
    header: list[str] = []
    mapping: dict[str, str | None] | None = None
    positions = None
    limit = job.model.max_tokens_per_example
    part = scanner.part
    start, end = job.byte_range or (0, None)
    read: list[int] = []
    if start:
        # A later range: the header is the file's, and lines are numbered from the range's.
        first = next(iter_csv_fields(job.path, delimiter=delimiter), None)
        if first is None or first[1] is None:
            part.stopped = True
            return
        header = first[1]
    rows = iter_csv_fields(
        job.path,
        delimiter=delimiter,
        start=start,
        end=end,
        header=header if start else None,
        starts=part.starts,
        read=read,
    )
    for line, fields, error in rows:
        if line == 0 and fields is not None:
            header = fields
            continue
        if isinstance(error, LongLine):
            scanner.too_long(line, error, "the rest of the file was not read")
            part.stopped = True
            continue
        if error is not None or fields is None:
            scanner.finding("bad-csv", error or "unreadable row", line)
            part.stopped |= isinstance(error, ReadStopped)
            continue
        if mapping is None:
            try:
                # The columns as a dict of the row has them: each name once, first place first.
                mapping = formats.csv_columns(list(dict.fromkeys(header)), job.columns)
            except formats.ConversionError as exc:
                scanner.finding(exc.code, exc.message, 1, "dataset.columns")
                part.stopped = True
                return
            if job.method == "supervised":
                positions = fastpath.csv_positions(header, mapping)
        found = fastpath.csv_fields(fields, *positions, limit) if positions else None
        if found is None:
            row = dict(zip(header, fields, strict=True))
            scanner.example(line, formats.from_csv_row(row, mapping), source=row, columns=mapping)
        else:
            scanner.accept(line, found, partial(_csv_example, header, fields, mapping))
    part.lines_read = read[0] if read else 0


def _csv_example(
    header: list[str], fields: list[str], mapping: Mapping[str, str | None]
) -> dict[str, Any]:
    """The converted example of a row the fast check took (made only when it is written)."""
    return formats.from_csv_row(dict(zip(header, fields, strict=True)), mapping)


def scan(job: PartJob, *, keep_open: bool = False) -> Part:
    """Check, split and write the examples of one byte range (in a worker process too).

    With ``keep_open`` the writers stay open in ``part.open_writers``, for :func:`run_parts` to
    append the later parts' files to.
    """
    # Parsing allocates a handful of dicts and lists per line, which sets off the cyclic garbage
    # collector every few hundred lines to walk every object in the process, though none of
    # them can form a cycle: up to a third of the time on a large file. It is off while the file is
    # read, and back as it was afterwards.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _scan(job, keep_open=keep_open)
    finally:
        if enabled:
            gc.enable()


def _scan(job: PartJob, *, keep_open: bool) -> Part:
    """The loop below is the validator's hot path: it runs once per line of a file of any size, so
    it keeps what it touches in local names and leaves every uncommon case to the scanner.
    """
    part = Part(FindingList())
    scanner = Scanner(job, part)
    if is_csv(job.path, job.fmt):
        _scan_csv(job, scanner)
        part.open_writers = scanner.close(keep_open=keep_open)
        return part
    method = job.method
    fast = fastpath.check_for(method, scanner.fmt)
    limit = job.model.max_tokens_per_example
    loads, dumps, decode_error = orjson.loads, orjson.dumps, orjson.JSONDecodeError
    # A prompt key reads the same sorted or not (see fastpath.FastResult); an answer may not.
    sort = orjson.OPT_SORT_KEYS
    sha1 = hashlib.sha1
    prompts = part.prompts
    add_line = [lines.append for lines in part.prompt_lines]
    add_in, add_out = part.pending_in.append, part.pending_out.append
    long_lines, long_totals, long_tokens = part.long_lines, part.long_totals, LONG_TOKENS
    labels, examples, billable = part.labels, part.examples, part.billable
    writers = scanner.writers
    sided = scanner.split or writers is not None
    counting_labels = not part.many_labels
    train_billable = 0
    start, end = job.byte_range or (0, None)
    number = 0
    blocks = iter_blocks(job.path, start=start, end=end, ends=True, marks=part.starts)
    for first, block in blocks:
        for number, raw in enumerate(block, first):
            try:
                obj = loads(raw)
            except decode_error as exc:
                scanner.bad_line(number, raw, exc)
                continue
            if fast is not None and type(obj) is dict:
                result = fast(obj, limit)
                if result is not None:
                    key, texts, n_in, n_out, tokens_billable, media = result
                    digest = sha1(dumps(key)).digest()[:8]
                    bucket = digest[0]
                    prompts[bucket] += digest
                    add_line[bucket](number)
                    add_in(n_in)
                    add_out(n_out)
                    if n_in + n_out > long_tokens:
                        long_lines.append(number)
                        long_totals.append(n_in + n_out)
                    if media:
                        part.multimodal += 1
                    if counting_labels:
                        answer = b"" if texts is None else dumps(texts, option=sort)
                        if answer in labels:
                            labels[answer] += 1
                        else:
                            scanner.label(answer)
                            counting_labels = not part.many_labels
                    if sided:
                        side = scanner.side(digest)
                        examples[side] += 1
                        billable[side] += tokens_billable
                        if writers is not None:
                            writers[side].write(formats.convert(obj, scanner.fmt or ""))
                    else:
                        train_billable += tokens_billable
                    continue
            scanner.line(number, obj)
            counting_labels = not part.many_labels
            if fast is None and scanner.fmt is not None:
                fast = fastpath.check_for(method, scanner.fmt)
        part.flush()
    part.lines_read = number
    if not sided:
        # The fast path counted nothing per side: every example it took is a training one.
        examples["train"] = part.count
        billable["train"] += train_billable
    part.open_writers = scanner.close(keep_open=keep_open)
    return part


def detect_first(path: Path) -> tuple[str, int] | None:
    """(format, byte offset) of the first line whose format is known: a single pass settles the
    file's format there, so every part of a parallel one must."""
    for offset, raw in iter_line_starts(path):
        try:
            kind = formats.detect(orjson.loads(raw))
        except orjson.JSONDecodeError:
            kind = None
        if kind is not None:
            return kind, offset
    return None


def split_file(path: Path, fmt: str, weights: list[float]) -> list[tuple[int, int]]:
    """Byte ranges of ``path`` sized by ``weights``: at row starts for a CSV/TSV file
    (:func:`split_csv_ranges`), at line starts otherwise."""
    return (split_csv_ranges if is_csv(path, fmt) else split_ranges)(path, weights)


def settled_format(path: Path, fmt: str) -> tuple[str, int] | None:
    """For a JSONL file read as ``auto``, where its format is settled (:func:`detect_first`);
    None when the format is given, or for CSV, which has one."""
    return detect_first(path) if fmt == "auto" and not is_csv(path, fmt) else None


def processes() -> int:
    """Processes for a large file: both cores by default; VERTEX_TUNER_WORKERS=1 keeps one
    (less memory, half the speed)."""
    configured = os.environ.get("VERTEX_TUNER_WORKERS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return min(2, os.cpu_count() or 1)


#: What a worker process runs: the parent's import path first, then the job; the part goes back
#: pickled on stdout.
_WORKER = (
    "import pickle, sys\n"
    "sys.path[:] = pickle.load(sys.stdin.buffer)\n"
    "from vertex_tuner.dataset.scan import worker_main\n"
    "worker_main()\n"
)


def worker_main() -> None:
    job = pickle.load(sys.stdin.buffer)
    pickle.dump(scan(job), sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.flush()


class _Forked:
    """A worker forked from this process, with what :func:`_finish_worker` and
    :func:`run_parts` use of a ``Popen``."""

    def __init__(self, pid: int, stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            import signal

            os.kill(self.pid, signal.SIGKILL)


def _alone() -> bool:
    """Whether this process runs a single thread, Python's or any library's: then a fork holds
    no lock another thread took, and is safe."""
    try:
        return sum(1 for _ in Path("/proc/self/task").iterdir()) == 1
    except OSError:
        return False


def _can_fork() -> bool:
    return sys.platform.startswith("linux") and _alone()


def _evenly(jobs: list[PartJob]) -> list[PartJob]:
    """The jobs' file cut into ranges of one size, for workers that are forked: the caller's
    ranges leave this process more, for the start of a new interpreter that a fork does not
    have. The format a range starts with is settled as the caller settles it."""
    first = jobs[0]
    ranges = split_file(first.path, first.fmt, [1.0] * len(jobs))
    if len(ranges) != len(jobs) or any(job.byte_range is None for job in jobs):
        return jobs
    found = settled_format(first.path, first.fmt)
    return [
        replace(
            job,
            byte_range=byte_range,
            detected=found[0] if found and found[1] < byte_range[0] else None,
        )
        for job, byte_range in zip(jobs, ranges, strict=True)
    ]


def _fork_worker(job: PartJob) -> _Forked | None:
    """A copy of this process that scans ``job`` and pipes the part back: it has every module
    loaded already, so it starts in a millisecond where a new interpreter takes a tenth of a
    second, a good share of the time of a file of a few hundred megabytes. Only on Linux, and
    only while this process is alone (:func:`_alone`)."""
    if not _can_fork():
        return None
    read, write = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return None
    if pid == 0:  # the worker: scan, send the part, and leave without running anything else
        code = 1
        try:
            os.close(read)
            with os.fdopen(write, "wb") as out:
                pickle.dump(scan(job), out, protocol=pickle.HIGHEST_PROTOCOL)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    return _Forked(pid, os.fdopen(read, "rb"))


def _start_worker(job: PartJob) -> subprocess.Popen[bytes] | _Forked | None:
    forked = _fork_worker(job)
    if forked is not None:
        return forked
    # A plain interpreter rather than multiprocessing: it neither re-imports the caller's
    # __main__ (a CLI, a test runner) nor inherits its threads, and it starts in a tenth of a
    # second. subprocess is imported only for it: it costs a few milliseconds of every run.
    import subprocess

    if not sys.executable:
        return None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None
    assert proc.stdin is not None
    try:
        pickle.dump(sys.path, proc.stdin)
        pickle.dump(job, proc.stdin)
        proc.stdin.close()
    except OSError:
        proc.kill()
        proc.wait()
        return None
    return proc


def _finish_worker(proc: subprocess.Popen[bytes] | _Forked | None, job: PartJob) -> Part:
    """The worker's part; if the worker could not run, the same part scanned here."""
    if proc is not None:
        assert proc.stdout is not None
        part = None
        try:
            # Straight from the pipe: no second copy of the part in memory.
            part = pickle.load(proc.stdout)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError):
            part = None
        finally:
            proc.stdout.close()
        if proc.wait() == 0 and isinstance(part, Part):
            return part
    return scan(job)


def _stop(procs: list[subprocess.Popen[bytes] | _Forked | None]) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def _discard(
    procs: list[subprocess.Popen[bytes] | _Forked | None],
    jobs: list[PartJob],
    writers: dict[str, Writer] | None,
) -> None:
    """Stop the workers, remove what they wrote and close the first part's files (a single
    pass writes them again)."""
    _stop(procs)
    for proc in procs:
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
    for job in jobs[1:]:
        for path in (job.outputs or {}).values():
            path.unlink(missing_ok=True)
    for writer in (writers or {}).values():
        writer.close()


def run_parts(jobs: list[PartJob]) -> Part:
    """Scan each job's range (the first here, the others in workers) and append the parts.

    The first part writes the final files; each later part's files are appended to them.
    """
    if len(jobs) == 1:
        return scan(jobs[0])
    if _can_fork():
        jobs = _evenly(jobs)
    procs = [_start_worker(job) for job in jobs[1:]]
    try:
        merged = scan(jobs[0], keep_open=True)
        writers = merged.open_writers
        merged.open_writers = None
        for proc, job in zip(procs, jobs[1:], strict=True):
            if merged.stopped:
                # A range stopped before its end: a single pass would read nothing after that
                # point, and a CSV cut can fall inside a field that quotes oddly. Read it all
                # in one pass, which is right whatever the reason.
                _discard(procs, jobs, writers)
                return scan(replace(jobs[0], byte_range=None))
            later = _finish_worker(proc, job)
            merged.extend(later)
            if writers is not None:
                for side, file in later.outputs.items():
                    writers[side].append_file(file)
        if writers is not None:
            merged.outputs = {side: w.close() for side, w in writers.items()}
    finally:
        _stop(procs)
    return merged
