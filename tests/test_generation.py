"""Generation settings as part of the model: the spec's ``evaluation.generation`` calls every
target, is bound to the verdict, and comes back from ``resolve()`` for services."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from test_release import SPEC, Loop

from vertex_tuner import release
from vertex_tuner.errors import GateFailed, SpecError
from vertex_tuner.evaluation import verdicts
from vertex_tuner.registry import resolve_in
from vertex_tuner.spec import JobSpec, load_spec

GENERATION = """\
  generation: {generation}
"""


def spec_with(
    loop: Loop, generation: str, *, base: str = "gemini-2.5-flash", rows: int = 150
) -> JobSpec:
    loop.spec(rows=rows)  # writes the data
    text = SPEC.format(budget=50).replace("gemini-2.5-flash", base) + GENERATION.format(
        generation=generation
    )
    path = loop.tmp_path / "spec.yaml"
    path.write_text(text)
    return load_spec(path, environ={})


def test_every_target_is_called_with_the_spec_s_settings_and_the_verdict_records_them(
    tmp_path: Path,
) -> None:
    loop = Loop(tmp_path)
    spec = spec_with(loop, "{temperature: 0.2, max_output_tokens: 256, thinking_budget: 0}")
    outcome = loop.retrain(spec)
    assert outcome.outcome == "promoted", outcome.message
    wanted = {"temperature": 0.2, "max_output_tokens": 256, "thinking_budget": 0}
    called = {model: settings for model, settings in loop.generator.settings}
    assert outcome.record is not None and called[outcome.record.endpoint or ""] == wanted
    assert called["gemini-2.5-flash"] == wanted
    record = loop.runs.get(outcome.record.run_id)
    assert record.evaluations[-1]["generation"] == wanted
    stored = loop.runs.evaluation(record.run_id, record.evaluations[-1]["id"])
    assert stored["binding"]["generation"] == wanted
    resolved = resolve_in(loop.runs, "support-tone@production")
    assert resolved.generation == wanted
    config = resolved.content_config(system_instruction="Be brief.")
    assert config.temperature == 0.2 and config.max_output_tokens == 256
    assert config.thinking_config is not None and config.thinking_config.thinking_budget == 0
    assert config.system_instruction == "Be brief."


def test_production_is_called_the_way_it_is_served_not_with_the_new_settings(
    tmp_path: Path,
) -> None:
    loop = Loop(tmp_path)
    first = loop.retrain(spec_with(loop, "{thinking_budget: 0}"))
    assert first.outcome == "promoted" and first.record is not None
    production = first.record.endpoint
    loop.generator.settings.clear()
    spec = spec_with(loop, "{temperature: 0.5}", rows=160)
    second = loop.retrain(spec)
    assert second.outcome == "promoted", second.message
    called = {model: settings for model, settings in loop.generator.settings}
    assert called[production or ""] == {"temperature": 0.0, "thinking_budget": 0}
    assert second.record is not None and called[second.record.endpoint or ""] == {
        "temperature": 0.5
    }
    binding = second.evaluation.binding if second.evaluation else {}
    assert binding["generation"] == {"temperature": 0.5}
    assert binding["production_generation"] == {"temperature": 0.0, "thinking_budget": 0}


def test_a_verdict_made_with_other_settings_does_not_let_the_spec_promote(tmp_path: Path) -> None:
    loop = Loop(tmp_path)
    spec = spec_with(loop, "{temperature: 0.0}")
    outcome = loop.retrain(spec)
    assert outcome.record is not None
    run_id = outcome.record.run_id
    with pytest.raises(GateFailed, match="called the models with"):
        release.promote(
            loop.runs,
            spec.name,
            run_id,
            alias="canary",
            if_gate=True,
            generation={"temperature": 0.0, "thinking_budget": 0},
        )
    # Entries written before the settings were recorded count as the old default.
    old = {"id": "v0", "gate": "g", "targets": ["base", "tuned"]}
    assert verdicts.choose([old], tuned=None, holdout_sha256=None, generation={"temperature": 0.0})
    chosen = verdicts.choose(
        [old], tuned=None, holdout_sha256=None, generation={"temperature": 0.3}
    )
    assert chosen.verdict is None and "called the models with" in chosen.passed_over[0]


@pytest.mark.parametrize(
    ("base", "generation", "field", "message", "hint"),
    [
        (
            "gemini-2.5-flash",
            "{thinking_level: minimal}",
            "evaluation.generation.thinking_level",
            "takes thinking_budget, not a level",
            "thinking_budget: 0",
        ),
        (
            "gemini-3.5-flash",
            "{thinking_budget: 0}",
            "evaluation.generation.thinking_budget",
            "takes thinking_level, not a budget",
            "thinking_level: minimal",
        ),
        (
            "gemini-2.0-flash-001",
            "{thinking_budget: 0}",
            "evaluation.generation.thinking_budget",
            "does not think",
            "no thinking setting",
        ),
    ],
)
def test_a_thinking_setting_the_base_does_not_take_is_a_spec_error_on_its_line(
    tmp_path: Path, base: str, generation: str, field: str, message: str, hint: str
) -> None:
    loop = Loop(tmp_path)
    with pytest.raises(SpecError) as caught:
        loop.spec()
        text = SPEC.format(budget=50).replace("gemini-2.5-flash", base)
        text += GENERATION.format(generation=generation)
        if base.startswith("gemini-3"):
            text = text.replace("gcp: {", "gcp: {location: us-central1, ")
        (tmp_path / "spec.yaml").write_text(text)
        # Judged on a day before 2.0 Flash retired, so its thinking rule is what is refused.
        load_spec(tmp_path / "spec.yaml", environ={}, today=dt.date(2026, 1, 1))
    error = caught.value
    assert error.location is not None and error.location.field == field
    assert error.location.line == text.count("\n")  # the generation line, the spec's last
    assert message in error.message and error.hint is not None and hint in error.hint


def test_both_thinking_settings_at_once_are_refused(tmp_path: Path) -> None:
    loop = Loop(tmp_path)
    with pytest.raises(SpecError, match="not both"):
        spec_with(loop, "{thinking_budget: 0, thinking_level: minimal}")
    with pytest.raises(SpecError, match=r"evaluation\.generation\.temperature"):
        spec_with(loop, "{temperature: 3}")
