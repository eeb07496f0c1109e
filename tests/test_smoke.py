"""The smoke test on every promotion: the model an alias is about to serve is called the way a
service calls it, and a failure leaves the alias where it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_release import Loop

from vertex_tuner import release
from vertex_tuner.backends.fake import FakeGenerator
from vertex_tuner.errors import EXIT_SMOKE, NotFoundError, SmokeTestFailed, TransientBackendError
from vertex_tuner.records import RunRecord
from vertex_tuner.registry import resolution


class Smoke:
    """A smoke test over a fake generator, recording what it was asked to call."""

    def __init__(self, generator: FakeGenerator) -> None:
        self.generator = generator
        self.calls: list[tuple[str, str, str, str | None]] = []

    def __call__(
        self, name: str, alias: str, record: RunRecord, checkpoint: str | None
    ) -> release.SmokeResult:
        resolved = resolution(name, alias, record, checkpoint)
        self.calls.append((name, alias, record.run_id, checkpoint))
        return release.smoke_test(
            self.generator,
            resolved.endpoint,
            location=resolved.serving_location,
            generation=resolved.generation,
            contents=[{"role": "user", "parts": [{"text": "Question number 7?"}]}],
            sleep=lambda _: None,
        )


def promoted_then_new_run(loop: Loop) -> tuple[str, str]:
    """A first run promoted, and a second one evaluated and ready to promote."""
    first = loop.retrain(loop.spec())
    second = loop.retrain(loop.spec(rows=160), smoke=lambda *a: failing(a[2]))
    assert first.run_id is not None and second.run_id is not None
    return first.run_id, second.run_id


def failing(record: RunRecord) -> release.SmokeResult:
    return release.SmokeResult(
        False, record.endpoint or "", "us-central1", "404 endpoint not found", 0.2
    )


def test_a_failing_smoke_test_leaves_the_alias_where_it_was(tmp_path: Path) -> None:
    loop = Loop(tmp_path)
    first, second = promoted_then_new_run(loop)
    assert loop.runs.aliases("support-tone")["production"].run_id == first
    refused = loop.runs.refused_moves("support-tone")["production"]
    assert [r["run_id"] for r in refused] == [second]
    assert refused[0]["smoke"]["detail"] == "404 endpoint not found"
    assert refused[0]["reason"] == "smoke test failed"
    # The same through promote: SmokeTestFailed, exit 6, and the alias still unmoved.
    with pytest.raises(SmokeTestFailed) as caught:
        release.promote(
            loop.runs, "support-tone", second, smoke=lambda *a: failing(a[2]), actor="ci"
        )
    assert caught.value.exit_code == EXIT_SMOKE == 6
    assert "was not moved" in caught.value.message and "404" in caught.value.message
    assert (
        caught.value.hint == "see the refused move with: vertex-tuner aliases support-tone --json"
    )
    assert loop.runs.aliases("support-tone")["production"].run_id == first
    assert len(loop.runs.refused_moves("support-tone")["production"]) == 2
    # A rollback still goes to what the alias served before: refusals are not moves.
    assert loop.runs.rollback_target("support-tone", "production") is None


def test_retrain_reports_smoke_failed_and_keeps_production(tmp_path: Path) -> None:
    loop = Loop(tmp_path)
    first = loop.retrain(loop.spec())
    outcome = loop.retrain(loop.spec(rows=160), smoke=lambda *a: failing(a[2]))
    assert (outcome.outcome, outcome.exit_code, outcome.ok) == ("smoke-failed", 6, False)
    assert outcome.message == (
        f"the smoke test failed; support-tone@production stays at run {first.run_id}"
    )
    assert outcome.error is not None and "404 endpoint not found" in outcome.error


def test_a_passing_smoke_test_is_kept_in_the_move_with_who_moved_it(tmp_path: Path) -> None:
    loop = Loop(tmp_path)
    smoke = Smoke(loop.generator)
    outcome = loop.retrain(loop.spec(), smoke=smoke, actor="github:octocat")
    assert outcome.outcome == "promoted", outcome.message
    assert outcome.run_id is not None
    assert smoke.calls == [("support-tone", "production", outcome.run_id, None)]
    event = loop.runs.aliases("support-tone")["production"].history[-1]
    assert event["actor"] == "github:octocat"
    assert event["smoke"]["passed"] is True
    assert event["smoke"]["endpoint"] == outcome.record.endpoint  # type: ignore[union-attr]
    assert event["smoke"]["generation"] == {"temperature": 0.0}
    assert event["smoke"]["detail"].startswith("answered (")


def test_the_smoke_call_retries_a_429_and_fails_on_a_404_or_no_text() -> None:
    generator = FakeGenerator(responder=lambda model, contents: "OK")
    generator.fail_next(TransientBackendError("429 RESOURCE_EXHAUSTED"))

    def run(gen: FakeGenerator, **kwargs: Any) -> release.SmokeResult:
        return release.smoke_test(
            gen,
            "projects/p/locations/us/endpoints/1",
            location="us",
            generation={"temperature": 0.0, "thinking_level": "minimal"},
            sleep=lambda _: None,
            **kwargs,
        )

    passed = run(generator)
    assert passed.passed and passed.prompt == release.SMOKE_PROMPT
    assert len(generator.history) == 2  # the 429, then the answer
    assert generator.settings[-1] == (
        "projects/p/locations/us/endpoints/1",
        {"temperature": 0.0, "thinking_level": "minimal"},
    )
    gone = FakeGenerator(responder=lambda model, contents: "OK")
    gone.fail_next(NotFoundError("404 endpoint not found"))
    failed = run(gone, contents=[{"role": "user", "parts": [{"text": "hi"}]}], prompt="ex 3")
    assert not failed.passed and failed.detail == "404 endpoint not found"
    assert failed.prompt == "ex 3" and len(gone.history) == 1  # a 404 is not retried
    silent = run(FakeGenerator(responder=lambda model, contents: "  "))
    assert not silent.passed and silent.detail == "answered with no text"


def test_the_actor_names_the_workflow_run_under_actions_else_user_at_host() -> None:
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_ACTOR": "octocat",
        "GITHUB_REPOSITORY": "acme/models",
        "GITHUB_RUN_ID": "42",
    }
    assert release.default_actor(env) == (
        "github:octocat (https://github.com/acme/models/actions/runs/42)"
    )
    local = release.default_actor({})
    assert "@" in local and not local.startswith("github:")
