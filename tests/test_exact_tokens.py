"""Exact token counts near the limits, and the billable estimate calibrated on a counted sample."""

from __future__ import annotations

import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sandbox_support import example, write_spec

from vertex_tuner.backends.fake import FakeTokenCounter
from vertex_tuner.backends.genai import GenaiTokenCounter, RateLimiter
from vertex_tuner.cli import cli
from vertex_tuner.dataset import Validator
from vertex_tuner.dataset.findings import MAX_PER_CODE, Finding, FindingList
from vertex_tuner.dataset.tokens import calibrate, counted_request
from vertex_tuner.dataset.validate import EXACT_MARGIN, count_exactly
from vertex_tuner.errors import BackendError, TransientBackendError
from vertex_tuner.records import Estimate
from vertex_tuner.retry import RetryOptions
from vertex_tuner.sandbox import SandboxInfo, genai_client
from vertex_tuner.sandbox.vertex import sandbox_tokens

LIMIT = 131_072  # gemini-2.5-flash
NO_WAIT = RetryOptions(attempts=3, initial_delay=0, max_delay=0, jitter=0)


def chat(user: str, answer: str = "ok") -> bytes:
    return orjson.dumps(
        {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
    )


def sized(tokens: int, mark: str) -> bytes:
    """A chat whose estimate is ``tokens`` (4 characters each; the answer "ok" adds one)."""
    return chat(mark + "x" * (4 * (tokens - 1) - len(mark)))


def text_of(contents: Sequence[Mapping[str, Any]]) -> str:
    return "".join(str(p.get("text", "")) for c in contents for p in c.get("parts", []))


def by_mark(exact: dict[str, int]) -> FakeTokenCounter:
    """Counts an example by the mark its user turn starts with; others at 4 characters a token."""

    def count(model: str, contents: Any, system: Any, tools: Any) -> int:
        text = text_of(contents)
        for mark, n in exact.items():
            if text.startswith(mark):
                return n
        return -(-len(text) // 4)

    return FakeTokenCounter(count)


@pytest.fixture
def near_limit(tmp_path: Path) -> Path:
    lines = [example(i) for i in range(30)]
    lines += [
        sized(120_000, "UNDER"),  # line 31: under by the estimate, over when counted
        sized(135_000, "OVER"),  # line 32: over by the estimate, under when counted
        sized(200_000, "FAR"),  # line 33: far over: the estimate settles it
    ]
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def tokens_findings(report: Any) -> dict[int | None, str]:
    return {f.line: f.message for f in report.errors if f.code == "too-many-tokens"}


# --- the validator with a fake counter ----------------------------------------------------


def test_without_a_counter_everything_is_estimated(near_limit: Path) -> None:
    report = (
        Validator(model="gemini-2.5-flash", method="supervised")
        .run(near_limit, display="data.jsonl")
        .report
    )
    found = tokens_findings(report)
    assert set(found) == {32, 33}
    assert all("(estimated)" in m for m in found.values())
    assert "exact_tokens" not in report.stats and "calibration" not in report.stats
    assert report.stats["token_estimate"].startswith("estimated")


def test_only_examples_near_the_limit_are_counted_and_judged_on_the_count(
    near_limit: Path,
) -> None:
    counter = by_mark({"UNDER": 140_000, "OVER": 125_000, "FAR": 1})
    validator = Validator(model="gemini-2.5-flash", method="supervised", calibration_sample=0)
    report = validator.run(near_limit, display="data.jsonl", counter=counter).report
    counted = [text_of(contents)[:5] for _, (_, contents) in counter.calls]
    assert sorted(counted) == ["OVERx", "UNDER"]  # not FAR, not the short examples
    found = tokens_findings(report)
    assert set(found) == {31, 33}
    assert found[31] == (
        "140,000 tokens (counted by a fake) is over gemini-2.5-flash's limit of 131,072 per "
        "example; Vertex truncates it"
    )
    assert "(estimated)" in found[33]
    assert report.stats["truncated_examples_expected"] == 2
    assert report.stats["exact_tokens"] == {
        "counted_by": "a fake",
        "margin": EXACT_MARGIN,
        "near_limit_examples": 2,
        "over_limit_examples": 1,
        "not_counted": 0,
    }
    assert report.stats["counts_by_code"]["too-many-tokens"] == 2
    assert report.stats["error_count"] == 2


def test_counting_after_the_scan_gives_the_same_report(near_limit: Path) -> None:
    """submit validates offline first and counts once it has cloud access."""
    validator = Validator(model="gemini-2.5-flash", method="supervised")
    at_once = validator.run(near_limit, display="d", counter=by_mark({"UNDER": 140_000}))
    later = count_exactly(validator.run(near_limit, display="d"), by_mark({"UNDER": 140_000}))
    assert at_once.report == later.report


def test_a_refused_example_keeps_its_estimate(near_limit: Path) -> None:
    counter = by_mark({})
    counter.fail_next(BackendError("count tokens: 400 INVALID_ARGUMENT", status=400))
    validator = Validator(model="gemini-2.5-flash", method="supervised", calibration_sample=0)
    report = validator.run(near_limit, display="d", counter=counter).report
    assert report.stats["exact_tokens"]["not_counted"] == 1
    assert report.stats["exact_tokens"]["near_limit_examples"] == 1


def test_a_few_failures_that_outlast_the_retries_leave_estimates(near_limit: Path) -> None:
    counter = by_mark({})
    counter.fail_next(TransientBackendError("count tokens: 503 UNAVAILABLE", status=503))
    validator = Validator(model="gemini-2.5-flash", method="supervised", calibration_sample=0)
    report = validator.run(near_limit, display="d", counter=counter).report
    assert report.stats["exact_tokens"]["not_counted"] == 1


def test_many_failures_that_outlast_the_retries_stop_the_count(near_limit: Path) -> None:
    counter = by_mark({})
    for _ in range(200):
        counter.fail_next(TransientBackendError("count tokens: 503 UNAVAILABLE", status=503))
    validator = Validator(model="gemini-2.5-flash", method="supervised")
    with pytest.raises(TransientBackendError, match="failed for 4 examples") as caught:
        validator.run(near_limit, display="d", counter=counter)
    assert "--no-exact-tokens" in (caught.value.hint or "")


def varied_counter() -> FakeTokenCounter:
    """Exact counts 0.8 to 1.2 times the estimate, varying by example."""

    def count(model: str, contents: Any, system: Any, tools: Any) -> int:
        text = text_of(contents)
        factor = 0.8 + (zlib.crc32(text.encode()) % 41) / 100
        return round(len(text) / 4 * factor)

    return FakeTokenCounter(count)


def test_calibration_is_reproducible_with_its_seed(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(example(i) for i in range(1000)) + b"\n")

    def calibrated(seed: int) -> tuple[dict[str, Any], list[str]]:
        counter = varied_counter()
        validator = Validator(model="gemini-2.5-flash", method="supervised", seed=seed)
        stats = validator.run(path, display="d", counter=counter).report.stats
        return stats["calibration"], sorted(text_of(c) for _, (_, c) in counter.calls)

    first, sample = calibrated(7)
    again, same_sample = calibrated(7)
    _, other_sample = calibrated(8)
    assert first == again and sample == same_sample
    assert other_sample != sample
    assert len(sample) == first["examples"] == 300
    assert first["billable_tokens_low"] <= first["billable_tokens"] <= first["billable_tokens_high"]
    assert first["cost_high_usd"] >= first["cost_usd"] >= first["cost_low_usd"]
    assert first["counted_by"] == "a fake" and first["seed"] == 7


def test_calibrate_weights_by_billable_tokens_and_brackets_the_ratio() -> None:
    samples = [(100, 120, 1), (100, 80, 3)] * 50
    result = calibrate(samples, seed=0)
    assert result is not None
    assert result.ratio == pytest.approx(0.9)
    assert result.low < 0.9 < result.high
    assert result.scale(1000) == (900, int(1000 * result.low), -int(-1000 * result.high // 1))
    assert calibrate([(0, 5, 0)], seed=0) is None
    single = calibrate([(10, 12, 4)], seed=0)
    assert single is not None and single.low == single.ratio == single.high == 1.2


def test_the_budget_is_held_to_the_upper_end(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(example(i) for i in range(200)) + b"\n")
    validator = Validator(model="gemini-2.5-flash", method="supervised")
    offline = validator.run(path, display="d", budget_usd=1.0).report.stats
    cost = offline["estimated_cost_usd"]
    # Counted at exactly the estimate, the interval is a point: a budget just under the
    # estimated cost is over, one just over it is within.
    exact = FakeTokenCounter(lambda m, c, s, t: -(-len(text_of(c)) // 4) + 7)
    counted = validator.run(path, display="d", budget_usd=cost, counter=exact).report
    calibration = counted.stats["calibration"]
    assert calibration["cost_high_usd"] > cost
    assert [w.code for w in counted.warnings].count("over-budget") == 1
    message = next(w.message for w in counted.warnings if w.code == "over-budget")
    assert "calibrated" in message and "submit will refuse it" in message
    estimate = Estimate(billable_tokens=1, epochs=1, cost_usd=4.0, cost_high_usd=6.0)
    assert estimate.budget_cost_usd == 6.0
    assert Estimate(billable_tokens=1, epochs=1, cost_usd=4.0).budget_cost_usd == 4.0


def test_what_is_counted_for_an_example() -> None:
    supervised = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "tools": [{"functionDeclarations": [{"name": "f"}]}],
        "contents": [
            {"role": "user", "parts": [{"text": "a"}]},
            {"role": "model", "parts": [{"text": "b"}]},
            {"role": "user", "parts": [{"text": "c"}]},
            {"role": "model", "parts": [{"text": "d"}]},
        ],
    }
    request = counted_request(supervised, "supervised")
    assert len(request.contents) == 4 and request.system_instruction is not None
    assert request.tools == supervised["tools"]
    preference = {
        "contents": [{"role": "user", "parts": [{"text": "q"}]}],
        "completions": [
            {"score": 1, "completion": {"role": "model", "parts": [{"text": "short"}]}},
            {"score": 0, "completion": {"role": "model", "parts": [{"text": "much longer"}]}},
        ],
    }
    request = counted_request(preference, "preference")
    assert text_of(request.contents) == "qmuch longer"


def test_reopened_findings_take_back_one_over_the_cap() -> None:
    found = FindingList()
    for line in range(1, MAX_PER_CODE + 11):
        found.add(Finding("error", "too-many-tokens", f"~{line}", line=line, file="f"))
    errors, warnings = found.finish()
    reopened = FindingList.reopen(errors, warnings, found.counts)
    reopened.discard("too-many-tokens", "f", 3)
    reopened.discard("too-many-tokens", "f", MAX_PER_CODE + 5)  # only counted
    errors, _ = reopened.finish()
    assert reopened.counts["too-many-tokens"] == MAX_PER_CODE + 8
    assert 3 not in {f.line for f in errors}
    assert errors[-1].message == "and 8 more like this"


# --- the google-genai counter -------------------------------------------------------------


def test_the_rate_limiter_spaces_calls_to_the_quota() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = RateLimiter(3000, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limiter.acquire()
    assert slept == pytest.approx([0.02, 0.04, 0.06])


class _Response:
    total_tokens = 11


class _FlakyModels:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def count_tokens(self, **kwargs: Any) -> _Response:
        self.calls.append(kwargs)
        if len(self.calls) == 1:
            raise ConnectionResetError("reset")
        return _Response()


class _Client:
    def __init__(self) -> None:
        self.models = _FlakyModels()


def test_the_genai_counter_retries_and_sends_a_typed_request() -> None:
    client = _Client()
    counter = GenaiTokenCounter(client, per_minute=None, retry=NO_WAIT, sleep=lambda s: None)
    n = counter.count(
        "gemini-2.5-flash",
        [{"role": "user", "parts": [{"text": "hi"}]}],
        system_instruction={"parts": [{"text": "Be brief."}]},
    )
    assert n == 11 and len(client.models.calls) == 2
    config = client.models.calls[-1]["config"]
    assert config.system_instruction.parts[0].text == "Be brief."
    assert counter.source == "Vertex"


# --- the sandbox ---------------------------------------------------------------------------


def test_the_count_tokens_schema_is_the_published_one() -> None:
    from test_contract import extractor

    from vertex_tuner.sandbox.vertex import _count_tokens_contract

    script = extractor()
    for version, prefix in script.VERSIONS.items():
        published = script.discovery_document(version)["schemas"]
        schema, name = _count_tokens_contract(version)
        assert name == prefix + "CountTokensRequest"
        assert schema.schemas[name] == script._strip(published[name]), version
        for ref in ("Content", "Tool", "GenerationConfig"):
            assert prefix + ref in schema.schemas


@pytest.mark.sandbox
def test_the_sandbox_counts_through_google_genai(sandbox_info: SandboxInfo) -> None:
    counter = GenaiTokenCounter(
        genai_client(sandbox_info), source="the sandbox emulator", per_minute=None
    )
    text = "Where is my order HH-000001? It is late."
    n = counter.count(
        "gemini-2.5-flash",
        [{"role": "user", "parts": [{"text": text}]}],
        system_instruction={"parts": [{"text": "Be warm."}]},
    )
    assert n == sandbox_tokens(text) + sandbox_tokens("Be warm.")


@pytest.mark.sandbox
@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_the_sandbox_checks_count_tokens_against_the_schema(
    sandbox_info: SandboxInfo, version: str
) -> None:
    url = (
        f"{sandbox_info.vertex_base_url}/{version}/projects/{sandbox_info.project}/locations/"
        f"{sandbox_info.location}/publishers/google/models/gemini-2.5-flash:countTokens"
    )

    def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())

    status, answer = post({"contents": [{"role": "user", "parts": [{"text": "Hi, you."}]}]})
    assert status == 200
    assert answer == {
        "totalTokens": 4,
        "totalBillableCharacters": 7,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4}],
    }
    status, answer = post({"contents": [], "bogus": 1})
    assert status == 400
    assert 'Unknown name "bogus"' in answer["error"]["message"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.sandbox
def test_validate_exact_tokens_in_the_sandbox(use_sandbox: SandboxInfo, tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    lines = [example(i) for i in range(120)] + [chat("word, " * 80_000)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = run("validate", str(path), "--exact-tokens", "--sandbox", "--json")
    assert code == 1, err
    doc = orjson.loads(out)
    (finding,) = [e for e in doc["errors"] if e["code"] == "too-many-tokens"]
    assert finding["line"] == 121
    assert finding["message"].startswith("160,001 tokens (counted by the sandbox emulator)")
    calibration = doc["stats"]["calibration"]
    assert calibration["counted_by"] == "the sandbox emulator"
    assert calibration["examples"] == 121
    code, out, _ = run("validate", str(path), "--json")
    assert orjson.loads(out)["ok"] is True  # estimated 120,001: under the limit


def test_validate_exact_tokens_without_cloud_access_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import google.auth
    from google.auth import exceptions

    def no_credentials(**_: Any) -> Any:
        raise exceptions.DefaultCredentialsError("none")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    path = tmp_path / "data.jsonl"
    path.write_bytes(example(1) + b"\n")
    code, _, err = run("validate", str(path), "--exact-tokens")
    assert code == 1
    assert "--exact-tokens counts with Vertex's countTokens" in err
    assert "--sandbox" in err and "drop --exact-tokens" in err
    code, _, _ = run("validate", str(path))
    assert code == 0


@pytest.mark.sandbox
def test_submit_counts_by_default_and_shows_the_calibrated_range(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "job", name="exact-submit")
    code, out, err = run("submit", str(spec), "--sandbox", "--dry-run")
    assert code == 0, err
    assert "calibrated on 120 examples counted by the sandbox emulator" in out
    assert "estimate: ≈ " in out
    code, out, err = run("submit", str(spec), "--sandbox", "--dry-run", "--json")
    estimate = orjson.loads(out)["plan"]["estimate"]
    assert estimate["counted_by"] == "the sandbox emulator" and estimate["calibrated_on"] == 120
    assert estimate["billable_tokens_low"] <= estimate["billable_tokens"]
    assert estimate["billable_tokens"] <= estimate["billable_tokens_high"]
    assert estimate["cost_high_usd"] >= estimate["cost_usd"]
    code, out, err = run("submit", str(spec), "--sandbox", "--dry-run", "--no-exact-tokens")
    assert code == 0, err
    assert "calibrated" not in out and "(estimated locally" in out


@pytest.mark.sandbox
def test_submit_refuses_when_the_upper_end_is_over_budget(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    # Plain and punctuation-heavy answers: their counts differ, so the interval is wide.
    lines = [example(i, "Thanks! " * (i % 7) + "(Done.) " * (i % 5) + "Ok.") for i in range(120)]
    spec = write_spec(tmp_path / "budget", name="exact-budget", lines=lines)
    code, out, _ = run("submit", str(spec), "--sandbox", "--dry-run", "--json")
    estimate = orjson.loads(out)["plan"]["estimate"]
    # A budget between the central figure and the upper end.
    budget = (estimate["cost_usd"] + estimate["cost_high_usd"]) / 2
    assert estimate["cost_usd"] < budget < estimate["cost_high_usd"]
    spec.write_text(spec.read_text().replace("max_cost_usd: 5", f"max_cost_usd: {budget}"))
    code, out, err = run("submit", str(spec), "--sandbox", "--dry-run", "--json")
    assert code == 3, err
    assert orjson.loads(out)["plan"]["over_budget"] is True
