"""Checks of the training data as a whole: duplicates, conflicting answers, leakage between
training and held-out data, label skew, length outliers, and the token distributions.

They run after the scan, on the flat arrays a :class:`~vertex_tuner.dataset.scan.Part` keeps.
Answers are not kept per example: an answer only matters when its prompt repeats, which is rare,
so those few lines are read again (:func:`answers_at`), each from a known row start near it.
"""

from __future__ import annotations

import itertools
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import orjson

from vertex_tuner.dataset import formats, keys
from vertex_tuner.dataset.findings import Finding, FindingList, Severity
from vertex_tuner.dataset.reader import iter_blocks, iter_csv_fields
from vertex_tuner.dataset.scan import LONG_TOKENS, Part, digests

MIN_RECOMMENDED_EXAMPLES = 100
#: Few enough distinct answers to call the task a classification.
FEW_DISTINCT_OUTPUTS = 20
#: One answer this common among a classification's examples is a skew worth a warning.
SKEW_SHARE = 0.6
#: An example this many times the median length (in tokens) is an outlier ...
OUTLIER_FACTOR = 8
#: ... when it is also at least this long.
OUTLIER_MIN_TOKENS = LONG_TOKENS


class AnswerReader(Protocol):
    """Reads the answer keys of some accepted examples again (:func:`answers_at`, its file and
    format given)."""

    def __call__(
        self, lines: set[int], /, *, starts: Sequence[tuple[int, int]] = ()
    ) -> dict[int, bytes]: ...


def answers_at(
    path: Path,
    lines: set[int],
    *,
    fmt: str,
    method: str,
    columns: Mapping[str, str] | None,
    starts: Sequence[tuple[int, int]] = (),
) -> dict[int, bytes]:
    """The answer key of the example on each of ``lines`` (examples the scan accepted).

    ``starts`` are (line, byte offset) where a row starts, in line order (a part's
    :attr:`~vertex_tuner.dataset.scan.Part.starts`): each line is read from the last of them
    before it, a block or so, not from the top of a file that may be large.
    """
    out: dict[int, bytes] = {}
    header: list[str] = []
    mapping: dict[str, str | None] = {}
    if fmt == "csv":
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        for _, fields, _ in iter_csv_fields(path, delimiter=delimiter):
            header = fields or []
            break
        # The columns as a dict of a row has them: each name once, first place first.
        mapping = formats.csv_columns(list(dict.fromkeys(header)), columns)
    for line, offset, group in _from_starts(sorted(lines), starts):
        if fmt != "csv":
            _jsonl_answers(path, line, offset, group, fmt, method, out)
            continue
        rows = (
            iter_csv_fields(path, delimiter=delimiter)
            if offset == 0
            else iter_csv_fields(
                path, delimiter=delimiter, start=offset, first_line=line, header=header
            )
        )
        wanted = set(group)
        for number, fields, _ in rows:
            if number > group[-1]:
                break
            if number in wanted and fields is not None:
                row = dict(zip(header, fields, strict=True))
                out[number] = keys.answer_key(formats.from_csv_row(row, mapping), method)
    return out


def _from_starts(
    wanted: list[int], starts: Sequence[tuple[int, int]]
) -> list[tuple[int, int, list[int]]]:
    """(line, offset, lines): the ``wanted`` lines (sorted) grouped by the last of ``starts``
    at or before each, where (1, 0) is the top of the file."""
    lines_at = [line for line, _ in starts]
    groups: list[tuple[int, int, list[int]]] = []
    for line in wanted:
        k = bisect_right(lines_at, line) - 1
        begin, offset = starts[k] if k >= 0 else (1, 0)
        if groups and groups[-1][0] == begin:
            groups[-1][2].append(line)
        else:
            groups.append((begin, offset, [line]))
    return groups


def _jsonl_answers(
    path: Path,
    line: int,
    offset: int,
    wanted: list[int],
    fmt: str,
    method: str,
    out: dict[int, bytes],
) -> None:
    """The answer keys of the JSONL lines ``wanted`` (sorted), read from ``line`` at byte
    ``offset``: a block at a time, never a line at a time."""
    k = 0
    for first, block in iter_blocks(path, start=offset, first_line=line, ends=True):
        end = first + len(block)
        while k < len(wanted) and wanted[k] < end:
            raw = block[wanted[k] - first]
            example = formats.convert(orjson.loads(raw), fmt)
            out[wanted[k]] = keys.answer_key(example, method)
            k += 1
        if k == len(wanted):
            return


def _repeats(prompts: bytearray, lines: array[int]) -> list[tuple[int, int]]:
    """(line, digest) of every example of one bucket whose digest occurs more than once."""
    values = digests(prompts)
    if len(set(values)) == len(values):
        return []
    repeated = {v for v, count in Counter(values).items() if count > 1}
    return [(lines[i], values[i]) for i, v in enumerate(values) if v in repeated]


