"""Reinforcement tuning in the sandbox, through the real google-genai and Cloud Storage clients."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from google import genai
from google.genai import errors, types
from google.oauth2.credentials import Credentials

from vertex_tuner.sandbox import SandboxInfo, genai_client, storage_client
from vertex_tuner.sandbox.reinforcement import CODE_TIMEOUT_VARIABLE, STAND_IN_AUTORATER

pytestmark = pytest.mark.sandbox

BUCKET = "reinforcement-tests"
FINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")
SYSTEM = {"parts": [{"text": "Answer with the number only."}]}


def prompt(i: int) -> dict[str, Any]:
    return {
        "systemInstruction": SYSTEM,
        "contents": [{"role": "user", "parts": [{"text": f"What is {i} plus {i}?"}]}],
        "references": {"answer": str(2 * i)},
    }


PROMPTS = [prompt(i) for i in range(40)]
EXAMPLE = prompt(3)  # the answer is "6"
PARENT = f"projects/{SandboxInfo.project}/locations/{SandboxInfo.location}"


def upload(info: SandboxInfo, name: str, lines: list[dict[str, Any]]) -> str:
    client = storage_client(info)
    bucket = client.bucket(BUCKET)
    if not bucket.exists():
        client.create_bucket(BUCKET)
    bucket.blob(name).upload_from_string(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    return f"gs://{BUCKET}/{name}"


def match(operation: str, expression: str, **rewards: float) -> dict[str, Any]:
    """A string-match scorer, as google-genai's dict form takes it."""
    return {
        "correct_answer_reward": rewards.get("correct", 1.0),
        "wrong_answer_reward": rewards.get("wrong", -1.0),
        "string_match_expression": {"match_operation": operation, "expression": expression},
    }


EXACT = types.SingleReinforcementTuningRewardConfig(
    reward_name="exact",
    string_match_reward_scorer=match("EXACT_MATCH", "{{references.answer}}"),  # type: ignore[arg-type]
)


@pytest.fixture(scope="module")
def client(sandbox_info: SandboxInfo) -> Iterator[Any]:
    """One client for the module, closed at its end: a client left to the collector while an
    error's traceback holds it would leave its connection open."""
    held = genai_client(sandbox_info)
    yield held
    held.close()


def tune(client: Any, uri: str, **config: Any) -> types.TuningJob:
    base_model = config.pop("base_model", "gemini-3.5-flash")
    settings = {"method": "REINFORCEMENT_TUNING", "reward_config": EXACT, **config}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job: types.TuningJob = client.tunings.tune(
            base_model=base_model,
            training_dataset=types.TuningDataset(gcs_uri=uri),
            config=types.CreateTuningJobConfig(**settings),
        )
    return job


def wait_end(client: Any, name: str) -> list[types.TuningJob]:
    """Every state the job was read in until it ended, the last one final."""
    seen: list[types.TuningJob] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen.append(client.tunings.get(name=name))
        if seen[-1].state and seen[-1].state.name in FINAL:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{name} did not end")


def refusal(call: Any) -> errors.ClientError:
    with pytest.raises(errors.ClientError) as caught:
        call()
    return caught.value


def validate(client: Any, response: str, **config: Any) -> types.ValidateRewardResponse:
    result: types.ValidateRewardResponse = client.tunings.validate_reward(
        parent=PARENT,
        sample_response={"role": "model", "parts": [{"text": response}]},
        example=config.pop("example", EXAMPLE),
        **config,
    )
    return result


def single(**config: Any) -> dict[str, Any]:
    return {"single_reward_config": {"reward_name": "r", **config}}


def reward_of(result: types.ValidateRewardResponse, name: str = "r") -> float | None:
    assert result.reward_info_details is not None
    return result.reward_info_details[name].reward


# --- jobs ----------------------------------------------------------------------------------


