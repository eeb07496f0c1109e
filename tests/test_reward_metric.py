"""The reward metric: a reinforcement run evaluated by the reward it was tuned with.

Held-out prompts with references and no answer, each target's answers scored through a
RewardValidator, the gate reading the mean reward with its paired interval, the verdict bound to
the reward, failing closed when scoring fails, and the spec refusing metrics a reinforcement
held-out set cannot be scored by."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from records_support import run_record

from vertex_tuner.backends.fake import FakeGenerator, FakeRewardValidator, FakeStorage
from vertex_tuner.backends.interface import RewardScore, RewardValidator
from vertex_tuner.errors import BackendError, DatasetError, SpecError, VertexTunerError
from vertex_tuner.evaluation.holdout import parse_holdout
from vertex_tuner.evaluation.report import format_value, render_markdown, svg_chart
from vertex_tuner.evaluation.results import EvaluationResult
from vertex_tuner.evaluation.reward import RewardSettings, score_rewards
from vertex_tuner.evaluation.runner import Evaluator
from vertex_tuner.records import DatasetRef, RunRecord
from vertex_tuner.runstore import LocalBlobStore, RunStore
from vertex_tuner.spec import EvaluationSpec, load_spec

PRIORITIES = ["low", "normal", "high", "urgent"]
REWARD = RewardSettings(payload={"single": {"reward_name": "exact"}}, sha256="c" * 64)


def prompt_line(i: int) -> dict[str, Any]:
    return {
        "systemInstruction": {"parts": [{"text": "Answer with JSON."}]},
        "contents": [{"role": "user", "parts": [{"text": f"Ticket {i}: my order is late"}]}],
        "references": {"priority": PRIORITIES[i % 4]},
    }


def holdout_bytes(n: int) -> bytes:
    return b"\n".join(orjson.dumps(prompt_line(i)) for i in range(n)) + b"\n"


# --- held-out prompts -------------------------------------------------------------------------


def test_a_reinforcement_prompt_is_a_held_out_example_with_its_references() -> None:
    [example] = parse_holdout([orjson.dumps(prompt_line(2))], source="h.jsonl")
    assert example.references == {"priority": "high"}
    assert example.line == prompt_line(2)  # what the reward is given, as written
    assert len(example.contents) == 1 and example.contents[0]["role"] == "user"
    assert example.system_instruction == "Answer with JSON."
    # The reference text is the references as canonical JSON: label_field reads one of them.
    assert example.reference == '{"priority":"high"}'


def test_an_answered_example_is_unchanged_even_with_references() -> None:
    line = {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
        ],
        "references": {"k": "v"},
    }
    [example] = parse_holdout([orjson.dumps(line)], source="h.jsonl")
    assert example.reference == "hello" and example.references is None and example.line is None


@pytest.mark.parametrize(
    "line",
    [
        {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "references": {"k": 1}},
        {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "references": ["k"]},
        {"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
    ],
)
def test_a_prompt_that_is_neither_kind_names_its_line(line: dict[str, Any]) -> None:
    lines = [orjson.dumps(prompt_line(0)), orjson.dumps(line)]
    with pytest.raises(DatasetError, match=r"h\.jsonl:2: not a held-out example"):
        parse_holdout(lines, source="h.jsonl")


# --- scoring ----------------------------------------------------------------------------------


def by_priority(example: Mapping[str, Any], text: str, reward: Mapping[str, Any]) -> float:
    """1 for the reference priority named in the answer, -1 otherwise."""
    return 1.0 if example["references"]["priority"] in text else -1.0


def test_each_answer_is_scored_once_and_failed_generations_are_not_sent() -> None:
    examples = parse_holdout(holdout_bytes(4).splitlines(), source="h")
    validator = FakeRewardValidator(by_priority)
    outputs = {
        "tuned": ["low", "normal", "high", None],
        "base": ["no", "no", "high", "urgent"],
    }
    scores = score_rewards(
        lambda e, r: validator.validate_reward(e, r, REWARD.payload),
        examples,
        outputs,
        max_failed_share=0.5,
    )
    assert scores.calls == 7 and len(validator.calls) == 7
    assert scores.scores["tuned"] == [1.0, 1.0, 1.0, None]
    assert scores.scores["base"] == [-1.0, -1.0, 1.0, 1.0]
    assert scores.mean("tuned") == 1.0 and scores.mean("base") == 0.0
    assert scores.details["tuned"][0] == {"reward": 1.0}
    # The reward was given each prompt's line as written.
    assert validator.calls[0][0] == prompt_line(0)


class Flaky(RewardValidator):
    """Vertex's answers with every ``every``-th call failing the way it can fail."""

    def __init__(self, every: int, how: str) -> None:
        self.every, self.how, self.count = every, how, 0

    def validate_reward(
        self, example: Mapping[str, Any], response: Mapping[str, Any], reward: Mapping[str, Any]
    ) -> RewardScore:
        self.count += 1
        if self.count % self.every:
            return RewardScore(0.5, {"exact": (0.5, None)})
        if self.how == "raise":
            raise BackendError("503 from validateReinforcementTuningReward")
        if self.how == "reward-error":
            return RewardScore(None, {"exact": (None, "regex did not compile")})
        return RewardScore(None, {}, "the sample response is empty")


