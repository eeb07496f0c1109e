"""A finding is one thing the validator has to say about a dataset, at a place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem: a stable code, a message saying what to do, and where it is.

    ``line`` is the 1-based line (for CSV, the physical line the row starts on) or ``None`` when
    the finding is about the whole file. ``field`` is a dotted path inside the example, such as
    ``contents[2].parts[0].text``.
    """

    severity: Severity
    code: str
    message: str
    line: int | None = None
    file: str | None = None
    field: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"line": self.line, "code": self.code, "message": self.message}
        if self.file is not None:
            out["file"] = self.file
        if self.field is not None:
            out["field"] = self.field
        return out
