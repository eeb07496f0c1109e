"""The release loop for Python callers, with its collaborators built for them.

Each function here opens what the CLI would open for the same flags (Google Cloud, or the
sandbox with ``sandbox=True``; the run store from ``registry``, ``VERTEX_TUNER_REGISTRY`` or the
spec) and calls :mod:`vertex_tuner.release`, so a service runs exactly what
``vertex-tuner retrain`` runs::

    import vertex_tuner

    outcome = vertex_tuner.retrain("jobs/support_tone.yaml", sandbox=True)
    print(outcome.outcome, outcome.message)  # promoted, unchanged, running, gate-failed, ...

Programs that build their own collaborators (fakes in tests, a shared service) call
:mod:`vertex_tuner.release` directly.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vertex_tuner import pruning, registry, release
from vertex_tuner.errors import ConfigurationError, VertexTunerError
from vertex_tuner.release import Promotion, RetrainOutcome, SmokeResult
from vertex_tuner.spec import JobSpec, load_spec, retarget
from vertex_tuner.tuning.preparation import prepare, require_valid
from vertex_tuner.wiring import (
    Context,
    evaluator_for,
    open_context,
    open_run_store,
    service_for,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from vertex_tuner.evaluation.results import EvaluationResult
    from vertex_tuner.events import Observer
    from vertex_tuner.records import RunRecord

SpecLike = JobSpec | str | os.PathLike[str]


def spec_of(spec: SpecLike, *, sandbox: bool) -> JobSpec:
    """A loaded spec, or the spec at a path (``gcp:`` variables may be unset in the sandbox)."""
    if isinstance(spec, JobSpec):
        return spec
    return load_spec(Path(spec), offline=sandbox)


def _context(
    spec: JobSpec,
    sandbox: bool,
    registry: str | None,
    project: str | None,
    location: str | None,
) -> contextlib.AbstractContextManager[Context]:
    """The CLI's collaborators for the same options (see wiring.open_context)."""
    return open_context(
        spec=spec, sandbox=sandbox, registry=registry, project=project, location=location
    )


def smoke_test_for(ctx: Context) -> release.SmokeTest:
    """The promotion smoke test over ``ctx``: resolve what the alias would serve by the rule
    :func:`vertex_tuner.resolve` applies, build a google-genai client as
    :func:`vertex_tuner.genai_client_for` builds one (the endpoint's own location: us/eu for a
    3.x model), and send the run's first held-out prompt with the generation settings it was
    evaluated with."""
    make = ctx.backends.service_generator
    if make is None:
        raise ConfigurationError("these backends cannot build a service's client")

    def run(name: str, alias: str, record: RunRecord, checkpoint: str | None) -> SmokeResult:
        resolved = registry.resolution(name, alias, record, checkpoint)
        where = resolved.serving_location
        contents, system, prompt = _first_prompt(ctx, record)
        return release.smoke_test(
            make(resolved.project, where),
            resolved.endpoint,
            location=where,
            generation=resolved.generation,
            contents=contents,
            system_instruction=system,
            prompt=prompt,
        )

    return run


def _first_prompt(
    ctx: Context, record: RunRecord
) -> tuple[Sequence[Mapping[str, Any]] | None, str | None, str]:
    """The run's first held-out example (None: the fixed smoke prompt), and what it was."""
    if record.holdout is None or record.holdout.uri is None:
        return None, None, release.SMOKE_PROMPT
    try:
        examples, _ = evaluator_for(ctx).load_holdout(record)
    except VertexTunerError as exc:
        return None, None, f"{release.SMOKE_PROMPT} (the held-out set is unreadable: {exc.message})"
    if not examples:
        return None, None, release.SMOKE_PROMPT
    first = examples[0]
    return first.contents, first.system_instruction, f"held-out example {first.index}"


