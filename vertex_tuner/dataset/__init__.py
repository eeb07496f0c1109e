"""Reading, converting and validating tuning datasets.

``validate_file`` checks a bare file; :class:`Validator` also converts and splits it. Mapping a
job spec onto a Validator is the tuning layer's job (:func:`vertex_tuner.tuning.prepare`), so this
package knows nothing of specs.
"""

from __future__ import annotations

from vertex_tuner.dataset.findings import Finding
from vertex_tuner.dataset.validate import (
    DatasetFile,
    PreparedDataset,
    Report,
    Validator,
    validate_file,
)

__all__ = [
    "DatasetFile",
    "Finding",
    "PreparedDataset",
    "Report",
    "Validator",
    "validate_file",
]