def test_a_job_walks_its_steps_with_checkpoints_and_reports_its_data(
    sandbox_info: SandboxInfo, client: Any
) -> None:
    uri = upload(sandbox_info, "prompts.jsonl", PROMPTS)
    created = tune(
        client,
        uri,
        batch_size=8,
        samples_per_prompt=4,
        epoch_count=3,
        checkpoint_interval=4,
        thinking_level="MINIMAL",
    )
    assert created.reinforcement_tuning_spec is not None
    assert created.reinforcement_tuning_spec.single_reward_config is not None
    seen = wait_end(client, created.name or "")
    job = seen[-1]
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    # 40 prompts × 3 epochs / 8 per step = 15 steps; a checkpoint every 4, and the last.
    assert job.tuning_job_metadata is not None
    assert job.tuning_job_metadata.completed_step_count == 15
    assert job.tuning_job_metadata.completed_epoch_count == 3
    progress = [
        j.tuning_job_metadata.completed_step_count
        for j in seen
        if j.tuning_job_metadata and j.tuning_job_metadata.completed_step_count is not None
    ]
    assert progress == sorted(progress) and progress[0] < 15
    assert job.tuned_model is not None and job.tuned_model.endpoint
    checkpoints = job.tuned_model.checkpoints or []
    assert [(c.step, c.epoch) for c in checkpoints] == [(4, 1), (8, 2), (12, 3), (15, 3)]
    endpoints = {c.endpoint for c in checkpoints} | {job.tuned_model.endpoint}
    assert len(endpoints) == len(checkpoints) + 1
    stats = job.tuning_data_stats and job.tuning_data_stats.reinforcement_tuning_data_stats
    assert stats is not None
    assert stats.tuning_dataset_example_count == 40 and stats.tuning_step_count == 15
    assert stats.total_billable_token_count and stats.total_billable_token_count > 0
    assert stats.user_input_token_distribution is not None
    assert stats.user_input_token_distribution.buckets
    assert stats.user_input_token_distribution.buckets[0].count == 40
    assert stats.dropped_example_indices is None
    assert stats.reinforcement_tuning_user_dataset_examples is not None
    sample = stats.reinforcement_tuning_user_dataset_examples.user_dataset_examples or []
    assert sample and sample[0].references == {"answer": "0"}
    # The stand-in endpoint answers with the references of the nearest training prompt, as JSON.
    answer = client.models.generate_content(
        model=job.tuned_model.endpoint, contents="What is 7 plus 7?"
    )
    assert answer.text == '{"answer":"14"}'


def test_a_line_that_is_no_prompt_is_dropped_and_reported(
    sandbox_info: SandboxInfo, client: Any
) -> None:
    bad = [
        {"contents": [{"role": "model", "parts": [{"text": "It is 4."}]}]},
        {"contents": [{"role": "user", "parts": [{"text": "2+2?"}]}], "references": {"a": 4}},
    ]
    uri = upload(sandbox_info, "with-bad.jsonl", PROMPTS[:5] + bad)
    job = wait_end(client, tune(client, uri).name or "")[-1]
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    stats = job.tuning_data_stats and job.tuning_data_stats.reinforcement_tuning_data_stats
    assert stats is not None and stats.tuning_dataset_example_count == 5
    assert stats.dropped_example_indices == [6, 7]
    reasons = stats.dropped_example_reasons or []
    assert "user turn" in reasons[0]
    assert "references" in reasons[1] and "TYPE_STRING" in reasons[1]


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"batch_size": 3, "samples_per_prompt": 5}, "divisible by 16"),
        ({"batch_size": 128, "samples_per_prompt": 128}, "at most 8192"),
        ({"reward_config": None}, "exactly one of single_reward_config"),
        ({"thinking_level": "LOW"}, "use MINIMAL or HIGH"),
        ({"base_model": "gemini-2.5-flash", "thinking_level": "HIGH"}, "thinking_level"),
        (
            {"reward_config": {"reward_name": "x", "string_match_reward_scorer": {}}},
            "exactly one of string_match_expression",
        ),
    ],
)
def test_jobs_vertex_refuses_are_refused_with_a_400(
    sandbox_info: SandboxInfo, client: Any, config: dict[str, Any], words: str
) -> None:
    uri = upload(sandbox_info, "refused.jsonl", PROMPTS[:2])
    error = refusal(lambda: tune(client, uri, **config))
    assert error.code == 400 and error.status == "INVALID_ARGUMENT"
    assert words in (error.message or "")


