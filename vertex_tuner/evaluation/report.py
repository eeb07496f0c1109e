"""Evaluation reports: Markdown for a GitHub step summary, a self-contained HTML page, JSON.

Pure functions of an :class:`~vertex_tuner.evaluation.results.EvaluationResult`, except
:func:`write_report`, which writes their output to a folder.

- Markdown (``report.md``): the targets, a metrics table with each target's difference from the
  base model, the gate's verdict clause by clause, and the examples where the tuned model
  regressed most against the base. Text from prompts and outputs is folded to one line,
  shortened, and escaped so that it cannot break the table or inject HTML or links; it is fit
  for ``$GITHUB_STEP_SUMMARY``, which GitHub caps at 1 MiB.
- HTML (``report.html``): the same, plus one inline SVG bar chart per metric and the worst
  regressions side by side in full. Inline CSS, no script, nothing loaded from anywhere (a
  Content-Security-Policy says so to the browser); every piece of text is HTML-escaped.
- ``results.json``: :meth:`EvaluationResult.to_json`.

A regression is judged on the first per-example metric of the spec that has a direction
(``higher_is_better`` is not None), per example, tuned against base.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

from vertex_tuner.evaluation.gate import ClauseResult, GateVerdict, fmt
from vertex_tuner.evaluation.metrics import METRICS, MetricDef
from vertex_tuner.evaluation.results import EvaluationResult, ExampleResult
from vertex_tuner.vocabulary import TARGETS

#: How many regressions the reports show.
WORST = 5
#: Targets in the order reports show them; any other target follows.
_COLOURS = {"tuned": "#1a73e8", "base": "#80868b", "production": "#e8710a"}
_STATE = {True: "✅", False: "❌", None: "⏭️"}


# --- shared -------------------------------------------------------------------------------------


def _roles(result: EvaluationResult) -> list[str]:
    known = [r for r in TARGETS if r in result.targets]
    return known + [r for r in result.targets if r not in TARGETS]


def _metric(name: str) -> MetricDef | None:
    return METRICS.get(name)


def format_value(metric: str, value: float | None) -> str:
    """A metric value as reports show it: shares to three decimals, lengths to one."""
    if value is None:
        return "–"
    definition = _metric(metric)
    if definition is not None and definition.unit != "share":
        return f"{value:.1f}"
    return f"{value:.3f}"


def _delta(metric: str, value: float | None, base: float | None) -> tuple[str, str]:
    """The difference from the base, and whether it is better, worse or the same."""
    if value is None or base is None:
        return "–", "–"
    diff = value - base
    definition = _metric(metric)
    digits = 3 if definition is None or definition.unit == "share" else 1
    text = f"{diff:+.{digits}f}".replace("-", "−")
    if round(diff, digits) == 0:
        return text.replace("−", "+"), "same"
    if definition is None or definition.higher_is_better is None:
        return text, "–"
    return text, "better" if (diff > 0) == definition.higher_is_better else "worse"


@dataclass(frozen=True)
class Regression:
    """An example on which the tuned model scored worse than the base."""

    example: ExampleResult
    metric: str
    base: float
    tuned: float

    @property
    def delta(self) -> float:
        return self.tuned - self.base


def _directional(result: EvaluationResult) -> list[MetricDef]:
    """The spec's per-example metrics that have a direction, in the spec's order."""
    found = []
    for name in result.metrics:
        definition = _metric(name)
        if (
            definition is not None
            and definition.per_example is not None
            and definition.higher_is_better is not None
        ):
            found.append(definition)
    return found


def regression_metric(result: EvaluationResult) -> str | None:
    """The metric regressions are judged on: the first per-example one with a direction."""
    directional = _directional(result)
    return directional[0].name if directional else None


def worst_regressions(
    result: EvaluationResult, n: int = WORST, metric: str | None = None
) -> list[Regression]:
    """Up to ``n`` examples where the tuned model fell furthest behind the base, worst first.

    An example regressed when its ``metric`` score (by default :func:`regression_metric`) is
    worse for the tuned model than for the base; examples without both scores are left out.
    Ties, common with 0/1 metrics such as exact match, are broken by the other directional
    metrics in the spec's order, then by the held-out order.
    """
    metric = metric or regression_metric(result)
    definition = _metric(metric) if metric else None
    if definition is None or "base" not in result.targets or "tuned" not in result.targets:
        return []
    order = [definition, *(d for d in _directional(result) if d.name != definition.name)]

    def worsening(example: ExampleResult, d: MetricDef) -> float:
        tuned = example.scores.get("tuned", {}).get(d.name)
        base = example.scores.get("base", {}).get(d.name)
        if tuned is None or base is None:
            return 0.0
        return (base - tuned) if d.higher_is_better is not False else (tuned - base)

    found = []
    for example in result.examples:
        tuned = example.scores.get("tuned", {}).get(definition.name)
        base = example.scores.get("base", {}).get(definition.name)
        if tuned is not None and base is not None and worsening(example, definition) > 0:
            key = tuple(-worsening(example, d) for d in order)
            found.append((key, Regression(example, definition.name, base, tuned)))
    found.sort(key=lambda pair: pair[0])
    return [regression for _, regression in found[:n]]


def _clause_detail(clause: ClauseResult) -> str:
    if clause.note:
        return clause.note
    if clause.left is None or clause.right is None:
        return ""
    return f"{fmt(clause.left)} vs {fmt(clause.right)}"


# --- Markdown -----------------------------------------------------------------------------------

# Characters that Markdown or GitHub's HTML rendering would act on inside a table cell; a
# backslash makes each literal (CommonMark lets any ASCII punctuation be escaped).
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~&#!$])")


def markdown_cell(text: str, limit: int = 200) -> str:
    """Text made safe for one Markdown table cell: one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", text)


