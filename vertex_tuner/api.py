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
from typing import TYPE_CHECKING

from vertex_tuner import release
from vertex_tuner.errors import VertexTunerError
from vertex_tuner.release import Promotion, RetrainOutcome
from vertex_tuner.spec import JobSpec, load_spec
from vertex_tuner.tuning.preparation import prepare, require_valid
from vertex_tuner.wiring import (
    Context,
    evaluator_for,
    open_context,
    open_run_store,
    service_for,
)

if TYPE_CHECKING:
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
) -> RetrainOutcome:
    """Retrain one spec: submit, wait, evaluate, promote on a passing gate (see release.retrain).

    A spec that cannot be loaded is a ``failed`` outcome too, so a loop over specs goes on.
    """
    try:
        loaded = spec_of(spec, sandbox=sandbox)
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
                )
    except VertexTunerError as exc:  # the backends could not be reached at all
        return RetrainOutcome.from_error(
            str(loaded.spec_path),
            "failed",
            "could not reach Vertex or Cloud Storage",
            exc,
            spec_name=loaded.name,
        )


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
    actor: str = "",
    gate: str | None = None,
    checkpoint: str | None = None,
) -> Promotion:
    """Point ``name@alias`` at a run (see release.promote; ``gate``: the spec's gate, which
    the verdict ``if_gate`` relies on must have judged; ``checkpoint``: an id or "best")."""
    with open_run_store(registry, sandbox=sandbox) as runs:
        return release.promote(
            runs,
            name,
            run_id,
            alias=alias,
            if_gate=if_gate,
            actor=actor,
            gate=gate,
            checkpoint=checkpoint,
        )


def rollback(
    name: str,
    *,
    alias: str = release.PRODUCTION,
    registry: str | None = None,
    sandbox: bool = False,
    actor: str = "",
) -> Promotion:
    """Move ``name@alias`` back to the run it pointed at before (see release.rollback)."""
    with open_run_store(registry, sandbox=sandbox) as runs:
        return release.rollback(runs, name, alias=alias, actor=actor)


check_gate = release.check_gate

__all__ = [
    "Promotion",
    "RetrainOutcome",
    "check_gate",
    "current_run",
    "evaluate_run",
    "promote",
    "retrain",
    "rollback",
]
