"""The GitHub Actions workflows: structure, and the sandbox job run exactly as the workflow does."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w.-]+)*@[0-9a-f]{40}$")


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def steps(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job, step) for job, body in doc["jobs"].items() for step in body["steps"]]


@pytest.mark.parametrize("name", ["ci.yml", "retrain.yml"])
def test_actions_are_pinned_and_checkouts_keep_no_credentials(name: str) -> None:
    doc = load(name)
    assert doc["permissions"] == {}
    for job, step in steps(doc):
        if "uses" in step:
            assert PINNED.match(step["uses"]), (job, step["uses"])
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


def test_retrain_triggers_permissions_and_concurrency() -> None:
    doc = load("retrain.yml")
    on = doc["on"]
    assert on["schedule"][0]["cron"]
    assert "spec" in on["workflow_dispatch"]["inputs"]
    assert on["push"]["paths"] == ["jobs/**"]
    assert "pull_request" in on
    jobs = doc["jobs"]
    assert jobs["sandbox"]["permissions"] == {"contents": "read"}
    assert jobs["retrain"]["permissions"] == {"contents": "read", "id-token": "write"}
    assert "matrix.spec" in jobs["retrain"]["concurrency"]["group"]
    assert jobs["retrain"]["concurrency"]["cancel-in-progress"] is False
    auth = [s for _, s in steps(doc) if "google-github-actions/auth@" in str(s.get("uses"))]
    assert len(auth) == 1 and "workload_identity_provider" in auth[0]["with"]
    assert "credentials_json" not in auth[0]["with"]


def test_ci_runs_every_python_and_the_checks() -> None:
    doc = load("ci.yml")
    assert doc["jobs"]["test"]["strategy"]["matrix"]["python"] == ["3.10", "3.11", "3.12", "3.13"]
    commands = " ".join(str(s.get("run", "")) for _, s in steps(doc))
    for needed in (
        "ruff format --check",
        "ruff check",
        "mypy",
        "vertex-tuner validate",
        "scripts/lint-workflows",
        "pytest",
    ):
        assert needed in commands


def test_every_spec_path_named_exists() -> None:
    for name in ("ci.yml", "retrain.yml"):
        text = (WORKFLOWS / name).read_text()
        for path in re.findall(r"jobs/[\w.-]+\.yaml", text):
            assert (REPO / path).is_file(), path
    matrix = load("retrain.yml")["jobs"]["retrain"]["strategy"]["matrix"]["spec"]
    assert sorted(matrix) == sorted(f"jobs/{p.name}" for p in (REPO / "jobs").glob("*.yaml"))


@pytest.mark.sandbox
def test_the_sandbox_job_runs_as_the_workflow_runs_it(tmp_path: Path) -> None:
    """Each `run:` step of the sandbox job, in order, in its own bash, with GITHUB_ENV carried.

    The install step is the one step not run: the test environment has the package installed.
    """
    job = load("retrain.yml")["jobs"]["sandbox"]
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_ENV": str(tmp_path / "github_env"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_WORKSPACE": str(REPO),
    }
    (tmp_path / "github_env").write_text("")
    ran = []
    try:
        for step in job["steps"]:
            if "run" not in step or step.get("name") == "Install":
                continue
            result = subprocess.run(
                ["bash", "-e", "-c", step["run"]],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert result.returncode == 0, (step["name"], result.stdout, result.stderr)
            ran.append(step["name"])
            for line in (tmp_path / "github_env").read_text().splitlines():
                key, _, value = line.partition("=")
                env[key] = value
    finally:
        info = tmp_path / "sandbox.json"
        if info.exists() and info.read_text().strip():
            os.kill(orjson.loads(info.read_text().splitlines()[0])["pid"], signal.SIGTERM)
    assert ran == ["Start the sandbox", "Retrain every spec against the sandbox"]
    summary = (tmp_path / "summary.md").read_text()
    assert "### `support-tone`" in summary and "### `ticket-triage`" in summary
    assert summary.count("✅ promoted") == 2
    assert "## Evaluation of `support-tone`" in summary
    record = orjson.loads((tmp_path / "retrain" / "record.json").read_bytes())
    assert record["state"] == "SUCCEEDED" and record["sandbox"] is True
