"""What a retrain tells GitHub Actions: a step-summary section, step outputs, error annotations.

Pure functions of a :class:`~vertex_tuner.release.RetrainOutcome`, plus the two writers that
append to the files the runner names in ``GITHUB_STEP_SUMMARY`` and ``GITHUB_OUTPUT``.
Workflow-command text is escaped the way the runner unescapes it, so a message with a newline,
a ``%`` or a ``::`` cannot end the annotation early or inject another command.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from vertex_tuner.errors import EXIT_CODES

if TYPE_CHECKING:
    from vertex_tuner.release import RetrainOutcome

_MARKS = {True: "✅", False: "❌"}


def escape_data(text: str) -> str:
    """A workflow command's message, escaped as the runner expects (``%``, CR, LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: the data escapes, plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def error_annotation(outcome: RetrainOutcome) -> str:
    """``::error title=…::…`` for a failed retrain, naming the spec and the first error line."""
    why = (outcome.error or "").splitlines()[0] if outcome.error else ""
    text = f"{outcome.message}: {why}" if why else outcome.message
    title = escape_property(f"retrain {outcome.spec_path}")
    return f"::error title={title}::{escape_data(text)}"


def warning_annotations(outcome: RetrainOutcome) -> list[str]:
    """``::warning title=…::…`` for each of the outcome's warnings (a base retiring soon)."""
    title = escape_property(f"retrain {outcome.spec_path}")
    return [f"::warning title={title}::{escape_data(w)}" for w in outcome.warnings]


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def summary_section(outcome: RetrainOutcome, report_markdown: str | None = None) -> str:
    """The Markdown section one spec adds to the job summary."""
    lines: list[str] = []
    if outcome.spec_name and outcome.plan is not None:
        lines.append(f"## {_code(outcome.spec_name)} ({outcome.spec_path})")
    else:
        lines.append(f"## {_code(outcome.spec_path)}")
    lines.append("")
    if outcome.plan is not None and outcome.record is not None:
        estimate = outcome.plan.estimate
        cost = f" ≈ ${estimate.cost_usd:,.2f}" if estimate.cost_usd is not None else ""
        lines.append(
            f"- plan: **{outcome.plan.action}**, job {_code(outcome.record.job_name or '')}, "
            f"run {_code(outcome.record.run_id)}"
        )
        lines.append(
            f"- estimate: ~{estimate.billable_tokens:,} billable tokens{cost}; uploaded "
            f"{outcome.bytes_uploaded:,} bytes"
        )
        lines.append("")
    for warning in outcome.warnings:
        lines.extend([f"> [!WARNING]\n> {' '.join(warning.splitlines())}", ""])
    lines.extend(_evaluation_cost(outcome))
    if outcome.record is not None and outcome.record.lineage:
        lineage = outcome.record.lineage
        lines.append(
            f"- re-tuned on {_code(str(lineage.get('to_base')))} from "
            f"{_code(str(lineage.get('from_base')))}, against run "
            f"{_code(str(lineage.get('replaces') or 'none'))}: {lineage.get('reason')}"
        )
        lines.append("")
    if report_markdown:
        lines.extend([report_markdown.rstrip(), ""])
    if outcome.error:
        lines.extend(["```text", f"error: {outcome.error}"])
        if outcome.hint:
            lines.append(f"  hint: {outcome.hint}")
        lines.extend(["```", ""])
    lines.append(final_line(outcome))
    return "\n".join(lines) + "\n\n"


def _evaluation_cost(outcome: RetrainOutcome) -> list[str]:
    """The evaluation's requests and estimated cost, as the summary's bullet."""
    evaluation = outcome.evaluation
    cost = evaluation.estimate if evaluation else {}
    if evaluation is None or cost.get("cost_usd") is None:
        return []
    modes = ", ".join(sorted(set((evaluation.binding.get("modes") or {}).values())))
    return [
        f"- evaluation: {cost.get('requests', 0):,} requests ({modes}), "
        f"≈ ${cost['cost_usd']:,.4f} (at most ${cost.get('cost_high_usd') or 0:,.4f})",
        "",
    ]


def final_line(outcome: RetrainOutcome, *, markdown: bool = True) -> str:
    """The outcome in one line: a mark, the outcome, and what it means."""

    def bold(text: str) -> str:
        return f"**{text}**" if markdown else text

    if outcome.outcome == "running":
        return f"⏳ {bold('still running')}: {outcome.message}."
    if outcome.ok:
        return f"{_MARKS[True]} {bold(outcome.outcome)}: {outcome.message}."
    meaning = EXIT_CODES.get(outcome.exit_code, "unexpected failure")
    return f"{_MARKS[False]} {bold(outcome.message)} (exit {outcome.exit_code}: {meaning})"


def step_outputs(outcome: RetrainOutcome) -> dict[str, str]:
    """The retrain step's outputs: outcome, message (plain text, for notifications), run_id,
    spec_name."""
    return {
        "outcome": outcome.outcome,
        "message": final_line(outcome, markdown=False),
        "run_id": outcome.run_id or "",
        "spec_name": outcome.spec_name or "",
    }


def append_summary(text: str, environ: Mapping[str, str] = os.environ) -> None:
    path = environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with Path(path).open("a", encoding="utf-8") as f:
            f.write(text)


def append_outputs(values: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> None:
    """Append to ``GITHUB_OUTPUT`` in the multi-line form, so no value can break the file."""
    path = environ.get("GITHUB_OUTPUT")
    if not path:
        return
    with Path(path).open("a", encoding="utf-8") as f:
        for key, value in values.items():
            delimiter = f"vertex_tuner_{uuid.uuid4().hex}"
            f.write(f"{key}<<{delimiter}\n{value}\n{delimiter}\n")
