"""Checks of the training data as a whole: duplicates, conflicting answers, leakage between
training and held-out data, label skew, length outliers, and the token distributions.

They run after the scan, on the flat arrays a :class:`~vertex_tuner.dataset.scan.Part` keeps.
Answers are not kept per example: an answer only matters when its prompt repeats, which is rare,
so those few lines are read again (:func:`answers_at`).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import orjson

from vertex_tuner.dataset import formats, keys
from vertex_tuner.dataset.findings import Finding, FindingList, Severity
from vertex_tuner.dataset.reader import iter_csv_rows, iter_lines
from vertex_tuner.dataset.scan import Part, digests

MIN_RECOMMENDED_EXAMPLES = 100
#: Few enough distinct answers to call the task a classification.
FEW_DISTINCT_OUTPUTS = 20
#: One answer this common among a classification's examples is a skew worth a warning.
SKEW_SHARE = 0.6
#: An example this many times the median length (in tokens) is an outlier ...
OUTLIER_FACTOR = 8
#: ... when it is also at least this long.
OUTLIER_MIN_TOKENS = 512


def answers_at(
    path: Path,
    lines: set[int],
    *,
    fmt: str,
    method: str,
    columns: Mapping[str, str] | None,
) -> dict[int, bytes]:
    """The answer key of the example on each of ``lines`` (examples the scan accepted)."""
    out: dict[int, bytes] = {}
    if fmt == "csv":
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        mapping = None
        for line, row, _ in iter_csv_rows(path, delimiter=delimiter):
            if row is None:
                continue
            if mapping is None:
                mapping = formats.csv_columns(list(row), columns)
            if line in lines:
                out[line] = keys.answer_key(formats.from_csv_row(row, mapping), method)
        return out
    for line, raw in iter_lines(path):
        if line in lines:
            example = formats.convert(orjson.loads(raw), fmt)
            out[line] = keys.answer_key(example, method)
    return out


def duplicates(
    part: Part,
    findings: FindingList,
    display: str,
    read_answers: Callable[[set[int]], dict[int, bytes]],
) -> None:
    """Warn about each example whose prompt an earlier line already had."""
    values = digests(part.prompts)
    if len(set(values)) == len(values):
        return
    repeated = {v for v, count in Counter(values).items() if count > 1}
    positions = list(itertools.compress(range(len(values)), map(repeated.__contains__, values)))
    answers = read_answers({part.lines[i] for i in positions})
    first: dict[int, int] = {}
    for i in positions:
        line = part.lines[i]
        earlier = first.setdefault(values[i], line)
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
    train: set[int],
    role: str,
    findings: FindingList,
    source: str,
    display: str,
) -> None:
    """Flag each example of a separate validation or held-out file whose prompt is in train."""
    severity: Severity = "error" if role == "holdout" else "warning"
    for digest, line in zip(digests(other.prompts), other.lines, strict=True):
        if digest in train:
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


def _totals(part: Part) -> Iterable[int]:
    return map(int.__add__, part.input_tokens, part.output_tokens)


def whole_file(part: Part, findings: FindingList, display: str) -> None:
    """Warnings about the training data as a whole."""
    n = len(part.lines)
    if 0 < n < MIN_RECOMMENDED_EXAMPLES:
        findings.add(
            Finding(
                "warning",
                "few-examples",
                f"only {n} training examples; start with at least {MIN_RECOMMENDED_EXAMPLES}",
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
                f"only {len(ranked)} distinct answers across {n} examples ({shown}); "
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
                    f"{count / n:.0%} of examples have the answer {label_text(top)!r}; "
                    "the tuned model may learn to always say it",
                    file=display,
                )
            )
    if n >= FEW_DISTINCT_OUTPUTS:
        median = distribution(part.total_counts)["median"]
        limit = max(median * OUTLIER_FACTOR, OUTLIER_MIN_TOKENS)
        if max(part.total_counts) <= limit:
            return
        for i, total in enumerate(_totals(part)):
            if total > limit:
                findings.add(
                    Finding(
                        "warning",
                        "length-outlier",
                        f"~{total:,} tokens, more than {OUTLIER_FACTOR}× the median "
                        f"({median:,}); check it is not a paste error",
                        line=part.lines[i],
                        file=display,
                    )
                )