@pytest.mark.parametrize("how", ["raise", "reward-error", "error"])
def test_scoring_that_fails_for_more_than_5_percent_stores_nothing(how: str) -> None:
    examples = parse_holdout(holdout_bytes(20).splitlines(), source="h")
    flaky = Flaky(10, how)  # 2 of 20 answers: 10%
    with pytest.raises(BackendError, match=r"reward \(tuned\): 2 of 20 answers could not be"):
        score_rewards(
            lambda e, r: flaky.validate_reward(e, r, {}),
            examples,
            {"tuned": ["x"] * 20},
            concurrency=1,
        )
    # One in twenty-five is under the limit: those answers are left unscored, not zero.
    examples = parse_holdout(holdout_bytes(25).splitlines(), source="h")
    flaky = Flaky(25, how)
    scores = score_rewards(
        lambda e, r: flaky.validate_reward(e, r, {}),
        examples,
        {"tuned": ["x"] * 25},
        concurrency=1,
    )
    assert scores.scores["tuned"].count(None) == 1 and scores.failed["tuned"] == 1
    assert scores.mean("tuned") == 0.5


# --- the evaluator ----------------------------------------------------------------------------


def record(run_id: str, endpoint: str, examples: int) -> RunRecord:
    return run_record(
        run_id,
        spec_name="priority",
        method="reinforcement",
        base_model="gemini-3.5-flash",
        job_name=f"projects/p/locations/l/tuningJobs/{run_id}",
        state="SUCCEEDED",
        endpoint=endpoint,
        holdout=DatasetRef(uri="gs://b/h.jsonl", sha256="b" * 64, size=1, examples=examples),
    )


def evaluator_for(
    tmp_path: Path, n: int, rewards: RewardValidator | None
) -> tuple[Evaluator, RunStore, FakeGenerator, RunRecord]:
    storage = FakeStorage()
    storage.write("gs://b/h.jsonl", holdout_bytes(n), if_generation_match=0)
    runs = RunStore(LocalBlobStore(tmp_path / "runs"))
    current = record("r1", "projects/p/locations/l/endpoints/new", n)
    runs.save(current)

    def respond(model: str, contents: Any) -> str:
        number = int(str(contents).split("Ticket ")[1].split(":")[0])
        if model.endswith("/new"):  # right but for every fifth ticket
            priority = PRIORITIES[number % 4] if number % 5 else "none"
            return orjson.dumps({"priority": priority}).decode()
        return "We will get back to you."

    generator = FakeGenerator(respond)
    evaluator = Evaluator(
        generator=generator, runs=runs, storage=storage, sleep=lambda s: None, rewards=rewards
    )
    return evaluator, runs, generator, current


GATE = "significant(tuned.reward > base.reward) and tuned.reward >= production.reward"


