"""Evaluation reports: Markdown for a GitHub step summary, a self-contained HTML page, JSON.

Pure functions of an :class:`~vertex_tuner.evaluation.results.EvaluationResult` (and, for the
trend, of earlier evaluations of the same spec), except :func:`write_report`, which writes
their output to a folder.

What the reports show, in this order:

- the gate: PASS or FAIL in words (not only a mark, which needs an emoji font), then every
  clause with its result, its numbers, and for ``significant(...)`` the interval it was judged
  with, the margin, ``n`` and Holm's p-value;
- the targets and their metrics, with each target's difference from the base model;
- the paired comparisons (``tuned − base``, ``tuned − production``): per metric the mean
  per-example difference, its bootstrap interval at its confidence, wins / ties / losses,
  ``n`` and, for 0/1 metrics, McNemar's exact p; the HTML charts draw the interval as whiskers;
- the examples that flipped on the metrics the gate reads (the spec's metrics when there is no
  gate): the worst regressions first, then the biggest wins, a bounded number of each, with the
  prompt, the reference, both outputs, the scores and the judge's reasons;
- a trend of those metrics over the spec's earlier evaluations (:class:`TrendPoint`), when
  they are given;
- the tokens the evaluation itself spent. The model table (:mod:`vertex_tuner.models`) holds
  tuning prices only, not generation prices, so there is no cost estimate.

Escaping:

- Markdown (``report.md``): text from prompts, outputs and the judge is folded to one line,
  shortened, and backslash-escaped so that it cannot break a table, open HTML or make a link;
  fit for ``$GITHUB_STEP_SUMMARY``, which GitHub caps at 1 MiB.
- HTML (``report.html``): every interpolated value is HTML-escaped; inline CSS and SVG, no
  script, nothing loaded from anywhere, and a Content-Security-Policy that tells the browser
  so (no script runs even if a value escaped the escaping).
- Both: control characters and bidirectional overrides are shown as ``\\uXXXX`` so that model
  output cannot reorder or hide the text around it.

``results.json`` is :meth:`EvaluationResult.to_json`.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import orjson

from vertex_tuner.evaluation.gate import ClauseResult, GateSyntaxError, GateVerdict, fmt, parse_gate
from vertex_tuner.evaluation.metrics import METRICS, MetricDef
from vertex_tuner.evaluation.results import EvaluationResult, ExampleResult
from vertex_tuner.evaluation.statistics import Comparison
from vertex_tuner.vocabulary import TARGETS

#: How many regressions, and how many wins, the reports show per metric.
WORST = 5
WINS = 5
#: How many evaluations the trend shows (the latest ones, this one included).
TREND = 20
#: The longest text the HTML page shows in full; longer text is cut with a note.
HTML_TEXT_LIMIT = 20_000

_COLOURS = {"tuned": "#1a73e8", "base": "#80868b", "production": "#e8710a"}
_WORD = {True: "PASS", False: "FAIL", None: "SKIP"}
_MARK = {True: "✅", False: "❌", None: "⏭️"}
_CLASS = {True: "pass", False: "fail", None: "skip"}
#: Changes smaller than this are rounding noise, not a flip.
_EPSILON = 1e-12


# --- shared -------------------------------------------------------------------------------------

# C0 and C1 controls (but tab, newline, carriage return), and the bidirectional embeddings,
# overrides and isolates that can make text read differently from what it is.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(text: str) -> str:
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _roles(result: EvaluationResult) -> list[str]:
    known = [r for r in TARGETS if r in result.targets]
    return known + [r for r in result.targets if r not in TARGETS]


def _metric(name: str) -> MetricDef | None:
    return METRICS.get(name)


def _digits(metric: str) -> int:
    definition = _metric(metric)
    return 1 if definition is not None and definition.unit not in ("share", "reward") else 3


def format_value(metric: str, value: float | None) -> str:
    """A metric value as reports show it: shares to three decimals, lengths to one."""
    if value is None:
        return "–"
    return f"{value:.{_digits(metric)}f}"


def format_signed(metric: str, value: float | None) -> str:
    """A difference as reports show it: always signed, with a true minus sign."""
    if value is None:
        return "–"
    digits = _digits(metric)
    if round(value, digits) == 0 and value >= 0:
        value = 0.0
    return f"{value:+.{digits}f}".replace("-", "−")


def format_interval(metric: str, low: float, high: float) -> str:
    """``[low, high]``, both signed."""
    return f"[{format_signed(metric, low)}, {format_signed(metric, high)}]"


def format_p(value: float | None) -> str:
    """A p-value to three decimals; below 0.001 as ``< 0.001``."""
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _percent(confidence: float) -> str:
    return f"{100 * confidence:.4g}%"


def _delta(metric: str, value: float | None, base: float | None) -> tuple[str, str]:
    """The difference from the base, and whether it is better, worse or the same."""
    if value is None or base is None:
        return "–", "–"
    diff = value - base
    text = format_signed(metric, diff)
    if round(diff, _digits(metric)) == 0:
        return text.replace("−", "+"), "same"
    definition = _metric(metric)
    if definition is None or definition.higher_is_better is None:
        return text, "–"
    return text, "better" if (diff > 0) == definition.higher_is_better else "worse"


def _pair_targets(pair: str) -> tuple[str, str] | None:
    a, sep, b = pair.partition("-")
    return (a, b) if sep and a and b else None


def pair_label(pair: str) -> str:
    """``"tuned-base"`` as reports name it: ``tuned − base``."""
    targets = _pair_targets(pair)
    return f"{targets[0]} − {targets[1]}" if targets else pair


def _pairs(result: EvaluationResult) -> list[str]:
    """The compared pairs, tuned's first, in the order of TARGETS."""

    def order(pair: str) -> tuple[int, int, str]:
        targets = _pair_targets(pair) or (pair, "")
        rank = [TARGETS.index(t) if t in TARGETS else len(TARGETS) for t in targets]
        return rank[0], rank[1], pair

    return sorted((p for p, by in result.comparisons.items() if by), key=order)


def _ordered(names: Iterable[str], result: EvaluationResult) -> list[str]:
    """``names`` in the spec's order, any others after them."""
    wanted = set(names)
    return [m for m in result.metrics if m in wanted] + sorted(wanted - set(result.metrics))


# --- which metrics ------------------------------------------------------------------------------


def gate_metrics(result: EvaluationResult) -> list[str]:
    """The metrics the gate reads, in the spec's order; empty without a gate.

    Read from the gate's text the verdict was bound to, or, for a result without it, from the
    verdict's clauses.
    """
    allowed = set(METRICS) | set(result.metrics)
    found: set[str] = set()
    text = result.binding.get("gate")
    if isinstance(text, str) and text.strip():
        try:
            found = set(parse_gate(text, metrics=allowed).metrics)
        except GateSyntaxError:
            found = set()
    if not found and result.verdict is not None:
        for clause in result.verdict.clauses:
            try:
                found |= parse_gate(clause.text, metrics=allowed).metrics
            except GateSyntaxError:
                continue
    return _ordered(found, result)


