"""The result of one evaluation: metrics per target, per-example outputs, the gate's verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vertex_tuner.evaluation.gate import ClauseResult, GateVerdict


@dataclass(frozen=True)
class TargetResult:
    model: str
    metrics: dict[str, float]
    #: Examples whose generation failed for good.
    errors: int = 0


@dataclass(frozen=True)
class ExampleResult:
    index: int
    prompt: str
    reference: str
    outputs: dict[str, str]
    scores: dict[str, dict[str, float | None]]


@dataclass(frozen=True)
class EvaluationResult:
    spec: str
    run: str
    created_at: str
    metrics: list[str]
    targets: dict[str, TargetResult]
    examples: list[ExampleResult] = field(default_factory=list)
    verdict: GateVerdict | None = None

    def to_json(self) -> dict[str, Any]:
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
            "examples": [
                {
                    "index": e.index,
                    "prompt": e.prompt,
                    "reference": e.reference,
                    "outputs": dict(e.outputs),
                    "scores": {k: dict(v) for k, v in e.scores.items()},
                }
                for e in self.examples
            ],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EvaluationResult:
        gate = doc.get("gate")
        verdict = None
        if gate is not None:
            verdict = GateVerdict(
                passed=bool(gate["passed"]),
                clauses=[
                    ClauseResult(c["text"], c["passed"], c["left"], c["right"])
                    for c in gate.get("clauses", [])
                ],
                explanation=gate.get("explanation", ""),
            )
        return cls(
            spec=doc["spec"],
            run=doc["run"],
            created_at=doc.get("created_at", ""),
            metrics=list(doc.get("metrics", [])),
            targets={
                r: TargetResult(t["model"], dict(t["metrics"]), int(t.get("errors", 0)))
                for r, t in doc["targets"].items()
            },
            examples=[
                ExampleResult(
                    e["index"],
                    e["prompt"],
                    e["reference"],
                    dict(e["outputs"]),
                    {k: dict(v) for k, v in e["scores"].items()},
                )
                for e in doc.get("examples", [])
            ],
            verdict=verdict,
        )
