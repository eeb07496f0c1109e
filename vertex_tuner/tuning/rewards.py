"""A reinforcement spec's reward, tested before a single step is paid for.

``reward.tests`` is a JSONL file of cases, one per line::

    {"example": {"contents": [...], "references": {"priority": "high"}},
     "response": "{\"priority\": \"high\"}",
     "expect": 1}                       # or [low, high]

Each case is scored by Vertex exactly as tuning will score it
(``tunings.validate_reward``, through a :class:`~vertex_tuner.backends.interface.RewardValidator`),
and a code reward is also run locally first, in a subprocess with a timeout, so most mistakes
(a syntax error, a KeyError, a loop) are caught without the cloud. A case fails when the overall
reward is outside its expectation, or when the reward errors.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from vertex_tuner.errors import SpecError, VertexTunerError

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import RewardValidator
    from vertex_tuner.spec import JobSpec, RewardSpec

#: Seconds a code reward may run locally per case (Vertex allows 100 per evaluate call).
LOCAL_TIMEOUT = 20.0
#: Rewards are clipped to this range by Vertex.
REWARD_RANGE = (-1.0, 1.0)

# Runs one code reward on one case in a fresh interpreter: the snippet is executed as a module
# would be, and evaluate(example, response) is called with the case (example in camelCase
# ProtoJSON, response a Content), as Vertex calls it.
_RUNNER = r"""
import json, sys
case = json.load(sys.stdin)
namespace = {"__name__": "reward"}
exec(compile(case["code"], case["path"], "exec"), namespace)
value = namespace["evaluate"](case["example"], case["response"])
print(json.dumps({"reward": float(value)}))
"""


@dataclass(frozen=True)
class RewardCase:
    line: int
    example: dict[str, Any]
    response: dict[str, Any]
    low: float
    high: float

    @property
    def expectation(self) -> str:
        return f"{self.low:g}" if self.low == self.high else f"[{self.low:g}, {self.high:g}]"


@dataclass
class CaseResult:
    case: RewardCase
    #: The overall reward Vertex (or the sandbox) gave; None when it was not scored.
    reward: float | None = None
    #: Each reward's score by name (code rewards run locally are named ``local:NAME``).
    details: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    #: Offline with rewards that only Vertex scores: the code ran, the overall is unknown.
    partial: bool = False

    @property
    def passed(self) -> bool:
        if self.error is not None:
            return False
        if self.reward is None:
            return self.partial
        return self.case.low - 1e-9 <= self.reward <= self.case.high + 1e-9

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.case.line,
            "expect": [self.case.low, self.case.high],
            "reward": self.reward,
            "details": self.details,
            "error": self.error,
            "passed": self.passed,
            "scored": not self.partial,
        }


def load_cases(spec: JobSpec) -> list[RewardCase]:
    """The spec's test cases; a SpecError naming the file, line and field for a bad one."""
    assert spec.reward is not None
    if spec.reward.tests is None:
        return []
    path = spec.resolve_path(spec.reward.tests)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise SpecError(f"reward.tests: cannot read {spec.reward.tests}: {exc}") from None
    cases = []
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            cases.append(_case(raw, number, spec.reward.tests))
    if not cases:
        raise SpecError(
            f"{spec.reward.tests}: no test cases",
            hint='write one per line: {"example": {...}, "response": "...", "expect": 1}',
        )
    return cases


