"""Which tuned models of a spec may be deleted, and deleting them.

A tuned model costs nothing while idle, but they pile up. A run's model is kept when an alias
serves the run now, when the run is among the last ``keep`` moves of an alias's history (so a
rollback still has somewhere to go), when its job did not succeed with a model (nothing to
delete), when a run of the spec is still tuning from it, or when it was deleted before.

Vertex tuned models have versions (``projects/P/locations/L/models/ID@V``), and continuous
tuning puts several runs' versions on one model ID; google-genai's ``models.delete`` deletes the
whole model. So a model ID is deleted only when every run on it may go, once for all of them.

:func:`choose` is pure; :func:`delete_unused` reads the aliases again right before each delete
(an alias may have moved meanwhile), marks each deleted run's record with ``model_deleted_at``,
and counts a model already gone (404) as deleted. ``vertex-tuner prune`` is the command.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from vertex_tuner.backends.interface import JobState
from vertex_tuner.errors import NotFoundError, VertexTunerError
from vertex_tuner.models import is_tuned_model_name, resource_location
from vertex_tuner.records import iso
from vertex_tuner.retry import RetryOptions, retrying

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import Tuner
    from vertex_tuner.records import RunRecord
    from vertex_tuner.runstore import AliasEntry, RunStore

Action = Literal["keep", "delete", "deleted", "failed"]

DEFAULT_KEEP = 5
#: A spec's name (what ``runs`` and ``aliases`` are keyed by), as a job spec allows it.
_WHOLE_MODELS = "google-genai deletes whole models"


@dataclass(frozen=True)
class PruneRow:
    """One run of NAME and what prune does with its tuned model, and why."""

    run_id: str
    tuned_model: str | None
    action: Action
    reason: str

    @property
    def model_id(self) -> str | None:
        return model_id(self.tuned_model) if self.tuned_model else None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "tuned_model": self.tuned_model,
            "action": self.action,
            "reason": self.reason,
        }


def model_id(tuned_model: str) -> str:
    """The model a version belongs to: what ``models.delete`` takes (it deletes every version)."""
    return tuned_model.split("@", 1)[0]


def _alias_reasons(name: str, aliases: Mapping[str, AliasEntry], keep: int) -> dict[str, str]:
    """Run id -> why an alias needs it: it serves the alias now, or it is among the runs of the
    alias's last ``keep`` moves (as the target or the run it moved from), for a rollback."""
    reasons: dict[str, str] = {}
    for alias, entry in sorted(aliases.items()):
        reasons.setdefault(entry.run_id, f"serves {name}@{alias}")
    for alias, entry in sorted(aliases.items()):
        recent = entry.history[-keep:] if keep > 0 else ()
        for event in recent:
            for run_id in (event.get("run_id"), event.get("previous")):
                if isinstance(run_id, str):
                    reasons.setdefault(run_id, f"among the last {keep} moves of {name}@{alias}")
    return reasons


def _tuning_from(records: Sequence[RunRecord]) -> dict[str, str]:
    """Model id -> a run whose job has not ended and that continues tuning from that model."""
    out: dict[str, str] = {}
    for record in records:
        if not JobState.parse(record.state).is_terminal and is_tuned_model_name(record.base_model):
            out.setdefault(model_id(record.base_model), record.run_id)
    return out


def _own_reason(
    record: RunRecord, alias_reasons: Mapping[str, str], tuning_from: Mapping[str, str]
) -> str | None:
    """Why ``record``'s model is kept on its own account (None: nothing of its own keeps it)."""
    if record.model_deleted_at:
        return f"its model was already deleted ({record.model_deleted_at})"
    state = JobState.parse(record.state)
    if not state.is_success:
        return f"its job is {record.state}, not succeeded: there is no tuned model to delete"
    if not record.tuned_model:
        return "its job recorded no tuned model"
    if record.run_id in alias_reasons:
        return alias_reasons[record.run_id]
    child = tuning_from.get(model_id(record.tuned_model))
    if child is not None and child != record.run_id:
        return f"run {child} is still tuning from its model"
    return None


def choose(
    name: str,
    records: Sequence[RunRecord],
    aliases: Mapping[str, AliasEntry],
    keep: int = DEFAULT_KEEP,
) -> list[PruneRow]:
    """Every run of ``records`` (NAME's, newest first) with ``keep`` or ``delete`` and a reason.

    Pure: the caller reads the records and the aliases. A run that may go on its own account is
    still kept when another kept run's model has the same ID, since deleting the ID would
    delete that run's version too.
    """
    alias_reasons = _alias_reasons(name, aliases, keep)
    tuning_from = _tuning_from(records)
    own = {r.run_id: _own_reason(r, alias_reasons, tuning_from) for r in records}
    protected: dict[str, str] = {}  # model id -> a kept run with a version on it
    for record in records:
        if own[record.run_id] is not None and record.tuned_model and not record.model_deleted_at:
            protected.setdefault(model_id(record.tuned_model), record.run_id)
    rows = []
    for record in records:
        reason = own[record.run_id]
        if reason is None and record.tuned_model:
            sibling = protected.get(model_id(record.tuned_model))
            if sibling is not None:
                reason = f"shares model ID with run {sibling}, which is kept; {_WHOLE_MODELS}"
        if reason is None:
            rows.append(PruneRow(record.run_id, record.tuned_model, "delete", "no alias uses it"))
        else:
            rows.append(PruneRow(record.run_id, record.tuned_model, "keep", reason))
    return rows