def _rankable(name: str) -> MetricDef | None:
    """The metric's definition when examples can be ranked on it: a direction, and a score per
    example or the judge's per-example verdict."""
    definition = _metric(name)
    if definition is None or definition.higher_is_better is None:
        return None
    if definition.per_example is None and not definition.pairwise:
        return None
    return definition


def flip_metrics(result: EvaluationResult) -> list[str]:
    """The metrics the flipped examples are shown for: the gate's that examples can be ranked
    on, or, when there are none, the spec's."""
    for names in (gate_metrics(result), list(result.metrics)):
        found = [m for m in names if _rankable(m) is not None]
        if found:
            return found
    return []


def regression_metric(result: EvaluationResult) -> str | None:
    """The first metric regressions are judged on (see :func:`flip_metrics`)."""
    found = flip_metrics(result)
    return found[0] if found else None


# --- flipped examples ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Flip:
    """An example on which the tuned model did better or worse than the base on one metric."""

    example: ExampleResult
    metric: str
    #: How much better the tuned model did, in the metric's direction: negative for a
    #: regression. For the judge: 1 when it preferred the tuned model, -1 the base.
    gain: float
    #: The two scores; None for the judge, which gives a verdict, not scores.
    base: float | None
    tuned: float | None

    @property
    def delta(self) -> float | None:
        """``tuned - base``, when both are scores."""
        if self.base is None or self.tuned is None:
            return None
        return self.tuned - self.base

    @property
    def regression(self) -> bool:
        return self.gain < 0


@dataclass(frozen=True)
class Flips:
    """The examples that flipped on one metric, and how many went each way."""

    metric: str
    #: Worst first.
    regressions: list[Flip]
    #: Biggest first.
    wins: list[Flip]
    #: Examples that both targets were scored on, and how they split.
    scored: int
    worse: int
    better: int
    same: int


def _judge_verdict(example: ExampleResult) -> dict[str, Any] | None:
    """The judge's verdict on the tuned model against the base, if it judged them."""
    for pair in ("tuned-base", "base-tuned"):
        verdict = example.judge.get(pair)
        if isinstance(verdict, Mapping):
            return dict(verdict)
    return None


#: A judge's verdict as the tuned model's gain over the base.
_JUDGE_GAIN = {"tuned": 1.0, "base": -1.0, "tie": 0.0}


def _gain(
    example: ExampleResult, definition: MetricDef
) -> tuple[float, float | None, float | None]:
    """(gain, base, tuned) of the tuned model on one example; NaN gain when not comparable.

    For the judge, its verdict on the tuned model against the base (the per-example scores of
    a pairwise metric may come from different pairs)."""
    if definition.pairwise:
        verdict = _judge_verdict(example)
        winner = verdict.get("winner") if verdict else None
        if isinstance(winner, str) and winner in _JUDGE_GAIN:
            return _JUDGE_GAIN[winner], None, None
    tuned = example.scores.get("tuned", {}).get(definition.name)
    base = example.scores.get("base", {}).get(definition.name)
    if tuned is None or base is None or not (math.isfinite(tuned) and math.isfinite(base)):
        return math.nan, base, tuned
    diff = tuned - base
    return (diff if definition.higher_is_better is not False else -diff), base, tuned


def flips(result: EvaluationResult, metric: str, *, worst: int = WORST, wins: int = WINS) -> Flips:
    """The ``worst`` worst regressions and the ``wins`` biggest wins of the tuned model against
    the base on ``metric``.

    Ties on ``metric`` (common with 0/1 metrics such as exact match) are broken by the other
    rankable metrics, the gate's first, then by the held-out order. Examples without both
    scores are left out.
    """
    definition = _rankable(metric)
    empty = Flips(metric, [], [], 0, 0, 0, 0)
    if definition is None or "base" not in result.targets or "tuned" not in result.targets:
        return empty
    others = [
        d
        for name in [*flip_metrics(result), *result.metrics]
        if name != metric and (d := _rankable(name)) is not None
    ]
    tiebreak = list({d.name: d for d in others}.values())
    down: list[tuple[tuple[float, ...], Flip]] = []
    up: list[tuple[tuple[float, ...], Flip]] = []
    same = 0
    for example in result.examples:
        gain, base, tuned = _gain(example, definition)
        if math.isnan(gain):
            continue
        rest = [_gain(example, d)[0] for d in tiebreak]
        rest = [0.0 if math.isnan(g) else g for g in rest]
        flip = Flip(example, metric, gain, base, tuned)
        if gain < -_EPSILON:
            down.append(((gain, *rest, example.index), flip))
        elif gain > _EPSILON:
            up.append(((-gain, *(-g for g in rest), example.index), flip))
        else:
            same += 1
    down.sort(key=lambda pair: pair[0])
    up.sort(key=lambda pair: pair[0])
    return Flips(
        metric,
        [flip for _, flip in down[: max(worst, 0)]],
        [flip for _, flip in up[: max(wins, 0)]],
        scored=len(down) + len(up) + same,
        worse=len(down),
        better=len(up),
        same=same,
    )


def worst_regressions(
    result: EvaluationResult, n: int = WORST, metric: str | None = None
) -> list[Flip]:
    """Up to ``n`` examples where the tuned model fell furthest behind the base, worst first,
    on ``metric`` (by default :func:`regression_metric`)."""
    metric = metric or regression_metric(result)
    return flips(result, metric, worst=n, wins=0).regressions if metric else []


def biggest_wins(result: EvaluationResult, n: int = WINS, metric: str | None = None) -> list[Flip]:
    """Up to ``n`` examples where the tuned model beat the base by most, on ``metric``."""
    metric = metric or regression_metric(result)
    return flips(result, metric, worst=0, wins=n).wins if metric else []


def _judge_lines(example: ExampleResult) -> list[tuple[str, str, list[str]]]:
    """(pair, verdict in words, reasons) for each judged pair of the example; with two
    reasons, each says which order it was asked in."""
    found = []
    for pair in sorted(example.judge, key=lambda p: (p != "tuned-base", p)):
        verdict = example.judge[pair]
        if not isinstance(verdict, Mapping):
            continue
        winner = str(verdict.get("winner", "")) or "no verdict"
        words = "tie" if winner == "tie" else f"{winner} preferred"
        consistent = verdict.get("consistent")
        if consistent is True:
            words += ", in both orders"
        elif consistent is False:
            words += ", the two orders disagreed"
        raw = verdict.get("reasons") or []
        reasons = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
        targets = _pair_targets(pair)
        if targets and len(reasons) == 2:
            # The judge was asked twice: each target's output as the first response once.
            reasons = [
                f"{targets[i]} shown first: {r}" if str(r).strip() else ""
                for i, r in enumerate(reasons)
            ]
        found.append((pair, words, [str(r) for r in reasons if str(r).strip()]))
    return found


def _flip_words(flip: Flip) -> str:
    """The change on the flip's metric, e.g. ``rouge_l 1.000 → 0.200 (−0.800)``."""
    if flip.delta is None:
        return f"{flip.metric}: {'base' if flip.regression else 'tuned'} preferred"
    return (
        f"{flip.metric} {format_value(flip.metric, flip.base)} → "
        f"{format_value(flip.metric, flip.tuned)} ({format_signed(flip.metric, flip.delta)})"
    )


