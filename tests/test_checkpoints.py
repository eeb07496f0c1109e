"""Evaluating every checkpoint of a run, and serving the best one through an alias."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_release import Loop

from vertex_tuner import release
from vertex_tuner.backends.fake import FakeOutcome
from vertex_tuner.errors import GateFailed, NotFoundError
from vertex_tuner.registry import resolve_in


class CheckpointLoop(Loop):
    """Checkpoint 1 answers wrong, checkpoint 2 right, the final model (3) right but on every
    fifth question."""

    def answer(self, model: str, contents: Sequence[Mapping[str, Any]]) -> str:
        text = str(contents[-1]["parts"][0]["text"])
        match = re.search(r"number (\d+)", text)
        assert match is not None
        number = int(match.group(1))
        right = f"Answer {number}: it ships on Thursday."
        if model.endswith("0101") or "/endpoints/" not in model:
            return "I am not sure; please contact support."
        if model.endswith("0102"):
            return right
        return "Let me check." if number % 5 == 0 else right


@pytest.fixture
def loop(tmp_path: Path) -> CheckpointLoop:
    loop = CheckpointLoop(tmp_path)
    loop.tuner.outcome = FakeOutcome(checkpoints=3)
    return loop


def test_every_checkpoint_is_evaluated_and_the_best_passing_one_is_served(
    loop: CheckpointLoop,
) -> None:
    spec = loop.spec()
    outcome = loop.retrain(spec)
    assert outcome.outcome == "promoted" and outcome.record is not None
    record = loop.runs.get(outcome.record.run_id)
    each = release.evaluate_checkpoints(loop.evaluator, spec, record)
    assert [cid for cid, _ in each] == ["1", "2", "3"]
    passed = {cid: r.verdict.passed for cid, r in each if r.verdict is not None}
    assert passed == {"1": False, "2": True, "3": True}
    tuned = {cid: r.targets["tuned"].metrics["exact_match"] for cid, r in each}
    assert tuned["2"] == 1.0 and tuned["3"] < 1.0
    record = loop.runs.get(record.run_id)
    bound = [e.get("checkpoint") for e in record.evaluations]
    assert bound == [None, "1", "2", "3"]  # the retrain's own verdict, then one per checkpoint

    promotion = release.promote(loop.runs, spec.name, record.run_id, checkpoint="best")
    assert promotion.entry.checkpoint == "2"
    assert promotion.endpoint == record.checkpoints[1]["endpoint"] != record.endpoint
    served = resolve_in(loop.runs, "support-tone@production")
    assert (served.checkpoint, served.endpoint) == ("2", promotion.endpoint)
    # A rollback goes back to what the alias served before: the run's final model.
    back = release.rollback(loop.runs, spec.name)
    assert back.entry.checkpoint is None
    assert resolve_in(loop.runs, "support-tone@production").endpoint == record.endpoint


def test_a_checkpoint_that_failed_its_gate_is_never_served_with_if_gate(
    loop: CheckpointLoop,
) -> None:
    spec = loop.spec()
    outcome = loop.retrain(spec)
    assert outcome.record is not None
    release.evaluate_checkpoints(loop.evaluator, spec, loop.runs.get(outcome.record.run_id))
    with pytest.raises(GateFailed, match="did not pass"):
        release.promote(
            loop.runs,
            spec.name,
            outcome.record.run_id,
            alias="canary",
            checkpoint="1",
            if_gate=True,
        )
    with pytest.raises(NotFoundError, match="no checkpoint '9'"):
        release.promote(loop.runs, spec.name, outcome.record.run_id, checkpoint="9")


def test_best_without_checkpoint_verdicts_is_the_final_one_the_retrain_judged(
    loop: CheckpointLoop,
) -> None:
    spec = loop.spec()
    outcome = loop.retrain(spec)
    assert outcome.record is not None
    promotion = release.promote(
        loop.runs, spec.name, outcome.record.run_id, alias="canary", checkpoint="best"
    )
    assert promotion.entry.checkpoint == "3" and promotion.endpoint == outcome.record.endpoint


def test_best_with_no_passing_verdict_says_to_evaluate_the_checkpoints(tmp_path: Path) -> None:
    loop = Loop(tmp_path, tuned_answers="wrong")
    loop.tuner.outcome = FakeOutcome(checkpoints=2)
    spec = loop.spec()
    outcome = loop.retrain(spec)
    assert outcome.outcome == "gate-failed" and outcome.record is not None
    with pytest.raises(GateFailed, match=r"no checkpoint .* has a passing verdict") as caught:
        release.promote(loop.runs, spec.name, outcome.record.run_id, checkpoint="best")
    assert "--checkpoints" in (caught.value.hint or "")


def test_mirror_vertex_refuses_a_checkpoint() -> None:
    from vertex_tuner.cli import cli

    result = CliRunner().invoke(
        cli, ["promote", "support-tone", "r1", "--checkpoint", "2", "--mirror-vertex"]
    )
    assert result.exit_code == 2 and "not a checkpoint" in result.output
