"""What an evaluation will cost, before any prompt is sent.

Per target: the prompts the cache cannot answer, their tokens (about 4 characters a token, the
validator's estimate), and the answers' tokens, expected (as long as the references) and at most
(``evaluation.generation.max_output_tokens`` when set, else twice the longest reference plus an
allowance for thinking, which bills as output, unless thinking is off). A tuned model is billed
at its base's rate; batch prediction at half of it (:data:`vertex_tuner.models.BATCH_DISCOUNT`).
The judge, when it is a metric, asks each judged example twice (both orders) per pair, online.

``evaluation.max_cost_usd`` is held to the upper end; an estimate with a price missing cannot be
held to it, so a budget then refuses (fail closed). Prices are list prices from a public table
(:data:`vertex_tuner.models.INFERENCE_PRICE_SOURCE`), not a bill.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vertex_tuner import models
from vertex_tuner.dataset.gemini import content_text
from vertex_tuner.dataset.tokens import CHARS_PER_TOKEN
from vertex_tuner.evaluation.holdout import HeldOutExample

#: Output tokens allowed for thinking per answer, in the upper bound, when thinking is not off.
THINKING_ALLOWANCE = 2048
#: Tokens of one judge verdict (a short JSON object with a reason).
JUDGE_ANSWER_TOKENS = 80


def tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def prompt_tokens(example: HeldOutExample) -> int:
    text = "".join(content_text(c) for c in example.contents)
    return tokens(text) + tokens(example.system_instruction or "")


@dataclass(frozen=True)
class TargetCost:
    role: str
    model: str
    #: The base model whose price applies.
    priced_as: str
    mode: str
    requests: int
    cached: int
    prompt_tokens: int
    output_tokens: int
    output_tokens_max: int
    cost_usd: float | None
    cost_high_usd: float | None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class EvaluationCost:
    """The evaluation's tokens and cost per target and for the judge, before it runs."""

    targets: list[TargetCost]
    judge: TargetCost | None = None
    note: str = models.INFERENCE_PRICE_SOURCE
    unpriced: list[str] = field(default_factory=list)
    #: ``validateReinforcementTuningReward`` calls of the reward metric (one per answer).
    #: Google publishes no price for them; a reward with an autorater is listed in
    #: ``unpriced``, since its judge model bills.
    reward_calls: int = 0

    @property
    def parts(self) -> list[TargetCost]:
        return [*self.targets, *([self.judge] if self.judge else [])]

    @property
    def cost_usd(self) -> float | None:
        costs = [p.cost_usd for p in self.parts]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    @property
    def cost_high_usd(self) -> float | None:
        costs = [p.cost_high_usd for p in self.parts]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    @property
    def requests(self) -> int:
        return sum(t.requests for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": {t.role: t.to_json() for t in self.targets},
            "judge": self.judge.to_json() if self.judge else None,
            "requests": self.requests,
            "reward_calls": self.reward_calls,
            "cost_usd": _round(self.cost_usd),
            "cost_high_usd": _round(self.cost_high_usd),
            "unpriced": self.unpriced,
            "note": self.note,
        }

    def summary(self) -> str:
        """One line: requests, how they are sent, and the cost with its upper end."""
        modes = ", ".join(sorted({t.mode for t in self.targets})) or "online"
        if self.cost_usd is None or self.cost_high_usd is None:
            cost = f"cost unknown (no price for {', '.join(self.unpriced)})"
        else:
            cost = f"≈ ${self.cost_usd:,.4f} (at most ${self.cost_high_usd:,.4f})"
        judge = f" + {self.judge.requests} judge" if self.judge else ""
        reward = f" + {self.reward_calls} reward scorings" if self.reward_calls else ""
        return f"{self.requests} requests{judge}{reward} ({modes}), {cost}"

    def describe(self) -> str:
        """One line per part, for a plan or ``--dry-run``."""
        lines = []
        for part in self.parts:
            cost = (
                f"${part.cost_usd:,.4f} (at most ${part.cost_high_usd:,.4f})"
                if part.cost_usd is not None and part.cost_high_usd is not None
                else f"no price for {part.priced_as}"
            )
            cached = f", {part.cached} from the cache" if part.cached else ""
            lines.append(
                f"{part.role}: {part.requests} requests{cached} ({part.mode}) to {part.model}, "
                f"~{part.prompt_tokens:,} prompt + ~{part.output_tokens:,} answer tokens "
                f"(at most {part.output_tokens_max:,}): {cost}"
            )
        if self.reward_calls:
            lines.append(
                f"reward: up to {self.reward_calls} validateReinforcementTuningReward calls "
                "(one per answer; Google publishes no price for them)"
            )
        total = (
            f"total ${self.cost_usd:,.4f}, at most ${self.cost_high_usd:,.4f}"
            if self.cost_usd is not None and self.cost_high_usd is not None
            else f"total unknown: no price for {', '.join(self.unpriced)}"
        )
        return "\n".join([*lines, f"{total} ({self.note})"])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _price(tokens_in: int, tokens_out: int, priced_as: str, mode: str) -> float | None:
    price = models.inference_price(priced_as)
    if price is None:
        return None
    dollars = tokens_in / 1e6 * price.input + tokens_out / 1e6 * price.output
    return dollars * (models.BATCH_DISCOUNT if mode == "batch" else 1.0)


def answer_bound(references: Sequence[str], generation: Mapping[str, Any]) -> int:
    """The most output tokens one answer is counted at."""
    limit = generation.get("max_output_tokens")
    if limit is not None:
        return int(limit)
    thinking_off = generation.get("thinking_budget") == 0 or (
        generation.get("thinking_level") == "minimal"
    )
    longest = max((tokens(r) for r in references), default=0)
    return 2 * longest + 64 + (0 if thinking_off else THINKING_ALLOWANCE)


def target_cost(
    role: str,
    model: str,
    priced_as: str,
    mode: str,
    examples: Sequence[HeldOutExample],
    cached: int,
    generation: Mapping[str, Any],
) -> TargetCost:
    """The cost of the ``examples`` the cache cannot answer (``cached`` of them it can)."""
    asked = list(examples)
    prompt = sum(prompt_tokens(e) for e in asked)
    expected = sum(tokens(e.reference) for e in asked)
    bound = answer_bound([e.reference for e in asked], generation) * len(asked)
    return TargetCost(
        role,
        model,
        priced_as,
        mode,
        len(asked),
        cached,
        prompt,
        expected,
        bound,
        _price(prompt, expected, priced_as, mode),
        _price(prompt, bound, priced_as, mode),
    )


def judge_cost(
    judge_model: str,
    rubric: str,
    examples: Sequence[HeldOutExample],
    pairs: int,
    generation: Mapping[str, Any],
) -> TargetCost:
    """Two questions per judged example and pair; each carries the rubric, the prompt, the
    reference and two answers."""
    per = [tokens(rubric) + prompt_tokens(e) + tokens(e.reference) * 3 + 40 for e in examples]
    bound_answer = answer_bound([e.reference for e in examples], generation)
    calls = 2 * pairs * len(examples)
    prompt = 2 * pairs * sum(per)
    prompt_high = prompt + calls * 2 * bound_answer
    out = calls * JUDGE_ANSWER_TOKENS
    return TargetCost(
        "judge",
        judge_model,
        judge_model,
        "online",
        calls,
        0,
        prompt,
        out,
        out,
        _price(prompt, out, judge_model, "online"),
        _price(prompt_high, out, judge_model, "online"),
    )
