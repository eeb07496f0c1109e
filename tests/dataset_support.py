"""Shared helpers for the dataset tests: writing JSONL files and reading findings by code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def write_lines(tmp_path: Path, rows: list[Any], name: str = "d.jsonl") -> Path:
    """A JSONL file of ``rows``: objects are dumped, bytes written as they are, one per line."""
    path = tmp_path / name
    path.write_bytes(
        b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows)
    )
    return path


def codes(report: Any) -> dict[str, list[int | None]]:
    """Each finding code of a report, errors then warnings, with the lines it was found on."""
    out: dict[str, list[int | None]] = {}
    for f in [*report.errors, *report.warnings]:
        out.setdefault(f.code, []).append(f.line)
    return out
