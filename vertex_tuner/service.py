"""The old home of the tuning service, kept so that ``vertex_tuner.service`` imports keep working.

The service now lives in :mod:`vertex_tuner.tuning`, and the observer protocol in
:mod:`vertex_tuner.events`.
"""

from __future__ import annotations

from vertex_tuner.events import Observer
from vertex_tuner.tuning import (
    Plan,
    SubmitResult,
    TuningService,
    build_request,
    compute_fingerprint,
)
from vertex_tuner.vocabulary import LABEL_FINGERPRINT, LABEL_SPEC, LABEL_VERSION

__all__ = [
    "LABEL_FINGERPRINT",
    "LABEL_SPEC",
    "LABEL_VERSION",
    "Observer",
    "Plan",
    "SubmitResult",
    "TuningService",
    "build_request",
    "compute_fingerprint",
]