def _code(text: str) -> str:
    """A Markdown code span outside tables (Markdown is not interpreted inside one)."""
    text = " ".join(text.split())
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _md_metrics(result: EvaluationResult, roles: list[str]) -> list[str]:
    others = [r for r in roles if r != "base"] if "base" in roles else []
    header = ["metric", *roles, *(f"{r} − base" for r in others)]
    if "tuned" in others:
        header.append("tuned vs base")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base = result.targets.get("base")
    for metric in result.metrics:
        values = [result.targets[r].metrics.get(metric) for r in roles]
        cells = [metric, *(format_value(metric, v) for v in values)]
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
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _md_gate(verdict: GateVerdict) -> list[str]:
    mark = "✅ passed" if verdict.passed else "❌ failed"
    lines = [f"### Gate {mark}", "", markdown_cell(verdict.explanation, 2000), ""]
    for clause in verdict.clauses:
        detail = _clause_detail(clause)
        suffix = f" — {markdown_cell(detail, 300)}" if detail else ""
        # A normalised comparison has no backtick or pipe: it is safe in a code span.
        lines.append(f"- {_STATE[clause.passed]} `{clause.text}`{suffix}")
    return [*lines, ""]


def _scores_line(example: ExampleResult, metrics: list[str]) -> str:
    parts = []
    for metric in metrics:
        base = example.scores.get("base", {}).get(metric)
        tuned = example.scores.get("tuned", {}).get(metric)
        if base is None and tuned is None:
            continue
        parts.append(f"{metric} {format_value(metric, base)} → {format_value(metric, tuned)}")
    return "; ".join(parts)


