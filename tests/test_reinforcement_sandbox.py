"""The shipped reinforcement spec in the sandbox, through the CLI and the real clients:
validate, reward test (passing and failing), a submit that trains on the rewards, an
evaluation scored by the reward, and a promotion on its verdict."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from vertex_tuner.cli import cli
from vertex_tuner.sandbox import SandboxInfo

pytestmark = pytest.mark.sandbox
JOBS = Path(__file__).resolve().parent.parent / "jobs"


def copy_spec(folder: Path) -> Path:
    """jobs/ticket_priority.yaml and the files it reads, in ``folder``."""
    for name in ("ticket_priority.yaml", "data/ticket_prompts.jsonl", "rewards"):
        source, target = JOBS / name, folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
    return folder / "ticket_priority.yaml"


def run(*args: str) -> tuple[int, dict[str, object], str]:
    result = CliRunner().invoke(cli, list(args))
    doc = orjson.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, doc, result.stderr


def test_the_spec_is_validated_tested_tuned_evaluated_and_promoted(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    folder = tmp_path
    spec = str(copy_spec(folder))
    code, _, err = run("validate", spec)
    assert code == 0, err
    code, tested, err = run("reward", "test", spec, "--sandbox", "--json")
    assert code == 0, err
    cases = tested["cases"]
    assert isinstance(cases, list) and len(cases) == 5 and tested["failed"] == 0
    first = cases[0]
    assert first["reward"] == pytest.approx(1.0) and first["scored"] is True
    assert first["details"]["local:triage-code"] == 1.0  # the code ran locally first
    assert set(first["details"]) >= {"exact-priority", "triage-code"}

    code, submitted, err = run("submit", spec, "--sandbox", "--json")
    assert code == 0, err
    assert submitted["state"] == "SUCCEEDED" and submitted["plan"] == "create"
    assert "no price" in str(submitted["estimate"]["note"])  # type: ignore[index]
    assert submitted["checkpoints"]

    # The held-out prompts have references, not answers: the reward scores every answer.
    code, evaluated, err = run("evaluate", spec, "--sandbox", "--json")
    assert code == 0, err
    targets = evaluated["targets"]
    assert isinstance(targets, dict) and set(targets) == {"tuned", "base"}
    tuned, base = targets["tuned"]["metrics"], targets["base"]["metrics"]
    assert -1.0 <= base["reward"] < tuned["reward"] <= 1.0
    assert set(tuned) == {"reward", "label_accuracy", "json_valid"}
    binding = evaluated["binding"]
    assert isinstance(binding, dict) and len(str(binding["reward_sha256"])) == 64
    held_out = int(str(binding["examples"]))
    # One scoring call per answer of each target, and each reward's own score per example.
    assert evaluated["usage"]["reward"] == {"calls": 2 * held_out, "cached": 0, "failed": 0}  # type: ignore[index]
    example = evaluated["examples"][0]  # type: ignore[index]
    assert set(example["rewards"]["tuned"]) == {"exact-priority", "triage-code"}
    assert set(example["scores"]["tuned"]) == {"reward", "label_accuracy", "json_valid"}
    assert evaluated["comparisons"]["tuned-base"]["reward"]["n"] == held_out  # type: ignore[index]
    assert evaluated["gate"]["passed"] is True  # type: ignore[index]

    code, promoted, err = run("promote", "ticket-priority", "--if-gate", "--sandbox", "--json")
    assert code == 0, err
    assert promoted["run_id"] == submitted["run_id"]
    smoke = promoted["smoke"]
    assert isinstance(smoke, dict) and smoke["passed"] is True
    assert smoke["generation"] == {
        "temperature": 0.0,
        "max_output_tokens": 1024,
        "thinking_level": "minimal",
    }
    code, aliases, err = run("aliases", "ticket-priority", "--sandbox", "--json")
    assert code == 0, err
    assert aliases["aliases"]["production"]["run_id"] == submitted["run_id"]  # type: ignore[index]

    # A case whose expectation the reward does not meet fails the test, and the submit.
    cases_file = folder / "rewards" / "ticket_priority_cases.jsonl"
    lines = cases_file.read_bytes().splitlines()
    broken = orjson.loads(lines[0])
    broken["expect"] = -1
    cases_file.write_bytes(b"\n".join([orjson.dumps(broken), *lines[1:]]) + b"\n")
    code, tested, _ = run("reward", "test", spec, "--sandbox", "--json")
    assert code == 1 and tested["failed"] == 1
    code_file = folder / "rewards" / "ticket_priority.py"
    code_file.write_text(code_file.read_text().replace("0.25", "0.3"))
    code, _, err = run("submit", spec, "--sandbox")
    assert code == 1 and "reward test(s) failed" in err and "Traceback" not in err
    assert "vertex-tuner reward test" in err