def retrain(
    spec: SpecLike,
    *,
    sandbox: bool = False,
    registry: str | None = None,
    project: str | None = None,
    location: str | None = None,
    wait_timeout: float | None = None,
    retry_failed: bool = False,
    observer: Observer | None = None,
    smoke_test: bool = True,
    actor: str | None = None,
    base_model: str | None = None,
) -> RetrainOutcome:
    """Retrain one spec: submit, wait, evaluate, promote on a passing gate (see release.retrain).

    ``base_model``: re-tune the spec's data on that Gemini base instead (the spec re-targeted
    by :func:`vertex_tuner.spec.retarget`), evaluated against what ``NAME@production`` serves
    with the spec's gate; the run records the lineage.

    The promotion is smoke-tested (``smoke_test=False`` skips it); ``actor`` (default
    :func:`vertex_tuner.release.default_actor`) is who the alias history says moved it. A spec
    that cannot be loaded is a ``failed`` outcome too, so a loop over specs goes on.
    """
    lineage: dict[str, Any] | None = None
    try:
        loaded = spec_of(spec, sandbox=sandbox)
        if base_model is not None:
            loaded, lineage = _retargeted(loaded, base_model)
    except VertexTunerError as exc:
        return RetrainOutcome.from_error(str(spec), "failed", "the spec is invalid", exc)
    try:
        with tempfile.TemporaryDirectory(prefix="vertex-tuner-") as workdir:
            # The data is checked before a backend starts: a bad line fails in seconds.
            try:
                prepared = require_valid(loaded, prepare(loaded, Path(workdir)))
            except VertexTunerError as exc:
                return RetrainOutcome.from_error(
                    str(loaded.spec_path), "failed", "submit failed", exc, spec_name=loaded.name
                )
            with _context(loaded, sandbox, registry, project, location) as ctx:
                return release.retrain(
                    loaded,
                    service=service_for(ctx, observer),
                    evaluator=evaluator_for(ctx, observer),
                    wait_timeout=wait_timeout,
                    retry_failed=retry_failed,
                    observer=observer,
                    prepared=prepared,
                    smoke=smoke_test_for(ctx) if smoke_test else None,
                    actor=release.default_actor() if actor is None else actor,
                    lineage=lineage,
                )
    except VertexTunerError as exc:  # the backends could not be reached at all
        return RetrainOutcome.from_error(
            str(loaded.spec_path),
            "failed",
            "could not reach Vertex or Cloud Storage",
            exc,
            spec_name=loaded.name,
        )


def _retargeted(spec: JobSpec, base_model: str) -> tuple[JobSpec, dict[str, Any]]:
    """The spec on ``base_model``, and the lineage its run will record."""
    from vertex_tuner import models

    moved, changes = retarget(spec, base_model)
    state = models.retirement(spec.base_model, models.today())
    reason = (
        state.message
        if state.status() in ("retiring", "retired")
        else f"re-tuned on {base_model} with `retrain --base-model`"
    )
    return moved, {
        "from_base": spec.base_model,
        "to_base": base_model,
        "reason": reason,
        "changes": changes,
    }


def current_run(
    spec: SpecLike,
    *,
    sandbox: bool = False,
    registry: str | None = None,
    project: str | None = None,
    location: str | None = None,
) -> RunRecord:
    """The run of the job that tuned the spec's current data and settings."""
    loaded = spec_of(spec, sandbox=sandbox)
    with _context(loaded, sandbox, registry, project, location) as ctx:
        return release.current_run(service_for(ctx), loaded)


def evaluate_run(
    spec: SpecLike,
    run_id: str | None = None,
    *,
    against: tuple[str, ...] = ("base", release.PRODUCTION),
    sandbox: bool = False,
    registry: str | None = None,
    project: str | None = None,
    location: str | None = None,
    observer: Observer | None = None,
) -> EvaluationResult:
    """Evaluate a run of the spec (default: its current run) and store the result with it."""
    loaded = spec_of(spec, sandbox=sandbox)
    with _context(loaded, sandbox, registry, project, location) as ctx:
        service = service_for(ctx, observer)
        record = service.runs.get(run_id) if run_id else release.current_run(service, loaded)
        return release.evaluate_run(evaluator_for(ctx, observer), loaded, record, against=against)


