"""``vertex-tuner reward test SPEC``: a reinforcement spec's reward on its test cases.

Each case of ``reward.tests`` is scored by Vertex exactly as tuning will score it
(``validateReinforcementTuningReward``; the sandbox emulates it), after any code reward has run
locally in a subprocess with a timeout. Exit 1 when a case's reward is outside its expectation
or the reward errors; ``--offline`` runs only the local part (code rewards).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from vertex_tuner.cli._common import EXIT_INVALID, echo_json, emit, handle_errors, stderr_console
from vertex_tuner.cli.options import load

if TYPE_CHECKING:
    from rich.table import Table

    from vertex_tuner.tuning.rewards import CaseResult


@click.group()
def reward() -> None:
    """Reinforcement rewards: test them before a step is paid for."""


@reward.command("test")
@click.argument("spec_path", metavar="SPEC")
@click.option("--sandbox", is_flag=True, help="Score with the sandbox's emulator of Vertex.")
@click.option(
    "--offline",
    is_flag=True,
    help="Run only what needs no cloud: code rewards, locally (other rewards are not scored).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@handle_errors
def test(spec_path: str, sandbox: bool, offline: bool, as_json: bool) -> None:
    """Score the spec's reward on each case of reward.tests; exit 1 when one is off."""
    from vertex_tuner.errors import SpecError
    from vertex_tuner.tuning.rewards import test_rewards

    spec = load(spec_path, sandbox or offline)
    if spec.reward is None:
        raise SpecError(
            f"{spec.spec_path}: method {spec.method!r} has no reward to test",
            hint="reward test is for method: reinforcement specs",
        )
    if spec.reward.tests is None:
        raise SpecError(
            f"{spec.spec_path}: the reward has no test cases (reward.tests)",
            hint="add reward.tests: rewards/cases.jsonl with lines "
            '{"example": {...}, "response": "...", "expect": 1}',
        )
    if offline:
        results = test_rewards(spec, None)
    else:
        from vertex_tuner.wiring import open_context

        with open_context(spec=spec, sandbox=sandbox) as ctx:
            results = test_rewards(spec, ctx.backends.rewards)
    failed = [r for r in results if not r.passed]
    if as_json:
        echo_json(
            {
                "spec": str(spec.spec_path),
                "offline": offline,
                "cases": [r.to_json() for r in results],
                "passed": len(results) - len(failed),
                "failed": len(failed),
            }
        )
    else:
        emit(_table(str(spec.reward.tests), results), [_line(r) for r in results])
        verdict = "all passed" if not failed else f"{len(failed)} failed"
        stderr_console().print(
            f"{len(results)} case(s): {verdict}"
            + (
                " (offline: code rewards ran locally; the others are scored only by Vertex or "
                "the sandbox)"
                if offline
                else ""
            ),
            markup=False,
        )
    if failed:
        sys.exit(EXIT_INVALID)


def _line(result: CaseResult) -> str:
    mark = ("RAN" if result.partial else "PASS") if result.passed else "FAIL"
    reward = "-" if result.reward is None else f"{result.reward:g}"
    return f"{result.case.line}\t{mark}\t{reward}\t{result.case.expectation}\t{result.error or ''}"


def _table(file: str, results: Sequence[CaseResult]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"reward test cases ({escape(file)})")
    for column in ("line", "result", "reward", "expected", "per reward", "error"):
        table.add_column(column)
    for r in results:
        details = ", ".join(
            f"{escape(name)}={'-' if v is None else f'{v:g}'}" for name, v in r.details.items()
        )
        table.add_row(
            str(r.case.line),
            ("[yellow]RAN[/]" if r.partial else "[green]PASS[/]") if r.passed else "[red]FAIL[/]",
            "-" if r.reward is None else f"{r.reward:g}",
            r.case.expectation,
            details,
            escape(r.error or ""),
        )
    return table
