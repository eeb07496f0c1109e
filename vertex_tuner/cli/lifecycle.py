"""``vertex-tuner lifecycle``: for every alias, the Gemini base under it and when that retires.

A tuned model stops serving when its base model retires, so each alias (``support-tone@production``)
is followed to the run it serves, and from there through ``parent_run_id`` (continuous tuning) to
the Gemini base, whose date comes from the model table (:func:`vertex_tuner.models.retirement`).

The reads are bounded: one alias file per name, one record per alias, and one more per lineage
step; a run read once is not read again. With no SPEC, the names are those of the alias files in
the run store (one listing of ``aliases/``).

Exit 0; with ``--fail-within DURATION``, exit 1 when any alias's base retires within it (or has
retired).
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from vertex_tuner import models
from vertex_tuner.cli._common import EXIT_INVALID, EXIT_OK, echo_json, emit, handle_errors
from vertex_tuner.cli.options import parse_timeout, store_options

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from contextlib import AbstractContextManager

    from rich.table import Table

    from vertex_tuner.records import RunRecord
    from vertex_tuner.runstore import RunStore
    from vertex_tuner.spec import JobSpec

_ALIASES = "aliases/"
_SUFFIX = ".json"


@dataclass(frozen=True)
class AliasLifecycle:
    """One alias, the run it serves, the Gemini base under it and that base's retirement."""

    name: str
    alias: str
    run_id: str
    tuned_model: str | None
    #: None: the lineage could not be followed to a Gemini base.
    base_model: str | None
    retirement: models.Retirement | None
    #: Why the base is unknown, when it is.
    problem: str = ""

    def status(self, days: int) -> models.RetirementStatus:
        return self.retirement.status(days) if self.retirement else "unknown"

    def action(self, days: int) -> str:
        if self.retirement is None:
            return self.problem
        if self.retirement.lifecycle is not None and self.status(days) == "ok":
            return "nothing yet"
        return self.retirement.action

    def retires(self) -> tuple[str | None, bool]:
        """The retirement date (ISO) and whether it is confirmed (else "no earlier than")."""
        r = self.retirement
        if r is None:
            return None, False
        if r.date is not None:
            return r.date.isoformat(), True
        return (r.not_before.isoformat() if r.not_before else None), False

    def to_json(self, days: int) -> dict[str, Any]:
        retires, confirmed = self.retires()
        return {
            "name": self.name,
            "alias": self.alias,
            "run_id": self.run_id,
            "tuned_model": self.tuned_model,
            "base_model": self.base_model,
            "retires": retires,
            "retires_confirmed": confirmed,
            "days_left": self.retirement.days_left if self.retirement else None,
            "status": self.status(days),
            "action": self.action(days),
            "source": self.retirement.source if self.retirement else None,
        }


def alias_names(runs: RunStore) -> list[str]:
    """The names that have an alias file in the run store."""
    found = []
    for key in runs.blobs.keys(_ALIASES):
        rest = key[len(_ALIASES) :]
        if rest.endswith(_SUFFIX) and "/" not in rest:
            found.append(rest[: -len(_SUFFIX)])
    return sorted(set(found))


class _Records:
    """Run records read at most once each."""

    def __init__(self, runs: RunStore) -> None:
        self.runs = runs
        self.cache: dict[str, RunRecord | None] = {}

    def get(self, run_id: str) -> RunRecord | None:
        from vertex_tuner.errors import NotFoundError

        if run_id not in self.cache:
            try:
                self.cache[run_id] = self.runs.get(run_id)
            except NotFoundError:
                self.cache[run_id] = None
        return self.cache[run_id]


def _gemini_base(record: RunRecord, records: _Records) -> tuple[str | None, str]:
    """The Gemini base under ``record`` (following ``parent_run_id``), or None and why not."""
    current = record
    seen = {record.run_id}
    while models.is_tuned_model_name(current.base_model) or "@" in current.base_model:
        parent_id = current.parent_run_id
        if not parent_id:
            return None, (
                f"run {current.run_id} was tuned from {current.base_model} and does not record "
                "the run that made it (parent_run_id); look up that model's base in Vertex"
            )
        if parent_id in seen:
            return None, f"the lineage of run {record.run_id} loops at run {parent_id}"
        parent = records.get(parent_id)
        if parent is None:
            return None, (
                f"run {current.run_id}'s parent run {parent_id} is not in the run store; "
                f"look up {current.base_model}'s base in Vertex"
            )
        seen.add(parent_id)
        current = parent
    return current.base_model, ""