def promote(
    name: str,
    run_id: str | None = None,
    *,
    alias: str = release.PRODUCTION,
    if_gate: bool = False,
    registry: str | None = None,
    sandbox: bool = False,
    actor: str | None = None,
    gate: str | None = None,
    checkpoint: str | None = None,
    generation: Mapping[str, Any] | None = None,
    smoke_test: bool = True,
    project: str | None = None,
    location: str | None = None,
) -> Promotion:
    """Point ``name@alias`` at a run (see release.promote; ``gate``: the spec's gate, which
    the verdict ``if_gate`` relies on must have judged; ``checkpoint``: an id or "best").

    The move is smoke-tested first (``smoke_test=False`` skips it, and the history says so),
    which needs Vertex (or the sandbox); ``actor`` defaults to
    :func:`vertex_tuner.release.default_actor`."""
    who = release.default_actor() if actor is None else actor
    options: dict[str, Any] = {
        "alias": alias,
        "if_gate": if_gate,
        "actor": who,
        "gate": gate,
        "checkpoint": checkpoint,
        "generation": generation,
    }
    if not smoke_test:
        with open_run_store(registry, sandbox=sandbox) as runs:
            return release.promote(runs, name, run_id, smoke=_skipped, **options)
    with open_context(
        spec=None, sandbox=sandbox, registry=registry, project=project, location=location
    ) as ctx:
        return release.promote(ctx.runs, name, run_id, smoke=smoke_test_for(ctx), **options)


def _skipped(name: str, alias: str, record: RunRecord, checkpoint: str | None) -> SmokeResult:
    """A smoke test that was asked not to run: it passes, and the history says it was skipped."""
    endpoint = registry.resolution(name, alias, record, checkpoint).endpoint
    return SmokeResult(True, endpoint, None, "skipped (--no-smoke-test)", 0.0, prompt="")


def rollback(
    name: str,
    *,
    alias: str = release.PRODUCTION,
    registry: str | None = None,
    sandbox: bool = False,
    actor: str | None = None,
) -> Promotion:
    """Move ``name@alias`` back to the run it pointed at before (see release.rollback)."""
    with open_run_store(registry, sandbox=sandbox) as runs:
        who = release.default_actor() if actor is None else actor
        return release.rollback(runs, name, alias=alias, actor=who)


def prune(
    name: str,
    *,
    keep: int = pruning.DEFAULT_KEEP,
    delete: bool = False,
    registry: str | None = None,
    sandbox: bool = False,
) -> pruning.Pruned:
    """Which of NAME's tuned models no alias needs (see :mod:`vertex_tuner.pruning`); with
    ``delete``, delete them, each in the project and region its run was tuned in. Nothing is
    deleted while a problem is reported (the error names it)."""
    with open_run_store(registry, sandbox=sandbox) as runs:
        records, found = pruning.plan(name, runs, keep)
    if not delete:
        return found
    if found.problems:
        raise VertexTunerError(
            f"nothing was deleted: {'; '.join(found.problems)}",
            hint=f"repair or re-promote, then list again: vertex-tuner prune {name}",
        )
    rows = found.rows
    by_run = {r.run_id: r for r in records}
    places: dict[tuple[str | None, str | None], set[str]] = {}
    for row in rows:
        if row.action == "delete" and row.model_id:
            places.setdefault(pruning.where(by_run[row.run_id]), set()).add(row.model_id)
    for (project, location), models in places.items():
        with open_context(
            spec=None, sandbox=sandbox, registry=registry, project=project, location=location
        ) as ctx:
            rows = pruning.delete_unused(
                name, keep, records, rows, runs=ctx.runs, tuner=ctx.backends.tuner, models=models
            )
    return pruning.Pruned(rows, [])


check_gate = release.check_gate

__all__ = [
    "Promotion",
    "RetrainOutcome",
    "check_gate",
    "current_run",
    "evaluate_run",
    "promote",
    "prune",
    "retrain",
    "rollback",
]
