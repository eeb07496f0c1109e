"""A finding is one thing the validator has to say about a dataset, at a place."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from vertex_tuner.dataset.codes import CODES

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


#: Findings kept per code; the rest are counted, so a million bad lines stay a short report.
MAX_PER_CODE = 50
_MORE = re.compile(r"and [0-9,]+ more like this")


class FindingList:
    """Findings, capped at :data:`MAX_PER_CODE` per code, with a count of what was left out."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self.counts: dict[str, int] = {}

    def add(self, finding: Finding) -> None:
        count = self.counts.get(finding.code, 0) + 1
        self.counts[finding.code] = count
        if count <= MAX_PER_CODE:
            self.items.append(finding)

    @classmethod
    def reopen(
        cls, errors: list[Finding], warnings: list[Finding], counts: dict[str, int]
    ) -> FindingList:
        """The list :meth:`finish` made ``errors`` and ``warnings`` of (with ``counts``, its
        :meth:`totals`' ``counts_by_code``), to revise and finish again."""
        found = cls()
        found.counts = dict(counts)
        found.items = [
            f
            for f in [*errors, *warnings]
            if not (
                f.line is None
                and counts.get(f.code, 0) > MAX_PER_CODE
                and _MORE.fullmatch(f.message)
            )
        ]
        return found

    def discard(self, code: str, file: str | None, line: int | None) -> None:
        """Take back the finding of ``code`` at ``file:line`` (kept, or only counted)."""
        for i, f in enumerate(self.items):
            if f.code == code and f.line == line and f.file == file:
                del self.items[i]
                break
        self.counts[code] = self.counts.get(code, 0) - 1
        if self.counts[code] <= 0:
            del self.counts[code]

    def extend(self, other: FindingList, *, line_offset: int = 0) -> None:
        """Append the findings of a later part of the same file, its lines shifted."""
        kept: dict[str, int] = {}
        for finding in self.items:
            kept[finding.code] = kept.get(finding.code, 0) + 1
        for finding in other.items:
            if kept.get(finding.code, 0) < MAX_PER_CODE:
                kept[finding.code] = kept.get(finding.code, 0) + 1
                if line_offset and finding.line is not None:
                    finding = replace(finding, line=finding.line + line_offset)
                self.items.append(finding)
        for code, count in other.counts.items():
            self.counts[code] = self.counts.get(code, 0) + count

    def totals(self) -> dict[str, Any]:
        """How many errors and warnings there are in all, and how many of each code."""
        # A code whose kept findings were all taken back has its severity from the table.
        severity = {c: "warning" if k == "warning" else "error" for c, (k, _) in CODES.items()}
        severity.update({f.code: f.severity for f in self.items})
        return {
            "error_count": sum(n for c, n in self.counts.items() if severity[c] == "error"),
            "warning_count": sum(n for c, n in self.counts.items() if severity[c] == "warning"),
            "counts_by_code": dict(sorted(self.counts.items())),
        }

    def finish(self) -> tuple[list[Finding], list[Finding]]:
        """(errors, warnings): whole-file findings first, then by line, then one "and N more"
        for each code over the cap."""
        items = sorted(self.items, key=lambda f: -1 if f.line is None else f.line)
        for code, count in sorted(self.counts.items()):
            if count > MAX_PER_CODE:
                first = next(f for f in items if f.code == code)
                items.append(
                    Finding(
                        first.severity,
                        code,
                        f"and {count - MAX_PER_CODE:,} more like this",
                        file=first.file,
                    )
                )
        errors = [f for f in items if f.severity == "error"]
        warnings = [f for f in items if f.severity == "warning"]
        return errors, warnings
