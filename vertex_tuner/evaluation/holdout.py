"""Held-out examples: the prompts and reference answers evaluation runs on.

A held-out file is converted Gemini JSONL (what ``prepare`` writes). Each example becomes one
prompt (the system instruction and every turn before the last model turn) and one reference (the
text of that last model turn).

A reinforcement prompt (contents ending on a user turn, with ``references``: a string to string
map) has no answer to compare with: its prompt is every turn, its ``references`` are what the
spec's reward reads, and its reference text is those references as canonical JSON (so
``label_accuracy`` with ``label_field`` reads one of them).
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
    #: A reinforcement prompt's line as written, which the reward is given as its example
    #: (None for an example with a written answer).
    line: Mapping[str, Any] | None = None

    @property
    def references(self) -> Mapping[str, str] | None:
        """A reinforcement prompt's references (None for an example with a written answer)."""
        return None if self.line is None else self.line["references"]

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
            references = _references(example, contents)
            last = (
                len(contents)
                if references is not None
                else max(i for i, c in enumerate(contents) if c.get("role") == "model")
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise DatasetError(
                f"{source}:{number}: not a held-out example (Gemini contents ending on a "
                "model turn, or a reinforcement prompt: contents ending on a user turn, with "
                "references)",
                hint="held-out files are written by vertex-tuner; re-run submit or evaluate "
                "from the spec",
            ) from None
        system = system_of(example)
        out.append(
            HeldOutExample(
                index=len(out),
                contents=tuple(contents[:last]),
                system_instruction=content_text(system) if isinstance(system, Mapping) else None,
                reference=content_text(contents[last])
                if references is None
                else orjson.dumps(references, option=orjson.OPT_SORT_KEYS).decode(),
                line=example if references is not None else None,
            )
        )
    return out


def _references(
    example: Mapping[str, Any], contents: Sequence[Mapping[str, Any]]
) -> dict[str, str] | None:
    """A reinforcement prompt's references; None for an example that ends on its answer."""
    references = example.get("references")
    if references is None or not contents or contents[-1].get("role") == "model":
        return None
    if not isinstance(references, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in references.items()
    ):
        raise ValueError("references is a map of strings")
    return dict(references)