def _case(raw: bytes, number: int, file: str) -> RewardCase:
    from vertex_tuner.errors import Location

    def bad(message: str, field: str | None = None) -> SpecError:
        return SpecError(
            message,
            location=Location(file, number, field),
            hint='a case is {"example": {contents, references}, "response": TEXT, '
            '"expect": 1 | [low, high]}',
        )

    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise bad("a case is a JSON object")
    example = doc.get("example")
    if not isinstance(example, dict) or not isinstance(example.get("contents"), list):
        raise bad("example must be a dataset line with contents", "example")
    response = doc.get("response")
    if isinstance(response, str):
        response = {"role": "model", "parts": [{"text": response}]}
    if not isinstance(response, dict):
        raise bad("response must be the answer's text or a Content object", "response")
    expect = doc.get("expect")
    if isinstance(expect, int | float) and _number(expect):
        low = high = float(expect)
    elif (
        isinstance(expect, list) and len(expect) == 2 and all(_number(v) for v in expect)
    ) and expect[0] <= expect[1]:
        low, high = float(expect[0]), float(expect[1])
    else:
        raise bad("expect must be a number or [low, high] with low <= high", "expect")
    return RewardCase(number, example, response, low, high)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def run_locally(
    spec: JobSpec, reward: RewardSpec, case: RewardCase, *, timeout: float = LOCAL_TIMEOUT
) -> tuple[float | None, str | None]:
    """A code reward's score for one case, run in a fresh interpreter: (reward, error)."""
    assert reward.code is not None
    path = spec.resolve_path(reward.code)
    payload = {
        "code": path.read_text(encoding="utf-8"),
        "path": str(reward.code),
        "example": _camel(case.example),
        "response": case.response,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _RUNNER],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"{reward.code}: evaluate() ran longer than {timeout:g} s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["exited with an error"])[-1]
        return None, f"{reward.code}: {last}"
    try:
        value = float(json.loads(done.stdout.strip().splitlines()[-1])["reward"])
    except (ValueError, KeyError, IndexError):
        return None, f"{reward.code}: evaluate() printed no number"
    low, high = REWARD_RANGE
    return min(high, max(low, value)), None


def _camel(value: Any) -> Any:
    """A dataset line as camelCase ProtoJSON (``system_instruction`` → ``systemInstruction``),
    the form Vertex hands a code reward; keys inside ``references`` are the user's own."""
    if isinstance(value, list):
        return [_camel(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        head, *rest = str(key).split("_")
        name = head + "".join(p.title() for p in rest)
        out[name] = item if key == "references" else _camel(item)
    return out


def test_rewards(
    spec: JobSpec,
    validator: RewardValidator | None,
    *,
    cases: Sequence[RewardCase] | None = None,
    timeout: float = LOCAL_TIMEOUT,
) -> list[CaseResult]:
    """Every case: code rewards run locally, then (with a ``validator``) Vertex's score."""
    assert spec.reward is not None
    cases = load_cases(spec) if cases is None else cases
    rewards = spec.reward.rewards()
    payload = spec.reward_payload()
    results = []
    for case in cases:
        result = CaseResult(case)
        for index, (_, reward) in enumerate(rewards):
            if reward.code is None:
                continue
            value, error = run_locally(spec, reward, case, timeout=timeout)
            result.details[f"local:{reward.name or reward.code or index}"] = value
            if error is not None and result.error is None:
                result.error = error
        local = _local_overall(rewards, result.details) if result.error is None else None
        if local is not None and not case.low - 1e-9 <= local <= case.high + 1e-9:
            result.reward = local
            result.error = f"run locally, the reward is {local:g}, outside {case.expectation}"
        if validator is not None and result.error is None:
            try:
                score = validator.validate_reward(case.example, case.response, payload)
            except VertexTunerError as exc:
                result.error = exc.message
            else:
                result.reward = score.overall
                result.details.update({k: v for k, (v, _) in score.details.items()})
                result.error = score.problem
        elif validator is None and result.error is None:
            result.reward = local
            result.partial = local is None
        results.append(result)
    return results


def _local_overall(
    rewards: Sequence[tuple[float, RewardSpec]], details: Mapping[str, float | None]
) -> float | None:
    """Offline, the overall reward is known only when every reward is code (run locally)."""
    if any(r.code is None for _, r in rewards):
        return None
    values = [v for v in details.values() if v is not None]
    if len(values) != len(rewards):
        return None
    total = sum(w for w, _ in rewards)
    return sum(w * v for (w, _), v in zip(rewards, values, strict=True)) / total


def require_passing(spec: JobSpec, validator: RewardValidator | None) -> list[CaseResult]:
    """The cases' results, or a SpecError naming the first failing case (nothing is created)."""
    if spec.reward is None or spec.reward.tests is None:
        return []
    results = test_rewards(spec, validator)
    failed = [r for r in results if not r.passed]
    if failed:
        first = failed[0]
        why = first.error or f"reward {first.reward} is outside {first.case.expectation}"
        raise SpecError(
            f"{spec.reward.tests}:{first.case.line}: {len(failed)} of {len(results)} reward "
            f"test(s) failed; first: {why}",
            hint=f"see every case with: vertex-tuner reward test {spec.spec_path}",
        )
    return results
