"""The result of one evaluation: metrics per target, per-example outputs, the gate's verdict.

:meth:`EvaluationResult.to_json` is the stable machine form (``evaluate --json`` and the
report's ``results.json``)::

    {
      "spec": "support-tone", "run": "r-...", "created_at": "2026-01-01T00:00:00Z",
      "metrics": ["exact_match", "rouge_l"],
      "targets": {"tuned": {"model": "...", "metrics": {"rouge_l": 0.61}, "errors": 0}, ...},
      "binding": {"run": "r-...", "tuned": "projects/.../endpoints/...",
                  "holdout_sha256": "...", "examples": 31, "gate": "...", "metrics": [...]},
      "gate": {"passed": true, "explanation": "...",
               "clauses": [{"text": "...", "passed": true, "left": 0.61, "right": 0.45,
                            "note": ""}]} | null,
      "comparisons": {"tuned-base": {"rouge_l": {"delta": 0.16, "ci_low": 0.09,
                      "ci_high": 0.23, "p_value": null, "wins": 20, "ties": 8, "losses": 3,
                      "n": 31, ...}}},
      "usage": {"tuned": {"prompt": 5120, "output": 900}, ...},
      "examples": [{"index": 0, "prompt": "...", "reference": "...",
                    "outputs": {"tuned": "...", "base": "..."},
                    "scores": {"tuned": {"rouge_l": 1.0}, "base": {"rouge_l": 0.5}}}]
    }

With the ``reward`` metric, each example also has ``"rewards": {"tuned": {"NAME": 1.0, ...}}``
(each reward's own score), the binding a ``reward_sha256`` and the usage a ``reward`` entry
(``{"calls": N, "cached": C, "failed": M}``).

Targets are ``tuned``, ``base`` and ``production``, each present only when it was evaluated. A
score of ``null`` means the example could not be scored by that metric (e.g. its reference has
no label).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vertex_tuner.evaluation.gate import GateVerdict
from vertex_tuner.evaluation.statistics import Comparison


@dataclass(frozen=True)
class TargetResult:
    """One evaluated model."""

    #: What generateContent was called with: a base model name or a tuned model's endpoint.
    model: str
    #: Metric name to value; a metric that could score no example is absent.
    metrics: dict[str, float]
    #: Examples whose generation failed for good (scored as empty outputs).
    errors: int = 0


@dataclass(frozen=True)
class ExampleResult:
    """One held-out example: its prompt, the expected answer, and each target's output."""

    #: Its 0-based position in the held-out set.
    index: int
    prompt: str
    reference: str
    #: Target to output text.
    outputs: dict[str, str]
    #: Target to per-example metric scores (None: not scored).
    scores: dict[str, dict[str, float | None]]
    #: The judge's verdicts on this example, by pair (``"tuned-base"``): ``{"winner":
    #: "tuned" | "base" | "tie", "consistent": bool, "reasons": [str, str]}``.
    judge: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The reward metric's parts, by target: each reward's own score (``{"exact-priority":
    #: 1.0, "triage-code": 0.25}``); empty when the reward is not a metric.
    rewards: dict[str, dict[str, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationResult:
    """One evaluation of a run: what ``evaluate`` returns and the reports are made of."""

    spec: str
    run: str
    created_at: str
    #: The metrics evaluated, in the spec's order.
    metrics: list[str]
    targets: dict[str, TargetResult]
    examples: list[ExampleResult] = field(default_factory=list)
    #: None when the spec has no gate (evaluation.promote_if).
    verdict: GateVerdict | None = None
    #: What the verdict judged: the run, the tuned endpoint, the held-out set's SHA-256, the
    #: gate's normalised text, the metrics and their options (see :mod:`.verdicts`).
    binding: dict[str, Any] = field(default_factory=dict)
    #: Paired statistics per pair (``"tuned-base"``) and metric (see :mod:`.statistics`).
    comparisons: dict[str, dict[str, Comparison]] = field(default_factory=dict)
    #: Tokens the evaluation itself spent, per target (and ``judge``): ``{"prompt": n,
    #: "output": n}``; empty when the backend reports none.
    usage: dict[str, dict[str, int]] = field(default_factory=dict)
    #: What the evaluation was estimated to cost before it ran (see :mod:`.cost`), and how each
    #: target was asked (``online`` or ``batch``).
    estimate: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready data with the stable keys shown in the module docstring."""
        return {
            "spec": self.spec,
            "run": self.run,
            "created_at": self.created_at,
            "metrics": list(self.metrics),
            "targets": {
                role: {"model": t.model, "metrics": dict(t.metrics), "errors": t.errors}
                for role, t in self.targets.items()
            },
            "gate": self.verdict.to_json() if self.verdict else None,
            "binding": dict(self.binding),
            "comparisons": {
                pair: {metric: c.to_json() for metric, c in by_metric.items()}
                for pair, by_metric in self.comparisons.items()
            },
            "usage": {role: dict(u) for role, u in self.usage.items()},
            "estimate": dict(self.estimate),
            "examples": [
                {
                    "index": e.index,
                    "prompt": e.prompt,
                    "reference": e.reference,
                    "outputs": dict(e.outputs),
                    "scores": {role: dict(s) for role, s in e.scores.items()},
                    "judge": {pair: dict(j) for pair, j in e.judge.items()},
                    **(
                        {"rewards": {role: dict(r) for role, r in e.rewards.items()}}
                        if e.rewards
                        else {}
                    ),
                }
                for e in self.examples
            ],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> EvaluationResult:
        """Read back what :meth:`to_json` wrote; ValueError names what is missing or wrong."""
        try:
            gate = doc.get("gate")
            return cls(
                spec=str(doc["spec"]),
                run=str(doc["run"]),
                created_at=str(doc.get("created_at", "")),
                metrics=[str(m) for m in doc.get("metrics", [])],
                targets={
                    role: TargetResult(
                        str(t["model"]),
                        {str(k): float(v) for k, v in t["metrics"].items()},
                        int(t.get("errors", 0)),
                    )
                    for role, t in doc["targets"].items()
                },
                examples=[
                    ExampleResult(
                        int(e["index"]),
                        str(e["prompt"]),
                        str(e["reference"]),
                        {str(k): str(v) for k, v in e["outputs"].items()},
                        {
                            str(role): {
                                str(k): None if v is None else float(v) for k, v in s.items()
                            }
                            for role, s in e["scores"].items()
                        },
                        {str(k): dict(v) for k, v in (e.get("judge") or {}).items()},
                        {
                            str(role): {
                                str(k): None if v is None else float(v) for k, v in r.items()
                            }
                            for role, r in (e.get("rewards") or {}).items()
                        },
                    )
                    for e in doc.get("examples", [])
                ],
                verdict=None if gate is None else GateVerdict.from_json(gate),
                binding=dict(doc.get("binding") or {}),
                comparisons={
                    str(pair): {str(m): Comparison.from_json(c) for m, c in by_metric.items()}
                    for pair, by_metric in (doc.get("comparisons") or {}).items()
                },
                usage={
                    str(role): {str(k): int(v) for k, v in u.items()}
                    for role, u in (doc.get("usage") or {}).items()
                },
                estimate=dict(doc.get("estimate") or {}),
            )
        except KeyError as exc:
            raise ValueError(f"not an evaluation result: {exc.args[0]!r} is missing") from None
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"not an evaluation result: {exc}") from None
