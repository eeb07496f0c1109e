"""Pure functions that render a validation report for people, for JSON and for GitHub."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console

    from vertex_tuner.dataset.validate import Report


def _escape_annotation(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_annotations(report: Report, default_file: str) -> list[str]:
    """``::error file=…,line=…::message`` lines for GitHub Actions."""
    out = []
    for kind, findings in (("error", report.errors), ("warning", report.warnings)):
        for f in findings:
            props = f"file={f.file or default_file}"
            if f.line is not None:
                props += f",line={f.line}"
            props += f",title={f.code}"
            out.append(f"::{kind} {props}::{_escape_annotation(f.message)}")
    return out


def render_text(report: Report, console: Console, *, source: str) -> None:
    """The readable report: findings with file:line, then the figures."""
    for f in [*report.errors, *report.warnings]:
        where = f.file or source
        if f.line is not None:
            where += f":{f.line}"
        field = f" {f.field}:" if f.field else ""
        colour = "red" if f.severity == "error" else "yellow"
        console.print(
            f"[{colour}]{f.severity}[/] {where}:{field} {f.message} [dim]({f.code})[/]",
            highlight=False,
        )
    s = report.stats
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim")
    table.add_column()
    table.add_row("format", str(s.get("format")))
    table.add_row(
        "examples",
        f"{s.get('examples', 0):,} (train {s.get('train_examples', 0):,}, "
        f"validation {s.get('validation_examples', 0):,}, "
        f"held out {s.get('holdout_examples', 0):,})",
    )
    tin, tout = s.get("input_tokens", {}), s.get("output_tokens", {})
    table.add_row(
        "tokens in",
        f"median {tin.get('median', 0):,}, p95 {tin.get('p95', 0):,}, max {tin.get('max', 0):,}",
    )
    table.add_row(
        "tokens out",
        f"median {tout.get('median', 0):,}, p95 {tout.get('p95', 0):,}, max {tout.get('max', 0):,}",
    )
    cost = s.get("estimated_cost_usd")
    table.add_row(
        "billable",
        f"~{s.get('billable_tokens', 0):,} tokens over {s.get('epochs')} "
        f"epoch(s) on {s.get('model')}" + (f" ≈ ${cost:,.2f}" if cost is not None else ""),
    )
    if "budget_usd" in s:
        table.add_row("budget", f"${s['budget_usd']:,.2f}")
    table.add_row("note", f"{s.get('token_estimate')}; prices as of {s.get('prices_as_of')}")
    console.print(table)
    verdict = "[green]ok[/]" if report.ok else f"[red]{len(report.errors)} error(s)[/]"
    console.print(f"{source}: {verdict}, {len(report.warnings)} warning(s)")
