"""Reports: the Markdown tables and their escaping, the self-contained HTML page, the JSON."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from vertex_tuner.evaluation.gate import parse_gate
from vertex_tuner.evaluation.report import (
    markdown_cell,
    regression_metric,
    render_html,
    render_markdown,
    svg_chart,
    worst_regressions,
    write_report,
)
from vertex_tuner.evaluation.results import EvaluationResult, ExampleResult, TargetResult

HOSTILE = "Where is <b>order</b> | 42?\nReply *fast* `now` [here](http://x) & $x$"


def example(
    index: int, base: tuple[float, float], tuned: tuple[float, float], prompt: str = ""
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
    )


def make_result(**changes: object) -> EvaluationResult:
    fields: dict[str, object] = {
        "spec": "support-tone",
        "run": "r-20260101",
        "created_at": "2026-01-01T00:00:00Z",
        "metrics": ["exact_match", "rouge_l", "output_length"],
        "targets": {
            "base": TargetResult("gemini-2.5-flash", {"exact_match": 0.5, "rouge_l": 0.4}),
            "tuned": TargetResult(
                "projects/p/locations/l/endpoints/7",
                {"exact_match": 0.5, "rouge_l": 0.6, "output_length": 10.5},
                errors=1,
            ),
            "production": TargetResult(
                "projects/p/locations/l/endpoints/3", {"exact_match": 0.75, "rouge_l": 0.55}
            ),
        },
        "examples": [
            example(0, (1.0, 1.0), (1.0, 1.0)),  # no change
            example(1, (1.0, 0.9), (0.0, 0.5)),  # exact match lost, ROUGE-L -0.4
            example(2, (1.0, 1.0), (0.0, 0.2), prompt=HOSTILE),  # exact match lost, -0.8
            example(3, (0.0, 0.3), (0.0, 0.1)),  # ROUGE-L only
            example(4, (0.0, 0.2), (1.0, 0.9)),  # better
        ],
        "verdict": parse_gate(
            "tuned.rouge_l >= base.rouge_l + 0.05 and tuned.exact_match >= production.exact_match"
        ).evaluate(
            {
                "tuned": {"rouge_l": 0.6, "exact_match": 0.5},
                "base": {"rouge_l": 0.4, "exact_match": 0.5},
            }
        ),
    }
    fields.update(changes)
    return EvaluationResult(**fields)  # type: ignore[arg-type]


def cells(row: str) -> list[str]:
    """A Markdown table row's cells, split at pipes that are not escaped."""
    assert row.startswith("| ") and row.endswith(" |"), row
    return [c.strip() for c in re.split(r"(?<!\\)\|", row[1:-1])]


