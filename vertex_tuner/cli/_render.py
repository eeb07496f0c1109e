"""Pure functions that turn results into text and rich tables for people to read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import orjson
from rich.markup import escape
from rich.table import Table

from vertex_tuner.vocabulary import LABEL_SPEC

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import Job
    from vertex_tuner.evaluation.results import EvaluationResult
    from vertex_tuner.records import RunRecord
    from vertex_tuner.runstore import AliasEntry
    from vertex_tuner.tuning import Plan


def _short(name: str | None) -> str:
    return name.rsplit("/", 1)[-1] if name else "-"


def record_table(record: RunRecord) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("run", record.run_id),
        ("spec", f"{record.spec_name} ({record.spec_path or '-'})"),
        ("job", record.job_name or "-"),
        ("state", record.state + (f" / {record.sub_state}" if record.sub_state else "")),
        ("base model", record.base_model),
        ("tuned model", record.tuned_model or "-"),
        ("endpoint", record.endpoint or "-"),
        ("train", f"{record.train.uri or '-'} ({record.train.examples} examples)"),
    ]
    if record.validation is not None:
        rows.append(
            (
                "validation",
                f"{record.validation.uri or '-'} ({record.validation.examples} examples)",
            )
        )
    if record.estimate is not None:
        cost = record.estimate.cost_usd
        rows.append(
            (
                "estimate",
                f"{record.estimate.billable_tokens:,} tokens"
                + (f" ≈ ${cost:,.2f}" if cost is not None else ""),
            )
        )
    if record.billed_tokens is not None:
        rows.append(("billed", f"{record.billed_tokens:,} tokens (reported by Vertex)"))
    if record.data_stats is not None and record.data_stats.truncated_examples:
        rows.append(
            (
                "truncated",
                ("at least " if record.data_stats.count_is_lower_bound else "")
                + f"{record.data_stats.truncated_examples} examples "
                f"({(record.dropped_fraction or 0):.1%})",
            )
        )
    if record.error is not None:
        rows.append(("error", f"[red]{escape(record.error.message)}[/]"))
    evaluation = record.evaluation or {}
    if evaluation:
        targets = evaluation.get("targets") or {}
        for role in ("tuned", "base", "production"):
            metrics = (targets.get(role) or {}).get("metrics") or {}
            if metrics:
                values = ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items()))
                rows.append((f"evaluated: {role}", values))
        gate = evaluation.get("gate")
        if gate:
            colour = "green" if gate.get("passed") else "red"
            rows.append(("gate", f"[{colour}]{escape(str(gate.get('explanation', '')))}[/]"))
    if record.sandbox:
        rows.append(("sandbox", "yes: local emulators, not Google Cloud"))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _ids_table(*headers: str, ids: int) -> Table:
    """A table whose first ``ids`` columns hold identifiers: those are never cut (the others
    wrap), since at 80 columns a cut id makes every row look the same."""
    table = Table()
    for i, header in enumerate(headers):
        if i < ids:
            table.add_column(header, no_wrap=True, overflow="ignore")
        else:
            table.add_column(header, overflow="fold")
    return table


def jobs_table(jobs: Sequence[Job]) -> Table:
    table = _ids_table("job", "spec", "state", "created", "tuned model", ids=2)
    for job in jobs:
        table.add_row(
            _short(job.name),
            job.labels.get(LABEL_SPEC, "-"),
            job.state.value,
            job.create_time or "-",
            _short(job.tuned_model),
        )
    return table


def runs_table(records: Sequence[RunRecord]) -> Table:
    table = _ids_table("run", "job", "state", "tuned model", "created", ids=2)
    for record in records:
        table.add_row(
            record.run_id,
            _short(record.job_name),
            record.state,
            _short(record.tuned_model),
            record.created_at,
        )
    return table


def plan_text(plan: Plan) -> str:
    from vertex_tuner.tuning.plan import ASSUMED_EPOCHS_NOTE, epochs_assumed

    est = plan.estimate
    cost = f"${est.cost_usd:,.2f}" if est.cost_usd is not None else "unknown"
    epochs = f"{est.epochs} epoch(s){' (assumed)' if epochs_assumed(est) else ''}"
    if est.calibrated_on is not None:
        high = f"${est.cost_high_usd:,.2f}" if est.cost_high_usd is not None else "unknown"
        estimate = (
            f"estimate: ≈ {est.billable_tokens:,} tokens ({est.billable_tokens_low or 0:,}–"
            f"{est.billable_tokens_high or 0:,}, calibrated on {est.calibrated_on:,} examples "
            f"counted by {est.counted_by}) over {epochs}, {cost} (up to {high}; prices as of "
            f"{est.prices_as_of or '-'})"
        )
    else:
        estimate = (
            f"estimate: ~{est.billable_tokens:,} billable tokens over {epochs}, "
            f"{cost} (estimated locally; prices as of {est.prices_as_of or '-'})"
        )
    lines = [f"plan: {plan.action} ({plan.reason})", f"fingerprint: {plan.fingerprint}", estimate]
    if epochs_assumed(est):
        lines.append(f"note: {ASSUMED_EPOCHS_NOTE}")
    if plan.budget_usd is not None:
        verdict = "OVER BUDGET" if plan.over_budget else "within budget"
        lines.append(f"budget: ${plan.budget_usd:,.2f} ({verdict})")
    for path, uri in plan.uploads:
        lines.append(f"upload: {path.name} -> {uri}")
    doc = plan.to_json()
    lines.append("request:")
    lines.append(orjson.dumps(doc["request"], option=orjson.OPT_INDENT_2).decode())
    lines.append("request body (what google-genai sends to Vertex):")
    lines.append(orjson.dumps(doc["request_body"], option=orjson.OPT_INDENT_2).decode())
    return "\n".join(lines)


def evaluation_table(result: EvaluationResult) -> Table:
    """Metrics per target, with the tuned model's difference from the base."""
    roles = list(result.targets)
    table = Table("metric", *roles, title=f"{result.spec} · run {result.run}")
    base = result.targets.get("base")
    for metric in result.metrics:
        cells = [metric]
        for role in roles:
            value = result.targets[role].metrics.get(metric)
            cell = "-" if value is None else f"{value:.3f}"
            if role == "tuned" and base is not None and value is not None:
                ref = base.metrics.get(metric)
                if ref is not None:
                    cell += f" ({value - ref:+.3f})"
            cells.append(cell)
        table.add_row(*cells)
    return table


def aliases_table(name: str, entries: Mapping[str, AliasEntry]) -> Table:
    """Each alias and its moves, newest first: the first row under an alias is where it points."""
    table = _ids_table("run", "moved", "action", "from", "by", "why", ids=1)
    table.title = name
    for alias, entry in sorted(entries.items()):
        history = list(reversed(entry.history)) or [{"run_id": entry.run_id, "at": entry.set_at}]
        for i, move in enumerate(history):
            if i == 0:
                table.add_section()
                table.add_row(f"[bold]{name}@{alias}[/]", *[""] * 5)
            table.add_row(
                str(move.get("run_id", "")),
                str(move.get("at", "")),
                str(move.get("action", "")),
                str(move.get("previous") or "-"),
                str(move.get("actor") or "-"),
                str(move.get("reason") or "-"),
            )
    return table
