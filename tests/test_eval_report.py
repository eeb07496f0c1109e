"""Reports: the gate in words, the paired comparisons with their intervals, the examples that
flipped on the gate's metrics, the evaluation's tokens, the trend, and the escaping of
everything a model wrote, in Markdown and in the self-contained HTML page."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from vertex_tuner.evaluation.gate import ClauseResult, GateVerdict
from vertex_tuner.evaluation.report import (
    TrendPoint,
    biggest_wins,
    flip_metrics,
    flips,
    gate_metrics,
    markdown_cell,
    regression_metric,
    render_html,
    render_markdown,
    svg_chart,
    trend,
    trend_chart,
    worst_regressions,
    write_report,
)
from vertex_tuner.evaluation.results import EvaluationResult, ExampleResult, TargetResult
from vertex_tuner.evaluation.statistics import Comparison

HOSTILE = "Where is <b>order</b> | 42?\nReply *fast* `now` [here](http://x) & $x$"


def ran(name: str) -> str:
    """Script that leaves a mark a browser can be searched for: an element with id ran-NAME."""
    return (
        f"document.body.appendChild(Object.assign(document.createElement('p'),{{id:'ran-{name}'}}))"
    )


#: What a model may write to attack the page that shows it.
SCRIPT = f"<script>document.title='pwned';{ran('script')}</script>"
ONERROR = f'<img src=x onerror="{ran("onerror")}">'
ONLOAD = f'<svg onload="{ran("onload")}"></svg>'
FRAME = f'<iframe src="javascript:parent.{ran("frame")}"></iframe>'
LINK = '<a href="javascript:alert(1)">click</a>'
STYLE = "<style>body{display:none}</style>"
BREAKOUT = f"x'\"><script>{ran('breakout')}</script>"
BIDI = "safe\u202etxt.exe"
PAYLOADS = (SCRIPT, ONERROR, ONLOAD, FRAME, LINK, STYLE, BREAKOUT)

GATE = "significant(tuned.rouge_l > base.rouge_l + 0.02) and tuned.rouge_l >= production.rouge_l"
#: (base exact_match, base rouge_l), (tuned exact_match, tuned rouge_l) per example. The spec's
#: first metric is exact_match; the gate reads only rouge_l.
SCORES = [
    ((1.0, 1.0), (1.0, 1.0)),  # 0: no change
    ((1.0, 0.9), (0.0, 0.5)),  # 1: ROUGE-L -0.4
    ((1.0, 1.0), (0.0, 0.2)),  # 2: ROUGE-L -0.8, the worst (hostile prompt)
    ((0.0, 0.3), (0.0, 0.1)),  # 3: -0.2
    ((0.0, 0.2), (1.0, 0.9)),  # 4: +0.7
    ((0.0, 0.1), (1.0, 1.0)),  # 5: +0.9, the biggest win
    ((0.0, 0.0), (0.0, 0.6)),  # 6: +0.6
    ((0.0, 0.4), (0.0, 0.8)),  # 7: +0.4
]


def example(
    index: int,
    base: tuple[float, float],
    tuned: tuple[float, float],
    prompt: str = "",
    judge: dict[str, dict[str, Any]] | None = None,
) -> ExampleResult:
    return ExampleResult(
        index=index,
        prompt=prompt or f"prompt {index}",
        reference=f"reference {index}",
        outputs={"base": f"base says {index}", "tuned": f"tuned says {index}"},
        scores={
            "base": {"exact_match": base[0], "rouge_l": base[1], "output_length": 3.0},
            "tuned": {"exact_match": tuned[0], "rouge_l": tuned[1], "output_length": 4.0},
        },
        judge=judge or {},
    )


def examples() -> list[ExampleResult]:
    found = []
    for i, (base, tuned) in enumerate(SCORES):
        judge = None
        if i == 2:
            judge = {
                "tuned-base": {
                    "winner": "base",
                    "consistent": True,
                    "reasons": ["base answers the question", "tuned | drifts\noff topic"],
                }
            }
        found.append(example(i, base, tuned, HOSTILE if i == 2 else "", judge))
    return found


def mean(role: int, metric: int) -> float:
    return sum(pair[role][metric] for pair in SCORES) / len(SCORES)


def failing_verdict() -> GateVerdict:
    return GateVerdict(
        False,
        [
            ClauseResult(
                "significant(tuned.rouge_l > base.rouge_l + 0.02)",
                False,
                0.15,
                0.02,
                "not significant: the 95% interval of tuned.rouge_l - base.rouge_l is "
                "[-0.2, 0.5] (n = 8), not entirely above 0.02",
                significant=True,
                ci_low=-0.2,
                ci_high=0.5,
                n=8,
                margin=0.02,
                confidence=0.95,
                p_value=0.21,
            ),
            ClauseResult("tuned.rouge_l >= production.rouge_l", True, 0.6375, 0.55),
        ],
        "failed: significant(tuned.rouge_l > base.rouge_l + 0.02) is false",
    )


def passing_verdict() -> GateVerdict:
    return GateVerdict(
        True,
        [
            ClauseResult(
                "significant(tuned.rouge_l > base.rouge_l + 0.02)",
                True,
                0.15,
                0.02,
                "the 97.5% interval of tuned.rouge_l - base.rouge_l is [0.05, 0.25] (n = 8), "
                "above 0.02",
                significant=True,
                ci_low=0.05,
                ci_high=0.25,
                n=8,
                margin=0.02,
                confidence=0.975,
                p_value=0.004,
            ),
            ClauseResult(
                "tuned.exact_match >= production.exact_match",
                None,
                None,
                None,
                "skipped: no production model",
            ),
        ],
        "passed: significant(tuned.rouge_l > base.rouge_l + 0.02) holds",
    )


def comparisons() -> dict[str, dict[str, Comparison]]:
    return {
        "tuned-production": {
            "rouge_l": Comparison(0.0875, 0.01, 0.17, None, 5, 1, 2, 8, confidence=0.9),
            "exact_match": Comparison.from_json(
                {
                    "delta": -0.125,
                    "ci_low": -0.5,
                    "ci_high": 0.25,
                    "p_value": 1.0,
                    "wins": 1,
                    "ties": 5,
                    "losses": 2,
                    "n": 8,
                }
            ),
        },
        "tuned-base": {
            "exact_match": Comparison(0.0, -0.375, 0.375, 1.0, 2, 4, 2, 8),
            "rouge_l": Comparison(0.15, -0.2, 0.5, None, 4, 1, 3, 8, std=0.55),
            "output_length": Comparison(1.0, 1.0, 1.0, None, 8, 0, 0, 8, std=0.0),
        },
    }


def make_result(**changes: object) -> EvaluationResult:
    fields: dict[str, object] = {
        "spec": "support-tone",
        "run": "r-20260101",
        "created_at": "2026-01-01T00:00:00Z",
        "metrics": ["exact_match", "rouge_l", "output_length"],
        "targets": {
            "base": TargetResult(
                "gemini-2.5-flash", {"exact_match": mean(0, 0), "rouge_l": mean(0, 1)}
            ),
            "tuned": TargetResult(
                "projects/p/locations/l/endpoints/7",
                {"exact_match": mean(1, 0), "rouge_l": mean(1, 1), "output_length": 10.5},
                errors=1,
            ),
            "production": TargetResult(
                "projects/p/locations/l/endpoints/3", {"exact_match": 0.5, "rouge_l": 0.55}
            ),
        },
        "examples": examples(),
        "verdict": failing_verdict(),
        "binding": {
            "run": "r-20260101",
            "tuned": "projects/p/locations/l/endpoints/7",
            "holdout_sha256": "ab" * 32,
            "examples": 8,
            "gate": GATE,
        },
        "comparisons": comparisons(),
        "usage": {
            "tuned": {"prompt": 5120, "output": 900},
            "base": {"prompt": 5120, "output": 1400},
            "judge": {"prompt": 9000, "output": 300},
        },
    }
    fields.update(changes)
    return EvaluationResult(**fields)  # type: ignore[arg-type]


def cells(row: str) -> list[str]:
    """A Markdown table row's cells, split at pipes that are not escaped."""
    assert row.startswith("| ") and row.endswith(" |"), row
    return [c.strip() for c in re.split(r"(?<!\\)\|", row[1:-1])]


