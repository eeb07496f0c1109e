"""Reinforcement tuning: the reward in the spec (checked with google-genai's own types), the
rules for its settings and its prompts, and the reward's test cases run before anything is paid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from vertex_tuner.backends.fake import FakeRewardValidator, FakeStorage, FakeTuner
from vertex_tuner.backends.genai import request_body
from vertex_tuner.backends.interface import RewardScore
from vertex_tuner.dataset import Validator
from vertex_tuner.errors import SpecError
from vertex_tuner.runstore import LocalBlobStore, RunStore
from vertex_tuner.spec import JobSpec, load_spec
from vertex_tuner.tuning import TuningService, rewards
from vertex_tuner.tuning import plan as planning

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "jobs" / "ticket_priority.yaml"

SPEC = """\
name: priority
base_model: gemini-3.5-flash
method: reinforcement
dataset: {{train: data.jsonl}}
reward:
{reward}
hyperparameters: {{epochs: 2{hyper}}}
gcp: {{project: acme-project, bucket: acme-tuning, location: us-central1}}
"""
STRING_MATCH = """\
  parse: {regex: '"priority":\\s*"(\\w+)"'}
  string_match: {expression: "{{references.priority}}", correct: 1, wrong: -1}
  tests: cases.jsonl"""


def prompt(i: int, priority: str = "high", **extra: Any) -> bytes:
    line = {
        "contents": [{"role": "user", "parts": [{"text": f"Ticket {i}: where is my order?"}]}],
        "references": {"priority": priority},
        **extra,
    }
    return orjson.dumps(line)


def case(response: str, expect: Any, priority: str = "high") -> bytes:
    example = orjson.loads(prompt(0, priority))
    return orjson.dumps({"example": example, "response": response, "expect": expect})


def write(tmp_path: Path, reward: str = STRING_MATCH, hyper: str = "", **files: bytes) -> Path:
    (tmp_path / "data.jsonl").write_bytes(b"\n".join(prompt(i) for i in range(40)) + b"\n")
    (tmp_path / "cases.jsonl").write_bytes(
        case('{"priority": "high"}', 1) + b"\n" + case('{"priority": "low"}', -1) + b"\n"
    )
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(reward=reward, hyper=hyper))
    return path


def load(path: Path) -> JobSpec:
    return load_spec(path, environ={})


# --- the spec ---------------------------------------------------------------------------------


def test_the_shipped_example_loads_and_sends_every_setting(tmp_path: Path) -> None:
    from vertex_tuner.tuning.preparation import prepare

    spec = load_spec(SHIPPED, environ={}, offline=True)
    prepared = prepare(spec, tmp_path / "work")
    uploads = planning.uploads_for(spec, prepared)
    request = planning.build_request(spec, prepared, spec.base_model, "f" * 64, uploads)
    body = request_body(request)
    rft = body["reinforcementTuningSpec"]
    hyper = rft["hyperParameters"]
    assert hyper == {
        "epochCount": 2,
        "samplesPerPrompt": 16,
        "batchSize": 32,
        "maxOutputTokens": 1024,
        "thinkingLevel": "MINIMAL",
        "evaluateInterval": 10,
        "checkpointInterval": 20,
    }
    weighted = rft["compositeRewardConfig"]
    configs = weighted.get("weightedRewardConfigs") or weighted.get("weighted_reward_configs")
    assert [c["weight"] for c in configs] == [2.0, 1.0]
    code = str(configs[1])
    assert "def evaluate(example, response)" in code  # the file's text is sent as the snippet
    assert "supervisedTuningSpec" not in body and "preferenceOptimizationSpec" not in body


@pytest.mark.parametrize(
    ("reward", "hyper", "field", "message"),
    [
        (
            STRING_MATCH,
            ", batch_size: 33, samples_per_prompt: 3",
            "hyperparameters.batch_size",
            "multiple of 16",
        ),
        (
            STRING_MATCH,
            ", samples_per_prompt: 256, batch_size: 64",
            "hyperparameters.batch_size",
            "at most 8,192",
        ),
        (
            STRING_MATCH,
            ", export_last_checkpoint_only: true",
            "hyperparameters.export_last_checkpoint_only",
            "google-genai drops it",
        ),
        (
            STRING_MATCH,
            ", evaluate_interval: 3, checkpoint_interval: 10",
            "hyperparameters.checkpoint_interval",
            "not a multiple of evaluate_interval",
        ),
        (
            "  string_match: {expression: x, operaton: exact}",
            "",
            "reward.string_match.operaton",
            "did you mean 'operation'",
        ),
        (
            "  string_match: {expression: x}\n  code: r.py",
            "",
            "reward",
            "exactly one of string_match, code, judge or cloud_run",
        ),
        ("  code: missing.py", "", "reward", "cannot read missing.py"),
    ],
)
def test_a_reinforcement_setting_vertex_would_refuse_is_a_spec_error_on_its_line(
    tmp_path: Path, reward: str, hyper: str, field: str, message: str
) -> None:
    path = write(tmp_path, reward, hyper, **{"r.py": b"def evaluate(e, r):\n    return 1\n"})
    with pytest.raises(SpecError) as caught:
        load(path)
    error = caught.value
    assert error.location is not None and error.location.field == field, error
    assert error.location.line is not None and error.location.file is not None
    assert message in str(error)


def test_settings_of_one_method_are_refused_for_the_others(tmp_path: Path) -> None:
    path = write(tmp_path)
    text = path.read_text()
    supervised = text.replace("method: reinforcement", "method: supervised")
    path.write_text(supervised)
    with pytest.raises(SpecError, match="only for method 'reinforcement'"):
        load(path)
    path.write_text(
        supervised.replace("reward:\n" + STRING_MATCH + "\n", "").replace(
            "epochs: 2", "epochs: 2, samples_per_prompt: 8"
        )
    )
    with pytest.raises(SpecError) as caught:
        load(path)
    assert caught.value.location.field == "hyperparameters.samples_per_prompt"  # type: ignore[union-attr]
    no_reward = text.replace("reward:\n" + STRING_MATCH + "\n", "")
    path.write_text(no_reward)
    with pytest.raises(SpecError, match="needs a reward"):
        load(path)
    path.write_text(
        text.replace("gemini-3.5-flash", "gemini-2.5-flash").replace(
            "epochs: 2", "epochs: 2, thinking_level: high"
        )
    )
    with pytest.raises(SpecError, match="takes no thinking_level"):
        load(path)
    path.write_text(text + "budget: {max_cost_usd: 10}\n")
    with pytest.raises(SpecError, match="no price for it"):
        load(path)


def test_the_reward_file_is_part_of_the_fingerprint(tmp_path: Path) -> None:
    reward = "  code: r.py\n  tests: cases.jsonl"
    path = write(tmp_path, reward, **{"r.py": b"def evaluate(e, r):\n    return 1\n"})
    first = load(path).result_fields()
    (tmp_path / "r.py").write_bytes(b"def evaluate(e, r):\n    return 0\n")
    assert load(path).result_fields() != first
    (tmp_path / "cases.jsonl").write_bytes(case("x", 0) + b"\n")
    assert load(path).result_fields() == load(path).result_fields()


def test_the_estimate_says_steps_answers_and_that_there_is_no_price(tmp_path: Path) -> None:
    spec = load(write(tmp_path, hyper=", batch_size: 16, samples_per_prompt: 4"))
    prepared = Validator(
        model=spec.base_model, method="reinforcement", references=spec.reward_references()
    ).run(tmp_path / "data.jsonl", display="data.jsonl", workdir=tmp_path / "work")
    estimate = planning.estimate(spec, prepared)
    assert estimate.cost_usd is None and "no price" in estimate.note
    assert "5 steps × 16 prompts × 4 samples = 320 sampled answers" in estimate.note


# --- the prompts ------------------------------------------------------------------------------


def validate(
    tmp_path: Path, lines: list[bytes], references: tuple[str, ...] = ("priority",)
) -> Any:
    data = tmp_path / "prompts.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    validator = Validator(model="gemini-3.5-flash", method="reinforcement", references=references)
    return validator.run(data, display="prompts.jsonl").report


def test_prompt_rules_are_findings_with_their_lines(tmp_path: Path) -> None:
    answered = orjson.loads(prompt(2))
    answered["contents"].append({"role": "model", "parts": [{"text": "high"}]})
    function = orjson.loads(prompt(4))
    function["contents"][0]["parts"] = [{"functionCall": {"name": "f", "args": {}}}]
    lines = [
        prompt(1),
        orjson.dumps(answered),
        prompt(3, references={"priority": 3}),  # replaced below
        orjson.dumps(function),
        orjson.dumps({"contents": orjson.loads(prompt(5))["contents"], "references": {"x": "y"}}),
    ]
    lines[2] = orjson.dumps({**orjson.loads(prompt(3)), "references": {"priority": 3}})
    report = validate(tmp_path, lines)
    found = {(f.code, f.line, f.field) for f in report.errors}
    assert ("must-end-on-user", 2, "contents[1].role") in found
    assert ("bad-references", 3, "references.priority") in found
    assert ("bad-part", 4, "contents[0].parts[0]") in found
    assert ("missing-reference", 5, "references.priority") in found
    assert not report.ok


@pytest.mark.parametrize(("step_samples", "refused"), [(2048, True), (1024, False)])
def test_a_media_prompt_holds_the_step_to_1024_samples(
    tmp_path: Path, step_samples: int, refused: bool
) -> None:
    media = orjson.loads(prompt(3))
    media["contents"][0]["parts"].append(
        {"fileData": {"fileUri": "gs://b/ticket.png", "mimeType": "image/png"}}
    )
    data = tmp_path / "prompts.jsonl"
    data.write_bytes(b"\n".join([prompt(1), prompt(2), orjson.dumps(media), prompt(4)]) + b"\n")
    validator = Validator(
        model="gemini-3.5-flash", method="reinforcement", step_samples=step_samples
    )
    report = validator.run(data, display="prompts.jsonl").report
    found = [(f.code, f.line, f.field) for f in report.errors]
    assert found == ([("media-step-limit", 3, "contents")] if refused else [])
    if refused:
        assert "2,048" in report.errors[0].message and "1,024" in report.errors[0].message


def test_media_in_a_system_instruction_is_found_as_the_rest_of_the_validator_reads_it() -> None:
    from vertex_tuner.dataset.validate import _has_file_data

    media = {"parts": [{"file_data": {"file_uri": "gs://b/a.png", "mime_type": "image/png"}}]}
    text = {"parts": [{"text": "Triage."}]}
    # systemInstruction null beside system_instruction: the latter is the system instruction.
    assert _has_file_data({"systemInstruction": None, "system_instruction": media, "contents": []})
    assert not _has_file_data({"systemInstruction": text, "system_instruction": media})


def test_the_step_samples_come_from_the_spec(tmp_path: Path) -> None:
    spec = load(write(tmp_path, hyper=", batch_size: 64, samples_per_prompt: 32"))
    assert spec.step_samples() == 2048


def test_more_than_5000_prompts_is_an_error(tmp_path: Path) -> None:
    report = validate(tmp_path, [prompt(i) for i in range(5001)])
    assert [f.code for f in report.errors] == ["too-many-examples"]


# --- reward tests -----------------------------------------------------------------------------


CODE = b"""
import json
def evaluate(example, response):
    text = response["parts"][0]["text"]
    return 1.0 if json.loads(text)["priority"] == example["references"]["priority"] else -1.0
