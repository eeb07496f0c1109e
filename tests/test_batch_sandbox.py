"""Batch evaluation in the sandbox, through the CLI and the real clients: the same metrics as
online on the same held-out set, a dry run that sends nothing, and a retry that attaches."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from sandbox_support import write_spec

from vertex_tuner.cli import cli
from vertex_tuner.sandbox import SandboxInfo

pytestmark = pytest.mark.sandbox


def run(*args: str) -> tuple[int, dict[str, object], str]:
    result = CliRunner().invoke(cli, list(args))
    doc = orjson.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, doc, result.stderr


def requests(info: SandboxInfo) -> dict[str, int]:
    with urllib.request.urlopen(f"{info.vertex_base_url}/sandbox/stats") as answer:
        return dict(orjson.loads(answer.read())["requests"])


def test_batch_and_online_give_the_same_metrics(use_sandbox: SandboxInfo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "batch", name="e2e-batch", rows=200)
    assert run("submit", str(spec), "--sandbox")[0] == 0

    before = requests(use_sandbox)
    code, dry, err = run(
        "evaluate", str(spec), "--sandbox", "--json", "--mode", "batch", "--dry-run"
    )
    assert code == 0, err
    targets = dry["targets"]
    assert isinstance(targets, dict) and {t["mode"] for t in targets.values()} == {"batch"}
    held_out = targets["tuned"]["requests"]
    assert dry["dry_run"] is True and held_out > 0 and dry["requests"] == 2 * held_out
    assert dry["cost_usd"] is not None and dry["cost_high_usd"] >= dry["cost_usd"]  # type: ignore[operator]
    after = requests(use_sandbox)
    sent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert not any(v for k, v in sent.items() if "generate" in k or "batch" in k)

    code, batched, err = run("evaluate", str(spec), "--sandbox", "--json", "--mode", "batch")
    assert code == 0, err
    assert requests(use_sandbox).get("batch_create", 0) - before.get("batch_create", 0) == 2
    assert batched["binding"]["modes"] == {"tuned": "batch", "base": "batch"}  # type: ignore[index]
    code, online, err = run(
        "evaluate", str(spec), "--sandbox", "--json", "--mode", "online", "--no-cache"
    )
    assert code == 0, err
    for role in ("tuned", "base"):
        b = batched["targets"][role]  # type: ignore[index]
        o = online["targets"][role]  # type: ignore[index]
        assert b["metrics"] == o["metrics"] and b["errors"] == o["errors"] == 0
    assert batched["gate"]["passed"] is online["gate"]["passed"] is True  # type: ignore[index]
    assert batched["comparisons"] == online["comparisons"]

    # Evaluated again in batch: the cache answers, so no job is created.
    created = requests(use_sandbox).get("batch_create", 0)
    code, again, _ = run("evaluate", str(spec), "--sandbox", "--json", "--mode", "batch")
    assert code == 0 and requests(use_sandbox).get("batch_create", 0) == created
    assert again["targets"] == batched["targets"]


def test_a_budget_too_small_sends_nothing(use_sandbox: SandboxInfo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "budget", name="e2e-eval-budget", bucket="eval-budget")
    spec.write_text(
        spec.read_text().replace("evaluation: {", "evaluation: {max_cost_usd: 0.0000001, ")
    )
    assert run("submit", str(spec), "--sandbox")[0] == 0
    before = requests(use_sandbox)
    code, _, err = run("evaluate", str(spec), "--sandbox")
    assert code == 3, err
    assert "over evaluation.max_cost_usd" in err and "nothing was sent" in err
    assert "Traceback" not in err
    after = requests(use_sandbox)
    assert {k: v for k, v in after.items() if "generate" in k} == {
        k: v for k, v in before.items() if "generate" in k
    }
    assert os.environ.get("VERTEX_TUNER_SANDBOX")