def table(markdown: str, header_start: str, after: str = "") -> list[list[str]]:
    """The Markdown table whose header starts with ``header_start`` (after the line
    ``after``, if given), as rows of cells; every row has the header's width."""
    lines = markdown.splitlines()
    first = lines.index(after) if after else 0
    start = next(i for i in range(first, len(lines)) if lines[i].startswith(header_start))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    header = cells(rows[0])
    assert rows[1] == "|" + "---|" * len(header)
    body = [cells(r) for r in rows[2:]]
    assert all(len(r) == len(header) for r in body), "every row has the header's width"
    return [header, *body]


def section(text: str, start: str, end: str = "\n### ") -> str:
    """The text from ``start`` to the next ``end`` (or the end)."""
    after = text.split(start, 1)[1]
    return after.split(end, 1)[0]


# --- the gate, in words -------------------------------------------------------------------------


def test_markdown_gate_says_fail_and_each_clause_with_its_numbers() -> None:
    markdown = render_markdown(make_result())
    gate = section(markdown, "### Gate ❌ failed\n\n", "\n| target")
    assert gate.splitlines() == [
        "**FAIL** (2 clauses: 1 pass, 1 fail, 0 skipped): failed: significant(tuned.rouge\\_l "
        "\\> base.rouge\\_l + 0.02) is false",
        "",
        "- **FAIL** ❌ `significant(tuned.rouge_l > base.rouge_l + 0.02)` — Δ = 0.15; 95% "
        "interval \\[-0.2, 0.5\\]; margin 0.02; n = 8; p = 0.21 (Holm) — not significant: the "
        "95% interval of tuned.rouge\\_l - base.rouge\\_l is \\[-0.2, 0.5\\] (n = 8), not "
        "entirely above 0.02",
        "- **PASS** ✅ `tuned.rouge_l >= production.rouge_l` — 0.6375 vs 0.55",
        "",
        "The verdict judged tuned model projects/p/locations/l/endpoints/7, held-out set "
        "sha256 abababababab…, 8 examples.",
    ]


def test_markdown_gate_pass_skip_and_a_significant_clause_that_held() -> None:
    markdown = render_markdown(make_result(verdict=passing_verdict(), binding={}))
    gate = section(markdown, "### Gate ✅ passed\n\n")
    assert gate.splitlines()[0].startswith("**PASS** (2 clauses: 1 pass, 0 fail, 1 skipped): ")
    # A clause that held shows its numbers; its note would only repeat them.
    assert (
        "- **PASS** ✅ `significant(tuned.rouge_l > base.rouge_l + 0.02)` — Δ = 0.15; 97.5% "
        "interval \\[0.05, 0.25\\]; margin 0.02; n = 8; p = 0.004 (Holm)\n"
    ) in gate
    assert (
        "- **SKIP** ⏭️ `tuned.exact_match >= production.exact_match` — skipped: no production "
        "model\n"
    ) in gate
    assert "Gate" not in render_markdown(make_result(verdict=None))