"""


def code_spec(tmp_path: Path, code: bytes = CODE, cases: bytes | None = None) -> JobSpec:
    path = write(tmp_path, "  code: r.py\n  tests: cases.jsonl", **{"r.py": code})
    if cases is not None:
        (tmp_path / "cases.jsonl").write_bytes(cases)
    return load(path)


def test_a_code_reward_runs_locally_on_each_case(tmp_path: Path) -> None:
    results = rewards.test_rewards(code_spec(tmp_path), None)
    assert [(r.passed, r.reward, r.partial) for r in results] == [
        (True, 1.0, False),
        (True, -1.0, False),
    ]
    assert results[0].details == {"local:r.py": 1.0}


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            b"def evaluate(example, response):\n    return example['references']['nope']\n",
            "KeyError",
        ),
        (b"def evaluate(example, response):\n    while True:\n        pass\n", "longer than 1 s"),
        (b"def evaluate(example, response):\n    return 'high'\n", "ValueError"),
        (b"def evaluat(example, response):\n    return 1\n", "KeyError"),
    ],
)
def test_a_broken_code_reward_fails_offline_with_its_error(
    tmp_path: Path, code: bytes, message: str
) -> None:
    spec = code_spec(tmp_path, code)
    results = rewards.test_rewards(spec, None, timeout=1.0)
    assert not any(r.passed for r in results)
    assert results[0].error is not None and message in results[0].error
    with pytest.raises(SpecError) as caught:
        rewards.require_passing(spec, None)
    assert caught.value.message.startswith("cases.jsonl:1: 2 of 2 reward test(s) failed")
    assert caught.value.hint == f"see every case with: vertex-tuner reward test {spec.spec_path}"


def test_vertex_scores_every_case_and_an_expectation_outside_fails(tmp_path: Path) -> None:
    spec = load(write(tmp_path))
    validator = FakeRewardValidator(
        lambda example, text, reward: 1.0 if example["references"]["priority"] in text else 0.2
    )
    results = rewards.test_rewards(spec, validator)
    assert [r.reward for r in results] == [1.0, 0.2]
    assert [r.passed for r in results] == [True, False]  # the second expects -1
    assert len(validator.calls) == 2 and validator.calls[0][1] == '{"priority": "high"}'


@pytest.mark.parametrize(
    ("score", "why"),
    [
        (RewardScore(None), "Vertex returned no overall reward"),
        (RewardScore(None, {"exact": (None, None)}), "exact: failed"),
        (RewardScore(0.5, {"exact": (None, "regex did not compile")}), "exact: regex did not"),
        (RewardScore(None, {}, "the sample response is empty"), "the sample response is empty"),
    ],
)
def test_a_case_vertex_did_not_score_fails_and_says_why(
    score: RewardScore, why: str, tmp_path: Path
) -> None:
    spec = load(write(tmp_path))

    class Unscored:
        def validate_reward(self, example: Any, response: str, reward: Any) -> RewardScore:
            return score

    results = rewards.test_rewards(spec, Unscored())  # type: ignore[arg-type]
    assert not any(r.passed for r in results)
    assert all(r.error is not None and r.error.startswith(why) for r in results)


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        (b"not json", None, "not JSON"),
        (b'{"example": {}, "response": "x", "expect": 1}', "example", "contents"),
        (b'{"example": {"contents": []}, "response": 3, "expect": 1}', "response", "Content"),
        (
            b'{"example": {"contents": []}, "response": "x", "expect": [1, 0]}',
            "expect",
            "low <= high",
        ),
        (b'{"example": {"contents": []}, "response": "x", "expect": true}', "expect", "a number"),
    ],
)
def test_a_bad_case_names_its_line_and_field(
    tmp_path: Path, line: bytes, field: str | None, message: str
) -> None:
    spec = code_spec(tmp_path, cases=case('{"priority": "high"}', 1) + b"\n" + line + b"\n")
    with pytest.raises(SpecError) as caught:
        rewards.load_cases(spec)
    assert caught.value.location is not None
    assert (caught.value.location.line, caught.value.location.field) == (2, field)
    assert message in caught.value.message


def test_submit_runs_the_reward_tests_and_creates_nothing_when_one_fails(tmp_path: Path) -> None:
    spec = code_spec(tmp_path, cases=case('{"priority": "low"}', 1) + b"\n")
    tuner = FakeTuner()
    storage = FakeStorage()
    service = TuningService(
        storage=storage,
        tuner=tuner,
        runs=RunStore(LocalBlobStore(tmp_path / "runs")),
        workdir=tmp_path / "work",
        rewards=FakeRewardValidator(lambda e, t, r: 1.0),
    )
    with pytest.raises(SpecError, match="1 of 1 reward test"):
        service.submit(spec, wait=False)
    assert tuner.jobs == {} and storage.objects == {}
    (tmp_path / "cases.jsonl").write_bytes(case('{"priority": "high"}', 1) + b"\n")
    result = service.submit(load(spec.spec_path), wait=False)
    assert result.record is not None and len(tuner.jobs) == 1


def test_the_example_s_cases_pass_offline(tmp_path: Path) -> None:
    spec = load_spec(SHIPPED, environ={}, offline=True)
    results = rewards.test_rewards(spec, None)
    assert results and all(r.passed and r.partial for r in results)


def test_validate_says_the_billed_tokens_are_not_known_before_the_job() -> None:
    from click.testing import CliRunner

    from vertex_tuner.cli import cli

    result = CliRunner().invoke(cli, ["validate", str(SHIPPED)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "billable not known before the job (2 epoch(s)) on gemini-3.5-flash" in text
    assert "~0 tokens" not in text
    assert f"vertex-tuner submit {SHIPPED} --dry-run" in text
