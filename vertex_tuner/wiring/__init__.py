"""Composition: building ready services for Google Cloud or for the sandbox.

This is where ``--sandbox`` makes its one difference: which backends and which run store. The
services are handed what is built here and run the same code either way (the tuning service is
told only whether to stamp its records as sandbox runs). The CLI, the release loop's Python
callers and :func:`vertex_tuner.resolve` all build through these functions, so there is one rule
for where the run store is and how it is reached.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vertex_tuner.errors import ConfigurationError
from vertex_tuner.runstore import (
    DEFAULT_LEASE_TTL,
    LEASE_TTL_RANGE,
    LocalBlobStore,
    RunStore,
    StorageBlobStore,
)
from vertex_tuner.wiring.backends import Backends, cloud_backends, sandbox_backends

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import Storage
    from vertex_tuner.evaluation.runner import Evaluator
    from vertex_tuner.events import Observer
    from vertex_tuner.spec import JobSpec
    from vertex_tuner.tuning import TuningService

#: The region used when neither a flag, the spec nor GOOGLE_CLOUD_LOCATION names one.
DEFAULT_LOCATION = "us-central1"


def home() -> Path:
    """vertex-tuner's own folder: ``VERTEX_TUNER_HOME``, else ``~/.vertex-tuner``."""
    configured = os.environ.get("VERTEX_TUNER_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".vertex-tuner"


def default_location() -> str:
    return os.environ.get("GOOGLE_CLOUD_LOCATION") or DEFAULT_LOCATION


def registry_location(spec: JobSpec | None, registry: str | None, *, sandbox: bool) -> str:
    """Where run records live: ``--registry``, else ``VERTEX_TUNER_REGISTRY``, else the spec's
    ``registry:``, else the home.

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
    """A run store at a local path or ``gs://`` URI (which needs a storage backend)."""
    if location.startswith("gs://"):
        assert storage is not None, "a gs:// run store needs a storage backend"
        return RunStore(StorageBlobStore(storage, location))
    return RunStore(LocalBlobStore(Path(location)))


@contextlib.contextmanager
def backends(*, sandbox: bool, project: str | None, location: str) -> Iterator[Backends]:
    """The real cloud, or the sandbox (a running one, or a private one for this command)."""
    if not sandbox:
        yield cloud_backends(project, location)
        return
    from vertex_tuner.sandbox import open_sandbox

    with open_sandbox(os.environ, state_dir=home() / "sandbox") as info:
        yield sandbox_backends(info)


@contextlib.contextmanager
def open_run_store(
    registry: str | None = None, *, sandbox: bool = False, spec: JobSpec | None = None
) -> Iterator[RunStore]:
    """The run store alone, for commands that only read or write records and aliases.

    A local one needs nothing else; only a ``gs://`` one starts a storage client (or the sandbox).
    """
    location = registry_location(spec, registry, sandbox=sandbox)
    if not location.startswith("gs://"):
        yield run_store(location, None)
        return
    project = spec.gcp.project if spec else None
    with backends(sandbox=sandbox, project=project, location=default_location()) as b:
        yield run_store(location, b.storage)


def service_run_store(registry: str | None, *, sandbox: bool = False) -> RunStore:
    """A run store a long-running service keeps (``resolve``): a local one, or ``gs://`` with
    Application Default Credentials. A sandbox store is reached only when it is local (a
    ``gs://`` one lives in the emulator, which a service does not start)."""
    location = registry_location(None, registry, sandbox=sandbox)
    if not location.startswith("gs://"):
        return run_store(location, None)
    if sandbox:
        raise ConfigurationError(
            f"the sandbox's run store {location} lives in the Cloud Storage emulator",
            hint="resolve it from a command that runs with --sandbox, or use a local registry",
        )
    return run_store(location, cloud_backends(None, default_location()).storage)


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
    location = location or (spec.gcp.location if spec else None) or default_location()
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


def lease_ttl() -> float:
    """How long a submit's create lease lasts unrenewed: ``VERTEX_TUNER_LEASE_TTL`` seconds
    (1 to 3600), else 60. A shorter one frees a dead submit's lease sooner; the holder renews
    it every third of that, so it must outlast a Cloud Storage write comfortably."""
    configured = os.environ.get("VERTEX_TUNER_LEASE_TTL")
    if not configured:
        return DEFAULT_LEASE_TTL
    low, high = LEASE_TTL_RANGE
    try:
        value = float(configured)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # also refuses nan and inf
        raise ConfigurationError(
            f"VERTEX_TUNER_LEASE_TTL={configured!r} is not a number of seconds from "
            f"{low:g} to {high:g}",
            hint="unset it for the default of 60, e.g. `unset VERTEX_TUNER_LEASE_TTL`",
        )
    return value


def service_for(
    ctx: Context, observer: Observer | None = None, *, exact_tokens: bool = True
) -> TuningService:
    """The tuning service; with ``exact_tokens`` (the default) data about to be tuned has its
    near-limit examples and a calibration sample counted by Vertex (or the sandbox)."""
    from vertex_tuner.tuning import TuningService

    b = ctx.backends
    return TuningService(
        storage=b.storage,
        tuner=b.tuner,
        runs=ctx.runs,
        project=b.project,
        location=b.location,
        sandbox=b.is_sandbox,
        observer=observer,
        lease_ttl=lease_ttl(),
        counter=b.counter if exact_tokens else None,
        rewards=b.rewards,
    )


def evaluator_for(ctx: Context, observer: Observer | None = None) -> Evaluator:
    """An Evaluator whose generation cache is kept apart per project (or the sandbox)."""
    from vertex_tuner.evaluation.cache import GenerationCache
    from vertex_tuner.evaluation.runner import Evaluator

    b = ctx.backends
    namespace = "sandbox" if b.is_sandbox else f"{b.project}/{b.location}"
    cache = GenerationCache(home() / "cache" / "generations", namespace)
    return Evaluator(
        generator=b.generator,
        runs=ctx.runs,
        storage=b.storage,
        cache=cache,
        observer=observer,
        batch=b.batch,
        rewards=b.rewards,
    )
