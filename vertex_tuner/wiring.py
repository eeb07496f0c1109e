"""Building a ready :class:`~vertex_tuner.service.TuningService` for the cloud or the sandbox.

This is where ``--sandbox`` makes its one difference: which backends and which run store. The
service itself never knows. The CLI and Python callers both use :func:`open_service`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vertex_tuner.runstore import LocalBlobStore, RunStore, StorageBlobStore

if TYPE_CHECKING:
    from vertex_tuner.backends.connect import Backends
    from vertex_tuner.backends.interface import Storage
    from vertex_tuner.evaluation.runner import Evaluator
    from vertex_tuner.service import Observer, TuningService
    from vertex_tuner.spec import JobSpec


def home() -> Path:
    """vertex-tuner's own folder: ``VERTEX_TUNER_HOME``, else ``~/.vertex-tuner``."""
    configured = os.environ.get("VERTEX_TUNER_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".vertex-tuner"


def registry_location(spec: JobSpec | None, registry: str | None, *, sandbox: bool) -> str:
    """Where run records live: ``--registry``, else the spec's ``registry:``, else the home.

    Sandbox runs are kept apart from real ones, so a sandbox job name never shows up where a
    real job is expected.
    """
    chosen = (
        registry or os.environ.get("VERTEX_TUNER_REGISTRY") or (spec.registry if spec else None)
    )
    if chosen and chosen.startswith("gs://"):
        return chosen
    if chosen:
        path = Path(chosen).expanduser()
        if spec is not None and not path.is_absolute() and registry is None:
            path = spec.base_dir / path
    else:
        path = home() / "runs"
    return str(path / "sandbox") if sandbox else str(path)


def run_store(location: str, storage: Storage | None) -> RunStore:
    if location.startswith("gs://"):
        assert storage is not None, "a gs:// run store needs a storage backend"
        return RunStore(StorageBlobStore(storage, location))
    return RunStore(LocalBlobStore(Path(location)))


@contextlib.contextmanager
def backends(*, sandbox: bool, project: str | None, location: str) -> Iterator[Backends]:
    """The real cloud, or the sandbox (a running one, or a private one for this command)."""
    from vertex_tuner.backends.connect import cloud_backends, sandbox_backends

    if not sandbox:
        yield cloud_backends(project, location)
        return
    from vertex_tuner.sandbox import open_sandbox

    with open_sandbox(os.environ, state_dir=home() / "sandbox") as info:
        yield sandbox_backends(info)


@dataclass(frozen=True)
class Context:
    """The collaborators one command works with."""

    backends: Backends
    runs: RunStore

    @property
    def sandbox(self) -> bool:
        return self.backends.is_sandbox


@contextlib.contextmanager
def open_context(
    *,
    spec: JobSpec | None,
    sandbox: bool,
    registry: str | None = None,
    project: str | None = None,
    location: str | None = None,
) -> Iterator[Context]:
    """Backends and the run store; ``spec`` supplies project, region and run store by default."""
    project = project or (spec.gcp.project if spec else None)
    location = (
        location
        or (spec.gcp.location if spec else None)
        or os.environ.get("GOOGLE_CLOUD_LOCATION", "us-central1")
    )
    with backends(sandbox=sandbox, project=project, location=location) as b:
        yield Context(b, run_store(registry_location(spec, registry, sandbox=sandbox), b.storage))


@contextlib.contextmanager
def open_service(
    *,
    spec: JobSpec | None,
    sandbox: bool,
    registry: str | None = None,
    project: str | None = None,
    location: str | None = None,
    observer: Observer | None = None,
) -> Iterator[TuningService]:
    """A ready TuningService; with ``sandbox=True`` the local emulators stay up until exit."""
    with open_context(
        spec=spec, sandbox=sandbox, registry=registry, project=project, location=location
    ) as ctx:
        yield service_for(ctx, observer)


def service_for(ctx: Context, observer: Observer | None = None) -> TuningService:
    from vertex_tuner.service import TuningService

    b = ctx.backends
    return TuningService(
        storage=b.storage,
        tuner=b.tuner,
        runs=ctx.runs,
        project=b.project,
        location=b.location,
        sandbox=b.is_sandbox,
        observer=observer,
    )


def evaluator_for(ctx: Context, observer: Observer | None = None) -> Evaluator:
    """An Evaluator whose generation cache is kept apart per project (or the sandbox)."""
    from vertex_tuner.evaluation.cache import GenerationCache
    from vertex_tuner.evaluation.runner import Evaluator

    b = ctx.backends
    namespace = "sandbox" if b.is_sandbox else f"{b.project}/{b.location}"
    cache = GenerationCache(home() / "cache" / "generations", namespace)
    return Evaluator(
        generator=b.generator, runs=ctx.runs, storage=b.storage, cache=cache, observer=observer
    )
