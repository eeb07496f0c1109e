"""A run record for tests: the fields every record needs, with the test's own on top."""

from __future__ import annotations

from typing import Any

from vertex_tuner.records import DatasetRef, RunRecord


def run_record(run_id: str = "r1", **fields: Any) -> RunRecord:
    values: dict[str, Any] = {
        "run_id": run_id,
        "spec_name": "support-tone",
        "spec_digest": "d",
        "fingerprint": "f" * 64,
        "tool_version": "0.1.0",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "method": "supervised",
        "base_model": "gemini-2.5-flash",
        "display_name": "support-tone",
        "train": DatasetRef(sha256="a" * 64, size=1, examples=1),
    }
    values.update(fields)
    return RunRecord(**values)