def test_pass_and_fail_are_words_without_an_emoji_font() -> None:
    """Where no emoji font exists the marks are blank boxes: the words carry the verdict."""
    emoji = re.compile("[\u2705\u274c\u23ed\ufe0f]")
    for verdict, words in ((failing_verdict(), ["FAIL", "PASS"]), (passing_verdict(), ["PASS"])):
        result = make_result(verdict=verdict)
        for page in (render_markdown(result), render_html(result)):
            plain = emoji.sub("", page)
            for word in words:
                assert word in plain
    plain = emoji.sub("", render_markdown(make_result(verdict=passing_verdict())))
    assert "**SKIP**" in plain


def test_html_gate_table_has_the_interval_and_margin() -> None:
    page = render_html(make_result())
    assert (
        "<h2>Gate: <span class='verdict fail'>FAIL</span> <span class='muted'>(2 clauses: "
        "1 pass, 1 fail, 0 skipped)</span></h2>"
    ) in page
    rows = re.findall(r"<tr class='clause (\w+)'>(.*?)</tr>", page)
    assert [state for state, _ in rows] == ["fail", "pass"]
    significant = re.findall(r"<td[^>]*>(.*?)</td>", rows[0][1])
    assert significant[0] == "FAIL"
    assert significant[1:7] == [
        "<code>significant(tuned.rouge_l &gt; base.rouge_l + 0.02)</code>",
        "Δ = 0.15",
        "[-0.2, 0.5] at 95%",
        "0.02",
        "8",
        "0.21",
    ]
    assert significant[7].startswith("not significant: ")
    plain = re.findall(r"<td[^>]*>(.*?)</td>", rows[1][1])
    assert plain[:4] == [
        "PASS",
        "<code>tuned.rouge_l &gt;= production.rouge_l</code>",
        "0.6375 vs 0.55",
        "–",
    ]


# --- comparisons and their intervals ------------------------------------------------------------


def test_markdown_comparison_tables_per_pair() -> None:
    markdown = render_markdown(make_result())
    # tuned − base first, whatever order the result lists its pairs in.
    assert markdown.index("#### tuned − base") < markdown.index("#### tuned − production")
    assert table(markdown, "| metric | Δ", "#### tuned − base") == [
        ["metric", "Δ", "95% interval", "wins / ties / losses", "n", "McNemar p", "reading"],
        [
            "exact_match",
            "+0.000",
            "[−0.375, +0.375]",
            "2 / 4 / 2",
            "8",
            "1.000",
            "no clear difference",
        ],
        ["rouge_l", "+0.150", "[−0.200, +0.500]", "4 / 1 / 3", "8", "–", "no clear difference"],
        ["output_length", "+1.0", "[+1.0, +1.0]", "8 / 0 / 0", "8", "–", "tuned higher"],
    ]
    # Two confidences in one table: each interval says its own.
    assert table(markdown, "| metric | Δ", "#### tuned − production") == [
        ["metric", "Δ", "interval", "wins / ties / losses", "n", "McNemar p", "reading"],
        [
            "exact_match",
            "−0.125",
            "[−0.500, +0.250] at 95%",
            "1 / 5 / 2",
            "8",
            "1.000",
            "no clear difference",
        ],
        ["rouge_l", "+0.087", "[+0.010, +0.170] at 90%", "5 / 1 / 2", "8", "–", "tuned better"],
    ]


def test_small_p_values_and_worse_readings() -> None:
    result = make_result(
        comparisons={
            "tuned-base": {"exact_match": Comparison(-0.5, -0.75, -0.25, 0.0004, 0, 4, 4, 8)}
        }
    )
    rows = table(render_markdown(result), "| metric | Δ")
    assert rows[1] == [
        "exact_match",
        "−0.500",
        "[−0.750, −0.250]",
        "0 / 4 / 4",
        "8",
        "< 0.001",
        "tuned worse",
    ]
    assert "<td class='worse'>tuned worse</td>" in render_html(result)


def test_html_comparison_tables() -> None:
    page = render_html(make_result())
    assert "<h2>Paired comparisons</h2>" in page
    assert page.index("<h3>tuned − base</h3>") < page.index("<h3>tuned − production</h3>")
    assert (
        "<tr><td><code>rouge_l</code></td><td class='num'>+0.150</td>"
        "<td class='num'>[−0.200, +0.500]</td><td class='num'>4 / 1 / 3</td>"
        "<td class='num'>8</td><td class='num'>–</td><td class=''>no clear difference</td></tr>"
    ) in page
    assert "<td class='num'>[+0.010, +0.170] at 90%</td>" in page
    assert "<td class='better'>tuned better</td>" in page


def whiskers(chart: str) -> list[tuple[float, float, float]]:
    """(x1, x2, y) of each whisker line of a chart."""
    found = re.findall(
        r'<line class="whisker" x1="([\d.]+)" y1="([\d.]+)" x2="([\d.]+)" y2="[\d.]+"', chart
    )
    return [(float(x1), float(x2), float(y)) for x1, y, x2 in found]


