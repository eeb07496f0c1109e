"""The model's life in the sandbox, through the CLI and the real clients: re-tuning onto a
second base, promoted only when the gate passes, and a smoke test that keeps a dead model out."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from sandbox_support import write_spec

from vertex_tuner.cli import cli
from vertex_tuner.sandbox import SandboxInfo, genai_client

pytestmark = pytest.mark.sandbox


def run(*args: str) -> tuple[int, dict[str, object], str]:
    result = CliRunner().invoke(cli, list(args))
    doc = orjson.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, doc, result.stderr


def outcome_of(doc: dict[str, object]) -> dict[str, object]:
    outcomes = doc["outcomes"]
    assert isinstance(outcomes, list) and len(outcomes) == 1
    return dict(outcomes[0])


def test_a_re_tune_onto_a_second_base_is_promoted_only_when_its_gate_passes(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    gate = 'promote_if: "tuned.rouge_l >= base.rouge_l and tuned.rouge_l >= production.rouge_l"'
    spec = write_spec(tmp_path / "retune", name="e2e-retune")
    spec.write_text(spec.read_text().replace('promote_if: "tuned.rouge_l >= base.rouge_l"', gate))
    code, doc, err = run("retrain", str(spec), "--sandbox", "--json")
    first = outcome_of(doc)
    assert code == 0 and first["outcome"] == "promoted", err
    assert first["base_model"] == "gemini-2.5-flash" and first["lineage"] is None

    code, doc, err = run(
        "retrain", str(spec), "--sandbox", "--json", "--base-model", "gemini-3.5-flash"
    )
    moved = outcome_of(doc)
    assert code == 0 and moved["outcome"] == "promoted", err
    assert moved["base_model"] == "gemini-3.5-flash" and moved["run_id"] != first["run_id"]
    lineage = moved["lineage"]
    assert isinstance(lineage, dict) and lineage["replaces"] == first["run_id"]
    assert lineage["from_base"] == "gemini-2.5-flash" and lineage["to_base"] == "gemini-3.5-flash"
    code, shown, _ = run("show", str(moved["run_id"]), "--sandbox", "--json")
    assert code == 0 and shown["lineage"] == lineage
    code, aliases, _ = run("aliases", "e2e-retune", "--sandbox", "--json")
    history = aliases["aliases"]["production"]["history"]  # type: ignore[index]
    assert [h["run_id"] for h in history] == [first["run_id"], moved["run_id"]]
    assert all(h["smoke"]["passed"] and h["actor"] for h in history)
    # The spec file still names 2.5: its next retrain leaves the migration in place.
    code, doc, err = run("retrain", str(spec), "--sandbox", "--json")
    again = outcome_of(doc)
    assert code == 0 and again["outcome"] == "unchanged", err
    assert "Set base_model: gemini-3.5-flash" in str(again["message"])

    # A re-tune that cannot beat what production serves is not promoted.
    spec.write_text(
        spec.read_text().replace(
            "tuned.rouge_l >= production.rouge_l", "tuned.rouge_l > production.rouge_l"
        )
    )
    code, doc, err = run(
        "retrain", str(spec), "--sandbox", "--json", "--base-model", "gemini-3.5-flash-lite"
    )
    failed = outcome_of(doc)
    assert code == 5 and failed["outcome"] == "gate-failed", err
    code, aliases, _ = run("aliases", "e2e-retune", "--sandbox", "--json")
    assert aliases["aliases"]["production"]["run_id"] == moved["run_id"]  # type: ignore[index]


def test_a_base_the_spec_cannot_move_to_fails_before_anything_is_sent(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "nomove", name="e2e-nomove")
    spec.write_text(spec.read_text().replace("adapter_size: 4", "adapter_size: 16"))
    code, doc, err = run(
        "retrain", str(spec), "--sandbox", "--json", "--base-model", "gemini-2.5-pro"
    )
    failed = outcome_of(doc)
    assert (code, failed["outcome"]) == (1, "failed"), err
    assert "--base-model gemini-2.5-pro: adapter size 16 is not available" in str(failed["error"])
    code, doc, _ = run("retrain", str(spec), "--sandbox", "--json", "--base-model", "gpt-4")
    assert code == 1 and "--base-model gpt-4" in str(outcome_of(doc)["error"])
    code, listed, _ = run("list", "--sandbox", "--json", "--spec", "e2e-nomove")
    assert code == 0 and listed["jobs"] == []


def test_a_model_that_no_longer_answers_is_not_promoted(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "smoke", name="e2e-smoke")
    code, doc, err = run("retrain", str(spec), "--sandbox", "--json")
    first = outcome_of(doc)
    assert code == 0 and first["outcome"] == "promoted", err
    spec.parent.joinpath("data.jsonl").write_bytes(
        spec.parent.joinpath("data.jsonl").read_bytes().replace(b"Thursday", b"Friday")
    )
    code, submitted, err = run("submit", str(spec), "--sandbox", "--json")
    assert code == 0, err
    second_run = str(submitted["run_id"])
    assert run("evaluate", str(spec), "--sandbox")[0] == 0
    # Its model is deleted behind vertex-tuner's back: the endpoint answers 404 from now on.
    code, record, _ = run("show", second_run, "--sandbox", "--json")
    model = str(record["tuned_model"]).split("@")[0]
    client = genai_client(use_sandbox)  # kept: a dropped client closes its connection
    client.models.delete(model=model)
    code, _, err = run("promote", "e2e-smoke", second_run, "--alias", "production", "--sandbox")
    assert code == 6, err
    assert "was not moved" in err and "Traceback" not in err
    code, aliases, _ = run("aliases", "e2e-smoke", "--sandbox", "--json")
    assert aliases["aliases"]["production"]["run_id"] == first["run_id"]  # type: ignore[index]
    refused = aliases["refused"]["production"]  # type: ignore[index]
    assert [r["run_id"] for r in refused] == [second_run]
    assert "404" in refused[0]["smoke"]["detail"] or "not found" in refused[0]["smoke"]["detail"]