def duplicates(
    part: Part,
    findings: FindingList,
    display: str,
    read_answers: AnswerReader,
) -> None:
    """Warn about each example whose prompt an earlier line already had."""
    found = sorted(
        itertools.chain.from_iterable(
            _repeats(prompts, lines)
            for prompts, lines in zip(part.prompts, part.prompt_lines, strict=True)
        )
    )
    if not found:
        return
    answers = read_answers({line for line, _ in found}, starts=part.starts)
    first: dict[int, int] = {}
    for line, digest in found:
        earlier = first.setdefault(digest, line)
        if earlier == line:
            continue
        if answers.get(earlier) == answers.get(line):
            code, message = "duplicate", f"the same example as line {earlier}"
        else:
            code = "conflicting-answers"
            message = f"the same prompt as line {earlier} with a different answer"
        findings.add(Finding("warning", code, message, line=line, file=display))


def leakage(
    other: Part,
    train: Part,
    kept: Callable[[bytes], bool],
    role: str,
    findings: FindingList,
    source: str,
    display: str,
) -> None:
    """Flag each example of a separate validation or held-out file whose prompt is in the
    training data (of ``train``, the digests ``kept`` says stayed there)."""
    severity: Severity = "error" if role == "holdout" else "warning"
    leaked: list[int] = []
    for b, (prompts, lines) in enumerate(zip(other.prompts, other.prompt_lines, strict=True)):
        if not lines:
            continue
        mine = train.prompts[b]
        trained = {
            value for i, value in enumerate(digests(mine)) if kept(bytes(mine[8 * i : 8 * i + 8]))
        }
        leaked += (
            line for line, value in zip(lines, digests(prompts), strict=True) if value in trained
        )
    for line in sorted(leaked):
        findings.add(
            Finding(
                severity,
                f"{role}-leakage",
                f"this prompt is also in the training data ({display})",
                line=line,
                file=source,
            )
        )


def distribution(counts: Mapping[int, int]) -> dict[str, int]:
    """min/median/p95/max of values given as value -> how many times."""
    total = sum(counts.values())
    if not total:
        return {"min": 0, "median": 0, "p95": 0, "max": 0}
    ranks = [("median", total // 2), ("p95", min(total - 1, int(total * 0.95)))]
    out = {"min": min(counts), "max": max(counts)}
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        while ranks and ranks[0][1] < seen:
            out[ranks.pop(0)[0]] = value
    return {k: out[k] for k in ("min", "median", "p95", "max")}


def label_text(answer: bytes) -> str:
    """A readable, short form of an answer key."""
    try:
        value = orjson.loads(answer) if answer else ""
    except orjson.JSONDecodeError:
        return ""
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return "".join(value)[:80]
    return answer.decode("utf-8", "replace")[:80]


def whole_file(part: Part, findings: FindingList, display: str, method: str = "supervised") -> None:
    """Warnings about the training data as a whole. A reinforcement prompt has no answer: its
    ``references`` stand in for one (a few distinct references is a classification too)."""
    prompts = method == "reinforcement"
    answers, examples = ("references", "prompts") if prompts else ("answers", "examples")
    n = part.count
    if 0 < n < MIN_RECOMMENDED_EXAMPLES:
        findings.add(
            Finding(
                "warning",
                "few-examples",
                f"only {n} training example{'' if n == 1 else 's'}; "
                f"start with at least {MIN_RECOMMENDED_EXAMPLES}",
                file=display,
            )
        )
    if n >= FEW_DISTINCT_OUTPUTS and not part.many_labels and len(part.labels) <= 20:
        ranked = Counter(part.labels).most_common()
        shown = ", ".join(f"{label_text(k)!r} ({c})" for k, c in ranked[:5])
        findings.add(
            Finding(
                "warning",
                "few-distinct-outputs",
                f"only {len(ranked)} distinct {answers} across {n} {examples} ({shown}); "
                "a classification task? check the labels are balanced",
                file=display,
            )
        )
        top, count = ranked[0]
        if count / n >= SKEW_SHARE:
            findings.add(
                Finding(
                    "warning",
                    "skewed-labels",
                    f"{count / n:.0%} of {examples} have the {answers[:-1]} "
                    f"{label_text(top)!r}; the tuned model may learn to always say it",
                    file=display,
                )
            )
    if n >= FEW_DISTINCT_OUTPUTS:
        median = distribution(part.total_counts)["median"]
        limit = max(median * OUTLIER_FACTOR, OUTLIER_MIN_TOKENS)
        # The bar is never below LONG_TOKENS, so every outlier is among the long examples kept.
        assert limit >= LONG_TOKENS
        for line, total in zip(part.long_lines, part.long_totals, strict=True):
            if total > limit:
                findings.add(
                    Finding(
                        "warning",
                        "length-outlier",
                        f"~{total:,} tokens, more than {OUTLIER_FACTOR}× the median "
                        f"({median:,}); check it is not a paste error",
                        line=line,
                        file=display,
                    )
                )
