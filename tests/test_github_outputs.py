"""What retrain tells GitHub Actions: escaped annotations, unbreakable outputs, the summary."""

from __future__ import annotations

from pathlib import Path

from test_workflows import parse_env_file

from vertex_tuner.cli import github
from vertex_tuner.release import RetrainOutcome


def failed(message: str, error: str) -> RetrainOutcome:
    return RetrainOutcome("jobs/a,b:c.yaml", "failed", message, 1, spec_name="a", error=error)


def test_an_annotation_cannot_end_early_or_inject_a_command() -> None:
    outcome = failed("submit failed", "bad %0A value\n::warning::injected\r")
    line = github.error_annotation(outcome)
    assert line == ("::error title=retrain jobs/a%2Cb%3Ac.yaml::submit failed: bad %250A value")
    assert "\n" not in line and "::warning::" not in line
    multi = github.error_annotation(failed("two\nlines", ""))
    assert multi == "::error title=retrain jobs/a%2Cb%3Ac.yaml::two%0Alines"


def test_outputs_survive_newlines_and_equals_signs(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_text("")
    values = {"message": "a=b\nsecond line", "run_id": "r-1"}
    github.append_outputs(values, {"GITHUB_OUTPUT": str(path)})
    github.append_outputs({"outcome": "promoted"}, {"GITHUB_OUTPUT": str(path)})
    assert parse_env_file(path.read_text()) == {**values, "outcome": "promoted"}
    github.append_outputs(values, {})  # outside Actions: nothing, and no error


def test_the_summary_names_the_spec_the_error_and_what_the_exit_code_means() -> None:
    section = github.summary_section(failed("submit failed", "the spec is bad"))
    assert section.startswith("## `jobs/a,b:c.yaml`\n\n```text\nerror: the spec is bad\n```")
    assert section.rstrip().endswith(
        "❌ **submit failed** (exit 1: invalid input (spec or dataset), or the job failed, was "
        "cancelled or expired, or Vertex dropped more than `dataset.max_dropped_fraction`)"
    )
    outputs = github.step_outputs(failed("submit failed", "x"))
    assert outputs["outcome"] == "failed" and "**" not in outputs["message"]
