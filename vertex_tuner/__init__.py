"""vertex-tuner: from a reviewed job spec and a dataset to a tuned, evaluated Gemini model.

The public API is imported lazily so that ``import vertex_tuner`` (and ``vertex-tuner --help``)
stays fast and never imports a Google client library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vertex_tuner._version import __version__

if TYPE_CHECKING:
    from vertex_tuner.errors import (
        BudgetExceeded,
        DatasetError,
        GateFailed,
        JobFailed,
        SpecError,
        VertexTunerError,
        WaitTimeout,
    )
    from vertex_tuner.records import RunRecord
    from vertex_tuner.registry import Resolved, genai_client_for, resolve
    from vertex_tuner.runstore import RunStore
    from vertex_tuner.service import TuningService
    from vertex_tuner.spec import JobSpec, load_spec
    from vertex_tuner.wiring import open_service

__all__ = [
    "BudgetExceeded",
    "DatasetError",
    "GateFailed",
    "JobFailed",
    "JobSpec",
    "Resolved",
    "RunRecord",
    "RunStore",
    "SpecError",
    "TuningService",
    "VertexTunerError",
    "WaitTimeout",
    "__version__",
    "genai_client_for",
    "load_spec",
    "open_service",
    "resolve",
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
    "TuningService": "vertex_tuner.service",
    "open_service": "vertex_tuner.wiring",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vertex_tuner' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
