"""Reinforcement tuning (RFT) as the Vertex emulator serves it: ``reinforcementTuningSpec`` jobs
and ``tuningJobs:validateReinforcementTuningReward`` (v1beta1 only, as Vertex publishes them).

A job's body has already been checked against the ``TuningJob`` schema by the emulator; here
are the rules the schema cannot say and Google documents: exactly one reward config, ``batchSize
× samplesPerPrompt`` divisible by 16 and at most 8,192, ``thinkingLevel`` MINIMAL or HIGH and
only on a model that takes levels, at most 5,000 training examples. The prompt dataset is read
line by line against ``ReinforcementTuningExample``; a line that does not fit is dropped and
reported in ``reinforcementTuningDataStats``, as Vertex reports dropped examples. The job walks
through ``min(500, ceil(examples × epochs / batchSize))`` steps (or ``stepCount``), with a
checkpoint, each on its own endpoint, every ``checkpointInterval`` steps (by default once per
epoch).

Nothing is learned: the tuned endpoint answers a prompt with the references of the most similar
training prompt as a JSON object, a stand-in that makes "close to the training prompts" visible,
not a model (an RFT dataset has references, not answers).

Rewards are scored the way the reference describes them: the optional parse step (IDENTITY or
REGEX_EXTRACT, last match wins), string match (EXACT_MATCH, PARTIAL_MATCH, REGEX_CONTAINS, on the
parsed response or on a first-level key of it read as JSON, ``{{references.key}}`` substituted),
code execution (``evaluate(example, response)`` run in a subprocess, with a timeout shorter than
Vertex's 100 seconds), and composites as ``Σ wᵢ·rᵢ / Σ wᵢ``; every reward is clipped to
[-1, 1]. An autorater reward is a labelled word-overlap stand-in, and a Cloud Run reward an
error: the sandbox calls no model and no service. What is modelled rather than known is listed
in docs/sandbox.md.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING, Any

import orjson

from vertex_tuner.dataset.gemini import last_user_text
from vertex_tuner.sandbox import contract
from vertex_tuner.sandbox.contract import ContractError
from vertex_tuner.sandbox.vertex import ApiError, _distribution, _request_tokens, _words

if TYPE_CHECKING:
    from vertex_tuner.sandbox.vertex import VertexEmulator

SPEC = "reinforcementTuningSpec"
DEFAULT_BATCH_SIZE = 32
DEFAULT_SAMPLES_PER_PROMPT = 16
#: ``batchSize × samplesPerPrompt`` must be a multiple of this, and at most MAX_SAMPLES_PER_STEP.
SAMPLES_MULTIPLE = 16
MAX_SAMPLES_PER_STEP = 8192
MAX_STEPS = 500
MAX_EPOCHS = 10
#: The default epoch count is ``min(110 × batchSize / examples, 10)``: about 110 steps.
DEFAULT_EPOCH_STEPS = 110
MAX_TRAINING_EXAMPLES = 5000
MAX_INPUT_TOKENS = 32768
MAX_OUTPUT_TOKENS = 32768
THINKING_LEVELS = ("MINIMAL", "HIGH")
#: How long a code reward's ``evaluate`` may run (Vertex allows 100 seconds), and the variable
#: that changes it.
CODE_TIMEOUT_SECONDS = 10.0
CODE_TIMEOUT_VARIABLE = "VERTEX_TUNER_SANDBOX_CODE_REWARD_SECONDS"
#: google.rpc.Code numbers of a reward's error.
INVALID_ARGUMENT, DEADLINE_EXCEEDED, UNIMPLEMENTED = 3, 4, 12
STAND_IN_AUTORATER = "sandbox stand-in autorater (word overlap with the references, not a model)"
_SCORERS = (
    "stringMatchRewardScorer",
    "codeExecutionRewardScorer",
    "autoraterScorer",
    "cloudRunRewardScorer",
)
_PLACEHOLDER = re.compile(r"\{\{\s*references\.([^}\s]+)\s*\}\}")
_V1BETA1 = "GoogleCloudAiplatformV1beta1"
_ROOT = "reinforcement_tuning_example"
_REQUEST_ROOT = "validate_reinforcement_tuning_reward_request"
_SHOWN_DROPPED = 100
_SAMPLE_EXAMPLES = 3
_MAX_ERROR_CHARS = 4000


class RewardError(Exception):
    """Why one reward could not be scored; it goes into that reward's ``errorStatus``."""

    def __init__(self, message: str, code: int = INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _refuse(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def clip(value: float) -> float:
    """Every reward is clipped to [-1, 1], as the reference says of each scorer."""
    return max(-1.0, min(1.0, value))


# --- reward configs ------------------------------------------------------------------------


def reward_configs(holder: dict[str, Any], where: str) -> list[tuple[str, float, dict[str, Any]]]:
    """(name, weight, single config) of each reward of ``holder`` (a spec or a validate request),
    or a 400 for what Vertex documents as a user error: no reward config or both, a composite
    without rewards or with weights that do not add up to more than 0, two rewards of one name,
    and the single configs' own problems (:func:`_check_single`)."""
    single, composite = holder.get("singleRewardConfig"), holder.get("compositeRewardConfig")
    if (single is None) == (composite is None):
        raise _refuse(
            f"{where}exactly one of single_reward_config and composite_reward_config must be set."
        )
    if single is not None:
        _check_single(single, f"{where}single_reward_config")
        return [(str(single.get("rewardName") or "reward"), 1.0, single)]
    entries = (composite or {}).get("weightedRewardConfigs") or []
    if not entries:
        raise _refuse(f"{where}composite_reward_config.weighted_reward_configs must not be empty.")
    rewards: list[tuple[str, float, dict[str, Any]]] = []
    for index, entry in enumerate(entries):
        path = f"{where}composite_reward_config.weighted_reward_configs[{index}]"
        config = entry.get("rewardConfig")
        if not isinstance(config, dict):
            raise _refuse(f"{path}.reward_config must be set.")
        _check_single(config, f"{path}.reward_config")
        name = str(config.get("rewardName") or f"reward_{index + 1}")
        if name in {n for n, _, _ in rewards}:
            raise _refuse(f"{path}.reward_config.reward_name {name!r} is not unique.")
        rewards.append((name, float(entry.get("weight") or 0.0), config))
    if sum(weight for _, weight, _ in rewards) <= 0:
        raise _refuse(f"{where}composite_reward_config: the weights must add up to more than 0.")
    return rewards


def _check_single(config: dict[str, Any], path: str) -> None:
    """A single reward config has one scorer, and what that scorer needs to score anything."""
    scorers = [key for key in _SCORERS if config.get(key) is not None]
    if len(scorers) != 1:
        raise _refuse(
            f"{path} must set exactly one of string_match_reward_scorer, "
            "code_execution_reward_scorer, autorater_scorer and cloud_run_reward_scorer."
        )
    parse = config.get("parseResponseConfig") or {}
    if parse.get("parseType") == "REGEX_EXTRACT":
        _extract_pattern(str(parse.get("regexExtractExpression") or ""), path)
    scorer = config[scorers[0]]
    if scorers[0] == "stringMatchRewardScorer":
        _check_string_match(scorer, f"{path}.string_match_reward_scorer")
    elif scorers[0] == "codeExecutionRewardScorer" and not scorer.get("pythonCodeSnippet"):
        raise _refuse(f"{path}.code_execution_reward_scorer.python_code_snippet must be set.")
    elif scorers[0] == "cloudRunRewardScorer" and not scorer.get("cloudRunUri"):
        raise _refuse(f"{path}.cloud_run_reward_scorer.cloud_run_uri must be set.")


def _check_string_match(scorer: dict[str, Any], path: str) -> None:
    plain, keyed = scorer.get("stringMatchExpression"), scorer.get("jsonMatchExpression")
    if (plain is None) == (keyed is None):
        raise _refuse(
            f"{path} must set exactly one of string_match_expression and json_match_expression."
        )
    if keyed is not None:
        if not keyed.get("keyName"):
            raise _refuse(f"{path}.json_match_expression.key_name must be set.")
        plain = keyed.get("valueStringMatchExpression")
        path += ".json_match_expression.value_string_match_expression"
        if plain is None:
            raise _refuse(f"{path} must be set.")
    else:
        path += ".string_match_expression"
    if (plain or {}).get("matchOperation") in (None, "MATCH_OPERATION_UNSPECIFIED"):
        raise _refuse(f"{path}.match_operation must be set.")


def _extract_pattern(expression: str, path: str) -> re.Pattern[str]:
    """The compiled REGEX_EXTRACT expression: at most one capturing group, as GoogleSQL's
    REGEXP_EXTRACT takes (Python's ``re`` stands in for RE2)."""
    where = f"{path}.parse_response_config.regex_extract_expression"
    if not expression:
        raise _refuse(f"{where} must be set for REGEX_EXTRACT.")
    try:
        pattern = re.compile(expression)
    except re.error as exc:
        raise _refuse(f"{where} is not a valid regular expression: {exc}.") from None
    if pattern.groups > 1:
        raise _refuse(f"{where} must have at most one capturing group.")
    return pattern


# --- scoring -------------------------------------------------------------------------------


def response_text(content: dict[str, Any]) -> str:
    """The sample response's text: its text parts joined, thoughts left out."""
    parts = content.get("parts") or []
    return "".join(
        str(p.get("text") or "") for p in parts if isinstance(p, dict) and not p.get("thought")
    )


def parse_response(text: str, config: dict[str, Any]) -> str:
    """The parse step before scoring: the text as it is (IDENTITY, or no config), or the last
    match of the REGEX_EXTRACT expression (its group, if it has one); no match parses to ""."""
    parse = config.get("parseResponseConfig") or {}
    if parse.get("parseType") != "REGEX_EXTRACT":
        return text
    pattern = _extract_pattern(str(parse.get("regexExtractExpression") or ""), "")
    matches = list(pattern.finditer(text))
    if not matches:
        return ""
    last = matches[-1]
    return (last.group(1) or "") if pattern.groups else last.group(0)


def substitute(expression: str, references: dict[str, str]) -> str:
    """``{{references.key}}`` replaced by the example's reference, as is (not escaped)."""

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in references:
            raise RewardError(f"the example has no reference {key!r} for {match.group(0)}.")
        return references[key]

    return _PLACEHOLDER.sub(value, expression)


def matches(operation: str, target: str, expression: str) -> bool:
    if operation == "EXACT_MATCH":
        return target == expression
    if operation == "PARTIAL_MATCH":
        return expression in target
    try:
        return re.search(expression, target) is not None
    except re.error as exc:
        raise RewardError(f"{expression!r} is not a valid regular expression: {exc}.") from None


def string_match_reward(scorer: dict[str, Any], parsed: str, references: dict[str, str]) -> float:
    """``correctAnswerReward`` when the expression matches, else ``wrongAnswerReward`` (unset:
    0, proto3's default). A JSON match reads the parsed response as a JSON object and matches
    its first-level key's value (a string as it is, anything else as JSON); a response that is
    no such object, or lacks the key, is a wrong answer."""
    keyed = scorer.get("jsonMatchExpression")
    target: str | None = parsed
    expression = scorer.get("stringMatchExpression") or {}
    if keyed is not None:
        expression = keyed.get("valueStringMatchExpression") or {}
        target = _json_value(parsed, str(keyed.get("keyName")))
    pattern = substitute(str(expression.get("expression") or ""), references)
    hit = target is not None and matches(str(expression.get("matchOperation")), target, pattern)
    return float(scorer.get("correctAnswerReward" if hit else "wrongAnswerReward") or 0.0)


def _json_value(text: str, key: str) -> str | None:
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict) or key not in document:
        return None
    value = document[key]
    return value if isinstance(value, str) else json.dumps(value)


def stand_in_autorater(
    scorer: dict[str, Any], parsed: str, example: dict[str, Any]
) -> tuple[float, str]:
    """The sandbox's autorater: word overlap (Jaccard) of the parsed response with the
    references' values (with the last user turn when there are none), scaled to [-1, 1]; with
    an ``exactMatchScorer``, its correct reward at an overlap of 0.5 or more, else its wrong
    reward. Returns the reward and the label that says it is a stand-in."""
    references = example.get("references") or {}
    source = " ".join(references.values()) or last_user_text(example.get("contents") or [])
    mine, theirs = _words(parsed), _words(source)
    union = len(mine | theirs)
    overlap = len(mine & theirs) / union if union else 0.0
    exact = scorer.get("exactMatchScorer")
    if exact is not None:
        key = "correctAnswerReward" if overlap >= 0.5 else "wrongAnswerReward"
        reward = float(exact.get(key) or 0.0)
    else:
        reward = 2 * overlap - 1
    what = "the references" if references else "the prompt"
    return reward, f"{STAND_IN_AUTORATER}: overlap with {what} {overlap:.2f}, reward {reward:.2f}"


#: Runs in the subprocess: reads {code, example, response} on stdin, writes one JSON line last.
_RUNNER = r"""
import contextlib, io, json, math, sys, traceback
payload = json.loads(sys.stdin.read())
captured = io.StringIO()
result = {}
try:
    with contextlib.redirect_stdout(captured):
        namespace = {"__name__": "reward"}
        exec(compile(payload["code"], "<python_code_snippet>", "exec"), namespace)
        evaluate = namespace.get("evaluate")
        if not callable(evaluate):
            raise NameError("the python_code_snippet defines no evaluate(example, response)")
        value = evaluate(payload["example"], payload["response"])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        result["error"] = f"evaluate returned {type(value).__name__}, not a float"
    elif not math.isfinite(value):
        result["error"] = f"evaluate returned {value}, not a finite float"
    else:
        result["reward"] = float(value)
except BaseException as exc:
    result["error"] = "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next)
    ).strip()
result["stdout"] = captured.getvalue()
sys.__stdout__.write("\n" + json.dumps(result) + "\n")
"""


def code_timeout() -> float:
    """The sandbox's limit on one ``evaluate`` call, read when the call is made."""
    try:
        return float(os.environ.get(CODE_TIMEOUT_VARIABLE) or CODE_TIMEOUT_SECONDS)
    except ValueError:
        return CODE_TIMEOUT_SECONDS


def run_code(snippet: str, example: dict[str, Any], response: dict[str, Any]) -> float:
    """``evaluate(example, response)`` of the snippet, in a fresh isolated Python process in an
    empty folder, killed at :func:`code_timeout`. Its exception and what it printed become the
    reward's error. The sandbox does not cut the process off the network as Vertex does."""
    timeout = code_timeout()
    payload = orjson.dumps({"code": snippet, "example": example, "response": response})
    with tempfile.TemporaryDirectory() as folder:
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", _RUNNER],
                input=payload,
                capture_output=True,
                timeout=timeout,
                cwd=folder,
                env={"PATH": os.environ.get("PATH", "")},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RewardError(
                f"evaluate did not return within {timeout:g} seconds (the sandbox's limit; "
                "Vertex allows 100 seconds).",
                DEADLINE_EXCEEDED,
            ) from None
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if "reward" in result:
        return float(result["reward"])
    stdout = str(result.get("stdout") or "")
    stderr = done.stderr.decode(errors="replace").strip()
    error = result.get("error") or (
        f"the evaluate process exited with code {done.returncode} without a reward"
        + (f": {stderr}" if stderr else "")
    )
    message = f"python_code_snippet failed: {error}" + (f"\nstdout:\n{stdout}" if stdout else "")
    raise RewardError(message[:_MAX_ERROR_CHARS])


def score(
    config: dict[str, Any], example: dict[str, Any], response: dict[str, Any]
) -> dict[str, Any]:
    """One reward's ``ReinforcementTuningRewardInfo``: ``reward`` (clipped; left out when 0, as
    proto3 JSON leaves out defaults), ``errorStatus`` when it could not be scored,
    ``userRequestedAuxInfo`` for the stand-in autorater's label."""
    info: dict[str, Any] = {}
    references = {str(k): str(v) for k, v in (example.get("references") or {}).items()}
    try:
        parsed = parse_response(response_text(response), config)
        if config.get("stringMatchRewardScorer") is not None:
            reward = string_match_reward(config["stringMatchRewardScorer"], parsed, references)
        elif config.get("codeExecutionRewardScorer") is not None:
            snippet = str(config["codeExecutionRewardScorer"]["pythonCodeSnippet"])
            reward = run_code(snippet, example, _as_parsed(response, parsed, config))
        elif config.get("autoraterScorer") is not None:
            reward, info["userRequestedAuxInfo"] = stand_in_autorater(
                config["autoraterScorer"], parsed, example
            )
        else:
            uri = config["cloudRunRewardScorer"]["cloudRunUri"]
            raise RewardError(
                f"the sandbox cannot call Cloud Run: {uri} was not called.", UNIMPLEMENTED
            )
    except RewardError as exc:
        info["errorStatus"] = {"code": exc.code, "message": exc.message}
        return info
    if clip(reward):
        info["reward"] = clip(reward)
    return info


def _as_parsed(response: dict[str, Any], parsed: str, config: dict[str, Any]) -> dict[str, Any]:
    """The response as a code reward sees it: as sent, or after a REGEX_EXTRACT parse one text
    part with the parsed text (the parsed response is what the scorers get)."""
    if (config.get("parseResponseConfig") or {}).get("parseType") != "REGEX_EXTRACT":
        return response
    return {**{k: v for k, v in response.items() if k != "parts"}, "parts": [{"text": parsed}]}


def validate_request(body: Any) -> dict[str, Any]:
    """The body checked against ``ValidateReinforcementTuningRewardRequest`` (JSON names),
    with paths rooted at its own fields as the front end writes them for a whole-body request,
    then its required fields."""
    schema = contract.load("v1beta1")
    try:
        checked = schema.validate(
            body, schema.root("ValidateReinforcementTuningRewardRequest"), path=_REQUEST_ROOT
        )
    except ContractError as exc:
        field = exc.field.removeprefix(_REQUEST_ROOT).removeprefix(".")
        message = exc.message.replace(f" at '{_REQUEST_ROOT}'", "")
        raise ContractError(field, message.replace(f"'{_REQUEST_ROOT}.", "'")) from None
    for field, name in (("sampleResponse", "sample_response"), ("example", "example")):
        if not checked.get(field):
            raise _refuse(f"{name} is required.")
    return checked


def validate_reward(body: Any) -> dict[str, Any]:
    """A ``ValidateReinforcementTuningRewardResponse``: each reward's info by name, the overall
    ``Σ wᵢ·rᵢ / Σ wᵢ`` (clipped; a single reward's own value), and, for a composite, the
    deprecated ``rewardDetails`` map. A reward that could not be scored leaves the overall
    reward out and fills ``error`` (deprecated, the one google-genai reads) and ``errorStatus``."""
    body = validate_request(body)
    rewards = reward_configs(body, "")
    example, response = body["example"], body["sampleResponse"]
    infos = {name: score(config, example, response) for name, _, config in rewards}
    out: dict[str, Any] = {"rewardInfoDetails": infos}
    if body.get("compositeRewardConfig") is not None:
        out["rewardDetails"] = {n: i.get("reward", 0.0) for n, i in infos.items() if "reward" in i}
    failed = [(name, info["errorStatus"]) for name, info in infos.items() if "errorStatus" in info]
    if failed:
        message = "; ".join(f"reward {name!r}: {status['message']}" for name, status in failed)
        out["error"] = message
        out["errorStatus"] = {"code": failed[0][1]["code"], "message": message}
        return out
    total = sum(weight for _, weight, _ in rewards)
    overall = clip(sum(w * infos[n].get("reward", 0.0) for n, w, _ in rewards) / total)
    if overall:
        out["overallReward"] = overall
    return out


# --- jobs ----------------------------------------------------------------------------------


def _int(value: Any, default: int) -> int:
    """An int32 or int64 field as sent (int64 may be a string); 0 or unset is the default."""
    return int(value or 0) or default


def hyper_parameters(spec: dict[str, Any]) -> dict[str, Any]:
    return dict(spec.get("hyperParameters") or {})


def check_hyper_parameters(hyper: dict[str, Any], thinking: frozenset[str], model: str) -> None:
    """The documented rules on RFT hyperparameters; ``thinking`` is the base model's entry of
    the model table's ``thinking`` column, as generateContent's check reads it."""
    batch = _int(hyper.get("batchSize"), DEFAULT_BATCH_SIZE)
    samples = _int(hyper.get("samplesPerPrompt"), DEFAULT_SAMPLES_PER_PROMPT)
    if batch < 1 or samples < 1:
        raise _refuse("batch_size and samples_per_prompt must be positive.")
    product = batch * samples
    if product % SAMPLES_MULTIPLE or product > MAX_SAMPLES_PER_STEP:
        raise _refuse(
            f"batch_size × samples_per_prompt ({batch} × {samples} = {product}) must be "
            f"divisible by {SAMPLES_MULTIPLE} and at most {MAX_SAMPLES_PER_STEP}."
        )
    counts = ("epochCount", "stepCount", "evaluateInterval", "checkpointInterval")
    for name in (n for n in counts if _int(hyper.get(n), 0) < 0):
        raise _refuse(f"{contract.snake(name)} must not be negative.")
    if _int(hyper.get("epochCount"), 0) and _int(hyper.get("stepCount"), 0):
        raise _refuse("epoch_count and step_count are mutually exclusive.")
    if not 0 <= _int(hyper.get("maxOutputTokens"), 0) <= MAX_OUTPUT_TOKENS:
        raise _refuse(f"max_output_tokens must be between 1 and {MAX_OUTPUT_TOKENS}.")
    level = hyper.get("thinkingLevel")
    if level not in (None, "REINFORCEMENT_TUNING_THINKING_LEVEL_UNSPECIFIED"):
        if level not in THINKING_LEVELS:
            raise _refuse(f"thinking_level {level} is not supported; use MINIMAL or HIGH.")
        if "level" not in thinking:
            raise _refuse(f"thinking_level is not supported by {model}.")
    if hyper.get("thinkingBudget") is not None and "budget" not in thinking:
        raise _refuse(f"thinking_budget is not supported by {model}; use thinking_level instead.")


def check_example(example: Any) -> tuple[dict[str, Any] | None, str]:
    """A dataset line as ``ReinforcementTuningExample`` (JSON names), or why it is dropped: it
    does not fit the schema, has no contents, does not end on a user turn, or has a system
    instruction with anything but text."""
    schema = contract.load("v1beta1")
    try:
        checked = schema.validate(example, _V1BETA1 + "ReinforcementTuningExample", path=_ROOT)
    except ContractError as exc:
        return None, exc.message
    contents = checked.get("contents") or []
    if not contents:
        return None, "contents must not be empty"
    if (contents[-1].get("role") or "user") != "user":
        return None, "the last turn of contents must be a user turn"
    parts = (checked.get("systemInstruction") or {}).get("parts") or []
    if any(set(p) - {"text"} for p in parts if isinstance(p, dict)):
        return None, "systemInstruction takes text parts only"
    return checked, ""


def prompt_tokens(example: dict[str, Any]) -> tuple[int, int]:
    """(tokens, billable characters) of a prompt by the sandbox's own count, as countTokens."""
    total = characters = 0
    for value in (*example.get("contents", []), example.get("systemInstruction")):
        n, chars = _request_tokens(value)
        total += n
        characters += chars
    for tool in example.get("tools") or []:
        n, chars = _request_tokens(tool)
        total += n
        characters += chars
    return total, characters


def plan(examples: int, hyper: dict[str, Any]) -> dict[str, Any]:
    """Epochs, steps and checkpoint steps: ``min(500, ceil(examples × epochs / batch))`` steps
    (or ``stepCount``, also capped at 500), the epoch count by default ``min(110 × batch /
    examples, 10)``, a checkpoint every ``checkpointInterval`` steps (by default once per
    epoch), and one at the last step."""
    batch = _int(hyper.get("batchSize"), DEFAULT_BATCH_SIZE)
    per_epoch = max(1, math.ceil(examples / batch))
    step_count = _int(hyper.get("stepCount"), 0)
    if step_count:
        steps = min(MAX_STEPS, step_count)
        epochs = max(1, math.ceil(steps / per_epoch))
    else:
        default = max(1, min(MAX_EPOCHS, DEFAULT_EPOCH_STEPS * batch // examples))
        epochs = _int(hyper.get("epochCount"), default)
        steps = max(1, min(MAX_STEPS, math.ceil(examples * epochs / batch)))
    interval = _int(hyper.get("checkpointInterval"), per_epoch)
    marks = list(range(interval, steps + 1, interval))
    if not marks or marks[-1] != steps:
        marks.append(steps)
    return {"epochs": epochs, "steps": steps, "per_epoch": per_epoch, "marks": marks}


def _failure(message: str) -> dict[str, Any]:
    return {"error": {"code": INVALID_ARGUMENT, "message": message}}


def _answer(example: dict[str, Any]) -> str:
    """What the tuned endpoint's stand-in answers for a prompt close to this one."""
    references = example.get("references") or {}
    if not references:
        return "(the nearest training prompt has no references)"
    return orjson.dumps(references).decode()


class ReinforcementTuning:
    """The reinforcement-tuning parts of one :class:`VertexEmulator`'s jobs."""

    def __init__(self, emulator: VertexEmulator) -> None:
        self.emulator = emulator

    def check_create(self, body: dict[str, Any]) -> None:
        """A validated TuningJob with a ``reinforcementTuningSpec``: its reward config and its
        hyperparameters, held to the base model (a tuned model's base for continuous tuning)."""
        spec = body[SPEC]
        reward_configs(spec, "reinforcement_tuning_spec.")
        info = self.emulator._base_info({"job": body})
        check_hyper_parameters(hyper_parameters(spec), info.thinking, info.id)

    def process(self, record: dict[str, Any]) -> dict[str, Any]:
        """Read the prompt dataset once (PROCESSING_DATASET): drop what does not fit, count,
        and plan the steps; the outcome has what ``_make_model`` and the rendering read."""
        fetch = self.emulator.fetch
        data = fetch(record["uri"])
        if data is None:
            return _failure(f"Training dataset {record['uri']} does not exist or cannot be read.")
        if record.get("validation_uri") and fetch(record["validation_uri"]) is None:
            return _failure(f"Validation dataset {record['validation_uri']} does not exist.")
        kept: list[dict[str, Any]] = []
        dropped: list[tuple[int, str]] = []
        number = 0
        for line, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            number += 1
            try:
                example = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return _failure(f"Dataset validation failed: line {line}: not valid JSON.")
            checked, why = check_example(example)
            if checked is not None and prompt_tokens(checked)[0] > MAX_INPUT_TOKENS:
                checked, why = None, f"it exceeded {MAX_INPUT_TOKENS} input tokens"
            if checked is None:
                dropped.append((number, f"example {number} was dropped: {why}"))
            else:
                kept.append(checked)
        if not kept:
            return _failure(
                "Dataset validation failed: the training dataset has no usable examples."
            )
        if len(kept) > MAX_TRAINING_EXAMPLES:
            return _failure(
                f"Dataset validation failed: the training dataset has {len(kept)} examples; "
                f"reinforcement tuning takes at most {MAX_TRAINING_EXAMPLES}."
            )
        steps = plan(len(kept), hyper_parameters(record["job"].get(SPEC) or {}))
        return {
            "stats": self._stats(data, kept, dropped, steps["steps"]),
            "examples": [[last_user_text(e["contents"]), _answer(e)] for e in kept],
            "epochs": steps["epochs"],
            "checkpoint_count": len(steps["marks"]),
            "checkpoint_steps": steps["marks"],
            "steps_per_epoch": steps["per_epoch"],
        }

    @staticmethod
    def _stats(
        data: bytes, kept: list[dict[str, Any]], dropped: list[tuple[int, str]], steps: int
    ) -> dict[str, Any]:
        """``DatasetStats`` as ``reinforcementTuningDataStats`` has them: int64 as strings,
        ``DatasetDistribution`` shapes, tokens by the sandbox's own count."""
        counted = [prompt_tokens(e) for e in kept]
        inputs = [n for n, _ in counted]
        stats: dict[str, Any] = {
            "tuningDatasetExampleCount": str(len(kept)),
            "totalBillableTokenCount": str(sum(inputs)),
            "totalBillableCharacterCount": str(sum(c for _, c in counted)),
            "totalTuningCharacterCount": str(len(data)),
            "tuningStepCount": str(steps),
            "userInputTokenDistribution": _distribution(inputs, supervised=False),
            "contentsPerExampleDistribution": _distribution(
                [len(e["contents"]) for e in kept], supervised=False
            ),
            "userMessagePerExampleDistribution": _distribution(
                [sum((c.get("role") or "user") == "user" for c in e["contents"]) for e in kept],
                supervised=False,
            ),
            "reinforcementTuningUserDatasetExamples": {
                "userDatasetExamples": kept[:_SAMPLE_EXAMPLES]
            },
        }
        if dropped:
            shown = dropped[:_SHOWN_DROPPED]
            stats["droppedExampleIndices"] = [str(i) for i, _ in shown]
            stats["droppedExampleReasons"] = [why for _, why in shown]
        return stats

    @staticmethod
    def checkpoints(record: dict[str, Any], state: str, progress: float) -> list[dict[str, Any]]:
        """The checkpoints at the steps done so far (all of them once the job succeeded), each
        with its own endpoint and the epoch its step falls in."""
        outcome = record.get("outcome") or {}
        endpoints = list(outcome.get("checkpointEndpoints") or [])
        marks = [int(s) for s in outcome.get("checkpoint_steps") or []]
        if not endpoints or state not in ("JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"):
            return []
        steps = int(outcome.get("stats", {}).get("tuningStepCount", 0) or 0)
        done = steps if state == "JOB_STATE_SUCCEEDED" else int(steps * progress)
        per_epoch = int(outcome.get("steps_per_epoch") or 1)
        return [
            {
                "checkpointId": str(index + 1),
                "epoch": str(math.ceil(step / per_epoch)),
                "step": str(step),
                "endpoint": endpoint,
            }
            for index, (step, endpoint) in enumerate(zip(marks, endpoints, strict=False))
            if step <= done
        ]

    @staticmethod
    def validate_reward(body: Any, version: str) -> dict[str, Any]:
        """``tuningJobs:validateReinforcementTuningReward``, which only v1beta1 has."""
        if version != "v1beta1":
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Method validateReinforcementTuningReward is not found in {version}.",
            )
        return validate_reward(body)