def test_a_v1_request_with_the_spec_is_refused_as_v1_has_no_such_field(
    sandbox_info: SandboxInfo,
) -> None:
    uri = upload(sandbox_info, "v1.jsonl", PROMPTS[:2])
    v1 = genai.Client(
        vertexai=True,
        project=sandbox_info.project,
        location=sandbox_info.location,
        credentials=Credentials(token="sandbox-token"),  # type: ignore[no-untyped-call]
        http_options=types.HttpOptions(base_url=sandbox_info.vertex_base_url, api_version="v1"),
    )
    error = refusal(lambda: tune(v1, uri))
    v1.close()
    assert error.code == 400
    assert "Unknown name \"reinforcementTuningSpec\" at 'tuning_job'" in (error.message or "")


# --- validate_reward -----------------------------------------------------------------------


def test_string_match_exact_regex_and_partial_with_placeholders(client: Any) -> None:
    exact = single(string_match_reward_scorer=match("EXACT_MATCH", "{{references.answer}}"))
    assert validate(client, "6", **exact).overall_reward == 1.0
    assert validate(client, "6.", **exact).overall_reward == -1.0
    regex = single(string_match_reward_scorer=match("REGEX_CONTAINS", r"\b{{references.answer}}\b"))
    assert validate(client, "It is 6 apples", **regex).overall_reward == 1.0
    assert validate(client, "It is 16 apples", **regex).overall_reward == -1.0
    partial = single(string_match_reward_scorer=match("PARTIAL_MATCH", "{{references.answer}}"))
    assert validate(client, "about 6", **partial).overall_reward == 1.0
    unknown = single(string_match_reward_scorer=match("EXACT_MATCH", "{{references.nope}}"))
    result = validate(client, "6", **unknown)
    assert result.overall_reward is None and "no reference 'nope'" in (result.error or "")


def test_a_json_match_reads_a_first_level_key(client: Any) -> None:
    scorer = {
        "correct_answer_reward": 1.0,
        "wrong_answer_reward": -0.5,
        "json_match_expression": {
            "key_name": "answer",
            "value_string_match_expression": {
                "match_operation": "EXACT_MATCH",
                "expression": "{{references.answer}}",
            },
        },
    }
    config = single(string_match_reward_scorer=scorer)
    assert validate(client, '{"answer": "6", "why": "3+3"}', **config).overall_reward == 1.0
    assert validate(client, '{"answer": 6}', **config).overall_reward == 1.0
    assert validate(client, "6", **config).overall_reward == -0.5


def test_the_parse_step_keeps_the_last_match(client: Any) -> None:
    config = single(
        parse_response_config={
            "parse_type": "REGEX_EXTRACT",
            "regex_extract_expression": r"<ans>(.*?)</ans>",
        },
        string_match_reward_scorer=match("EXACT_MATCH", "{{references.answer}}"),
    )
    assert validate(client, "<ans>5</ans> no, <ans>6</ans>", **config).overall_reward == 1.0
    assert validate(client, "<ans>6</ans> no, <ans>5</ans>", **config).overall_reward == -1.0
    assert validate(client, "6", **config).overall_reward == -1.0  # no match parses to ""
    identity = single(
        parse_response_config={"parse_type": "IDENTITY"},
        string_match_reward_scorer=match("EXACT_MATCH", "{{references.answer}}"),
    )
    assert validate(client, "6", **identity).overall_reward == 1.0


def test_a_code_reward_runs_evaluate_on_the_example_and_the_response(client: Any) -> None:
    snippet = (
        "def evaluate(example, response):\n"
        "    text = response['parts'][0]['text']\n"
        "    assert example['systemInstruction']['parts'][0]['text']\n"
        "    return 0.5 if text == example['references']['answer'] else -0.25\n"
    )
    config = single(code_execution_reward_scorer={"python_code_snippet": snippet})
    assert validate(client, "6", **config).overall_reward == 0.5
    assert validate(client, "7", **config).overall_reward == -0.25


