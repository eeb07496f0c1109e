"""vertex-tuner: from a reviewed job spec and a dataset to a tuned, evaluated Gemini model.

The public API is imported lazily so that ``import vertex_tuner`` (and ``vertex-tuner --help``)
stays fast and never imports a Google client library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vertex_tuner._version import __version__

if TYPE_CHECKING:
    from vertex_tuner.api import (
        check_gate,
        current_run,
        evaluate_run,
        promote,
        prune,
        retrain,
        rollback,
    )
    from vertex_tuner.errors import (
        BudgetExceeded,
        DatasetError,
        GateFailed,
        JobFailed,
        SmokeTestFailed,
        SpecError,
        VertexTunerError,
        WaitTimeout,
    )
    from vertex_tuner.events import Event, Observer
    from vertex_tuner.records import RunRecord
    from vertex_tuner.registry import Resolved, genai_client_for, resolve
    from vertex_tuner.release import Promotion, RetrainOutcome
    from vertex_tuner.runstore import RunStore
    from vertex_tuner.spec import JobSpec, load_spec
    from vertex_tuner.tuning import TuningService
    from vertex_tuner.wiring import open_service

__all__ = [
    "BudgetExceeded",
    "DatasetError",
    "Event",
    "GateFailed",
    "JobFailed",
    "JobSpec",
    "Observer",
    "Promotion",
    "Resolved",
    "RetrainOutcome",
    "RunRecord",
    "RunStore",
    "SmokeTestFailed",
    "SpecError",
    "TuningService",
    "VertexTunerError",
    "WaitTimeout",
    "__version__",
    "check_gate",
    "current_run",
    "evaluate_run",
    "genai_client_for",
    "load_spec",
    "open_service",
    "promote",
    "prune",
    "resolve",
    "retrain",
    "rollback",
]

_LAZY: dict[str, str] = {
    "BudgetExceeded": "vertex_tuner.errors",
    "DatasetError": "vertex_tuner.errors",
    "GateFailed": "vertex_tuner.errors",
    "JobFailed": "vertex_tuner.errors",
    "SpecError": "vertex_tuner.errors",
    "VertexTunerError": "vertex_tuner.errors",
    "WaitTimeout": "vertex_tuner.errors",
    "JobSpec": "vertex_tuner.spec",
    "load_spec": "vertex_tuner.spec",
    "Resolved": "vertex_tuner.registry",
    "resolve": "vertex_tuner.registry",
    "genai_client_for": "vertex_tuner.registry",
    "RunRecord": "vertex_tuner.records",
    "RunStore": "vertex_tuner.runstore",
    "TuningService": "vertex_tuner.tuning",
    "open_service": "vertex_tuner.wiring",
    "Event": "vertex_tuner.events",
    "Observer": "vertex_tuner.events",
    "Promotion": "vertex_tuner.release",
    "RetrainOutcome": "vertex_tuner.release",
    "check_gate": "vertex_tuner.api",
    "current_run": "vertex_tuner.api",
    "evaluate_run": "vertex_tuner.api",
    "promote": "vertex_tuner.api",
    "prune": "vertex_tuner.api",
    "SmokeTestFailed": "vertex_tuner.errors",
    "retrain": "vertex_tuner.api",
    "rollback": "vertex_tuner.api",
}


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vertex_tuner' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
