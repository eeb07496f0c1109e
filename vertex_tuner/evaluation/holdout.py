"""Held-out examples: the prompts and reference answers evaluation runs on.

A held-out file is converted Gemini JSONL (what ``prepare`` writes). Each example becomes one
prompt (the system instruction and every turn before the last model turn) and one reference (the
text of that last model turn).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from vertex_tuner.dataset.gemini import content_text, last_user_text, system_of
from vertex_tuner.errors import DatasetError


@dataclass(frozen=True)
class HeldOutExample:
    index: int
    contents: tuple[Mapping[str, Any], ...]
    system_instruction: str | None
    reference: str

    @property
    def prompt_text(self) -> str:
        """The last user turn's text, for reports."""
        return last_user_text(self.contents)


def parse_holdout(lines: Iterable[bytes], *, source: str) -> list[HeldOutExample]:
    """Examples from converted JSONL lines; a line without a final model turn is an error."""
    out: list[HeldOutExample] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            example = orjson.loads(raw)
            contents: Sequence[Mapping[str, Any]] = example["contents"]
            last = max(i for i, c in enumerate(contents) if c.get("role") == "model")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise DatasetError(
                f"{source}:{number}: not a held-out example (Gemini contents ending on a "
                "model turn)",
                hint="held-out files are written by vertex-tuner; re-run submit or evaluate "
                "from the spec",
            ) from None
        system = system_of(example)
        out.append(
            HeldOutExample(
                index=len(out),
                contents=tuple(contents[:last]),
                system_instruction=content_text(system) if isinstance(system, Mapping) else None,
                reference=content_text(contents[last]),
            )
        )
    return out