def table(markdown: str, header_start: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
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


# --- Markdown ------------------------------------------------------------------------------------


def test_markdown_metrics_table() -> None:
    markdown = render_markdown(make_result())
    assert table(markdown, "| metric") == [
        [
            "metric",
            "tuned",
            "base",
            "production",
            "tuned − base",
            "production − base",
            "tuned vs base",
        ],
        ["exact_match", "0.500", "0.500", "0.750", "+0.000", "+0.250", "same"],
        ["rouge_l", "0.600", "0.400", "0.550", "+0.200", "+0.150", "better"],
        ["output_length", "10.5", "–", "–", "–", "–", "–"],
    ]
    assert table(markdown, "| target") == [
        ["target", "model", "generation failures"],
        ["tuned", "projects/p/locations/l/endpoints/7", "1"],
        ["base", "gemini-2.5-flash", "0"],
        ["production", "projects/p/locations/l/endpoints/3", "0"],
    ]
    assert markdown.startswith(
        "## Evaluation of `support-tone`\n\nRun `r-20260101` · 2026-01-01T00:00:00Z · "
        "5 held-out examples\n"
    )


def test_markdown_marks_regressions_by_direction() -> None:
    result = make_result(
        targets={
            "tuned": TargetResult("t", {"exact_match": 0.25, "output_length": 9.0}),
            "base": TargetResult("b", {"exact_match": 0.5, "output_length": 12.25}),
        }
    )
    rows = table(render_markdown(result), "| metric")
    assert rows[0] == ["metric", "tuned", "base", "tuned − base", "tuned vs base"]
    assert rows[1] == ["exact_match", "0.250", "0.500", "−0.250", "worse"]
    assert rows[3] == ["output_length", "9.0", "12.2", "−3.2", "–"]  # no better way


def test_markdown_gate_section() -> None:
    markdown = render_markdown(make_result())
    section = markdown.split("### Gate ✅ passed\n\n", 1)[1].split("\n\n###", 1)[0]
    assert section.splitlines() == [
        "passed: tuned.rouge\\_l \\>= base.rouge\\_l + 0.05 holds (0.6 vs 0.45; "
        "tuned.rouge\\_l = 0.6, base.rouge\\_l = 0.4); skipped: tuned.exact\\_match \\>= "
        "production.exact\\_match (no production model)",
        "",
        "- ✅ `tuned.rouge_l >= base.rouge_l + 0.05` — 0.6 vs 0.45",
        "- ⏭️ `tuned.exact_match >= production.exact_match` — skipped: no production model",
    ]
    failed = make_result(
        verdict=parse_gate("tuned.rouge_l > 0.9").evaluate({"tuned": {"rouge_l": 0.6}})
    )
    assert "### Gate ❌ failed\n" in render_markdown(failed)
    assert "Gate" not in render_markdown(make_result(verdict=None))


def test_markdown_worst_regressions_side_by_side() -> None:
    markdown = render_markdown(make_result())
    assert "### Worst regressions against the base model (exact_match)\n" in markdown
    rows = table(markdown, "| #")
    assert rows[0] == [
        "#",
        "Δ exact_match",
        "prompt",
        "reference",
        "base output",
        "tuned output",
        "scores (base → tuned)",
    ]
    # Both lost the exact match; ties are broken by ROUGE-L: example 2 lost more.
    assert [r[0] for r in rows[1:]] == ["2", "1"]
    assert rows[2] == [
        "1",
        "−1.000",
        "prompt 1",
        "reference 1",
        "base says 1",
        "tuned says 1",
        "exact\\_match 1.000 → 0.000; rouge\\_l 0.900 → 0.500; output\\_length 3.0 → 4.0",
    ]


def test_markdown_escapes_cell_text() -> None:
    markdown = render_markdown(make_result())
    hostile_row = next(line for line in markdown.splitlines() if line.startswith("| 2 |"))
    assert cells(hostile_row)[2] == (
        "Where is \\<b\\>order\\</b\\> \\| 42? Reply \\*fast\\* \\`now\\` "
        "\\[here\\](http://x) \\& \\$x\\$"
    )
    assert "<b>" not in markdown
    # Every line of every table is one line: the newline in the prompt was folded.
    assert all(line.endswith("|") for line in markdown.splitlines() if line.startswith("|"))


def test_markdown_cell() -> None:
    assert markdown_cell("a | b\nc") == "a \\| b c"
    assert markdown_cell("x" * 300, 10) == "xxxxxxxxx…"
    assert markdown_cell("back\\slash") == "back\\\\slash"
    assert markdown_cell("  ") == ""


def test_markdown_without_a_base_model() -> None:
    result = make_result(
        targets={"tuned": TargetResult("t", {"exact_match": 1.0})}, metrics=["exact_match"]
    )
    markdown = render_markdown(result)
    assert table(markdown, "| metric") == [["metric", "tuned"], ["exact_match", "1.000"]]
    assert "regressions" not in markdown


def test_markdown_when_nothing_regressed() -> None:
    result = make_result(examples=[example(0, (0.0, 0.1), (1.0, 0.9))])
    assert "No example scored lower on exact_match with the tuned model." in render_markdown(result)


def test_markdown_fits_a_step_summary() -> None:
    long = "word " * 5000
    examples = [
        ExampleResult(
            i,
            long,
            long,
            {"base": long, "tuned": "x"},
            {"base": {"exact_match": 1.0}, "tuned": {"exact_match": 0.0}},
        )
        for i in range(500)
    ]
    markdown = render_markdown(make_result(examples=examples, metrics=["exact_match"]))
    assert len(markdown.encode()) < 20_000  # GitHub allows 1 MiB per step summary
    assert len(table(markdown, "| #")) == 1 + 5


# --- regressions ---------------------------------------------------------------------------------


def test_worst_regressions() -> None:
    result = make_result()
    assert regression_metric(result) == "exact_match"
    worst = worst_regressions(result)
    assert [(r.example.index, r.base, r.tuned, r.delta) for r in worst] == [
        (2, 1.0, 0.0, -1.0),
        (1, 1.0, 0.0, -1.0),
    ]
    by_rouge = worst_regressions(result, metric="rouge_l")
    assert [r.example.index for r in by_rouge] == [2, 1, 3]
    assert [round(r.delta, 6) for r in by_rouge] == [-0.8, -0.4, -0.2]
    assert [r.example.index for r in worst_regressions(result, 1, metric="rouge_l")] == [2]
    # A metric with no direction is never a regression metric.
    assert regression_metric(make_result(metrics=["output_length", "rouge_l"])) == "rouge_l"
    assert worst_regressions(make_result(metrics=["output_length"])) == []


# --- HTML ----------------------------------------------------------------------------------------


class _Structure(HTMLParser):
    """Checks that tags nest and collects what the page would load."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []

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


def test_html_is_self_contained_and_well_formed() -> None:
    result = make_result(examples=[example(1, (1.0, 0.9), (0.0, 0.5))])
    page = render_html(result)
    parser = _Structure()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert page.count("<svg") == len(result.metrics) == 3
    assert page.count("</svg>") == 3
    assert "http://" not in page and "https://" not in page
    names = {name for name, _ in parser.attributes}
    assert not names & {"src", "href", "srcset", "action", "xmlns"}
    assert not set(parser.tags) & {"script", "link", "img", "iframe", "object"}
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page  # the browser is told not to load anything either


def test_html_escapes_content() -> None:
    page = render_html(make_result())
    assert "Where is &lt;b&gt;order&lt;/b&gt; | 42?\nReply *fast*" in page  # newlines kept
    assert "<b>order" not in page
    spec = make_result(spec='x"><script>alert(1)</script>')
    assert "<script>" not in render_html(spec)
    assert "&lt;script&gt;" in render_html(spec)


def test_html_shows_gate_metrics_and_regressions() -> None:
    page = render_html(make_result())
    assert "<h2>Gate <span class='pass'>passed</span></h2>" in page
    assert "<code>tuned.rouge_l &gt;= base.rouge_l + 0.05</code>" in page
    assert "<td class='num better'>+0.200</td>" in page
    assert "<h2>Worst regressions against the base model (exact_match)</h2>" in page
    first, second = page.index("<h3>Example 2 "), page.index("<h3>Example 1 ")
    assert first < second
    section = page[first:second]
    assert "<h4>base</h4><pre>base says 2</pre>" in section
    assert "<h4>tuned</h4><pre>tuned says 2</pre>" in section
    assert "exact_match 1.000 → 0.000" in section


def test_svg_chart_bars() -> None:
    result = make_result()
    chart = svg_chart(result, "rouge_l")
    # Shares are drawn on a 0-1 scale 240 wide: 0.6 → 144, 0.4 → 96, 0.55 → 132.
    widths = re.findall(r'<rect x="90" y="\d+" width="([\d.]+)"', chart)
    assert widths == ["144.0", "96.0", "132.0"]
    assert chart.count("<rect") == 3
    assert "<title>rouge_l</title>" in chart
    # Lengths are drawn against the longest; a target without the metric has no bar.
    lengths = svg_chart(result, "output_length")
    assert re.findall(r'width="([\d.]+)" height="20"', lengths) == ["240.0"]
    assert "no value" in svg_chart(result, "json_valid")


# --- files and JSON ------------------------------------------------------------------------------


def test_write_report(tmp_path: Path) -> None:
    result = make_result()
    written = write_report(result, tmp_path / "out" / "report")
    assert [p.name for p in written] == ["report.md", "report.html", "results.json"]
    assert written[0].read_text(encoding="utf-8") == render_markdown(result)
    assert written[1].read_text(encoding="utf-8") == render_html(result)
    doc = orjson.loads(written[2].read_bytes())
    assert doc == orjson.loads(orjson.dumps(result.to_json()))
    assert EvaluationResult.from_json(doc) == result


def test_json_shape() -> None:
    doc = make_result().to_json()
    assert list(doc) == [
        "spec",
        "run",
        "created_at",
        "metrics",
        "targets",
        "gate",
        "binding",
        "examples",
    ]
    assert doc["targets"]["tuned"] == {
        "model": "projects/p/locations/l/endpoints/7",
        "metrics": {"exact_match": 0.5, "rouge_l": 0.6, "output_length": 10.5},
        "errors": 1,
    }
    assert doc["gate"]["passed"] is True
    assert doc["gate"]["clauses"][1] == {
        "text": "tuned.exact_match >= production.exact_match",
        "passed": None,
        "left": None,
        "right": None,
        "note": "skipped: no production model",
    }
    assert doc["examples"][1]["scores"]["tuned"] == {
        "exact_match": 0.0,
        "rouge_l": 0.5,
        "output_length": 4.0,
    }
    assert make_result(verdict=None).to_json()["gate"] is None


def test_from_json_reads_older_gates_and_refuses_other_documents() -> None:
    doc = make_result().to_json()
    for clause in doc["gate"]["clauses"]:
        del clause["note"]
    assert EvaluationResult.from_json(doc).verdict is not None
    with pytest.raises(ValueError, match="not an evaluation result: 'targets' is missing"):
        EvaluationResult.from_json({"spec": "a", "run": "b"})
    with pytest.raises(ValueError, match="not an evaluation result"):
        EvaluationResult.from_json({"spec": "a", "run": "b", "targets": []})