def test_the_gate_reads_the_mean_reward_with_a_paired_interval(tmp_path: Path) -> None:
    validator = FakeRewardValidator(by_priority)
    evaluator, runs, _, current = evaluator_for(tmp_path, 40, validator)
    settings = EvaluationSpec(metrics=["reward", "label_accuracy"], label_field="priority")
    settings = settings.model_copy(update={"promote_if": GATE})
    result = evaluator.evaluate(current, settings, reward=REWARD)
    tuned, base = result.targets["tuned"].metrics, result.targets["base"].metrics
    # 32 of 40 right (+1) and 8 wrong (-1): mean 0.6; the base never names a priority.
    assert tuned["reward"] == pytest.approx(0.6) and base["reward"] == -1.0
    assert tuned["label_accuracy"] == pytest.approx(0.8) and base["label_accuracy"] == 0.0
    comparison = result.comparisons["tuned-base"]["reward"]
    assert comparison.delta == pytest.approx(1.6) and comparison.n == 40
    assert comparison.ci_low > 0
    assert result.verdict is not None and result.verdict.passed
    assert result.binding["reward_sha256"] == "c" * 64
    assert result.usage["reward"] == {"calls": 80, "cached": 0, "failed": 0}
    assert result.examples[5].scores["tuned"]["reward"] == -1.0  # every fifth ticket: "none"
    assert result.examples[1].rewards == {"tuned": {"reward": 1.0}, "base": {"reward": -1.0}}
    assert result.estimate["reward_calls"] == 80
    stored = runs.get("r1").evaluation
    assert stored is not None and stored["binding"]["reward_sha256"] == "c" * 64
    # What the JSON form writes, it reads back.
    again = EvaluationResult.from_json(result.to_json())
    assert again.examples[1].rewards == result.examples[1].rewards


@pytest.mark.parametrize("missing", ["reward", "validator"])
def test_a_reward_metric_that_cannot_be_scored_fails_before_any_prompt(
    tmp_path: Path, missing: str
) -> None:
    validator = FakeRewardValidator(by_priority) if missing == "reward" else None
    evaluator, _, generator, current = evaluator_for(tmp_path, 4, validator)
    settings = EvaluationSpec(metrics=["reward"])
    with pytest.raises(VertexTunerError, match="reward"):
        evaluator.evaluate(current, settings, reward=None if missing == "reward" else REWARD)
    assert generator.history == []


def test_a_reward_metric_on_answered_examples_fails_before_any_prompt(tmp_path: Path) -> None:
    validator = FakeRewardValidator(by_priority)
    evaluator, _, generator, current = evaluator_for(tmp_path, 4, validator)
    answered = {
        "contents": [
            {"role": "user", "parts": [{"text": "Ticket 1: late"}]},
            {"role": "model", "parts": [{"text": "sorry"}]},
        ]
    }
    local = tmp_path / "answered.jsonl"
    local.write_bytes(orjson.dumps(answered) + b"\n")
    with pytest.raises(VertexTunerError, match="not a reinforcement prompt"):
        evaluator.evaluate(
            current, EvaluationSpec(metrics=["reward"]), reward=REWARD, holdout_file=local
        )
    assert generator.history == []


def test_scoring_that_fails_stores_no_verdict(tmp_path: Path) -> None:
    evaluator, runs, _, current = evaluator_for(tmp_path, 20, Flaky(5, "raise"))
    with pytest.raises(BackendError, match="no verdict was stored"):
        evaluator.evaluate(current, EvaluationSpec(metrics=["reward"]), reward=REWARD)
    assert runs.get("r1").evaluation is None and runs.get("r1").evaluations == []


def test_reports_show_rewards_on_their_minus_one_to_one_scale(tmp_path: Path) -> None:
    evaluator, _, _, current = evaluator_for(tmp_path, 20, FakeRewardValidator(by_priority))
    result = evaluator.evaluate(current, EvaluationSpec(metrics=["reward"]), reward=REWARD)
    assert format_value("reward", -1.0) == "-1.000"
    chart = svg_chart(result, "reward")
    # The base's mean of -1 is an empty bar, the tuned model's 0.6 is 80% of the full width.
    assert 'width="0.0"' in chart and 'width="192.0"' in chart
    text = "\n".join(render_markdown(result).splitlines())
    assert "scored 40 answers through Vertex's validateReinforcementTuningReward" in text
    assert "| reward | 0.600 | -1.000 |" in text


# --- the spec ---------------------------------------------------------------------------------

SPEC = """\
name: priority
base_model: gemini-3.5-flash
method: {method}
dataset: {{train: data.jsonl}}
{reward}
evaluation:
  holdout: 0.1
{evaluation}
gcp: {{project: acme-project, bucket: acme-tuning, location: us-central1}}
"""
REWARD_SECTION = """\
reward:
  string_match: {expression: "{{references.priority}}", correct: 1, wrong: -1}"""