def render_markdown(result: EvaluationResult, *, worst: int = WORST) -> str:
    """The report as GitHub-flavoured Markdown."""
    roles = _roles(result)
    count = len(result.examples)
    lines = [
        f"## Evaluation of {_code(result.spec)}",
        "",
        f"Run {_code(result.run)} · {markdown_cell(result.created_at)} · "
        f"{count} held-out example{'s' if count != 1 else ''}",
        "",
        "| target | model | generation failures |",
        "|---|---|---|",
    ]
    for role in roles:
        target = result.targets[role]
        lines.append(f"| {role} | {markdown_cell(target.model)} | {target.errors} |")
    lines += ["", *_md_metrics(result, roles), ""]
    if result.verdict is not None:
        lines += _md_gate(result.verdict)
    metric = regression_metric(result)
    regressions = worst_regressions(result, worst, metric)
    if metric is not None and "base" in result.targets and "tuned" in result.targets:
        lines.append(f"### Worst regressions against the base model ({metric})")
        lines.append("")
        if not regressions:
            lines.append(f"No example scored lower on {metric} with the tuned model.")
        else:
            lines.append(
                f"| # | Δ {metric} | prompt | reference | base output | tuned output "
                "| scores (base → tuned) |"
            )
            lines.append("|---|---|---|---|---|---|---|")
            for r in regressions:
                e = r.example
                delta, _ = _delta(metric, r.tuned, r.base)
                lines.append(
                    f"| {e.index} | {delta} | {markdown_cell(e.prompt)} | "
                    f"{markdown_cell(e.reference)} | {markdown_cell(e.outputs.get('base', ''))} | "
                    f"{markdown_cell(e.outputs.get('tuned', ''))} | "
                    f"{markdown_cell(_scores_line(e, result.metrics), 400)} |"
                )
        lines.append("")
    return "\n".join(lines)


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:80rem;padding:0 1rem;color:#202124}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.75rem 0}
td,th{border:1px solid #dadce0;padding:.3rem .6rem;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.better{color:#188038}.worse{color:#c5221f}.pass{color:#188038}.fail{color:#c5221f}
.muted{color:#5f6368}code{background:#f1f3f4;padding:0 .2rem;border-radius:3px}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}figure{margin:0}
figcaption{font-weight:600;margin-bottom:.25rem}
.example{border:1px solid #dadce0;border-radius:6px;padding:.75rem 1rem;margin:1rem 0}
.side{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f8f9fa;padding:.5rem;margin:.25rem 0;
border-radius:4px;font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,monospace}
"""
# Nothing on the page may come from elsewhere; the policy tells the browser so.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def svg_chart(result: EvaluationResult, metric: str) -> str:
    """An inline SVG bar chart of one metric across the targets."""
    roles = [r for r in _roles(result) if metric in result.targets[r].metrics]
    values = [result.targets[r].metrics[metric] for r in roles]
    definition = _metric(metric)
    # Shares are drawn on their full 0-1 scale, so bars of different charts compare.
    share = definition is None or definition.unit == "share"
    top = 1.0 if share else max([*values, 0.0]) or 1.0
    label_width, bar_width, bar, gap = 90, 240, 20, 8
    width = label_width + bar_width + 70
    height = max(1, len(roles)) * (bar + gap) + gap
    rows = []
    for i, (role, value) in enumerate(zip(roles, values, strict=True)):
        y = gap + i * (bar + gap)
        length = bar_width * min(max(value, 0.0), top) / top
        rows.append(
            f'<text x="0" y="{y + 15}" font-size="13">{_esc(role)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar}" '
            f'fill="{_COLOURS.get(role, "#5f6368")}"><title>{_esc(role)}: '
            f"{format_value(metric, value)}</title></rect>"
            f'<text x="{label_width + length + 6:.1f}" y="{y + 15}" font-size="13">'
            f"{format_value(metric, value)}</text>"
        )
    if not roles:
        rows.append(f'<text x="0" y="{gap + 15}" font-size="13">no value</text>')
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_esc(metric)} by target"><title>{_esc(metric)}</title>'
        f"{''.join(rows)}</svg>"
    )


def _html_metrics(result: EvaluationResult, roles: list[str]) -> str:
    others = [r for r in roles if r != "base"] if "base" in roles else []
    head = "".join(f"<th>{_esc(h)}</th>" for h in ["metric", *roles])
    head += "".join(f"<th>{_esc(r)} − base</th>" for r in others)
    rows = []
    base = result.targets.get("base")
    for metric in result.metrics:
        cells = [f"<td><code>{_esc(metric)}</code></td>"]
        for role in roles:
            value = result.targets[role].metrics.get(metric)
            cells.append(f"<td class='num'>{format_value(metric, value)}</td>")
        for role in others:
            text, word = _delta(
                metric,
                result.targets[role].metrics.get(metric),
                base.metrics.get(metric) if base else None,
            )
            cls = f"num {word}" if word in ("better", "worse") else "num"
            cells.append(f"<td class='{cls}'>{_esc(text)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _html_gate(verdict: GateVerdict) -> str:
    cls, word = ("pass", "passed") if verdict.passed else ("fail", "failed")
    items = []
    for clause in verdict.clauses:
        detail = _clause_detail(clause)
        extra = f" <span class='muted'>— {_esc(detail)}</span>" if detail else ""
        items.append(f"<li>{_STATE[clause.passed]} <code>{_esc(clause.text)}</code>{extra}</li>")
    return (
        f"<h2>Gate <span class='{cls}'>{word}</span></h2>"
        f"<p>{_esc(verdict.explanation)}</p><ul>{''.join(items)}</ul>"
    )


def _html_regression(result: EvaluationResult, r: Regression) -> str:
    e = r.example
    delta, _ = _delta(r.metric, r.tuned, r.base)
    sides = []
    for role in ("base", "tuned"):
        scores = "".join(
            f"<li><code>{_esc(m)}</code> {format_value(m, e.scores.get(role, {}).get(m))}</li>"
            for m in result.metrics
            if m in e.scores.get(role, {})
        )
        sides.append(
            f"<div><h4>{role}</h4><pre>{_esc(e.outputs.get(role, ''))}</pre><ul>{scores}</ul></div>"
        )
    return (
        f"<section class='example'><h3>Example {e.index} · {_esc(r.metric)} "
        f"{format_value(r.metric, r.base)} → {format_value(r.metric, r.tuned)} "
        f"<span class='worse'>({_esc(delta)})</span></h3>"
        f"<h4>prompt</h4><pre>{_esc(e.prompt)}</pre>"
        f"<h4>reference</h4><pre>{_esc(e.reference)}</pre>"
        f"<div class='side'>{''.join(sides)}</div></section>"
    )


def render_html(result: EvaluationResult, *, worst: int = WORST) -> str:
    """The report as one self-contained HTML page."""
    roles = _roles(result)
    title = f"Evaluation of {result.spec}"
    parts = [
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f"<p class='muted'>run <code>{_esc(result.run)}</code> · {_esc(result.created_at)} · "
        f"{len(result.examples)} held-out examples</p>",
        "<table><tr><th>target</th><th>model</th><th>generation failures</th></tr>",
    ]
    for role in roles:
        target = result.targets[role]
        parts.append(
            f"<tr><td>{_esc(role)}</td><td><code>{_esc(target.model)}</code></td>"
            f"<td class='num'>{target.errors}</td></tr>"
        )
    parts.append("</table>")
    if result.verdict is not None:
        parts.append(_html_gate(result.verdict))
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
    judged = regression_metric(result)
    if judged is not None and "base" in result.targets and "tuned" in result.targets:
        parts.append(f"<h2>Worst regressions against the base model ({_esc(judged)})</h2>")
        regressions = worst_regressions(result, worst, judged)
        if not regressions:
            parts.append(f"<p>No example scored lower on {_esc(judged)} with the tuned model.</p>")
        parts.extend(_html_regression(result, r) for r in regressions)
    parts.append("</body></html>\n")
    return "".join(parts)


# --- files --------------------------------------------------------------------------------------


def write_report(result: EvaluationResult, directory: Path) -> list[Path]:
    """Write report.md, report.html and results.json into ``directory`` (made if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, body in (
        ("report.md", render_markdown(result).encode()),
        ("report.html", render_html(result).encode()),
        ("results.json", orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2) + b"\n"),
    ):
        path = directory / name
        path.write_bytes(body)
        written.append(path)
    return written
