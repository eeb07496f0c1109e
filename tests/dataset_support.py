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


def spec_with_chat_data(tmp_path: Path, text: str, rows: int = 40) -> Path:
    """``text`` as spec.yaml beside a data.jsonl of ``rows`` one-exchange chat examples."""
    write_lines(
        tmp_path,
        [
            {
                "messages": [
                    {"role": "user", "content": f"Question {i} about order HH-{i:06d}?"},
                    {"role": "assistant", "content": f"Answer {i}: it ships on Thursday."},
                ]
            }
            for i in range(rows)
        ],
        "data.jsonl",
    )
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def codes(report: Any) -> dict[str, list[int | None]]:
    """Each finding code of a report, errors then warnings, with the lines it was found on."""
    out: dict[str, list[int | None]] = {}
    for f in [*report.errors, *report.warnings]:
        out.setdefault(f.code, []).append(f.line)
    return out