def test_svg_chart_whiskers_span_the_interval() -> None:
    chart = svg_chart(make_result(), "rouge_l")
    # Both pairs on one scale: the widest end is 0.5, so ±0.5 spans the 240-wide plot from
    # x = 100, zero at 220: -0.2 → 172, 0.5 → 340; 0.01 → 222.4, 0.17 → 260.8.
    lines = whiskers(chart)
    assert [(x1, x2) for x1, x2, _ in lines] == [(172.0, 340.0), (222.4, 260.8)]
    assert lines[0][2] < lines[1][2]
    assert re.findall(r'<circle class="estimate" cx="([\d.]+)"', chart) == ["256.0", "241.0"]
    assert chart.count('<line class="cap"') == 4
    assert '<line class="zero" x1="220.0"' in chart
    assert "<title>tuned − base: +0.150, 95% interval [−0.200, +0.500], n = 8</title>" in chart
    assert ">vs base</text>" in chart and ">vs production</text>" in chart
    # Bars stay: shares on a 0-1 scale 240 wide.
    widths = re.findall(r'<rect x="100" y="\d+" width="([\d.]+)"', chart)
    assert widths == ["153.0", "117.0", "132.0"]  # 0.6375, 0.4875, 0.55
    # No comparison, no whiskers.
    assert whiskers(svg_chart(make_result(comparisons={}), "rouge_l")) == []


def test_svg_chart_bars() -> None:
    result = make_result(comparisons={})
    lengths = svg_chart(result, "output_length")
    # Lengths are drawn against the longest; a target without the metric has no bar.
    assert re.findall(r'width="([\d.]+)" height="20"', lengths) == ["240.0"]
    assert "<title>rouge_l by target</title>" in svg_chart(result, "rouge_l")
    assert "no value" in svg_chart(result, "json_valid")


# --- the examples that flipped ------------------------------------------------------------------


def test_flips_are_judged_on_the_gate_metric_not_the_spec_first() -> None:
    result = make_result()
    assert result.metrics[0] == "exact_match"
    assert gate_metrics(result) == ["rouge_l"]
    assert flip_metrics(result) == ["rouge_l"]
    assert regression_metric(result) == "rouge_l"
    markdown = render_markdown(result)
    assert "### Examples that flipped on rouge_l" in markdown
    assert "flipped on exact_match" not in markdown
    # Without the binding, the verdict's clauses say what the gate reads.
    assert gate_metrics(make_result(binding={})) == ["rouge_l"]
    assert gate_metrics(make_result(binding={}, verdict=passing_verdict())) == [
        "exact_match",
        "rouge_l",
    ]
    # Without a gate: the spec's metrics that have a direction and a score per example.
    ungated = make_result(binding={}, verdict=None)
    assert gate_metrics(ungated) == []
    assert flip_metrics(ungated) == ["exact_match", "rouge_l"]


def test_flips_worst_regressions_first_then_biggest_wins() -> None:
    result = make_result()
    found = flips(result, "rouge_l")
    assert [(f.example.index, round(f.gain, 6)) for f in found.regressions] == [
        (2, -0.8),
        (1, -0.4),
        (3, -0.2),
    ]
    assert [(f.example.index, round(f.gain, 6)) for f in found.wins] == [
        (5, 0.9),
        (4, 0.7),
        (6, 0.6),
        (7, 0.4),
    ]
    assert (found.scored, found.worse, found.better, found.same) == (8, 3, 4, 1)
    bounded = flips(result, "rouge_l", worst=2, wins=1)
    assert [f.example.index for f in [*bounded.regressions, *bounded.wins]] == [2, 1, 5]
    assert bounded.worse == 3  # the counts are of all examples, not of those shown
    # On a 0/1 metric, ties are broken by the other metrics: 2 lost more ROUGE-L than 1.
    assert [f.example.index for f in worst_regressions(result, metric="exact_match")] == [2, 1]
    assert [f.example.index for f in biggest_wins(result, metric="exact_match")] == [5, 4]
    regression = worst_regressions(result)[0]
    assert (regression.base, regression.tuned, regression.regression) == (1.0, 0.2, True)
    assert flips(result, "output_length").regressions == []  # no direction, no flips
    no_base = make_result(targets={"tuned": TargetResult("t", {"rouge_l": 1.0})})
    assert worst_regressions(no_base) == []


def test_markdown_flipped_examples_side_by_side() -> None:
    markdown = render_markdown(make_result(), worst=2, wins=2)
    title = "### Examples that flipped on rouge_l"
    intro = section(markdown, title + "\n\n").splitlines()[0]
    assert intro == (
        "rouge_l is a metric of the gate. Of 8 examples: 3 worse with the tuned model, 4 "
        "better, 1 the same; the 2 worst regressions first, then the 2 biggest wins."
    )
    rows = table(markdown, "| #", title)
    assert rows[0] == [
        "#",
        "change",
        "Δ rouge_l",
        "prompt",
        "reference",
        "tuned output",
        "base output",
        "scores (base → tuned)",
        "judge",
    ]
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [
        ("2", "worse", "−0.800"),
        ("1", "worse", "−0.400"),
        ("5", "better", "+0.900"),
        ("4", "better", "+0.700"),
    ]
    assert rows[2][3:] == [
        "prompt 1",
        "reference 1",
        "tuned says 1",
        "base says 1",
        "exact\\_match 1.000 → 0.000; rouge\\_l 0.900 → 0.500; output\\_length 3.0 → 4.0",
        "",
    ]
    # The judge's reasons, made one safe line.
    assert rows[1][8] == (
        "tuned − base: base preferred, in both orders — tuned shown first: base answers the "
        "question / base shown first: tuned \\| drifts off topic"
    )


