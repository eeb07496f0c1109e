"""Reading, converting and validating tuning datasets.

``validate_file`` checks a bare file; ``prepare`` validates a spec's data and writes the
converted train, validation and held-out files that submit uploads.
"""

from __future__ import annotations

from vertex_tuner.dataset.findings import Finding
from vertex_tuner.dataset.validate import (
    DatasetFile,
    PreparedDataset,
    Report,
    Validator,
    prepare,
    validate_file,
)

__all__ = [
    "DatasetFile",
    "Finding",
    "PreparedDataset",
    "Report",
    "Validator",
    "prepare",
    "validate_file",
]
