"""``vertex-tuner prune NAME``: delete the tuned models of NAME's runs that no alias needs.

A tuned model costs nothing while idle, but they pile up. A run's model is kept when an alias
serves the run now, when the run is among the last ``--keep`` moves of an alias's history (so a
rollback still has somewhere to go), when its job did not succeed with a model (nothing to
delete), when a run of NAME is still tuning from it, or when it was deleted before.

Vertex tuned models have versions (``projects/P/locations/L/models/ID@V``), and continuous
tuning puts several runs' versions on one model ID; google-genai's ``models.delete`` deletes the
whole model. So a model ID is deleted only when every run on it may go, once for all of them.

Without ``--yes`` the command only lists. With it, the aliases are read again right before each
delete (an alias may have moved meanwhile), each deleted run's record gets ``model_deleted_at``,
and a model already gone (404) counts as deleted. One model's failure does not stop the others;
the exit code is 1 when any failed.

The reads are bounded: one listing of NAME's records and one read of its alias file, plus one
alias read per model deleted. The choosing and deleting are :mod:`vertex_tuner.pruning`'s.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from vertex_tuner import names
from vertex_tuner.cli._common import (
    EXIT_INVALID,
    echo_json,
    emit,
    handle_errors,
    located,
    stderr_console,
)
from vertex_tuner.cli.options import store_options
from vertex_tuner.pruning import DEFAULT_KEEP, Action, PruneRow

if TYPE_CHECKING:
    from rich.table import Table


def _check_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return names.spec_name(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a spec name: lowercase letters, digits and '-', starting with a "
            "letter (the name: of a job spec, e.g. support-tone)",
            param_hint="NAME",
        ) from None


def _table(name: str, rows: Sequence[PruneRow]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    colours = {"keep": "green", "delete": "yellow", "deleted": "red", "failed": "bold red"}
    table = Table(title=f"tuned models of {name}")
    table.add_column("run", no_wrap=True, overflow="ignore")
    table.add_column("tuned model", overflow="fold")
    table.add_column("action", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for row in rows:
        table.add_row(
            escape(row.run_id),
            escape(row.tuned_model or "-"),
            f"[{colours[row.action]}]{row.action}[/]",
            escape(row.reason),
        )
    return table


def _model_names(rows: Sequence[PruneRow], action: Action) -> list[str]:
    return sorted({r.model_id for r in rows if r.action == action and r.model_id})


def _summary(name: str, keep: int, rows: Sequence[PruneRow], yes: bool) -> str:
    if yes:
        deleted, failed = _model_names(rows, "deleted"), _model_names(rows, "failed")
        text = f"deleted {len(deleted)} model(s)"
        return text + (f"; {len(failed)} failed (see the reasons)" if failed else "")
    wanted = _model_names(rows, "delete")
    if not wanted:
        return "nothing to delete: every model is kept"
    keeping = f" --keep {keep}" if keep != DEFAULT_KEEP else ""
    return (
        f"would delete {len(wanted)} model(s); nothing was deleted. To delete them: "
        f"vertex-tuner prune {name}{keeping} --yes"
    )


@click.command()
@click.argument("name", callback=_check_name)
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=DEFAULT_KEEP,
    show_default=True,
    help="Also keep the runs of each alias's last N moves (promotes and rollbacks).",
)
@click.option("--yes", is_flag=True, help="Delete them; without it, only list what would go.")
@store_options
@handle_errors
def prune(
    name: str, keep: int, yes: bool, registry: str | None, sandbox: bool, as_json: bool
) -> None:
    """Delete the tuned models of NAME's runs that no alias uses.

    Kept: a run an alias serves, a run among the last --keep moves of an alias, a run whose
    job did not succeed, a model a run is still tuning from, and any model that shares its ID
    (its versions) with a kept run, since a delete removes every version. Without --yes, the
    list only.
    """
    from vertex_tuner import api
    from vertex_tuner.cli.options import writable_store

    if yes:
        writable_store(registry, sandbox=sandbox)
    result = api.prune(name, keep=keep, delete=yes, registry=registry, sandbox=sandbox)
    rows = result.rows
    console = stderr_console()
    for problem in result.problems:
        console.print(f"warning: {problem}; --yes will delete nothing", markup=False)
    failed = _model_names(rows, "failed")
    if as_json:
        echo_json(
            {
                "name": name,
                "keep": keep,
                "runs": [r.to_json() for r in rows],
                "deleted": _model_names(rows, "deleted"),
                "failed": failed,
            }
        )
    else:
        emit(
            _table(name, rows),
            [f"{r.run_id}\t{r.action}\t{r.tuned_model or '-'}\t{r.reason}" for r in rows],
        )
    console.print(located(_summary(name, keep, rows, yes)), markup=False)
    if failed:
        sys.exit(EXIT_INVALID)
