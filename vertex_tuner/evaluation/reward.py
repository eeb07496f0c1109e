"""The ``reward`` metric: each target's answers scored by a reinforcement spec's own reward.

A reinforcement held-out prompt has references, not a written answer, so nothing can be
compared with a reference text. What tuning optimised is the reward, and Vertex scores one
(example, answer) with it exactly as the tuning job scores a sample
(``tunings.validate_reward``, through a :class:`~vertex_tuner.backends.interface.RewardValidator`).
Each answer a target gave is sent once; a target's value is the mean of its overall rewards
(-1 to 1), and each reward's own score is kept per example beside it.

Fail closed: an answer that could not be scored (the call failed after the retry policy, or
Vertex said the reward errored) is not scored, and when more than ``max_failed_share`` of a
target's answers were not scored, no result is returned at all (BackendError).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vertex_tuner.backends.interface import RewardScore
from vertex_tuner.errors import BackendError, VertexTunerError
from vertex_tuner.evaluation.holdout import HeldOutExample
from vertex_tuner.evaluation.metrics import mean

#: One scoring call: (example line, answer Content) -> Vertex's score, retried by the caller.
RewardCall = Callable[[Mapping[str, Any], Mapping[str, Any]], RewardScore]


@dataclass(frozen=True)
class RewardSettings:
    """The reward a reinforcement spec tunes with, as Vertex takes it."""

    #: ``JobSpec.reward_payload()``: what ``validate_reward`` is sent.
    payload: Mapping[str, Any]
    #: ``JobSpec.reward_fingerprint()``: the reward and the files it reads, which a verdict
    #: made with it is bound to.
    sha256: str
    #: Whether a reward is an autorater (a judge model that bills per call).
    autorater: bool = False


@dataclass
class RewardScores:
    """Every target's rewards, aligned with the held-out examples."""

    #: role -> per example, the overall reward (None: not scored).
    scores: dict[str, list[float | None]] = field(default_factory=dict)
    #: role -> per example, each reward's own score by name (empty when not scored).
    details: dict[str, list[dict[str, float | None]]] = field(default_factory=dict)
    #: role -> answers that could not be scored (the call or the reward failed).
    failed: dict[str, int] = field(default_factory=dict)
    #: role -> the first reason an answer was not scored.
    reasons: dict[str, str] = field(default_factory=dict)
    #: Answers scored (or tried): Vertex's calls plus the scores the cache kept.
    calls: int = 0
    #: Of those, the scores the cache kept (no call made).
    cached: int = 0

    def mean(self, role: str) -> float | None:
        return mean(self.scores.get(role, []))


def example_of(example: HeldOutExample) -> Mapping[str, Any]:
    """What the reward is given as the example: the prompt's line as written."""
    if example.line is not None:
        return example.line
    raise VertexTunerError(
        f"held-out example {example.index + 1} is not a reinforcement prompt (it has no "
        "references), so the reward metric cannot score it",
        hint="the reward metric is for method: reinforcement; use exact_match or rouge_l",
    )


def score_rewards(
    call: RewardCall,
    examples: Sequence[HeldOutExample],
    outputs: Mapping[str, Sequence[str | None]],
    *,
    concurrency: int = 4,
    on_progress: Callable[[int, int], None] | None = None,
    max_failed_share: float = 0.05,
) -> RewardScores:
    """Score each target's answer to each example; a failed generation (None) is not sent."""
    lines = [example_of(e) for e in examples]
    jobs = [
        (role, index)
        for role, answers in outputs.items()
        for index, answer in enumerate(answers)
        if answer is not None
    ]

    def score(job: tuple[str, int]) -> tuple[str, int, RewardScore | str]:
        role, index = job
        answer = outputs[role][index]
        response = {"role": "model", "parts": [{"text": answer or ""}]}
        try:
            return role, index, call(lines[index], response)
        except VertexTunerError as exc:
            return role, index, exc.message

    result = RewardScores(
        scores={role: [None] * len(examples) for role in outputs},
        details={role: [{} for _ in examples] for role in outputs},
        failed={role: 0 for role in outputs},
    )
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for role, index, answer in pool.map(score, jobs):
            done += 1
            if on_progress is not None:
                on_progress(done, len(jobs))
            problem = answer if isinstance(answer, str) else answer.problem
            if isinstance(answer, RewardScore):
                result.details[role][index] = {k: v for k, (v, _) in answer.details.items()}
            if problem is not None:
                result.failed[role] += 1
                result.reasons.setdefault(role, problem)
                continue
            assert isinstance(answer, RewardScore)
            result.scores[role][index] = answer.overall
    result.calls = len(jobs)
    for role, answers in outputs.items():
        sent = sum(1 for a in answers if a is not None)
        if sent and result.failed[role] / sent > max_failed_share:
            raise BackendError(
                f"reward ({role}): {result.failed[role]} of {sent} answers could not be scored "
                f"(more than {max_failed_share:.0%}); no verdict was stored; first: "
                f"{result.reasons[role]}",
                hint="run the reward's own tests (vertex-tuner reward test SPEC), then "
                "evaluate again (the answers are cached)",
            )
    return result