def test_a_code_reward_that_raises_reports_the_exception_and_its_output(client: Any) -> None:
    snippet = "def evaluate(example, response):\n    print('looking')\n    return 1 / 0\n"
    result = validate(
        client, "6", **single(code_execution_reward_scorer={"python_code_snippet": snippet})
    )
    assert result.overall_reward is None
    assert "ZeroDivisionError" in (result.error or "") and "looking" in (result.error or "")
    assert result.reward_info_details is not None
    status = result.reward_info_details["r"].error_status
    assert status is not None and status.code == 3


def test_a_code_reward_that_runs_past_the_timeout_is_stopped(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CODE_TIMEOUT_VARIABLE, "0.5")
    snippet = "def evaluate(example, response):\n    while True:\n        pass\n"
    started = time.monotonic()
    result = validate(
        client, "6", **single(code_execution_reward_scorer={"python_code_snippet": snippet})
    )
    assert time.monotonic() - started < 5
    assert "did not return within 0.5 seconds" in (result.error or "")
    assert result.reward_info_details is not None
    status = result.reward_info_details["r"].error_status
    assert status is not None and status.code == 4


def test_a_composite_is_the_weighted_mean_of_clipped_rewards(client: Any) -> None:
    right = match("EXACT_MATCH", "{{references.answer}}", correct=3.0, wrong=-1.0)
    long = match("REGEX_CONTAINS", ".{20,}", correct=1.0, wrong=-1.0)
    composite = {
        "weighted_reward_configs": [
            {
                "weight": 3,
                "reward_config": {"reward_name": "right", "string_match_reward_scorer": right},
            },
            {
                "weight": 1,
                "reward_config": {"reward_name": "long", "string_match_reward_scorer": long},
            },
        ]
    }
    result = validate(client, "6", composite_reward_config=composite)
    # "right" scores 3, clipped to 1; "long" scores -1: (3·1 + 1·-1) / 4.
    assert result.overall_reward == 0.5
    assert reward_of(result, "right") == 1.0 and reward_of(result, "long") == -1.0


def test_a_reward_of_zero_is_left_out_as_proto3_leaves_out_defaults(client: Any) -> None:
    config = single(string_match_reward_scorer=match("EXACT_MATCH", "6", correct=0.0))
    result = validate(client, "6", **config)
    assert result.overall_reward is None and result.error is None
    assert result.reward_info_details is not None and reward_of(result) is None


def test_the_autorater_is_a_labelled_stand_in_and_cloud_run_is_not_called(client: Any) -> None:
    autorater = single(
        autorater_scorer={
            "autorater_prompt": "Is {{response}} right? The answer is {{references.answer}}.",
            "autorater_config": {"autorater_model": "gemini-2.5-flash"},
        }
    )
    result = validate(client, "6", **autorater)
    assert result.overall_reward == 1.0  # every word of the response is in the references
    assert result.reward_info_details is not None
    assert STAND_IN_AUTORATER in (result.reward_info_details["r"].user_requested_aux_info or "")
    assert validate(client, "seven", **autorater).overall_reward == -1.0
    cloud_run = single(cloud_run_reward_scorer={"cloud_run_uri": "https://reward.example.run.app"})
    result = validate(client, "6", **cloud_run)
    assert result.overall_reward is None and "cannot call Cloud Run" in (result.error or "")


def test_a_request_vertex_refuses_is_a_400(client: Any) -> None:
    error = refusal(lambda: validate(client, "6"))
    assert error.code == 400 and "exactly one of" in (error.message or "")
    fuzzy = single(string_match_reward_scorer=match("FUZZY_MATCH", "6"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # google-genai warns of an enum value it does not know
        error = refusal(lambda: validate(client, "6", **fuzzy))
    assert error.code == 400
    assert error.message == (
        "Invalid value at 'single_reward_config.string_match_reward_scorer."
        'string_match_expression.match_operation\' (TYPE_ENUM), "FUZZY_MATCH"'
    )