# --- the trend ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrendPoint:
    """One evaluation of the spec, as the trend shows it: the tuned model's metric values."""

    run: str
    #: When the evaluation was made (ISO 8601, UTC); points are ordered by it.
    created_at: str
    #: The tuned model's value per metric.
    metrics: dict[str, float]
    #: Whether its gate passed; None without a gate.
    passed: bool | None = None
    #: The held-out set it was scored on, when known: points on another set are marked.
    holdout_sha256: str | None = None

    @classmethod
    def from_result(cls, result: EvaluationResult) -> TrendPoint:
        tuned = result.targets.get("tuned")
        holdout = result.binding.get("holdout_sha256")
        return cls(
            result.run,
            result.created_at,
            dict(tuned.metrics) if tuned else {},
            None if result.verdict is None else result.verdict.passed,
            holdout if isinstance(holdout, str) else None,
        )

    @classmethod
    def from_summary(cls, doc: Mapping[str, Any]) -> TrendPoint:
        """From :meth:`EvaluationResult.to_json`, or the summary a run record keeps of its
        latest evaluation (the same without the examples)."""
        targets = doc.get("targets")
        tuned = targets.get("tuned") if isinstance(targets, Mapping) else None
        raw = tuned.get("metrics") if isinstance(tuned, Mapping) else None
        metrics: dict[str, float] = {}
        for name, value in (raw or {}).items() if isinstance(raw, Mapping) else ():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and math.isfinite(value):
                metrics[str(name)] = float(value)
        gate = doc.get("gate")
        passed = gate.get("passed") if isinstance(gate, Mapping) else None
        binding = doc.get("binding")
        holdout = binding.get("holdout_sha256") if isinstance(binding, Mapping) else None
        return cls(
            str(doc.get("run") or ""),
            str(doc.get("created_at") or ""),
            metrics,
            passed if isinstance(passed, bool) else None,
            holdout if isinstance(holdout, str) else None,
        )


#: What ``history`` takes: a point, an earlier result, its JSON or stored summary, or a
#: ``(run, created_at, {metric: value})`` row (a fourth item, if any, is whether it passed).
HistoryItem: TypeAlias = "TrendPoint | EvaluationResult | Mapping[str, Any] | tuple[Any, ...]"


def _point(item: HistoryItem) -> TrendPoint:
    if isinstance(item, TrendPoint):
        return item
    if isinstance(item, EvaluationResult):
        return TrendPoint.from_result(item)
    if isinstance(item, Mapping):
        return TrendPoint.from_summary(item)
    if isinstance(item, tuple) and len(item) in (3, 4) and isinstance(item[2], Mapping):
        passed = item[3] if len(item) == 4 else None
        return TrendPoint(
            str(item[0]),
            str(item[1]),
            {str(k): float(v) for k, v in item[2].items() if v is not None},
            passed if isinstance(passed, bool) else None,
        )
    raise TypeError(
        "a history item is a TrendPoint, an EvaluationResult, an evaluation summary (a "
        "mapping) or a (run, created_at, {metric: value}) tuple, not "
        f"{type(item).__name__}"
    )


def trend(
    result: EvaluationResult, history: Iterable[HistoryItem] = (), *, limit: int = TREND
) -> list[TrendPoint]:
    """The points of the trend, oldest first, this result last but for newer ones: one per
    run (the latest evaluation of a run counts, and this result stands for its own run), the
    ``limit`` latest. Only this result's point when ``history`` is empty."""
    current = TrendPoint.from_result(result)
    by_run: dict[str, TrendPoint] = {}
    for point in map(_point, history):
        if point.run == current.run:
            continue
        known = by_run.get(point.run)
        if known is None or point.created_at >= known.created_at:
            by_run[point.run] = point
    points = sorted([*by_run.values(), current], key=lambda p: p.created_at)
    return points[-max(limit, 1) :]


def _trend_metrics(result: EvaluationResult, points: Sequence[TrendPoint]) -> list[str]:
    names = gate_metrics(result) or list(result.metrics)
    return [m for m in names if any(m in p.metrics for p in points)]


# --- Markdown -----------------------------------------------------------------------------------

# Characters that Markdown or GitHub's HTML rendering would act on inside a table cell; a
# backslash makes each literal (CommonMark lets any ASCII punctuation be escaped).
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~&#!$])")


