"""Which stored verdict a promotion may rely on.

Every evaluation of a run is kept (:meth:`~vertex_tuner.runstore.RunStore.add_evaluation`), and
the run record lists them as short entries, oldest first::

    {"id": "2026-12-02T101500Z-1a2b3c4d", "created_at": "...", "passed": true | false | null,
     "gate": "tuned.rouge_l >= base.rouge_l", "targets": ["tuned", "base"],
     "tuned": "projects/.../endpoints/...", "holdout_sha256": "…", "examples": 31}

Each is bound to what it judged: the run, the tuned endpoint, the held-out set's SHA-256 and
the gate's normalised text (the full document adds the metric options and settings). A
re-evaluation adds an entry; none is ever replaced, so a failed verdict cannot be turned into a
pass by evaluating again with a weaker comparison: ``promote --if-gate`` takes the **latest**
verdict that compared the tuned model against ``base`` on the run's held-out set, with the
spec's gate when the caller knows it, and that one must have passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def entry(doc: Mapping[str, Any], verdict_id: str) -> dict[str, Any]:
    """The short entry the run record keeps of one stored evaluation."""
    binding = doc.get("binding") or {}
    gate = doc.get("gate")
    return {
        "id": verdict_id,
        "created_at": doc.get("created_at"),
        "passed": gate.get("passed") if isinstance(gate, Mapping) else None,
        "gate": binding.get("gate"),
        "targets": sorted(doc.get("targets") or ()),
        "tuned": binding.get("tuned"),
        "checkpoint": binding.get("checkpoint"),
        "holdout_sha256": binding.get("holdout_sha256"),
        "examples": binding.get("examples"),
    }


@dataclass(frozen=True)
class Choice:
    """The verdict a promotion relies on, or why none qualifies."""

    verdict: dict[str, Any] | None
    #: Why each newer entry was passed over (empty when the newest one qualified).
    passed_over: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.verdict is None:
            return "no verdict"
        return f"verdict {self.verdict['id']} (gate {self.verdict.get('gate')!r})"


def choose(
    history: Sequence[Mapping[str, Any]],
    *,
    tuned: str | None,
    holdout_sha256: str | None,
    gate: str | None = None,
) -> Choice:
    """The latest entry that compared against base, on this held-out set, for this tuned
    endpoint, with ``gate`` (normalised) when given. Older entries never outrank it."""
    passed_over: list[str] = []
    for item in reversed(history):
        why = _mismatch(item, tuned=tuned, holdout_sha256=holdout_sha256, gate=gate)
        if why is None:
            return Choice(dict(item), tuple(passed_over))
        passed_over.append(f"{item.get('id')}: {why}")
    return Choice(None, tuple(passed_over))


def _mismatch(
    item: Mapping[str, Any], *, tuned: str | None, holdout_sha256: str | None, gate: str | None
) -> str | None:
    if item.get("gate") is None:
        return "it had no gate"
    if "base" not in (item.get("targets") or ()):
        return "it did not compare against base"
    if tuned and item.get("tuned") and item["tuned"] != tuned:
        return f"it judged {item['tuned']}, not the run's endpoint"
    if holdout_sha256 and item.get("holdout_sha256") != holdout_sha256:
        return "it used another held-out set"
    if gate is not None and item.get("gate") != gate:
        return f"its gate {item.get('gate')!r} is not the spec's {gate!r}"
    return None