def spec_file(tmp_path: Path, evaluation: str, method: str = "reinforcement") -> Path:
    lines = [orjson.dumps(prompt_line(i)) for i in range(40)]
    if method != "reinforcement":
        lines = [
            orjson.dumps(
                {
                    "contents": [
                        {"role": "user", "parts": [{"text": f"q{i}"}]},
                        {"role": "model", "parts": [{"text": f"a{i}"}]},
                    ]
                }
            )
            for i in range(40)
        ]
    (tmp_path / "data.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    path = tmp_path / "spec.yaml"
    reward = REWARD_SECTION if method == "reinforcement" else ""
    path.write_text(SPEC.format(method=method, reward=reward, evaluation=evaluation))
    return path


def test_a_reinforcement_evaluation_is_scored_by_its_reward_by_default(tmp_path: Path) -> None:
    spec = load_spec(spec_file(tmp_path, '  promote_if: "tuned.reward > base.reward"'))
    assert spec.evaluation is not None and spec.evaluation.metrics == ["reward"]


@pytest.mark.parametrize(
    ("evaluation", "method", "message"),
    [
        ("  metrics: [reward, rouge_l]", "reinforcement", "rouge_l metric compares with a"),
        ("  metrics: [exact_match]", "reinforcement", "exact_match metric compares with"),
        ("  metrics: [judge]", "reinforcement", "judge metric compares with a written"),
        ("  metrics: [reward, macro_f1]", "reinforcement", "evaluation.label_field does not"),
        ("  metrics: [reward]", "supervised", "scores answers with a reinforcement spec's"),
    ],
)
def test_a_metric_the_held_out_set_cannot_be_scored_by_is_refused_at_its_line(
    tmp_path: Path, evaluation: str, method: str, message: str
) -> None:
    path = spec_file(tmp_path, evaluation, method)
    with pytest.raises(SpecError, match=message) as caught:
        load_spec(path)
    line = 1 + path.read_text().splitlines().index(evaluation)
    location = caught.value.location
    assert location is not None and location.line == line
    assert location.field == "evaluation.metrics"


def test_label_metrics_read_a_references_key(tmp_path: Path) -> None:
    metrics = "  metrics: [reward, label_accuracy, macro_f1]\n  label_field: priority"
    path = spec_file(tmp_path, metrics)
    spec = load_spec(path)
    assert spec.evaluation is not None and spec.evaluation.label_field == "priority"


def test_a_re_run_scores_unchanged_answers_from_the_cache(tmp_path: Path) -> None:
    from vertex_tuner.evaluation.cache import GenerationCache

    validator = FakeRewardValidator(by_priority)
    evaluator, _, _, current = evaluator_for(tmp_path, 10, validator)
    evaluator.cache = GenerationCache(tmp_path / "cache", "test")
    settings = EvaluationSpec(metrics=["reward"])
    first = evaluator.evaluate(current, settings, reward=REWARD)
    assert len(validator.calls) == 20 and first.usage["reward"]["cached"] == 0
    again = evaluator.evaluate(current, settings, reward=REWARD)
    assert len(validator.calls) == 20  # no call: the same reward, examples and answers
    assert again.usage["reward"] == {"calls": 0, "cached": 20, "failed": 0}
    assert again.targets["tuned"].metrics == first.targets["tuned"].metrics
    # Another reward is another score; fresh asks again.
    other = RewardSettings(payload=REWARD.payload, sha256="d" * 64)
    evaluator.evaluate(current, settings, reward=other)
    assert len(validator.calls) == 40
    evaluator.evaluate(current, settings, reward=REWARD, fresh=True)
    assert len(validator.calls) == 60


def test_a_failed_score_is_not_kept(tmp_path: Path) -> None:
    from vertex_tuner.evaluation.cache import GenerationCache

    cache = GenerationCache(tmp_path, "test")
    key = cache.reward_key("c" * 64, prompt_line(0), {"role": "model", "parts": []})
    cache.put_reward(key, RewardScore(None, {"exact": (None, "regex")}))
    assert cache.get_reward(key) is None
    cache.put_reward(key, RewardScore(0.5, {"exact": (0.5, "info")}))
    assert cache.get_reward(key) == RewardScore(0.5, {"exact": (0.5, None)})
