"""``vertex-tuner validate`` end to end through click: output, JSON, annotations, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from dataset_support import write_lines
from rich.console import Console

from vertex_tuner.cli import cli
from vertex_tuner.cli.render_validation import github_annotations, render_text
from vertex_tuner.dataset import validate_file

REPO = Path(__file__).resolve().parent.parent


def chat(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"Question {i}"},
            {"role": "assistant", "content": f"Answer {i}"},
        ]
    }


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_lines(tmp_path, [chat(i) for i in range(120)], "good.jsonl")


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    return write_lines(tmp_path, [chat(0), b"{bad", chat(1)], "bad.jsonl")


def test_json_document_and_exit_codes(good: Path, bad: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(good), "--json"])
    assert result.exit_code == 0, result.output
    document = orjson.loads(result.stdout)
    assert set(document) == {"ok", "errors", "warnings", "stats"}
    assert document["ok"] is True and document["errors"] == [] and document["warnings"] == []
    assert document["stats"]["examples"] == 120 and document["stats"]["format"] == "messages"

    result = runner.invoke(cli, ["validate", str(bad), "--json"])
    assert result.exit_code == 1
    document = orjson.loads(result.stdout)
    assert document["ok"] is False
    [error] = document["errors"]
    assert {k: error[k] for k in ("line", "code", "file")} == {
        "line": 2,
        "code": "bad-json",
        "file": str(bad),
    }


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["missing.jsonl"],
        ["{good}", "--model", "gemini-9"],
        ["{good}", "--method", "rlhf"],
        ["{good}", "--format", "parquet"],
        ["{good}", "--frobnicate"],
    ],
)
def test_usage_errors_exit_2(good: Path, args: list[str]) -> None:
    args = [a.format(good=good) for a in args]
    result = CliRunner().invoke(cli, ["validate", *args])
    assert result.exit_code == 2, result.output


def test_the_readable_report_goes_to_stdout(bad: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(bad)])
    assert result.exit_code == 1
    assert f"error {bad}:2: not valid JSON" in result.stdout
    assert "(bad-json)" in result.stdout
    assert "estimated: ~4 characters per token" in result.stdout
    assert f"{bad}: 1 error(s), 1 warning(s)" in result.stdout
    assert "::error" not in result.output


def test_github_actions_annotations(bad: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = CliRunner().invoke(cli, ["validate", str(bad), "--json"])
    assert result.exit_code == 1
    assert f"::error file={bad},line=2,title=bad-json::not valid JSON" in result.stderr
    assert f"::warning file={bad},title=few-examples::only 2 training" in result.stderr
    orjson.loads(result.stdout)  # stdout stays one JSON document


def test_annotations_escape_what_github_would_misread(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [{"messages": [{"role": "user", "content": " "}]}], "a,b:c.jsonl")
    lines = github_annotations(validate_file(path), "ignored")
    assert lines[0].startswith("::error file=") and "a%2Cb%3Ac.jsonl" in lines[0]
    assert all("\n" not in line for line in lines)


def test_format_and_method_for_a_bare_file(tmp_path: Path) -> None:
    pairs = write_lines(tmp_path, [{"prompt": "Hi", "completion": "Hello"}] * 2, "p.jsonl")
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(pairs), "--format", "messages", "--json"])
    assert orjson.loads(result.stdout)["errors"][0]["code"] == "bad-shape"
    prompts = write_lines(
        tmp_path, [{"contents": [{"role": "user", "parts": [{"text": "Q"}]}]}], "q"
    )
    result = runner.invoke(cli, ["validate", str(prompts), "--method", "distillation", "--json"])
    assert result.exit_code == 0, result.stdout
    result = runner.invoke(cli, ["validate", str(prompts), "--model", "gemini-2.5-pro", "--json"])
    document = orjson.loads(result.stdout)
    assert document["stats"]["model"] == "gemini-2.5-pro"
    assert [e["code"] for e in document["errors"]] == ["must-end-on-model"]


def test_several_paths_and_the_shipped_specs(good: Path, bad: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(good), str(bad), "--json"])
    assert result.exit_code == 1
    document = orjson.loads(result.stdout)
    assert [e["file"] for e in document["errors"]] == [str(bad)]
    assert set(document["stats"]) == {str(good), str(bad)}
    specs = [str(REPO / "jobs" / "support_tone.yaml"), str(REPO / "jobs" / "ticket_triage.yaml")]
    result = runner.invoke(cli, ["validate", *specs, "--json"])
    assert result.exit_code == 0, result.output
    stats = orjson.loads(result.stdout)["stats"]
    assert stats[specs[0]]["format"] == "messages" and stats[specs[1]]["format"] == "csv"
    assert stats[specs[0]]["budget_usd"] == 50
    assert stats[specs[1]]["holdout_examples"] > 0


def test_a_broken_spec_is_an_error_with_its_line(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("name: demo\nbase_model: gemini-2.5-flash\nmethod: sideways\n")
    result = CliRunner().invoke(cli, ["validate", str(spec)])
    assert result.exit_code == 1
    assert "job.yaml:3" in result.stderr and "Traceback" not in result.output


def test_render_text_is_a_pure_function(bad: Path) -> None:
    console = Console(record=True, width=200, color_system=None)
    render_text(validate_file(bad), console)
    text = console.export_text()
    assert text.splitlines()[0].startswith(f"error {bad}:2: not valid JSON")
    assert "examples    2 accepted: train 2, validation 0, held out 0" in text


@pytest.mark.parametrize("args", [["validate", "{good}", "--json"], ["--help"], ["validate", "-h"]])
def test_validate_and_help_import_no_google_client(good: Path, args: list[str]) -> None:
    argv = [a.format(good=good) for a in args]
    code = (
        "import sys\nfrom vertex_tuner.cli import cli\n"
        f"try:\n    cli({argv!r})\nexcept SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "loaded = [m for m in sys.modules if m.startswith(('google.genai', 'google.cloud'))]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