def inventory(runs: RunStore, names: Iterable[str], today: dt.date) -> list[AliasLifecycle]:
    """Every alias of ``names``, with the Gemini base it stands on and when that retires."""
    records = _Records(runs)
    out: list[AliasLifecycle] = []
    for name in names:
        for alias, entry in sorted(runs.aliases(name).items()):
            record = records.get(entry.run_id)
            if record is None:
                out.append(
                    AliasLifecycle(
                        name,
                        alias,
                        entry.run_id,
                        None,
                        None,
                        None,
                        f"{name}@{alias} points at run {entry.run_id}, which is not in the run "
                        f"store; promote a recorded run: vertex-tuner promote {name} RUN "
                        f"--alias {alias}",
                    )
                )
                continue
            base, problem = _gemini_base(record, records)
            out.append(
                AliasLifecycle(
                    name,
                    alias,
                    record.run_id,
                    record.tuned_model,
                    base,
                    models.retirement(base, today) if base else None,
                    problem,
                )
            )
    return out


def _table(rows: list[AliasLifecycle], days: int, today: dt.date) -> Table:
    from rich.markup import escape
    from rich.table import Table

    colours = {"ok": "green", "retiring": "yellow", "retired": "red", "unknown": "magenta"}
    table = Table(
        "alias", "run", "base model", "retires", "days left", "status", "action",
        title=f"base model retirement as of {today.isoformat()}",
    )  # fmt: skip
    for row in rows:
        retires, confirmed = row.retires()
        when = "-" if retires is None else retires if confirmed else f"≥ {retires} (unconfirmed)"
        left = row.retirement.days_left if row.retirement else None
        status = row.status(days)
        table.add_row(
            escape(f"{row.name}@{row.alias}"),
            escape(row.run_id),
            escape(row.base_model or "?"),
            when,
            "-" if left is None else str(left),
            f"[{colours[status]}]{status}[/]",
            escape(row.action(days)),
        )
    return table


def _spec_names(specs: tuple[str, ...]) -> list[tuple[str, JobSpec]]:
    """(name, spec) of each SPEC argument."""
    from vertex_tuner.spec import load_spec

    # The spec's own base_model is not judged here (a retired one would stop the command before
    # it reports): what matters is the base under the runs its aliases serve.
    return [
        (spec.name, spec) for spec in (load_spec(r, offline=True, today=dt.date.min) for r in specs)
    ]


def _stores(
    specs: tuple[str, ...], registry: str | None, sandbox: bool
) -> Iterator[tuple[list[str] | None, AbstractContextManager[RunStore]]]:
    from vertex_tuner.wiring import open_run_store

    if not specs:
        yield None, open_run_store(registry, sandbox=sandbox)
        return
    for name, spec in _spec_names(specs):
        yield [name], open_run_store(registry, sandbox=sandbox, spec=spec)


@click.command()
@click.argument("specs", nargs=-1, metavar="[SPEC...]")
@store_options
@click.option(
    "--fail-within",
    metavar="DURATION",
    help="Exit 1 when any alias's base model retires within this long (e.g. 90d), or has.",
)
@handle_errors
def lifecycle(
    specs: tuple[str, ...],
    registry: str | None,
    sandbox: bool,
    as_json: bool,
    fail_within: str | None,
) -> None:
    """For each alias of each SPEC (none: every alias in the run store), the Gemini base model
    under the run it serves, when that base retires, and what to do.

    Status: ok, retiring (within --fail-within, default 90 days, or announced without a
    confirmed date that is already in reach), retired, unknown (the lineage or the base is not
    known). "Today" is $VERTEX_TUNER_TODAY (YYYY-MM-DD) when set, else the UTC date.
    """
    seconds = parse_timeout(fail_within, "--fail-within")
    days = int(seconds // 86400) if seconds is not None else models.WARN_DAYS
    today = models.today()
    rows: list[AliasLifecycle] = []
    for names, store in _stores(specs, registry, sandbox):
        with store as runs:
            rows.extend(inventory(runs, alias_names(runs) if names is None else names, today))
    failing = seconds is not None and any(
        r.retirement is not None and r.retirement.within(days) for r in rows
    )
    code = EXIT_INVALID if failing else EXIT_OK
    if as_json:
        echo_json({"aliases": [r.to_json(days) for r in rows], "exit_code": code})
    elif not rows:
        from vertex_tuner.cli._common import stderr_console

        stderr_console().print("no aliases found: promote a run first", markup=False)
    else:
        lines = []
        for r in rows:
            retires, _ = r.retires()
            left = r.retirement.days_left if r.retirement else None
            lines.append(
                "\t".join(
                    [
                        f"{r.name}@{r.alias}",
                        r.run_id,
                        r.base_model or "-",
                        retires or "-",
                        "-" if left is None else str(left),
                        r.status(days),
                    ]
                )
            )
        emit(_table(rows, days, today), lines)
    if code != EXIT_OK:
        sys.exit(code)
