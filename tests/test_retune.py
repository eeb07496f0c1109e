"""Re-tuning on a new base: the same data on another Gemini model, judged against what
production serves with the spec's gate, promoted only on a pass, with the lineage kept."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from test_release import SPEC, Loop

from vertex_tuner import release
from vertex_tuner.cli import github
from vertex_tuner.errors import SpecError
from vertex_tuner.spec import JobSpec, load_spec, retarget

TODAY = dt.date(2026, 9, 1)  # 45 days before 2.5's announced "no earlier than" date
NEW_BASE = "gemini-3.5-flash"


def retune(loop: Loop, spec: JobSpec) -> release.RetrainOutcome:
    moved, changes = retarget(spec, NEW_BASE, today=TODAY)
    lineage = {
        "from_base": spec.base_model,
        "to_base": NEW_BASE,
        "reason": "2.5 retires",
        "changes": changes,
    }
    return loop.retrain(moved, lineage=lineage, today=TODAY)


def test_a_re_tune_that_passes_replaces_production_and_keeps_its_lineage(tmp_path: Path) -> None:
    loop = Loop(tmp_path)
    spec = loop.spec()
    first = loop.retrain(spec, today=TODAY)
    assert first.outcome == "promoted" and first.run_id is not None
    outcome = retune(loop, spec)
    assert outcome.outcome == "promoted", outcome.message
    assert outcome.record is not None and outcome.record.base_model == NEW_BASE
    assert outcome.run_id != first.run_id and len(loop.tuner.jobs) == 2
    lineage = loop.runs.get(outcome.run_id or "").lineage
    assert lineage is not None
    assert lineage["replaces"] == first.run_id and lineage["to_base"] == NEW_BASE
    assert lineage["from_base"] == "gemini-2.5-flash"
    assert any("no mapping" in c for c in lineage["changes"])
    # Judged against what production served, and against the new base.
    assert outcome.evaluation is not None
    assert outcome.evaluation.targets["base"].model == NEW_BASE
    assert outcome.evaluation.targets["production"].model == first.record.endpoint  # type: ignore[union-attr]
    assert loop.runs.aliases("support-tone")["production"].run_id == outcome.run_id
    doc = outcome.to_json()
    assert doc["base_model"] == NEW_BASE and doc["lineage"]["replaces"] == first.run_id
    section = github.summary_section(outcome)
    assert f"re-tuned on `{NEW_BASE}` from `gemini-2.5-flash`" in section

    # The spec still names the old base: its next retrain must not undo the migration.
    again = loop.retrain(spec, today=TODAY)
    assert again.outcome == "unchanged", again.message
    assert f"Set base_model: {NEW_BASE}" in again.message
    assert loop.runs.aliases("support-tone")["production"].run_id == outcome.run_id


def test_a_re_tune_that_fails_the_gate_leaves_production_where_it_was(tmp_path: Path) -> None:
    loop = Loop(tmp_path)
    spec = loop.spec()
    first = loop.retrain(spec, today=TODAY)
    loop.tuned_answers = "wrong"
    outcome = retune(loop, spec)
    assert (outcome.outcome, outcome.exit_code) == ("gate-failed", 5)
    assert loop.runs.aliases("support-tone")["production"].run_id == first.run_id
    assert outcome.record is not None and outcome.record.lineage is not None
    assert outcome.record.lineage["replaces"] == first.run_id


def test_a_base_retiring_soon_is_a_warning_with_the_command_that_re_tunes(
    tmp_path: Path,
) -> None:
    loop = Loop(tmp_path)
    spec = loop.spec()
    outcome = loop.retrain(spec, today=TODAY)
    assert outcome.ok and len(outcome.warnings) == 1
    warning = outcome.warnings[0]
    assert "no earlier than 2026-10-16" in warning
    assert warning.endswith(f"vertex-tuner retrain {spec.spec_path} --base-model {NEW_BASE}")
    assert "> [!WARNING]" in github.summary_section(outcome)
    assert github.warning_annotations(outcome)[0].startswith("::warning title=retrain ")
    assert release.retirement_warnings(spec, dt.date(2026, 1, 1)) == ()


def write(tmp_path: Path, text: str) -> JobSpec:
    (tmp_path / "data.jsonl").write_text("")
    (tmp_path / "spec.yaml").write_text(text)
    return load_spec(tmp_path / "spec.yaml", environ={}, today=TODAY)


def test_thinking_is_carried_to_the_new_base_s_setting(tmp_path: Path) -> None:
    spec = write(tmp_path, SPEC.format(budget=50) + "  generation: {thinking_budget: 0}\n")
    moved, changes = retarget(spec, NEW_BASE, today=TODAY)
    assert moved.evaluation is not None
    assert moved.evaluation.generation.settings() == {
        "temperature": 0.0,
        "thinking_level": "minimal",
    }
    assert "evaluation.generation: thinking_budget 0 → thinking_level minimal" in " ".join(changes)
    assert moved.spec_path == spec.spec_path and moved.name == spec.name
    assert moved.result_fields() != spec.result_fields()  # another job, never the old one


@pytest.mark.parametrize(
    ("text", "base", "message"),
    [
        (SPEC.format(budget=50), "gemini-2.5-flash", "already tuned on gemini-2.5-flash"),
        (SPEC.format(budget=50), "gemini-9-ultra", "model table"),
        (
            SPEC.format(budget=50).replace("epochs: 2", "epochs: 2, adapter_size: 16"),
            "gemini-2.5-pro",
            "adapter size 16 is not available for gemini-2.5-pro",
        ),
        (
            SPEC.format(budget=50).replace("prefix: vt", "prefix: vt, location: us-east1"),
            NEW_BASE,
            f"{NEW_BASE} cannot be tuned in us-east1",
        ),
    ],
)
def test_a_base_the_spec_cannot_move_to_is_a_clear_error(
    tmp_path: Path, text: str, base: str, message: str
) -> None:
    spec = write(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        retarget(spec, base, today=TODAY)
    where = caught.value.location
    assert where is not None and where.file is not None
    assert caught.value.message.startswith(f"{where}: --base-model {base}: ")
    assert message in caught.value.message
