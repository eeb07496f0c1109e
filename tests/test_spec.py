"""Job specs: expansion, line-accurate errors, per-model rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from vertex_tuner.errors import SpecError
from vertex_tuner.spec import load_spec, parse_duration

REPO = Path(__file__).resolve().parent.parent

BASE = """\
name: support-tone
base_model: gemini-2.5-flash
dataset:
  train: data/x.jsonl
  validation: 0.1
hyperparameters: {epochs: 3, adapter_size: 4}
gcp: {project: "${PROJECT}", bucket: "${BUCKET:-acme-tuning}"}
"""


ENV = {"PROJECT": "acme-project"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def error_of(path: Path, **kwargs: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(path, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_loads_and_expands_variables(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE), environ=ENV)
    assert spec.gcp.project == "acme-project"
    assert spec.gcp.bucket == "acme-tuning"
    assert spec.dataset.validation == 0.1
    assert spec.hyperparameters.epochs == 3
    assert spec.resolve_path("data/x.jsonl") == tmp_path / "data/x.jsonl"


def test_unset_variable_names_it_with_line(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BASE), environ={})
    assert err.location.line == 7
    assert err.location.field == "gcp.project"
    assert "PROJECT is not set" in err.message


def test_offline_leaves_gcp_variables_empty(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE), environ={}, offline=True)
    assert spec.gcp.project is None


def test_offline_still_requires_variables_outside_gcp(tmp_path: Path) -> None:
    text = BASE.replace("data/x.jsonl", "${DATA}")
    err = error_of(write(tmp_path, text), environ={}, offline=True)
    assert (err.location.line, err.location.field) == (4, "dataset.train")


def test_unknown_key_is_an_error_at_its_line(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BASE + "budgte: {max_cost_usd: 3}\n"), environ=ENV)
    assert (err.location.line, err.location.field) == (8, "budgte")
    assert "unknown key" in err.message


def test_wrong_type_names_field_and_line(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BASE.replace("epochs: 3", "epochs: many")), environ=ENV)
    assert (err.location.line, err.location.field) == (6, "hyperparameters.epochs")


def test_adapter_size_16_refused_for_pro(tmp_path: Path) -> None:
    text = BASE.replace("gemini-2.5-flash", "gemini-2.5-pro").replace(
        "adapter_size: 4", "adapter_size: 16"
    )
    err = error_of(write(tmp_path, text), environ=ENV)
    assert err.location.field == "hyperparameters.adapter_size"
    assert err.hint is not None and "1, 2, 4, 8" in err.hint


def test_cmek_refused_for_3x(tmp_path: Path) -> None:
    text = BASE.replace("gemini-2.5-flash", "gemini-3.1-flash-lite").replace(
        'bucket: "${BUCKET:-acme-tuning}"', "bucket: b-1, kms_key_name: projects/p/k"
    )
    err = error_of(write(tmp_path, text), environ=ENV)
    assert err.location.field == "gcp.kms_key_name"


def test_region_a_model_cannot_tune_in(tmp_path: Path) -> None:
    text = BASE.replace("gemini-2.5-flash", "gemini-3.1-flash-lite").replace(
        'bucket: "${BUCKET:-acme-tuning}"', "bucket: b-1, location: asia-east1"
    )
    err = error_of(write(tmp_path, text), environ=ENV)
    assert err.location.field == "gcp.location"
    assert "us-central1" in (err.hint or "")


def test_unknown_base_model(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BASE.replace("gemini-2.5-flash", "gpt-4")), environ=ENV)
    assert (err.location.line, err.location.field) == (2, "base_model")


def test_alias_and_tuned_model_bases_are_accepted(tmp_path: Path) -> None:
    for base in ("support-tone@production", "projects/p/locations/us-central1/models/12@3"):
        spec = load_spec(write(tmp_path, BASE.replace("gemini-2.5-flash", base)), environ=ENV)
        assert spec.is_continuous


def test_label_rules(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BASE + "labels: {Team: x}\n"), environ=ENV)
    assert err.location.field == "labels"
    assert err.location.line == 8


def test_reserved_label(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BASE + "labels: {vertex-tuner-fingerprint: x}\n"), environ=ENV)
    assert "set by vertex-tuner" in err.message


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, "name: a\ndataset: {train: [\n"), environ={})
    assert err.location.line is not None
    assert "invalid YAML" in err.message


def test_empty_and_missing_files(tmp_path: Path) -> None:
    assert "empty" in error_of(write(tmp_path, ""), environ={}).message
    assert "no such spec" in error_of(tmp_path / "nope.yaml", environ={}).message


def test_duplicate_key(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BASE + "name: again\n"), environ=ENV)
    assert (err.location.line, err.location.field) == (8, "name")


def test_distillation_needs_teacher(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BASE + "method: distillation\n"), environ=ENV)
    assert "teacher_model" in err.message


def test_beta_only_for_preference(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BASE.replace("epochs: 3", "epochs: 3, beta: 0.1")), environ=ENV)
    assert "preference" in err.message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6h", 21600), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("2d", 172800), (30, 30)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0s", "-5", "6 hours"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("name", ["support_tone.yaml", "ticket_triage.yaml"])
def test_shipped_specs_load_without_google_variables(name: str) -> None:
    spec = load_spec(REPO / "jobs" / name, environ={}, offline=True)
    assert spec.resolve_path(spec.dataset.train).is_file()


# --- evaluation.judge --------------------------------------------------------------------------


def with_evaluation(section: str) -> str:
    return BASE + "evaluation:\n" + section


def test_the_judge_metric_without_a_judge_section_takes_the_defaults(tmp_path: Path) -> None:
    from vertex_tuner.evaluation import judge

    text = with_evaluation(
        "  metrics: [rouge_l, judge]\n  promote_if: significant(tuned.judge > base.judge)\n"
    )
    evaluation = load_spec(write(tmp_path, text), environ=ENV).evaluation
    assert evaluation is not None and evaluation.judge is not None
    assert evaluation.judge.model == judge.DEFAULT_MODEL == "gemini-2.5-pro"
    assert evaluation.judge.rubric == judge.DEFAULT_RUBRIC
    assert evaluation.judge.samples is None
    # Without the metric there are no judge settings at all.
    plain = load_spec(write(tmp_path, with_evaluation("  metrics: [rouge_l]\n")), environ=ENV)
    assert plain.evaluation is not None and plain.evaluation.judge is None


def test_judge_settings(tmp_path: Path) -> None:
    text = with_evaluation(
        "  metrics: [judge]\n"
        "  promote_if: tuned.judge >= 0.6 and tuned.judge > base.judge\n"
        "  judge:\n"
        "    model: gemini-2.5-flash\n"
        "    rubric: Prefer the answer that quotes the order number.\n"
        "    samples: 40\n"
    )
    evaluation = load_spec(write(tmp_path, text), environ=ENV).evaluation
    assert evaluation is not None and evaluation.judge is not None
    assert evaluation.judge.model == "gemini-2.5-flash"
    assert evaluation.judge.rubric == "Prefer the answer that quotes the order number."
    assert evaluation.judge.samples == 40


def test_a_judge_section_without_the_judge_metric_is_refused(tmp_path: Path) -> None:
    text = with_evaluation("  metrics: [rouge_l]\n  judge: {samples: 10}\n")
    err = error_of(write(tmp_path, text), environ=ENV)
    assert (err.location.line, err.location.field) == (10, "evaluation.judge")
    assert "add judge to evaluation.metrics" in err.message
    assert str(err.location).endswith("spec.yaml:10: evaluation.judge")


@pytest.mark.parametrize(
    ("setting", "field", "message"),
    [
        ("model: localhost:8999/steal?", "evaluation.judge.model", "is not a model id"),
        ("model: gpt-4o", "evaluation.judge.model", "is not a Gemini model id"),
        ("model: support-tone@production", "evaluation.judge.model", "not a Gemini model id"),
        (
            "model: projects/p/locations/us-central1/models/12",
            "evaluation.judge.model",
            "not a Gemini model id",
        ),
        ("samples: 0", "evaluation.judge.samples", "greater than or equal to 1"),
        ("rubric: '  '", "evaluation.judge.rubric", "the rubric is empty"),
        (f"rubric: {'x' * 4001}", "evaluation.judge.rubric", "keep it to 4000"),
        ("modle: gemini-2.5-pro", "evaluation.judge.modle", "did you mean 'model'?"),
    ],
)
def test_bad_judge_settings(tmp_path: Path, setting: str, field: str, message: str) -> None:
    text = with_evaluation(f"  metrics: [judge]\n  judge:\n    {setting}\n")
    err = error_of(write(tmp_path, text), environ=ENV)
    assert (err.location.line, err.location.field) == (11, field)
    assert message in err.message


def test_the_gate_may_read_the_judge_only_when_it_is_evaluated(tmp_path: Path) -> None:
    text = with_evaluation("  metrics: [rouge_l]\n  promote_if: tuned.judge > base.judge\n")
    err = error_of(write(tmp_path, text), environ=ENV)
    assert err.location.field == "evaluation.promote_if"
    assert "metric 'judge' is not evaluated; add it to evaluation.metrics" in err.message


def test_a_retired_base_is_refused_at_its_line(tmp_path: Path) -> None:
    import datetime as dt

    from vertex_tuner import models

    info = next(m for m in models.MODELS.values() if m.lifecycle.retires is not None)
    assert info.lifecycle.retires is not None
    path = write(
        tmp_path,
        BASE.replace("gemini-2.5-flash", info.id).replace("adapter_size: 4", "adapter_size: 1"),
    )
    err = error_of(path, environ=ENV, today=info.lifecycle.retires)
    assert (err.location.line, err.location.field) == (2, "base_model")
    assert "retire" in err.message and info.lifecycle.source in err.message
    day_before = info.lifecycle.retires - dt.timedelta(days=1)
    assert load_spec(path, environ=ENV, today=day_before).base_model == info.id
