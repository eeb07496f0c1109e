"""The shipped reinforcement example in the sandbox, through the CLI and the real clients:
validate, reward test (passing and failing), and a submit that trains on the rewards."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from vertex_tuner.cli import cli
from vertex_tuner.sandbox import SandboxInfo

pytestmark = pytest.mark.sandbox
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ticket_priority"


def run(*args: str) -> tuple[int, dict[str, object], str]:
    result = CliRunner().invoke(cli, list(args))
    doc = orjson.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, doc, result.stderr


def test_the_example_is_validated_tested_and_tuned(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    folder = tmp_path / "ticket_priority"
    shutil.copytree(EXAMPLE, folder)
    spec = str(folder / "spec.yaml")
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

    # A case whose expectation the reward does not meet fails the test, and the submit.
    cases_file = folder / "rewards" / "triage_cases.jsonl"
    lines = cases_file.read_bytes().splitlines()
    broken = orjson.loads(lines[0])
    broken["expect"] = -1
    cases_file.write_bytes(b"\n".join([orjson.dumps(broken), *lines[1:]]) + b"\n")
    code, tested, _ = run("reward", "test", spec, "--sandbox", "--json")
    assert code == 1 and tested["failed"] == 1
    (folder / "rewards" / "triage.py").write_text(
        (folder / "rewards" / "triage.py").read_text().replace("0.25", "0.3")
    )
    code, _, err = run("submit", spec, "--sandbox")
    assert code == 1 and "reward test(s) failed" in err and "Traceback" not in err
    assert "vertex-tuner reward test" in err