def markdown_cell(text: str, limit: int = 200) -> str:
    """Text made safe for one Markdown table cell: one line, at most ``limit`` characters."""
    text = " ".join(_visible(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", text)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def _name(text: str) -> str:
    """A metric or target name for Markdown: as it is when it is a plain name (an underscore
    inside a word is not emphasis), escaped otherwise."""
    return text if _NAME.fullmatch(text) else markdown_cell(text)


def _code(text: str) -> str:
    """A Markdown code span (Markdown is not interpreted inside one); not for table cells."""
    text = " ".join(_visible(text).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if longest else f"`{text}`"


# A normalised gate clause: names, numbers, operators and parentheses, nothing Markdown reads.
_SAFE_CLAUSE = re.compile(r"[A-Za-z0-9_.+\-*/<>=!() ]*")


def _clause_code(text: str) -> str:
    return f"`{text}`" if _SAFE_CLAUSE.fullmatch(text) else markdown_cell(text, 300)


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _md_metrics(result: EvaluationResult, roles: list[str]) -> list[str]:
    others = [r for r in roles if r != "base"] if "base" in roles else []
    header = ["metric", *map(_name, roles), *(f"{_name(r)} − base" for r in others)]
    if "tuned" in others:
        header.append("tuned vs base")
    rows = []
    base = result.targets.get("base")
    for metric in result.metrics:
        values = [result.targets[r].metrics.get(metric) for r in roles]
        cells = [_name(metric), *(format_value(metric, v) for v in values)]
        verdict = "–"
        for role in others:
            text, word = _delta(
                metric,
                result.targets[role].metrics.get(metric),
                base.metrics.get(metric) if base else None,
            )
            cells.append(text)
            if role == "tuned":
                verdict = word
        if "tuned" in others:
            cells.append(verdict)
        rows.append(cells)
    return _md_table(header, rows)


def _tally(verdict: GateVerdict) -> str:
    passed = sum(1 for c in verdict.clauses if c.passed is True)
    failed = sum(1 for c in verdict.clauses if c.passed is False)
    skipped = sum(1 for c in verdict.clauses if c.passed is None)
    count = len(verdict.clauses)
    return (
        f"{count} clause{'s' if count != 1 else ''}: {passed} pass, {failed} fail, "
        f"{skipped} skipped"
    )


def _judged_significant(clause: ClauseResult) -> bool:
    return clause.significant and clause.ci_low is not None and clause.ci_high is not None


def clause_numbers(clause: ClauseResult) -> str:
    """A clause's numbers in words: its two sides, or for ``significant(...)`` the difference,
    the interval it was judged with, the margin, ``n`` and Holm's p-value."""
    if _judged_significant(clause):
        assert clause.ci_low is not None and clause.ci_high is not None
        parts = []
        if clause.left is not None:
            parts.append(f"Δ = {fmt(clause.left)}")
        level = f"{_percent(clause.confidence)} " if clause.confidence is not None else ""
        parts.append(f"{level}interval [{fmt(clause.ci_low)}, {fmt(clause.ci_high)}]")
        if clause.margin is not None:
            parts.append(f"margin {fmt(clause.margin)}")
        if clause.n is not None:
            parts.append(f"n = {clause.n}")
        if clause.p_value is not None:
            parts.append(f"p = {fmt(clause.p_value)} (Holm)")
        return "; ".join(parts)
    if clause.left is None or clause.right is None:
        return ""
    return f"{fmt(clause.left)} vs {fmt(clause.right)}"


def _clause_note(clause: ClauseResult) -> str:
    """The clause's note, unless it only repeats the numbers (a significant clause that held)."""
    if _judged_significant(clause) and clause.passed:
        return ""
    return clause.note


def _md_gate(result: EvaluationResult, verdict: GateVerdict) -> list[str]:
    mark = "✅ passed" if verdict.passed else "❌ failed"
    word = "PASS" if verdict.passed else "FAIL"
    lines = [
        f"### Gate {mark}",
        "",
        f"**{word}** ({_tally(verdict)}): {markdown_cell(verdict.explanation, 2000)}",
        "",
    ]
    for clause in verdict.clauses:
        parts = [p for p in (clause_numbers(clause), _clause_note(clause)) if p]
        suffix = "".join(f" — {markdown_cell(p, 600)}" for p in parts)
        lines.append(
            f"- **{_WORD[clause.passed]}** {_MARK[clause.passed]} {_clause_code(clause.text)}"
            f"{suffix}"
        )
    binding = _binding_words(result)
    if binding:
        lines += ["", markdown_cell(binding, 600)]
    return [*lines, ""]


def _binding_words(result: EvaluationResult) -> str:
    binding = result.binding
    parts = []
    if binding.get("tuned"):
        parts.append(f"tuned model {binding['tuned']}")
    if binding.get("holdout_sha256"):
        parts.append(f"held-out set sha256 {str(binding['holdout_sha256'])[:12]}…")
    if binding.get("examples") is not None:
        parts.append(f"{binding['examples']} examples")
    return "The verdict judged " + ", ".join(parts) + "." if parts else ""


def _comparison_rows(result: EvaluationResult, pair: str) -> list[tuple[str, Comparison]]:
    by_metric = result.comparisons.get(pair, {})
    return [(m, by_metric[m]) for m in _ordered(by_metric, result)]


def _reading(pair: str, metric: str, c: Comparison) -> tuple[str, str]:
    """What the interval says in words, and the word's class: better, worse or neither."""
    first = (_pair_targets(pair) or (pair, ""))[0]
    if c.ci_low <= 0 <= c.ci_high:
        return "no clear difference", "–"
    higher = c.ci_low > 0
    definition = _metric(metric)
    if definition is None or definition.higher_is_better is None:
        return f"{first} {'higher' if higher else 'lower'}", "–"
    better = higher == definition.higher_is_better
    return f"{first} {'better' if better else 'worse'}", "better" if better else "worse"


def _interval_header(rows: Sequence[tuple[str, Comparison]]) -> str:
    levels = {c.confidence for _, c in rows}
    return f"{_percent(levels.pop())} interval" if len(levels) == 1 else "interval"


def _interval_cell(metric: str, c: Comparison, shared: bool) -> str:
    text = format_interval(metric, c.ci_low, c.ci_high)
    return text if shared else f"{text} at {_percent(c.confidence)}"


def _md_comparisons(result: EvaluationResult) -> list[str]:
    pairs = _pairs(result)
    if not pairs:
        return []
    lines = [
        "### Paired comparisons",
        "",
        "Per example, over the examples both targets scored: the mean difference, its paired "
        "bootstrap interval, and wins / ties / losses (a win: the first target scored "
        "higher); McNemar's exact p for 0/1 metrics.",
        "",
    ]
    for pair in pairs:
        rows = _comparison_rows(result, pair)
        header = _interval_header(rows)
        shared = header != "interval"
        lines += [
            f"#### {markdown_cell(pair_label(pair))}",
            "",
            *_md_table(
                ["metric", "Δ", header, "wins / ties / losses", "n", "McNemar p", "reading"],
                (
                    [
                        _name(metric),
                        format_signed(metric, c.delta),
                        _interval_cell(metric, c, shared),
                        f"{c.wins} / {c.ties} / {c.losses}",
                        str(c.n),
                        format_p(c.p_value),
                        markdown_cell(_reading(pair, metric, c)[0]),
                    ]
                    for metric, c in rows
                ),
            ),
            "",
        ]
    return lines


def _scores_line(example: ExampleResult, metrics: list[str]) -> str:
    parts = []
    for metric in metrics:
        base = example.scores.get("base", {}).get(metric)
        tuned = example.scores.get("tuned", {}).get(metric)
        if base is None and tuned is None:
            continue
        parts.append(f"{metric} {format_value(metric, base)} → {format_value(metric, tuned)}")
    return "; ".join(parts)


def _judge_cell(example: ExampleResult) -> str:
    parts = []
    for pair, words, reasons in _judge_lines(example):
        text = f"{pair_label(pair)}: {words}"
        if reasons:
            text += " — " + " / ".join(reasons)
        parts.append(text)
    return "; ".join(parts)


def _flips_intro(found: Flips, gate: bool, name: Callable[[str], str] = _name) -> str:
    """What the flipped examples of one metric are, in words; ``name`` shows the metric."""
    metric = name(found.metric)
    source = "a metric of the gate" if gate else "a metric of the spec (no gate reads one)"
    if found.scored == 0:
        return f"{metric} is {source}; no example has both a tuned and a base result."
    shown = []
    if found.regressions:
        shown.append(f"the {len(found.regressions)} worst regressions first")
    if found.wins:
        shown.append(f"then the {len(found.wins)} biggest wins" if shown else "the biggest wins")
    text = (
        f"{metric} is {source}. Of {found.scored} examples: {found.worse} worse with the "
        f"tuned model, {found.better} better, {found.same} the same"
    )
    text += f"; {', '.join(shown)}." if shown else "."
    if not found.worse:
        text += f" No example scored lower on {metric} with the tuned model."
    return text


def _md_flips(result: EvaluationResult, worst: int, wins: int) -> list[str]:
    if "base" not in result.targets or "tuned" not in result.targets:
        return []
    gate = bool(set(flip_metrics(result)) & set(gate_metrics(result)))
    lines: list[str] = []
    for metric in flip_metrics(result):
        found = flips(result, metric, worst=worst, wins=wins)
        lines += [
            f"### Examples that flipped on {_name(metric)}",
            "",
            _flips_intro(found, gate),
            "",
        ]
        shown = [*found.regressions, *found.wins]
        if not shown:
            continue
        judged = any(f.example.judge for f in shown)
        header = [
            "#",
            "change",
            f"Δ {_name(metric)}",
            "prompt",
            "reference",
            "tuned output",
            "base output",
            "scores (base → tuned)",
        ]
        if judged:
            header.append("judge")
        rows = []
        for flip in shown:
            e = flip.example
            change = "worse" if flip.regression else "better"
            delta = (
                format_signed(metric, flip.delta)
                if flip.delta is not None
                else ("base preferred" if flip.regression else "tuned preferred")
            )
            row = [
                str(e.index),
                change,
                delta,
                markdown_cell(e.prompt),
                markdown_cell(e.reference),
                markdown_cell(e.outputs.get("tuned", "")),
                markdown_cell(e.outputs.get("base", "")),
                markdown_cell(_scores_line(e, result.metrics), 400),
            ]
            if judged:
                row.append(markdown_cell(_judge_cell(e), 600))
            rows.append(row)
        lines += [*_md_table(header, rows), ""]
    return lines


def _trend_rows(
    result: EvaluationResult, points: Sequence[TrendPoint], metrics: Sequence[str]
) -> tuple[list[list[str]], bool]:
    """Cells per point (run, evaluated, gate, values), and whether any was on another
    held-out set."""
    current = TrendPoint.from_result(result)
    other_set = False
    rows = []
    for point in points:
        run = point.run
        if point.run == current.run:
            run += " (this run)"
        elif (
            point.holdout_sha256
            and current.holdout_sha256
            and point.holdout_sha256 != current.holdout_sha256
        ):
            run += " (other held-out set)"
            other_set = True
        values = [format_value(m, point.metrics.get(m)) for m in metrics]
        rows.append(
            [
                run,
                point.created_at,
                _WORD[point.passed] if point.passed is not None else "–",
                *values,
            ]
        )
    return rows, other_set


_OTHER_SET = (
    "A run marked “other held-out set” was scored on other examples: its values do not "
    "compare directly."
)


def _md_trend(result: EvaluationResult, points: Sequence[TrendPoint]) -> list[str]:
    if len(points) < 2:
        return []
    metrics = _trend_metrics(result, points)
    rows, other_set = _trend_rows(result, points, metrics)
    lines = [
        "### Trend over the spec's evaluations",
        "",
        f"The tuned model's {', '.join(_name(m) for m in metrics) or 'metrics'} in "
        f"the last {len(points)} evaluations, oldest first.",
        "",
        *_md_table(
            ["run", "evaluated", "gate", *(_name(m) for m in metrics)],
            ([markdown_cell(c) for c in row] for row in rows),
        ),
        "",
    ]
    if other_set:
        lines += [_OTHER_SET, ""]
    return lines


def _usage_table(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the token table (the last row the total); empty without usage."""
    # The reward's scoring calls are counted in calls, not tokens (see _scoring_words).
    usage = {role: u for role, u in result.usage.items() if role != "reward"}
    if not usage:
        return [], []
    roles = [r for r in _roles(result) if r in usage]
    roles += [r for r in usage if r not in roles]
    kinds = [k for k in ("prompt", "output") if any(k in u for u in usage.values())]
    kinds += sorted({k for u in usage.values() for k in u} - set(kinds))
    header = ["", *(f"{k} tokens" for k in kinds), "total tokens"]
    rows = []
    totals = dict.fromkeys(kinds, 0)
    for role in roles:
        counts = usage[role]
        for kind in kinds:
            totals[kind] += int(counts.get(kind, 0))
        rows.append(
            [role, *(f"{int(counts.get(k, 0)):,}" for k in kinds), f"{sum(counts.values()):,}"]
        )
    rows.append(["all", *(f"{totals[k]:,}" for k in kinds), f"{sum(totals.values()):,}"])
    return header, rows


_NO_PRICE = (
    "Token counts as the backend reported them; no price is known for generation, so there "
    "is no cost estimate."
)


def _scoring_words(result: EvaluationResult) -> list[str]:
    """One sentence per judged pair: who judged, how often, and how often it agreed with
    itself when the two answers swapped places; and one for the reward's scoring calls."""
    out = []
    scored = result.usage.get("reward")
    if scored:
        failed, cached = int(scored.get("failed", 0)), int(scored.get("cached", 0))
        out.append(
            f"The reward (sha256 {str(result.binding.get('reward_sha256'))[:12]}…) scored "
            f"{int(scored.get('calls', 0)) + cached:,} answers through Vertex's "
            "validateReinforcementTuningReward"
            + (f" ({cached:,} kept from an earlier run)" if cached else "")
            + (f"; {failed:,} could not be scored." if failed else ".")
        )
    judge = result.binding.get("judge")
    if not isinstance(judge, Mapping):
        return out
    for pair, summary in (judge.get("pairs") or {}).items():
        if not isinstance(summary, Mapping):
            continue
        agreement = summary.get("self_agreement")
        agreed = "n/a" if agreement is None else f"{float(agreement):.0%}"
        out.append(
            f"Judge {judge.get('model')} on {pair}: {summary.get('judged', 0)} examples judged "
            f"in both orders; self-agreement {agreed} (verdicts that changed with the order "
            f"count as ties); {summary.get('unparseable', 0)} unparseable answers."
        )
    return out


def _md_usage(result: EvaluationResult) -> list[str]:
    judge = [markdown_cell(line, 600) for line in _scoring_words(result)]
    header, rows = _usage_table(result)
    if judge:
        return [*_md_usage_table(header, rows), *judge, ""]
    return _md_usage_table(header, rows)


def _md_usage_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return ["### Evaluation cost", "", "The backend reported no token usage.", ""]
    return [
        "### Evaluation cost",
        "",
        *_md_table(["target", *header[1:]], ([markdown_cell(c) for c in row] for row in rows)),
        "",
        _NO_PRICE,
        "",
    ]


def render_markdown(
    result: EvaluationResult,
    *,
    worst: int = WORST,
    wins: int = WINS,
    history: Iterable[HistoryItem] = (),
) -> str:
    """The report as GitHub-flavoured Markdown."""
    roles = _roles(result)
    count = len(result.examples)
    lines = [
        f"## Evaluation of {_code(result.spec)}",
        "",
        f"Run {_code(result.run)} · {markdown_cell(result.created_at)} · "
        f"{count} held-out example{'s' if count != 1 else ''}",
        "",
    ]
    if result.verdict is not None:
        lines += _md_gate(result, result.verdict)
    lines += _md_table(
        ["target", "model", "generation failures"],
        (
            [
                _name(r),
                markdown_cell(result.targets[r].model),
                str(result.targets[r].errors),
            ]
            for r in roles
        ),
    )
    lines += ["", *_md_metrics(result, roles), ""]
    lines += _md_comparisons(result)
    lines += _md_flips(result, worst, wins)
    lines += _md_trend(result, trend(result, history))
    lines += _md_usage(result)
    return "\n".join(lines)


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:80rem;padding:0 1rem;color:#202124}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}h3{font-size:1rem}
table{border-collapse:collapse;margin:.75rem 0}
td,th{border:1px solid #dadce0;padding:.3rem .6rem;text-align:left;vertical-align:top}
td{overflow-wrap:anywhere}td code{overflow-wrap:break-word}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.better,span.better{color:#188038}td.worse,span.worse{color:#c5221f}
td.pass,span.pass{color:#188038}td.fail,span.fail{color:#c5221f}td.skip,span.skip{color:#5f6368}
.verdict{font-weight:700}section.worse{border-left:4px solid #c5221f}
section.better{border-left:4px solid #188038}
.muted{color:#5f6368}code{background:#f1f3f4;padding:0 .2rem;border-radius:3px}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}figure{margin:0}
figcaption{font-weight:600;margin-bottom:.25rem}
.example{border:1px solid #dadce0;border-radius:6px;padding:.75rem 1rem;margin:1rem 0}
.side{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f8f9fa;padding:.5rem;margin:.25rem 0;
border-radius:4px;font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,monospace}
"""
# Nothing on the page may come from elsewhere, and no script may run; the policy tells the
# browser so, in case a value ever slipped past the escaping.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _esc(text: str) -> str:
    return html.escape(_visible(text), quote=True)


def _clip(text: str, limit: int = HTML_TEXT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… ({len(text) - limit:,} more characters)"


def _nice(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power


def _svg(width: int, height: int, label: str, body: Iterable[str]) -> str:
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_esc(label)}"><title>{_esc(label)}</title>{"".join(body)}</svg>'
    )


def svg_chart(result: EvaluationResult, metric: str) -> str:
    """An inline SVG chart of one metric: a bar per target, then each paired comparison's
    difference with its interval as whiskers."""
    roles = [r for r in _roles(result) if metric in result.targets[r].metrics]
    values = [result.targets[r].metrics[metric] for r in roles]
    definition = _metric(metric)
    # Shares are drawn on their full 0-1 scale, so bars of different charts compare; a reward
    # on its -1 to 1 scale (a bar from -1).
    share = definition is None or definition.unit == "share"
    bottom = -1.0 if definition is not None and definition.unit == "reward" else 0.0
    top = 1.0 if share or bottom < 0 else max([*values, 0.0]) or 1.0
    label_width, plot, bar, gap = 100, 240, 20, 8
    width = label_width + plot + 170
    rows = []
    y = gap
    for role, value in zip(roles, values, strict=True):
        length = plot * (min(max(value, bottom), top) - bottom) / (top - bottom)
        rows.append(
            f'<text x="0" y="{y + 15}" font-size="13">{_esc(role)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar}" '
            f'fill="{_COLOURS.get(role, "#5f6368")}"><title>{_esc(role)}: '
            f"{_esc(format_value(metric, value))}</title></rect>"
            f'<text x="{label_width + length + 6:.1f}" y="{y + 15}" font-size="13">'
            f"{_esc(format_value(metric, value))}</text>"
        )
        y += bar + gap
    if not roles:
        rows.append(f'<text x="0" y="{y + 15}" font-size="13">no value</text>')
        y += bar + gap
    compared = [
        (pair, result.comparisons[pair][metric])
        for pair in _pairs(result)
        if metric in result.comparisons[pair]
    ]
    if compared:
        y = _whiskers(rows, compared, metric, y, label_width, plot)
    return _svg(width, y, f"{metric} by target", rows)


def _whiskers(
    rows: list[str],
    compared: Sequence[tuple[str, Comparison]],
    metric: str,
    y: int,
    left: int,
    plot: int,
) -> int:
    """Draw each comparison's difference and interval below the bars; the new height."""
    extent = max(abs(v) for _, c in compared for v in (c.ci_low, c.ci_high, c.delta))
    half = _nice(extent or (0.01 if _digits(metric) == 3 else 1.0))
    centre = left + plot / 2

    def x(value: float) -> float:
        return centre + (plot / 2) * max(-1.0, min(1.0, value / half))

    levels = {c.confidence for _, c in compared}
    level = f"{_percent(levels.pop())} interval" if len(levels) == 1 else "interval"
    y += 6
    rows.append(
        f'<text x="0" y="{y + 11}" font-size="11" fill="#5f6368">difference, {_esc(level)}</text>'
    )
    y += 16
    first_row = y
    row = 22
    for pair, c in compared:
        cy = y + row / 2
        lo, hi, mid = x(c.ci_low), x(c.ci_high), x(c.delta)
        b = (_pair_targets(pair) or ("", pair))[1]
        label = f"vs {b}" if pair.startswith("tuned-") else pair_label(pair)
        words = (
            f"{pair_label(pair)}: {format_signed(metric, c.delta)}, "
            f"{_percent(c.confidence)} interval {format_interval(metric, c.ci_low, c.ci_high)}, "
            f"n = {c.n}"
        )
        rows.append(
            f'<g class="comparison"><title>{_esc(words)}</title>'
            f'<text x="0" y="{cy + 4:.1f}" font-size="12">{_esc(label)}</text>'
            f'<line class="whisker" x1="{lo:.1f}" y1="{cy:.1f}" x2="{hi:.1f}" y2="{cy:.1f}" '
            'stroke="#202124" stroke-width="2"/>'
            f'<line class="cap" x1="{lo:.1f}" y1="{cy - 5:.1f}" x2="{lo:.1f}" y2="{cy + 5:.1f}" '
            'stroke="#202124" stroke-width="2"/>'
            f'<line class="cap" x1="{hi:.1f}" y1="{cy - 5:.1f}" x2="{hi:.1f}" y2="{cy + 5:.1f}" '
            'stroke="#202124" stroke-width="2"/>'
            f'<circle class="estimate" cx="{mid:.1f}" cy="{cy:.1f}" r="4" '
            f'fill="{_COLOURS.get(b, "#5f6368")}"/>'
            f'<text x="{left + plot + 6}" y="{cy + 4:.1f}" font-size="11">'
            f"{_esc(format_signed(metric, c.delta))} "
            f"{_esc(format_interval(metric, c.ci_low, c.ci_high))}</text></g>"
        )
        y += row
    rows.append(
        f'<line class="zero" x1="{centre:.1f}" y1="{first_row}" x2="{centre:.1f}" y2="{y}" '
        'stroke="#9aa0a6" stroke-dasharray="3 3"/>'
    )
    for value, anchor in ((-half, "start"), (0.0, "middle"), (half, "end")):
        text = f"{value:+.4g}".replace("-", "−") if value else "0"
        rows.append(
            f'<text x="{x(value):.1f}" y="{y + 12}" font-size="10" fill="#5f6368" '
            f'text-anchor="{anchor}">{_esc(text)}</text>'
        )
    return y + 18


def trend_chart(points: Sequence[TrendPoint], metric: str, *, current: str = "") -> str:
    """An inline SVG line chart of one metric over the points, oldest on the left; the point of
    run ``current`` is drawn larger, and each point's colour says whether its gate passed."""
    width, height = 500, 160
    left, right, top, bottom = 60, 20, 14, 36
    w, h = width - left - right, height - top - bottom
    values = [p.metrics.get(metric) for p in points]
    present = [v for v in values if v is not None]
    body: list[str] = []
    if not present:
        body.append('<text x="0" y="20" font-size="13">no value</text>')
        return _svg(width, 40, f"{metric} over time", body)
    lo, hi = min(present), max(present)
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.05, 0.01)
    lo, hi = lo - pad, hi + pad
    if _digits(metric) == 3:
        lo, hi = max(lo, 0.0), min(hi, 1.0)
        if hi <= lo:
            lo, hi = max(0.0, hi - 0.01), min(1.0, lo + 0.01)

    def x(i: int) -> float:
        return left + (w * i / (len(points) - 1) if len(points) > 1 else w / 2)

    def y(v: float) -> float:
        return top + h * (hi - v) / (hi - lo)

    for edge in (hi, lo):
        body.append(
            f'<line x1="{left}" y1="{y(edge):.1f}" x2="{left + w}" y2="{y(edge):.1f}" '
            'stroke="#dadce0"/>'
            f'<text x="{left - 6}" y="{y(edge) + 4:.1f}" font-size="10" fill="#5f6368" '
            f'text-anchor="end">{_esc(format_value(metric, edge))}</text>'
        )
    segment: list[str] = []
    segments: list[list[str]] = [segment]
    for i, value in enumerate(values):
        if value is None:
            segment = []
            segments.append(segment)
            continue
        segment.append(f"{x(i):.1f},{y(value):.1f}")
    for part in segments:
        if len(part) > 1:
            body.append(
                f'<polyline class="trend-line" points="{" ".join(part)}" fill="none" '
                'stroke="#1a73e8" stroke-width="2"/>'
            )
    colours = {True: "#188038", False: "#c5221f", None: "#5f6368"}
    for i, (point, value) in enumerate(zip(points, values, strict=True)):
        if value is None:
            continue
        state = _WORD[point.passed] if point.passed is not None else "no gate"
        words = (
            f"{point.run} · {point.created_at} · {metric} {format_value(metric, value)} · {state}"
        )
        mine = point.run == current
        body.append(
            f'<circle class="point {_CLASS[point.passed]}{" current" if mine else ""}" '
            f'cx="{x(i):.1f}" cy="{y(value):.1f}" r="{6 if mine else 4}" '
            f'fill="{colours[point.passed]}" stroke="#202124" '
            f'stroke-width="{2 if mine else 0}"><title>{_esc(words)}</title></circle>'
        )
    for i, anchor in ((0, "start"), (len(points) - 1, "end")):
        if i == 0 and len(points) == 1:
            anchor = "middle"
        body.append(
            f'<text x="{x(i):.1f}" y="{height - 12}" font-size="10" fill="#5f6368" '
            f'text-anchor="{anchor}">{_esc(points[i].created_at[:10])}</text>'
        )
        if len(points) == 1:
            break
    return _svg(width, height, f"{metric} over time", body)


def _html_table(header: Sequence[str], rows: Iterable[str], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    attr = f" class='{cls}'" if cls else ""
    return f"<table{attr}><tr>{head}</tr>{''.join(rows)}</table>"


def _html_metrics(result: EvaluationResult, roles: list[str]) -> str:
    others = [r for r in roles if r != "base"] if "base" in roles else []
    header = [_esc(h) for h in ["metric", *roles]] + [f"{_esc(r)} − base" for r in others]
    rows = []
    base = result.targets.get("base")
    for metric in result.metrics:
        cells = [f"<td><code>{_esc(metric)}</code></td>"]
        for role in roles:
            value = result.targets[role].metrics.get(metric)
            cells.append(f"<td class='num'>{_esc(format_value(metric, value))}</td>")
        for role in others:
            text, word = _delta(
                metric,
                result.targets[role].metrics.get(metric),
                base.metrics.get(metric) if base else None,
            )
            cls = f"num {word}" if word in ("better", "worse") else "num"
            cells.append(f"<td class='{cls}'>{_esc(text)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return _html_table(header, rows)


def _html_gate(result: EvaluationResult, verdict: GateVerdict) -> str:
    cls, word = ("pass", "PASS") if verdict.passed else ("fail", "FAIL")
    rows = []
    for clause in verdict.clauses:
        significant = _judged_significant(clause)
        if significant:
            assert clause.ci_low is not None and clause.ci_high is not None
            level = f" at {_percent(clause.confidence)}" if clause.confidence is not None else ""
            value = f"Δ = {fmt(clause.left)}" if clause.left is not None else "–"
            interval = f"[{fmt(clause.ci_low)}, {fmt(clause.ci_high)}]{level}"
            margin = fmt(clause.margin) if clause.margin is not None else "–"
            n = str(clause.n) if clause.n is not None else "–"
            p = fmt(clause.p_value) if clause.p_value is not None else "–"
        else:
            value = clause_numbers(clause) or "–"
            interval = margin = n = p = "–"
        state = clause.passed
        rows.append(
            f"<tr class='clause {_CLASS[state]}'>"
            f"<td class='verdict {_CLASS[state]}'>{_WORD[state]}</td>"
            f"<td><code>{_esc(clause.text)}</code></td>"
            f"<td class='num'>{_esc(value)}</td><td class='num'>{_esc(interval)}</td>"
            f"<td class='num'>{_esc(margin)}</td><td class='num'>{_esc(n)}</td>"
            f"<td class='num'>{_esc(p)}</td><td>{_esc(_clause_note(clause))}</td></tr>"
        )
    binding = _binding_words(result)
    return (
        f"<h2>Gate: <span class='verdict {cls}'>{word}</span> "
        f"<span class='muted'>({_esc(_tally(verdict))})</span></h2>"
        f"<p>{_esc(verdict.explanation)}</p>"
        + _html_table(
            ["result", "clause", "value", "interval", "margin", "n", "p (Holm)", "note"],
            rows,
            "clauses",
        )
        + (f"<p class='muted'>{_esc(binding)}</p>" if binding else "")
    )


def _html_comparisons(result: EvaluationResult) -> str:
    parts = []
    for pair in _pairs(result):
        rows = _comparison_rows(result, pair)
        header = _interval_header(rows)
        shared = header != "interval"
        body = []
        for metric, c in rows:
            reading, word = _reading(pair, metric, c)
            cls = f" {word}" if word in ("better", "worse") else ""
            body.append(
                f"<tr><td><code>{_esc(metric)}</code></td>"
                f"<td class='num{cls}'>{_esc(format_signed(metric, c.delta))}</td>"
                f"<td class='num'>{_esc(_interval_cell(metric, c, shared))}</td>"
                f"<td class='num'>{c.wins} / {c.ties} / {c.losses}</td>"
                f"<td class='num'>{c.n}</td><td class='num'>{_esc(format_p(c.p_value))}</td>"
                f"<td class='{word if cls else ''}'>{_esc(reading)}</td></tr>"
            )
        parts.append(
            f"<h3>{_esc(pair_label(pair))}</h3>"
            + _html_table(
                [
                    "metric",
                    "Δ",
                    _esc(header),
                    "wins / ties / losses",
                    "n",
                    "McNemar p",
                    "reading",
                ],
                body,
                "comparison",
            )
        )
    if not parts:
        return ""
    return (
        "<h2>Paired comparisons</h2><p class='muted'>Per example, over the examples both "
        "targets scored: the mean difference, its paired bootstrap interval, and wins / ties "
        "/ losses (a win: the first target scored higher); McNemar's exact p for 0/1 "
        "metrics.</p>" + "".join(parts)
    )


def _html_scores(result: EvaluationResult, e: ExampleResult, role: str) -> str:
    return "".join(
        f"<li><code>{_esc(m)}</code> {_esc(format_value(m, e.scores.get(role, {}).get(m)))}</li>"
        for m in result.metrics
        if m in e.scores.get(role, {})
    )


def _html_flip(result: EvaluationResult, flip: Flip) -> str:
    e = flip.example
    change, cls = ("worse", "worse") if flip.regression else ("better", "better")
    sides = []
    for role in ("tuned", "base"):
        sides.append(
            f"<div><h4>{role} output</h4><pre>{_esc(_clip(e.outputs.get(role, '')))}</pre>"
            f"<ul>{_html_scores(result, e, role)}</ul></div>"
        )
    judge = ""
    lines = _judge_lines(e)
    if lines:
        items = []
        for pair, words, reasons in lines:
            why = "".join(f"<li>{_esc(_clip(r))}</li>" for r in reasons)
            items.append(
                f"<p><code>{_esc(pair_label(pair))}</code>: {_esc(words)}</p>"
                + (f"<ul>{why}</ul>" if why else "")
            )
        judge = f"<div class='judge'><h4>judge</h4>{''.join(items)}</div>"
    return (
        f"<section class='example {cls}'><h3>Example {e.index} · "
        f"<span class='{cls}'>{change}</span> · {_esc(_flip_words(flip))}</h3>"
        f"<h4>prompt</h4><pre>{_esc(_clip(e.prompt))}</pre>"
        f"<h4>reference</h4><pre>{_esc(_clip(e.reference))}</pre>"
        f"<div class='side'>{''.join(sides)}</div>{judge}</section>"
    )


def _html_flips(result: EvaluationResult, worst: int, wins: int) -> str:
    if "base" not in result.targets or "tuned" not in result.targets:
        return ""
    gate = bool(set(flip_metrics(result)) & set(gate_metrics(result)))
    parts = []
    for metric in flip_metrics(result):
        found = flips(result, metric, worst=worst, wins=wins)
        parts.append(
            f"<h2>Examples that flipped on {_esc(metric)}</h2>"
            f"<p>{_esc(_flips_intro(found, gate, str))}</p>"
        )
        parts.extend(_html_flip(result, f) for f in [*found.regressions, *found.wins])
    return "".join(parts)


def _html_trend(result: EvaluationResult, points: Sequence[TrendPoint]) -> str:
    if len(points) < 2:
        return ""
    metrics = _trend_metrics(result, points)
    rows, other_set = _trend_rows(result, points, metrics)
    charts = "".join(
        f"<figure><figcaption>{_esc(m)}</figcaption>"
        f"{trend_chart(points, m, current=result.run)}</figure>"
        for m in metrics
    )
    body = []
    for row, point in zip(rows, points, strict=True):
        gate = f"<td class='verdict {_CLASS[point.passed]}'>{_esc(row[2])}</td>"
        values = "".join(f"<td class='num'>{_esc(v)}</td>" for v in row[3:])
        body.append(
            f"<tr><td><code>{_esc(row[0])}</code></td><td>{_esc(row[1])}</td>{gate}{values}</tr>"
        )
    return (
        "<h2>Trend over the spec's evaluations</h2>"
        f"<p class='muted'>The tuned model in the last {len(points)} evaluations, oldest "
        "first; a green point passed its gate, a red one failed it.</p>"
        f"<div class='charts'>{charts}</div>"
        + _html_table(
            ["run", "evaluated", "gate", *(f"<code>{_esc(m)}</code>" for m in metrics)], body
        )
        + (f"<p class='muted'>{_esc(_OTHER_SET)}</p>" if other_set else "")
    )


def _html_usage(result: EvaluationResult) -> str:
    judge = "".join(f"<p>{_esc(line)}</p>" for line in _scoring_words(result))
    return _html_usage_table(result) + judge


def _html_usage_table(result: EvaluationResult) -> str:
    header, rows = _usage_table(result)
    if not rows:
        return "<h2>Evaluation cost</h2><p class='muted'>The backend reported no token usage.</p>"
    body = [
        f"<tr><td>{_esc(row[0])}</td>"
        + "".join(f"<td class='num'>{_esc(c)}</td>" for c in row[1:])
        + "</tr>"
        for row in rows
    ]
    return (
        "<h2>Evaluation cost</h2>"
        + _html_table(["target", *(_esc(h) for h in header[1:])], body, "usage")
        + f"<p class='muted'>{_esc(_NO_PRICE)}</p>"
    )


def render_html(
    result: EvaluationResult,
    *,
    worst: int = WORST,
    wins: int = WINS,
    history: Iterable[HistoryItem] = (),
) -> str:
    """The report as one self-contained HTML page."""
    roles = _roles(result)
    title = f"Evaluation of {result.spec}"
    parts = [
        # The policy comes first, before anything taken from the result.
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f"<p class='muted'>run <code>{_esc(result.run)}</code> · {_esc(result.created_at)} · "
        f"{len(result.examples)} held-out examples</p>",
    ]
    if result.verdict is not None:
        parts.append(_html_gate(result, result.verdict))
    parts.append("<h2>Targets</h2>")
    parts.append(
        _html_table(
            ["target", "model", "generation failures"],
            (
                f"<tr><td>{_esc(r)}</td><td><code>{_esc(result.targets[r].model)}</code></td>"
                f"<td class='num'>{result.targets[r].errors}</td></tr>"
                for r in roles
            ),
        )
    )
    parts.append("<h2>Metrics</h2>")
    parts.append(_html_metrics(result, roles))
    parts.append("<div class='charts'>")
    for metric in result.metrics:
        definition = _metric(metric)
        caption = _esc(metric)
        if definition is not None:
            direction = {True: "higher is better", False: "lower is better", None: ""}
            note = direction[definition.higher_is_better]
            caption += f" <span class='muted'>{_esc(definition.description)}"
            caption += f"{'; ' + note if note else ''}</span>"
        parts.append(f"<figure><figcaption>{caption}</figcaption>{svg_chart(result, metric)}")
        parts.append("</figure>")
    parts.append("</div>")
    parts.append(_html_comparisons(result))
    parts.append(_html_flips(result, worst, wins))
    parts.append(_html_trend(result, trend(result, history)))
    parts.append(_html_usage(result))
    parts.append("</body></html>\n")
    return "".join(parts)


# --- files --------------------------------------------------------------------------------------


def write_report(
    result: EvaluationResult, directory: Path, *, history: Iterable[HistoryItem] = ()
) -> list[Path]:
    """Write report.md, report.html and results.json into ``directory`` (made if missing).

    ``history``: earlier evaluations of the same spec, for the trend (see :class:`TrendPoint`
    and :data:`HistoryItem`); without it the reports have no trend.
    """
    points = trend(result, history)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, body in (
        ("report.md", render_markdown(result, history=points).encode()),
        ("report.html", render_html(result, history=points).encode()),
        ("results.json", orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2) + b"\n"),
    ):
        path = directory / name
        path.write_bytes(body)
        written.append(path)
    return written