def test_markdown_when_nothing_regressed() -> None:
    result = make_result(examples=[example(0, (0.0, 0.1), (1.0, 0.9))])
    intro = section(render_markdown(result), "### Examples that flipped on rouge_l\n\n")
    assert "No example scored lower on rouge_l with the tuned model." in intro


def test_html_flipped_examples_in_full() -> None:
    page = render_html(make_result(), worst=1, wins=1)
    assert "<h2>Examples that flipped on rouge_l</h2>" in page
    assert "<h2>Examples that flipped on exact_match</h2>" not in page
    first, second = page.index("<h3>Example 2 "), page.index("<h3>Example 5 ")
    assert first < second
    worst = page[first:second]
    assert (
        "<h3>Example 2 · <span class='worse'>worse</span> · rouge_l 1.000 → 0.200 (−0.800)</h3>"
    ) in worst
    assert worst.index("<h4>tuned output</h4><pre>tuned says 2</pre>") < worst.index(
        "<h4>base output</h4><pre>base says 2</pre>"
    )
    assert "<li><code>rouge_l</code> 0.200</li>" in worst
    assert (
        "<code>tuned − base</code>: base preferred, in both orders</p><ul><li>tuned shown "
        "first: base answers the question</li><li>base shown first: tuned | drifts\noff "
        "topic</li></ul>"
    ) in worst
    assert "<span class='better'>better</span> · rouge_l 0.100 → 1.000 (+0.900)" in page


def test_flips_on_the_judge_metric_follow_its_verdicts() -> None:
    """The judge's verdict on tuned against base decides; its per-example scores (which may
    come from other pairs) only when there is no verdict."""

    def judged(i: int, winner: str | None, tuned: float, consistent: bool = True) -> ExampleResult:
        e = example(i, (0.0, 0.5), (0.0, 0.5))
        e.scores["tuned"]["judge"] = tuned
        e.scores["base"]["judge"] = 1.0 - tuned
        if winner is not None:
            reasons = [f"why {i}, tuned first", f"why {i}, base first"]
            verdict = {"winner": winner, "consistent": consistent, "reasons": reasons}
            e.judge["tuned-base"] = verdict
        return e

    result = make_result(
        metrics=["rouge_l", "judge"],
        examples=[
            judged(0, "tuned", 1.0),
            judged(1, "tie", 0.5, consistent=False),  # the two orders disagreed
            judged(2, "base", 0.0),
            judged(3, None, 0.0),  # no verdict: its scores say base
            judged(4, "base", 1.0),  # the verdict wins over scores from another pair
        ],
        binding={"gate": "tuned.judge >= 0.5"},
        verdict=None,
    )
    assert gate_metrics(result) == flip_metrics(result) == ["judge"]
    found = flips(result, "judge")
    assert [(f.example.index, f.gain) for f in found.regressions] == [
        (2, -1.0),
        (3, -1.0),
        (4, -1.0),
    ]
    assert [f.example.index for f in found.wins] == [0]
    assert (found.same, found.worse, found.better) == (1, 3, 1)
    rows = table(render_markdown(result), "| #")
    assert [(r[0], r[2]) for r in rows[1:]] == [
        ("2", "base preferred"),
        ("3", "−1.000"),
        ("4", "base preferred"),
        ("0", "tuned preferred"),
    ]
    assert rows[1][8] == (
        "tuned − base: base preferred, in both orders — tuned shown first: why 2, tuned first "
        "/ base shown first: why 2, base first"
    )
    page = render_html(result)
    assert "<h3>Example 2 · <span class='worse'>worse</span> · judge: base preferred</h3>" in page
    assert "<li>tuned shown first: why 2, tuned first</li>" in page
    tie = render_markdown(
        make_result(metrics=["judge"], examples=[judged(1, "tie", 0.5, consistent=False)])
    )
    assert "1 the same" in tie


# --- the evaluation's tokens --------------------------------------------------------------------


def test_usage_tokens_and_no_cost_estimate() -> None:
    result = make_result()
    markdown = render_markdown(result)
    assert table(markdown, "| target | prompt tokens") == [
        ["target", "prompt tokens", "output tokens", "total tokens"],
        ["tuned", "5,120", "900", "6,020"],
        ["base", "5,120", "1,400", "6,520"],
        ["judge", "9,000", "300", "9,300"],
        ["all", "19,240", "2,600", "21,840"],
    ]
    assert "no price is known for generation, so there is no cost estimate" in markdown
    page = render_html(result)
    assert "<td>all</td><td class='num'>19,240</td><td class='num'>2,600</td>" in page
    assert "The backend reported no token usage." in render_markdown(make_result(usage={}))
    assert "The backend reported no token usage." in render_html(make_result(usage={}))


# --- the trend ----------------------------------------------------------------------------------


def summary(run: str, created_at: str, rouge: float, passed: bool | None) -> dict[str, Any]:
    """What a run record keeps of an evaluation: its JSON without the examples."""
    doc = make_result(run=run, created_at=created_at, examples=[]).to_json()
    doc["targets"]["tuned"]["metrics"]["rouge_l"] = rouge
    doc["gate"] = None if passed is None else {"passed": passed, "clauses": []}
    doc.pop("examples")
    return doc


def history() -> list[Any]:
    return [
        summary("r-3", "2025-12-20T00:00:00Z", 0.58, False),
        ("r-1", "2025-12-01T00:00:00Z", {"rouge_l": 0.5, "exact_match": 0.25}),
        TrendPoint("r-2", "2025-12-10T00:00:00Z", {"rouge_l": 0.55}, True),
        # An older evaluation of this run: this result stands for it.
        summary("r-20260101", "2025-12-31T00:00:00Z", 0.1, False),
    ]


