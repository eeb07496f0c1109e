"""Verdicts bound to what they judged, kept forever: a failed gate cannot be re-evaluated away."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from test_release import Loop

from vertex_tuner import release
from vertex_tuner.errors import GateFailed
from vertex_tuner.evaluation import verdicts

GATE = "tuned.exact_match >= base.exact_match + 0.5"


def evaluated_run(loop: Loop) -> tuple[str, object]:
    spec = loop.spec()
    outcome = loop.retrain(spec)
    assert outcome.record is not None
    return outcome.record.run_id, spec


def test_every_evaluation_is_kept_and_none_is_overwritten(tmp_path: Path) -> None:
    loop = Loop(tmp_path)
    run_id, spec = evaluated_run(loop)
    record = loop.runs.get(run_id)
    assert len(record.evaluations) == 1
    first = loop.runs.evaluation(run_id, record.evaluations[0]["id"])
    release.evaluate_run(loop.evaluator, spec, record)  # type: ignore[arg-type]
    record = loop.runs.get(run_id)
    assert record.evaluations[0]["id"] == first["id"]
    assert len({e["id"] for e in record.evaluations}) == 2
    assert loop.runs.evaluation(run_id, first["id"]) == first  # still there, unchanged
    stored = sorted((tmp_path / "runs" / "evaluations").rglob("*.json"))
    assert len(stored) == 2
    binding = first["binding"]
    assert binding["run"] == run_id and binding["tuned"] == record.endpoint
    assert record.holdout is not None and binding["holdout_sha256"] == record.holdout.sha256
    assert binding["gate"] == "tuned.exact_match >= base.exact_match + 0.5"
    assert binding["examples"] == record.holdout.examples
    assert record.evaluation is not None and record.evaluation["id"] == record.evaluations[-1]["id"]


def test_a_failed_gate_cannot_be_turned_into_a_pass(tmp_path: Path) -> None:
    loop = Loop(tmp_path, tuned_answers="wrong")
    spec = loop.spec()
    outcome = loop.retrain(spec)
    assert outcome.outcome == "gate-failed" and outcome.record is not None
    run_id = outcome.record.run_id
    # Re-evaluated against production only: no comparison with base, so it proves nothing.
    release.evaluate_run(loop.evaluator, spec, loop.runs.get(run_id), against=("production",))
    with pytest.raises(GateFailed, match="did not pass its gate") as caught:
        release.promote(loop.runs, spec.name, run_id, if_gate=True)
    assert loop.runs.get(run_id).evaluations[0]["id"] in caught.value.message
    assert loop.runs.aliases(spec.name) == {}
    # Promoting without the gate is possible, and says what it overrides.
    promotion = release.promote(loop.runs, spec.name, run_id)
    assert promotion.warning is not None and "failed its gate" in promotion.warning


def test_the_verdict_must_be_about_the_spec_s_current_gate(tmp_path: Path) -> None:
    loop = Loop(tmp_path)
    run_id, _ = evaluated_run(loop)
    with pytest.raises(GateFailed, match="is not the spec's"):
        release.promote(
            loop.runs,
            "support-tone",
            run_id,
            alias="canary",
            if_gate=True,
            gate="tuned.exact_match >= base.exact_match + 0.9",
        )
    promotion = release.promote(
        loop.runs,
        "support-tone",
        run_id,
        alias="canary",
        if_gate=True,
        gate="tuned.exact_match >= base.exact_match + 0.5",
    )
    assert promotion.verdict == loop.runs.get(run_id).evaluations[-1]["id"]
    (moved,) = loop.runs.aliases("support-tone")["canary"].history
    assert moved["reason"] == f"--if-gate: verdict {promotion.verdict} (gate {GATE!r})"


def test_choose_takes_the_latest_qualifying_verdict_and_says_what_it_passed_over() -> None:
    base = {"gate": "g", "targets": ["base", "tuned"], "tuned": "e", "holdout_sha256": "h"}
    history = [
        {**base, "id": "1", "passed": True},
        {**base, "id": "2", "passed": False},
        {**base, "id": "3", "passed": True, "targets": ["production", "tuned"]},
        {**base, "id": "4", "passed": True, "holdout_sha256": "other"},
        {**base, "id": "5", "passed": True, "tuned": "checkpoint-endpoint"},
        {**base, "id": "6", "passed": True, "gate": None},
    ]
    choice = verdicts.choose(history, tuned="e", holdout_sha256="h", gate="g")
    assert choice.verdict is not None and choice.verdict["id"] == "2"
    assert [why.split(":")[0] for why in choice.passed_over] == ["6", "5", "4", "3"]
    assert "did not compare against base" in choice.passed_over[-1]
    assert verdicts.choose(history, tuned="e", holdout_sha256="h", gate="other").verdict is None


def test_a_record_from_before_the_history_still_promotes_on_its_verdict(tmp_path: Path) -> None:
    loop = Loop(tmp_path)
    run_id, _ = evaluated_run(loop)
    path = tmp_path / "runs" / "runs" / f"{run_id}.json"
    doc = orjson.loads(path.read_bytes())
    doc.pop("evaluations")
    doc["evaluation"].pop("binding")
    doc["evaluation"].pop("id")
    path.write_bytes(orjson.dumps(doc))
    fresh = type(loop.runs)(loop.runs.blobs)
    promotion = release.promote(fresh, "support-tone", run_id, alias="canary", if_gate=True)
    assert promotion.verdict == "legacy"
