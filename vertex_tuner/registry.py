"""Resolving ``name@alias`` to the endpoint a service should call.

Internal services call :func:`resolve` (or :func:`genai_client_for`) instead of hard-coding an
endpoint, so promoting or rolling back an alias changes what they call without a deploy. Answers
are cached in-process for a short time so a hot path does not read the run store on every call.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vertex_tuner.errors import NotFoundError, VertexTunerError
from vertex_tuner.evaluation.verdicts import DEFAULT_GENERATION, served_generation

if TYPE_CHECKING:
    from vertex_tuner.records import RunRecord
    from vertex_tuner.runstore import RunStore

DEFAULT_TTL_SECONDS = 30.0


@dataclass(frozen=True)
class Resolved:
    """What ``name@alias`` points at."""

    name: str
    alias: str
    run_id: str
    endpoint: str
    model: str | None
    project: str | None
    location: str | None
    sandbox: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    #: The run's checkpoint the alias serves; None: the run's final model.
    checkpoint: str | None = None
    #: How the model was called when it was evaluated (temperature, max output tokens,
    #: thinking): call it the same way. See :meth:`content_config`.
    generation: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_GENERATION))

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.alias}"

    @property
    def serving_location(self) -> str | None:
        """Where the endpoint is served (us/eu for 3.x models), not where it was tuned."""
        from vertex_tuner.models import resource_location

        return resource_location(self.endpoint) or self.location

    def content_config(self, **overrides: Any) -> Any:
        """A google-genai ``GenerateContentConfig`` with the evaluated generation settings
        (``overrides`` are further ``GenerateContentConfig`` fields, e.g. a system
        instruction)."""
        from google.genai import types

        from vertex_tuner.backends.genai import thinking_config

        settings = dict(self.generation)
        budget, level = settings.pop("thinking_budget", None), settings.pop("thinking_level", None)
        thinking = thinking_config(budget, level)
        if thinking is not None:
            settings["thinking_config"] = thinking
        return types.GenerateContentConfig(**{**settings, **overrides})


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``name@alias``; the alias defaults to ``production``."""
    name, _, alias = ref.partition("@")
    if not name:
        raise VertexTunerError(f"{ref!r} is not NAME@ALIAS", hint="e.g. support-tone@production")
    return name, alias or "production"


def resolve_in(store: RunStore, ref: str) -> Resolved:
    """Resolve ``ref`` against one run store (no cache)."""
    name, alias = parse_ref(ref)
    entry = store.aliases(name).get(alias)
    if entry is None:
        raise NotFoundError(
            f"{name}@{alias} is not set in {store.location}",
            hint=f"promote a run first: vertex-tuner promote {name} RUN --alias {alias}",
        )
    return resolution(name, alias, store.get(entry.run_id), entry.checkpoint)


def resolution(name: str, alias: str, record: RunRecord, checkpoint: str | None) -> Resolved:
    """What ``name@alias`` resolves to when it points at ``record`` (and ``checkpoint``): the
    one rule :func:`resolve` and the promotion's smoke test share."""
    endpoint = record.endpoint
    if checkpoint is not None:
        endpoint = next(
            (
                c.get("endpoint")
                for c in record.checkpoints
                if str(c.get("checkpoint_id")) == checkpoint
            ),
            None,
        )
    if not endpoint:
        what = f"checkpoint {checkpoint} of run" if checkpoint else "run"
        raise NotFoundError(
            f"{name}@{alias} points at {what} {record.run_id}, which has no endpoint"
        )
    metrics: dict[str, Any] = {}
    evaluation = record.evaluation or {}
    if (evaluation.get("binding") or {}).get("tuned", endpoint) == endpoint:
        metrics = dict(evaluation.get("targets", {}).get("tuned", {}).get("metrics", {}))
    return Resolved(
        name=name,
        alias=alias,
        run_id=record.run_id,
        endpoint=endpoint,
        model=record.tuned_model,
        project=record.project,
        location=record.location,
        sandbox=record.sandbox,
        metrics=metrics,
        checkpoint=checkpoint,
        generation=served_generation(record, endpoint),
    )


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[tuple[str, str], tuple[float, Resolved]] = {}

    def get(self, key: tuple[str, str], ttl: float, now: float) -> Resolved | None:
        with self.lock:
            hit = self.entries.get(key)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        return None

    def put(self, key: tuple[str, str], value: Resolved, now: float) -> None:
        with self.lock:
            self.entries[key] = (now, value)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


_CACHE = _Cache()


def resolve(
    ref: str,
    *,
    registry: str | None = None,
    ttl: float = DEFAULT_TTL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    store: RunStore | None = None,
    sandbox: bool = False,
) -> Resolved:
    """The endpoint (and model, run, metrics) behind ``name@alias``.

    ``registry`` is a local run-store path or ``gs://bucket/prefix`` (default:
    ``VERTEX_TUNER_REGISTRY``, else ``$VERTEX_TUNER_HOME/runs``); ``sandbox=True`` reads the
    sandbox's run store there, as ``--sandbox`` does. Results are cached for ``ttl`` seconds per
    (registry, sandbox, ref).
    """
    location = registry or os.environ.get("VERTEX_TUNER_REGISTRY") or ""
    key = (f"{location}#sandbox" if sandbox else location, ref)
    now = clock()
    cached = _CACHE.get(key, ttl, now)
    if cached is not None:
        return cached
    resolved = resolve_in(store or _open_store(location, sandbox=sandbox), ref)
    _CACHE.put(key, resolved, now)
    return resolved


def clear_cache() -> None:
    """Forget cached answers (tests, or after promoting from the same process)."""
    _CACHE.clear()


def _open_store(location: str, *, sandbox: bool) -> RunStore:
    from vertex_tuner.wiring import service_run_store

    return service_run_store(location or None, sandbox=sandbox)


def genai_client_for(ref: str, *, http_options: Any = None, **kwargs: Any) -> tuple[Any, str]:
    """A google-genai client for the endpoint's project and region, and the model name to pass.

    ``client.models.generate_content(model=model, contents=…, config=resolve(ref)
    .content_config())`` then calls the tuned endpoint the way it was evaluated.
    Sandbox endpoints are refused: they only exist inside a running sandbox. ``http_options``
    (an ``HttpOptions`` or a dict) is merged into the client's options, whose ``api_version`` is
    always v1beta1.
    """
    resolved = resolve(ref, **kwargs)
    if resolved.sandbox:
        raise VertexTunerError(
            f"{resolved.ref} points at a sandbox run; it has no endpoint in Google Cloud",
            hint="resolve against the run store your production runs use (registry=…)",
        )
    from vertex_tuner.backends.genai import service_client

    return service_client(resolved.project, resolved.serving_location, http_options), (
        resolved.endpoint
    )