def test_trend_points() -> None:
    result = make_result()
    points = trend(result, history())
    assert [(p.run, p.metrics.get("rouge_l"), p.passed) for p in points] == [
        ("r-1", 0.5, None),
        ("r-2", 0.55, True),
        ("r-3", 0.58, False),
        ("r-20260101", 0.6375, False),
    ]
    assert points[2].holdout_sha256 == "ab" * 32  # read from the summary's binding
    assert trend(result, history(), limit=2)[0].run == "r-3"
    assert trend(result) == [TrendPoint.from_result(result)]
    # The latest evaluation of a run counts.
    again = [*history(), summary("r-3", "2025-12-25T00:00:00Z", 0.6, True)]
    assert [p.passed for p in trend(result, again) if p.run == "r-3"] == [True]
    assert TrendPoint.from_result(make_result(run="r-9")) in trend(result, [make_result(run="r-9")])
    with pytest.raises(TypeError, match="a history item is a TrendPoint"):
        trend(result, [42])  # type: ignore[list-item]


def test_markdown_trend_table() -> None:
    markdown = render_markdown(make_result(), history=history())
    assert "### Trend over the spec's evaluations" in markdown
    assert table(markdown, "| run") == [
        ["run", "evaluated", "gate", "rouge_l"],
        ["r-1", "2025-12-01T00:00:00Z", "–", "0.500"],
        ["r-2", "2025-12-10T00:00:00Z", "PASS", "0.550"],
        ["r-3", "2025-12-20T00:00:00Z", "FAIL", "0.580"],
        ["r-20260101 (this run)", "2026-01-01T00:00:00Z", "FAIL", "0.637"],
    ]
    assert "Trend" not in render_markdown(make_result())


def test_trend_marks_runs_on_another_held_out_set() -> None:
    other = summary("r-0", "2025-11-01T00:00:00Z", 0.4, True)
    other["binding"]["holdout_sha256"] = "cd" * 32
    markdown = render_markdown(make_result(), history=[other])
    assert table(markdown, "| run")[1][0] == "r-0 (other held-out set)"
    assert "its values do not compare directly" in markdown


def test_trend_chart() -> None:
    points = trend(make_result(), history())
    chart = trend_chart(points, "rouge_l", current="r-20260101")
    [line] = re.findall(r'<polyline class="trend-line" points="([^"]+)"', chart)
    xs = [float(p.split(",")[0]) for p in line.split()]
    ys = [float(p.split(",")[1]) for p in line.split()]
    assert xs == sorted(xs) and len(xs) == 4
    assert ys == sorted(ys, reverse=True)  # rising values climb the chart
    assert re.findall(r'<circle class="point (\w+)( current)?"', chart) == [
        ("skip", ""),
        ("pass", ""),
        ("fail", ""),
        ("fail", " current"),
    ]
    assert ">2025-12-01</text>" in chart and ">2026-01-01</text>" in chart
    # A metric only some points have: the line breaks where the value is missing.
    exact = trend_chart(points, "exact_match")
    assert exact.count("<circle") == 3  # r-2 has none
    [joined] = re.findall(r'<polyline class="trend-line" points="([^"]+)"', exact)
    assert len(joined.split()) == 2  # r-3 to this run; r-1 stands alone
    assert "no value" in trend_chart(points, "json_valid")


def test_html_trend_section() -> None:
    result = make_result()
    page = render_html(result, history=history())
    assert "<h2>Trend over the spec's evaluations</h2>" in page
    assert page.count("<svg") == len(result.metrics) + 1  # one trend chart: the gate's metric
    assert "<td><code>r-20260101 (this run)</code></td>" in page
    assert "<td class='verdict pass'>PASS</td>" in page
    assert "Trend" not in render_html(result)


# --- escaping -----------------------------------------------------------------------------------


def test_markdown_escapes_cell_text() -> None:
    markdown = render_markdown(make_result())
    hostile_row = next(line for line in markdown.splitlines() if line.startswith("| 2 |"))
    assert cells(hostile_row)[3] == (
        "Where is \\<b\\>order\\</b\\> \\| 42? Reply \\*fast\\* \\`now\\` "
        "\\[here\\](http://x) \\& \\$x\\$"
    )
    assert "<b>" not in markdown
    # Every line of every table is one line: the newline in the prompt was folded.
    assert all(line.endswith("|") for line in markdown.splitlines() if line.startswith("|"))


def hostile_result() -> EvaluationResult:
    """Every text a model or a stored document supplies, hostile."""
    payload = " ".join([*PAYLOADS, BIDI, HOSTILE])
    found = []
    for e in examples():
        found.append(
            ExampleResult(
                e.index,
                payload,
                payload,
                {"tuned": payload, "base": payload + " | base"},
                e.scores,
                {"tuned-base": {"winner": "base", "consistent": True, "reasons": [payload]}},
            )
        )
    result = make_result(examples=found)
    targets = dict(result.targets)
    targets["tuned"] = TargetResult(BREAKOUT, targets["tuned"].metrics)
    verdict = GateVerdict(
        False,
        [ClauseResult("tuned.rouge_l > 0.9", False, 0.6, 0.9, payload)],
        payload,
    )
    return make_result(examples=found, targets=targets, verdict=verdict)