def blind_spots(
    records: Sequence[RunRecord], aliases: Mapping[str, AliasEntry], skipped: Sequence[str]
) -> list[str]:
    """What keeps prune from knowing every model an alias may need: an alias serving a run that
    is not among the records, or a damaged record. Either could share a model ID with a run
    that looks unused, so nothing is deleted while one is there."""
    known = {r.run_id for r in records}
    out = [
        f"alias {alias} serves run {entry.run_id}, which has no record here"
        for alias, entry in sorted(aliases.items())
        if entry.run_id not in known
    ]
    out += [f"a record could not be read: {message}" for message in skipped]
    return out


def delete_unused(
    name: str,
    keep: int,
    records: Sequence[RunRecord],
    rows: Sequence[PruneRow],
    *,
    runs: RunStore,
    tuner: Tuner,
    models: Collection[str] | None = None,
    retry: RetryOptions | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> list[PruneRow]:
    """``rows`` after deleting the model of each ``delete`` row (only those on ``models``, when
    given), once per model ID.

    Before each delete the aliases are read again and the choice made anew, so a model an alias
    moved onto meanwhile is kept. A delete is safe to repeat, so transient failures are retried
    under the one retry policy; a model already gone counts as deleted. A failure is that
    model's row, and the next model is tried.
    """
    out = {r.run_id: r for r in rows}
    groups: dict[str, list[PruneRow]] = {}
    for row in rows:
        if row.action == "delete" and row.model_id and (models is None or row.model_id in models):
            groups.setdefault(row.model_id, []).append(row)
    policy = retrying(retry or RetryOptions(), sleep=sleep)
    for model, group in groups.items():
        try:
            aliases = runs.aliases(name)
        except VertexTunerError as exc:
            reason = f"not deleted: the aliases could not be read again ({exc.message})"
            out.update({r.run_id: replace(r, action="failed", reason=reason) for r in group})
            continue
        now = {r.run_id: r for r in choose(name, records, aliases, keep)}
        if any(now[r.run_id].action != "delete" for r in group):
            out.update({r.run_id: now[r.run_id] for r in group})
            continue
        gone = ""
        try:
            policy(tuner.delete_model, model)
        except NotFoundError:
            gone = "; it was already gone"
        except VertexTunerError as exc:
            out.update({r.run_id: replace(r, action="failed", reason=exc.message) for r in group})
            continue
        for row in group:
            out[row.run_id] = _marked(runs, row, iso(clock()), gone)
    return [out[r.run_id] for r in rows]


def _marked(runs: RunStore, row: PruneRow, stamp: str, gone: str) -> PruneRow:
    """Record the deletion on the run (read again: it may have changed since it was listed)."""
    try:
        record = runs.get(row.run_id)
        runs.save(record.model_copy(update={"model_deleted_at": stamp, "updated_at": stamp}))
    except VertexTunerError as exc:
        return replace(
            row,
            action="failed",
            reason=f"the model was deleted, but its run record was not updated: {exc.message}",
        )
    return replace(row, action="deleted", reason=f"no alias uses it{gone}")


def where(record: RunRecord) -> tuple[str | None, str | None]:
    """The project and region to call for a run's model: where its record says it was tuned."""
    return record.project, resource_location(record.tuned_model or "") or record.location


@dataclass(frozen=True)
class Pruned:
    """What a prune found (and did): every run's row, and what kept it from deleting."""

    rows: list[PruneRow]
    #: Why nothing may be deleted (an alias serving an unknown run, a damaged record).
    problems: list[str]


def plan(name: str, runs: RunStore, keep: int) -> tuple[list[RunRecord], Pruned]:
    """NAME's records and the choice for each (one listing and one alias read)."""
    records = runs.list(name)
    skipped = list(runs.skipped)
    if not records:
        raise NotFoundError(
            f"no runs of {name} in {runs.location}",
            hint="list the recorded runs with: vertex-tuner runs",
        )
    aliases = runs.aliases(name)
    rows = choose(name, records, aliases, keep)
    problems = blind_spots(records, aliases, skipped)
    if not any(r.action == "delete" for r in rows):
        problems = []
    return records, Pruned(rows, problems)
