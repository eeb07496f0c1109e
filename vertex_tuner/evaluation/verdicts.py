"""Which stored verdict a promotion may rely on.

Every evaluation of a run is kept (:meth:`~vertex_tuner.runstore.RunStore.add_evaluation`), and
the run record lists them as short entries, oldest first::

    {"id": "2026-12-02T101500Z-1a2b3c4d", "created_at": "...", "passed": true | false | null,
     "gate": "tuned.rouge_l >= base.rouge_l", "targets": ["tuned", "base"],
     "tuned": "projects/.../endpoints/...", "holdout_sha256": "…", "examples": 31,
     "generation": {"temperature": 0.0, "thinking_budget": 0}}

Each is bound to what it judged: the run, the tuned endpoint, the held-out set's SHA-256, the
gate's normalised text and the generation settings the models were called with (the full
document adds the metric options and settings). A
re-evaluation adds an entry; none is ever replaced, so a failed verdict cannot be turned into a
pass by evaluating again with a weaker comparison: ``promote --if-gate`` takes the **latest**
verdict that compared the tuned model against ``base`` on the run's held-out set, with the
spec's gate when the caller knows it, and that one must have passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vertex_tuner.records import RunRecord

#: How models were called before ``evaluation.generation`` existed (and when it is left unset).
DEFAULT_GENERATION: Mapping[str, Any] = {"temperature": 0.0}
#: The generation settings a verdict records, named as ``Generator.generate`` takes them.
GENERATION_KEYS = frozenset(
    {"temperature", "max_output_tokens", "thinking_budget", "thinking_level"}
)


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
        "generation": binding.get("generation") or dict(DEFAULT_GENERATION),
    }


def served_generation(record: RunRecord, endpoint: str) -> dict[str, Any]:
    """The generation settings ``endpoint`` (the run's, or one of its checkpoints') was last
    evaluated with: how services should call it. The default when it never was."""
    found: Any = None
    for item in reversed(record.evaluations):
        if item.get("tuned") == endpoint and isinstance(item.get("generation"), Mapping):
            found = item["generation"]
            break
    else:
        binding = (record.evaluation or {}).get("binding") or {}
        if binding.get("tuned") == endpoint and isinstance(binding.get("generation"), Mapping):
            found = binding["generation"]
    if found is None:
        return dict(DEFAULT_GENERATION)
    # Only the settings this version knows: a record is data, never a list of arguments.
    return {k: v for k, v in found.items() if k in GENERATION_KEYS}


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
    generation: Mapping[str, Any] | None = None,
) -> Choice:
    """The latest entry that compared against base, on this held-out set, for this tuned
    endpoint, with ``gate`` (normalised) and ``generation`` settings when given. Older entries
    never outrank it."""
    passed_over: list[str] = []
    for item in reversed(history):
        why = _mismatch(
            item, tuned=tuned, holdout_sha256=holdout_sha256, gate=gate, generation=generation
        )
        if why is None:
            return Choice(dict(item), tuple(passed_over))
        passed_over.append(f"{item.get('id')}: {why}")
    return Choice(None, tuple(passed_over))


def _mismatch(
    item: Mapping[str, Any],
    *,
    tuned: str | None,
    holdout_sha256: str | None,
    gate: str | None,
    generation: Mapping[str, Any] | None,
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
    used = item.get("generation") or DEFAULT_GENERATION
    if generation is not None and dict(used) != dict(generation):
        return f"it called the models with {dict(used)}, not the spec's {dict(generation)}"
    return None