def tables(markdown: str) -> list[list[list[str]]]:
    """Every Markdown table, as rows of cells."""
    found: list[list[list[str]]] = []
    previous = ""
    for line in markdown.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                found.append([])
            if not line.startswith("|---"):
                found[-1].append(cells(line))
        previous = line
    return found


def test_markdown_escapes_hostile_text_everywhere() -> None:
    result = hostile_result()
    markdown = render_markdown(result, history=[TrendPoint(BREAKOUT, "2025", {"rouge_l": 0.1})])
    # No HTML: every < is escaped.
    assert "<" not in markdown.replace("\\<", "")
    # No cell broken: every row of every table has its header's width.
    found = tables(markdown)
    assert len(found) == 7  # targets, metrics, two comparisons, flips, trend, tokens
    for rows in found:
        assert all(len(row) == len(rows[0]) for row in rows), rows[0]
    assert "\u202e" not in markdown and "safe\\\\u202etxt.exe" in markdown
    flipped = table(markdown, "| #")
    assert flipped[1][3].startswith("\\<script\\>document.title='pwned';document.body")
    assert flipped[1][8].startswith("tuned − base: base preferred, in both orders — \\<script")
    assert f"| {markdown_cell(BREAKOUT)} |" in markdown  # the tuned model's name
    assert markdown_cell(BREAKOUT).startswith("x'\"\\>\\<script\\>document.body")
    gate = section(markdown, "### Gate ❌ failed\n\n")
    assert gate.startswith("**FAIL** (1 clause: 0 pass, 1 fail, 0 skipped): \\<script\\>")
    assert "- **FAIL** ❌ `tuned.rouge_l > 0.9` — 0.6 vs 0.9 — \\<script\\>" in gate


def test_markdown_cell() -> None:
    assert markdown_cell("a | b\nc") == "a \\| b c"
    assert markdown_cell("x" * 300, 10) == "xxxxxxxxx…"
    assert markdown_cell("back\\slash") == "back\\\\slash"
    assert markdown_cell("  ") == ""
    assert markdown_cell("<img src=x onerror=alert(1)>") == "\\<img src=x onerror=alert(1)\\>"
    assert markdown_cell("a\u202eb\x00c") == "a\\\\u202eb\\\\u0000c"


def test_markdown_code_spans_hold_backticks() -> None:
    markdown = render_markdown(make_result(spec="a`b``c", run="r|1"))
    assert markdown.startswith("## Evaluation of ``` a`b``c ```\n\nRun `r|1` · ")


