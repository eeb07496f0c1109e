"""Pure functions that render a validation report for people and for GitHub Actions.

They live with the CLI because they present (rich markup, a Console): the dataset package only
builds the :class:`~vertex_tuner.dataset.Report`, whose JSON form is
:meth:`vertex_tuner.dataset.Report.to_json`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console

    from vertex_tuner.dataset.validate import Report


#: Methods whose training answers the job itself generates (the teacher writes them, or each
#: step samples them): the dataset's tokens are its prompts only.
_ANSWERS_WRITTEN_DURING_THE_JOB = frozenset({"distillation", "reinforcement"})


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(report: Report, default_file: str) -> list[str]:
    """``::error file=…,line=…,title=code::message`` lines (and ``::warning``) for GitHub
    Actions, which shows them on the pull request's diff."""
    out = []
    for kind, findings in (("error", report.errors), ("warning", report.warnings)):
        for f in findings:
            props = f"file={_escape_property(f.file or default_file)}"
            if f.line is not None:
                props += f",line={f.line}"
            props += f",title={_escape_property(f.code)}"
            message = f"{f.field}: {f.message}" if f.field else f.message
            out.append(f"::{kind} {props}::{_escape_data(message)}")
    return out


def render_text(report: Report, console: Console, *, source: str | None = None) -> None:
    """The readable report: each finding as ``file:line: field: message (code)``, then the
    figures and a verdict. ``source`` names the file for findings that carry none."""
    findings = [*report.errors, *report.warnings]
    source = source or next((f.file for f in findings if f.file), None) or "dataset"
    for f in findings:
        where = f.file or source
        if f.line is not None:
            where += f":{f.line}"
        field = f" {f.field}:" if f.field else ""
        colour = "red" if f.severity == "error" else "yellow"
        console.print(
            f"[{colour}]{f.severity}[/] {escape(where)}:{escape(field)} {escape(f.message)} "
            f"[dim]({f.code})[/]",
            highlight=False,
        )
    s = report.stats
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim")
    table.add_column()
    table.add_row("format", str(s.get("format") or "unknown (no example read)"))
    table.add_row(
        "examples",
        f"{s.get('examples', 0):,} accepted: train {s.get('train_examples', 0):,}, "
        f"validation {s.get('validation_examples', 0):,}, "
        f"held out {s.get('holdout_examples', 0):,}",
    )
    for label, key in (("tokens in", "input_tokens"), ("tokens out", "output_tokens")):
        d = s.get(key, {})
        table.add_row(
            label,
            f"median {d.get('median', 0):,}, p95 {d.get('p95', 0):,}, max {d.get('max', 0):,}",
        )
    cost = s.get("estimated_cost_usd")
    billable = (
        f"~{s.get('billable_tokens', 0):,} tokens ({s.get('epochs')} epoch(s)) on "
        f"{s.get('model')}" + (f" ≈ ${cost:,.2f}" if cost is not None else "")
    )
    if s.get("method") in _ANSWERS_WRITTEN_DURING_THE_JOB:
        spec = source if source.endswith((".yaml", ".yml")) else "SPEC"
        billable = (
            f"not known before the job ({s.get('epochs')} epoch(s)) on {s.get('model')}: "
            f"the answers are written while it runs ({s.get('method')}); the plan's "
            f"estimate: vertex-tuner submit {spec} --dry-run"
        )
    table.add_row("billable", billable)
    if "budget_usd" in s:
        table.add_row("budget", f"${s['budget_usd']:,.2f}")
    if s.get("truncated_examples_expected"):
        how = "near-limit ones counted exactly" if s.get("exact_tokens") else "estimated"
        table.add_row("truncated", f"{s['truncated_examples_expected']:,} example(s) ({how})")
    table.add_row("note", f"{s.get('token_estimate')}; prices as of {s.get('prices_as_of')}")
    console.print(table)
    n_errors = s.get("error_count", len(report.errors))
    n_warnings = s.get("warning_count", len(report.warnings))
    verdict = "[green]ok[/]" if report.ok else f"[red]{n_errors:,} error(s)[/]"
    console.print(f"{escape(source)}: {verdict}, {n_warnings:,} warning(s)")
