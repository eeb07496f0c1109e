"""Submitting, following and recording tuning jobs.

- :mod:`.preparation`: a job spec's data, validated and converted;
- :mod:`.plan`: the fingerprint, the request and the estimate (pure);
- :mod:`.service`: :class:`TuningService`, the submit pipeline (lease, upload, create);
- :mod:`.follow`: the wait loop;
- :mod:`.recording`: jobs to run records.

Names are imported on first use, so ``validate`` (which needs only :mod:`.preparation`) does not
pay for the service's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vertex_tuner.tuning.follow import WaitOptions
    from vertex_tuner.tuning.plan import Plan, SubmitResult, build_request, compute_fingerprint
    from vertex_tuner.tuning.preparation import prepare
    from vertex_tuner.tuning.service import TuningService

_LAZY = {
    "Plan": "plan",
    "SubmitResult": "plan",
    "build_request": "plan",
    "compute_fingerprint": "plan",
    "WaitOptions": "follow",
    "prepare": "preparation",
    "TuningService": "service",
}

__all__ = [
    "Plan",
    "SubmitResult",
    "TuningService",
    "WaitOptions",
    "build_request",
    "compute_fingerprint",
    "prepare",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vertex_tuner.tuning' has no attribute {name!r}")
    return getattr(importlib.import_module(f"vertex_tuner.tuning.{module}"), name)