class _Structure(HTMLParser):
    """Checks that tags nest and collects what the page would load or run."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr"})
    SVG_VOID = frozenset({"line", "circle", "rect", "polyline"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Structure:
    parser = _Structure()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    return parser


#: Every attribute the page itself writes.
ATTRIBUTES = {
    "lang", "charset", "http-equiv", "content", "name", "class", "width", "height", "viewBox",
    "role", "aria-label", "aria-hidden", "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r",
    "fill", "stroke", "stroke-width", "stroke-dasharray", "font-size", "text-anchor", "points",
}  # fmt: skip


def test_html_is_self_contained_and_well_formed() -> None:
    result = make_result()
    page = render_html(result, history=history())
    parser = parse(page)
    assert page.count("<svg") == len(result.metrics) + 1
    assert page.count("</svg>") == page.count("<svg")
    values = " ".join(v or "" for _, v in parser.attributes)
    assert "http" not in values and "//" not in values and "xmlns" not in page
    names = {name.lower() for name, _ in parser.attributes}
    assert names <= {n.lower() for n in ATTRIBUTES}
    assert not set(parser.tags) & {"script", "link", "img", "iframe", "object", "a", "form"}
    assert "@import" not in page and "url(" not in page


def test_html_content_security_policy_comes_first() -> None:
    page = render_html(hostile_result())
    head = page.split("<title>", 1)[0]
    assert head == (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
    )


def test_html_escapes_hostile_text_everywhere() -> None:
    result = hostile_result()
    page = render_html(result, history=[TrendPoint(BREAKOUT, "2025", {"rouge_l": 0.1})])
    parser = parse(page)
    # Only the page's own elements and attributes: nothing the models wrote became markup.
    assert set(parser.tags) <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "code",
        "span", "table", "tr", "th", "td", "div", "figure", "figcaption", "svg",
        "text", "rect", "line", "circle", "g", "polyline", "section", "pre", "ul", "li",
    }  # fmt: skip
    assert parser.tags.count("style") == 1
    names = {name.lower() for name, _ in parser.attributes}
    assert names <= {n.lower() for n in ATTRIBUTES}
    assert not any(n.startswith("on") for n in names)
    assert "javascript:" not in "".join(v or "" for _, v in parser.attributes)
    # ... and every piece of it is shown as text.
    text = "".join(parser.text)
    for payload in PAYLOADS:
        assert payload in text
        assert html.escape(payload) in page
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;;" in page
    assert "\u202e" not in page and "safe\\u202etxt.exe" in text
    # The newlines in outputs are kept in the side-by-side view.
    assert "Where is &lt;b&gt;order&lt;/b&gt; | 42?\nReply *fast*" in page


def test_html_cuts_very_long_text() -> None:
    long = "word " * 10_000
    found = [
        ExampleResult(0, long, "r", {"tuned": long, "base": "b"}, e.scores) for e in examples()[1:2]
    ]
    page = render_html(make_result(examples=found))
    assert "… (30,000 more characters)" in page
    assert len(page) < 100_000


def test_markdown_fits_a_step_summary() -> None:
    long = "word " * 5000
    many = [
        ExampleResult(
            i,
            long,
            long,
            {"base": long, "tuned": "x"},
            {"base": {"rouge_l": 1.0}, "tuned": {"rouge_l": 0.0}},
        )
        for i in range(500)
    ]
    markdown = render_markdown(make_result(examples=many, metrics=["rouge_l"]))
    assert len(markdown.encode()) < 30_000  # GitHub allows 1 MiB per step summary
    assert len(table(markdown, "| #")) == 1 + 5


# --- the metrics and targets tables -------------------------------------------------------------


def test_markdown_metrics_table() -> None:
    markdown = render_markdown(make_result())
    assert table(markdown, "| metric | tuned") == [
        [
            "metric",
            "tuned",
            "base",
            "production",
            "tuned − base",
            "production − base",
            "tuned vs base",
        ],
        ["exact_match", "0.375", "0.375", "0.500", "+0.000", "+0.125", "same"],
        ["rouge_l", "0.637", "0.487", "0.550", "+0.150", "+0.063", "better"],
        ["output_length", "10.5", "–", "–", "–", "–", "–"],
    ]
    assert table(markdown, "| target | model") == [
        ["target", "model", "generation failures"],
        ["tuned", "projects/p/locations/l/endpoints/7", "1"],
        ["base", "gemini-2.5-flash", "0"],
        ["production", "projects/p/locations/l/endpoints/3", "0"],
    ]
    assert markdown.startswith(
        "## Evaluation of `support-tone`\n\nRun `r-20260101` · 2026-01-01T00:00:00Z · "
        "8 held-out examples\n\n### Gate ❌ failed\n"
    )


def test_markdown_marks_regressions_by_direction() -> None:
    result = make_result(
        targets={
            "tuned": TargetResult("t", {"exact_match": 0.25, "output_length": 9.0}),
            "base": TargetResult("b", {"exact_match": 0.5, "output_length": 12.25}),
        }
    )
    rows = table(render_markdown(result), "| metric | tuned")
    assert rows[0] == ["metric", "tuned", "base", "tuned − base", "tuned vs base"]
    assert rows[1] == ["exact_match", "0.250", "0.500", "−0.250", "worse"]
    assert rows[3] == ["output_length", "9.0", "12.2", "−3.2", "–"]  # no better way


def test_markdown_without_a_base_model() -> None:
    result = make_result(
        targets={"tuned": TargetResult("t", {"exact_match": 1.0})},
        metrics=["exact_match"],
        comparisons={},
        verdict=None,
    )
    markdown = render_markdown(result)
    assert table(markdown, "| metric") == [["metric", "tuned"], ["exact_match", "1.000"]]
    assert "flipped" not in markdown and "Paired comparisons" not in markdown


def test_html_metrics_table() -> None:
    page = render_html(make_result())
    assert "<td class='num better'>+0.150</td>" in page
    assert "<td class='num'>0.637</td>" in page


# --- files and JSON -----------------------------------------------------------------------------


def test_write_report(tmp_path: Path) -> None:
    result = make_result()
    written = write_report(result, tmp_path / "out" / "report")
    assert [p.name for p in written] == ["report.md", "report.html", "results.json"]
    assert written[0].read_text(encoding="utf-8") == render_markdown(result)
    assert written[1].read_text(encoding="utf-8") == render_html(result)
    doc = orjson.loads(written[2].read_bytes())
    assert doc == orjson.loads(orjson.dumps(result.to_json()))
    assert EvaluationResult.from_json(doc) == result


def test_write_report_with_history(tmp_path: Path) -> None:
    result = make_result()
    # A generator is read once, for both pages.
    written = write_report(result, tmp_path, history=(item for item in history()))
    markdown = written[0].read_text(encoding="utf-8")
    assert markdown == render_markdown(result, history=history())
    assert "| r-20260101 (this run) |" in markdown
    page = written[1].read_text(encoding="utf-8")
    assert page == render_html(result, history=history())
    assert "trend-line" in page


def test_from_json_reads_older_gates_and_refuses_other_documents() -> None:
    doc = make_result().to_json()
    for clause in doc["gate"]["clauses"]:
        del clause["note"]
    assert EvaluationResult.from_json(doc).verdict is not None
    with pytest.raises(ValueError, match="not an evaluation result: 'targets' is missing"):
        EvaluationResult.from_json({"spec": "a", "run": "b"})
    with pytest.raises(ValueError, match="not an evaluation result"):
        EvaluationResult.from_json({"spec": "a", "run": "b", "targets": []})


def test_a_report_read_back_from_json_is_the_same() -> None:
    result = make_result()
    again = EvaluationResult.from_json(orjson.loads(orjson.dumps(result.to_json())))
    assert render_markdown(again) == render_markdown(result)
    assert render_html(again) == render_html(result)


def test_the_judge_s_self_agreement_is_in_both_reports() -> None:
    judge = {
        "model": "gemini-2.5-pro",
        "pairs": {
            "tuned-base": {"judged": 8, "self_agreement": 0.75, "unparseable": 1},
        },
    }
    result = make_result(binding={**make_result().binding, "judge": judge})
    expected = (
        "Judge gemini-2.5-pro on tuned-base: 8 examples judged in both orders; self-agreement 75%"
    )
    assert expected in render_markdown(result)
    assert expected in html.unescape(render_html(result))
    assert "1 unparseable answers" in render_markdown(result)
    assert "self-agreement" not in render_markdown(make_result())
