"""Evaluation reports: Markdown for a GitHub step summary, a self-contained HTML page, JSON.

Pure functions of an :class:`EvaluationResult`; the HTML page has its CSS and one inline SVG
bar chart per metric, and loads nothing from the network.
"""

from __future__ import annotations

import html
from pathlib import Path

import orjson

from vertex_tuner.evaluation.metrics import METRICS
from vertex_tuner.evaluation.results import EvaluationResult, ExampleResult

WORST = 5
_COLOURS = {"tuned": "#2f6fdf", "base": "#9aa0a6", "production": "#e37400"}


def _md(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def worst_regressions(result: EvaluationResult, n: int = WORST) -> list[ExampleResult]:
    """Examples where the tuned model scored furthest below the base (first gated metric)."""
    metric = next(
        (
            m
            for m in result.metrics
            if METRICS[m].higher_is_better and METRICS[m].per_example is not None
        ),
        None,
    )
    if metric is None or "base" not in result.targets:
        return []

    def delta(e: ExampleResult) -> float:
        tuned = e.scores.get("tuned", {}).get(metric)
        base = e.scores.get("base", {}).get(metric)
        return (tuned or 0.0) - (base or 0.0)

    ranked = sorted(result.examples, key=delta)
    return [e for e in ranked[:n] if delta(e) < 0]


def render_markdown(result: EvaluationResult) -> str:
    roles = list(result.targets)
    lines = [f"## Evaluation of `{result.spec}` (run `{result.run}`)", ""]
    lines.append("| metric | " + " | ".join(roles) + " | tuned − base |")
    lines.append("|---|" + "---|" * len(roles) + "---|")
    for metric in result.metrics:
        values = [result.targets[r].metrics.get(metric) for r in roles]
        tuned = result.targets.get("tuned")
        base = result.targets.get("base")
        delta = "–"
        if tuned and base and metric in tuned.metrics and metric in base.metrics:
            delta = f"{tuned.metrics[metric] - base.metrics[metric]:+.3f}"
        lines.append(f"| {metric} | " + " | ".join(_fmt(v) for v in values) + f" | {delta} |")
    lines.append("")
    if result.verdict is not None:
        mark = "✅ passed" if result.verdict.passed else "❌ failed"
        lines.append(f"**Gate {mark}**: {_md(result.verdict.explanation, 400)}")
        lines.append("")
        for clause in result.verdict.clauses:
            state = {True: "✅", False: "❌", None: "⏭️"}[clause.passed]
            lines.append(f"- {state} `{clause.text}`")
        lines.append("")
    worst = worst_regressions(result)
    if worst:
        lines.append("### Worst regressions against the base model")
        lines.append("")
        lines.append("| # | prompt | reference | base | tuned |")
        lines.append("|---|---|---|---|---|")
        for e in worst:
            lines.append(
                f"| {e.index} | {_md(e.prompt)} | {_md(e.reference)} | "
                f"{_md(e.outputs.get('base', ''))} | {_md(e.outputs.get('tuned', ''))} |"
            )
        lines.append("")
    errors = {r: t.errors for r, t in result.targets.items() if t.errors}
    if errors:
        lines.append("Generation failures: " + ", ".join(f"{r}: {n}" for r, n in errors.items()))
    return "\n".join(lines) + "\n"


def _chart(result: EvaluationResult, metric: str) -> str:
    roles = [r for r in result.targets if metric in result.targets[r].metrics]
    values = [result.targets[r].metrics[metric] for r in roles]
    top = max([abs(v) for v in values] + [1e-9])
    width, bar, gap = 360, 22, 8
    height = len(roles) * (bar + gap) + gap
    rows = []
    for i, (role, value) in enumerate(zip(roles, values, strict=True)):
        y = gap + i * (bar + gap)
        w = max(1.0, 220 * abs(value) / top)
        rows.append(
            f'<text x="0" y="{y + 16}" font-size="13">{html.escape(role)}</text>'
            f'<rect x="90" y="{y}" width="{w:.1f}" height="{bar}" '
            f'fill="{_COLOURS.get(role, "#555")}"/>'
            f'<text x="{95 + w:.1f}" y="{y + 16}" font-size="13">{value:.3f}</text>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(metric)}">{"".join(rows)}</svg>'
    )


def render_html(result: EvaluationResult) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Evaluation of {esc(result.spec)}</title>",
        "<style>body{font:14px/1.45 system-ui,sans-serif;margin:2rem;max-width:72rem}"
        "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ddd;"
        "padding:.35rem .6rem;vertical-align:top;text-align:left}.pass{color:#188038}"
        ".fail{color:#c5221f}.charts{display:flex;flex-wrap:wrap;gap:2rem}"
        "figure{margin:0}</style></head><body>",
        f"<h1>Evaluation of {esc(result.spec)}</h1><p>run {esc(result.run)} · "
        f"{esc(result.created_at)}</p>",
    ]
    if result.verdict is not None:
        cls = "pass" if result.verdict.passed else "fail"
        word = "passed" if result.verdict.passed else "failed"
        parts.append(
            f"<p class='{cls}'><strong>Gate {word}</strong>: "
            f"{esc(result.verdict.explanation)}</p><ul>"
        )
        for clause in result.verdict.clauses:
            state = {True: "✅", False: "❌", None: "⏭️"}[clause.passed]
            parts.append(f"<li>{state} <code>{esc(clause.text)}</code></li>")
        parts.append("</ul>")
    parts.append("<div class='charts'>")
    for metric in result.metrics:
        parts.append(
            f"<figure><figcaption>{esc(metric)}: {esc(METRICS[metric].description)}"
            f"</figcaption>{_chart(result, metric)}</figure>"
        )
    parts.append("</div>")
    worst = worst_regressions(result)
    if worst:
        parts.append(
            "<h2>Worst regressions against the base model</h2><table><tr><th>#</th>"
            "<th>prompt</th><th>reference</th><th>base</th><th>tuned</th></tr>"
        )
        for e in worst:
            parts.append(
                f"<tr><td>{e.index}</td><td>{esc(e.prompt)}</td><td>{esc(e.reference)}</td>"
                f"<td>{esc(e.outputs.get('base', ''))}</td>"
                f"<td>{esc(e.outputs.get('tuned', ''))}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(result: EvaluationResult, directory: Path) -> list[Path]:
    """report.md, report.html and results.json in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, body in (
        ("report.md", render_markdown(result).encode()),
        ("report.html", render_html(result).encode()),
        ("results.json", orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2)),
    ):
        path = directory / name
        path.write_bytes(body)
        written.append(path)
    return written
