"""The whole loop in the sandbox, through the CLI and the Python API, with the real clients."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sandbox_support import REPO, example, write_spec

import vertex_tuner
from vertex_tuner.cli import cli
from vertex_tuner.errors import GateFailed
from vertex_tuner.retry import RetryOptions
from vertex_tuner.sandbox import Sandbox, SandboxInfo
from vertex_tuner.spec import load_spec

pytestmark = pytest.mark.sandbox
# Half the requests fail in the fault test: 20 attempts make giving up a one-in-a-million event.
FAST = RetryOptions(attempts=20, initial_delay=0.01, max_delay=0.05, jitter=0.01)


def run(*args: str) -> tuple[int, dict[str, object], str]:
    result = CliRunner().invoke(cli, list(args))
    doc = orjson.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, doc, result.stderr


def test_submit_then_unchanged_submit(use_sandbox: SandboxInfo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "job", name="e2e-submit")
    code, first, err = run("submit", str(spec), "--sandbox", "--json")
    assert code == 0, err
    assert first["state"] == "SUCCEEDED" and first["created"] is True
    assert first["plan"] == "create" and first["sandbox"] is True
    assert str(first["endpoint"]).startswith("projects/sandbox-project/")
    assert first["bytes_uploaded"] and int(str(first["bytes_uploaded"])) > 0
    data_stats = first["data_stats"]
    assert isinstance(data_stats, dict) and data_stats["truncated_examples"] == 0
    assert "sandbox: using local emulators" in err
    code, second, _ = run("submit", str(spec), "--sandbox", "--json")
    assert code == 0
    assert second["plan"] == "reuse" and second["created"] is False
    assert second["bytes_uploaded"] == 0 and second["job_name"] == first["job_name"]
    code, listed, _ = run("list", "--sandbox", "--json", "--spec", "e2e-submit")
    assert code == 0 and len(listed["jobs"]) == 1  # type: ignore[arg-type]


def test_bad_line_stops_before_anything_reaches_the_cloud(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    lines = [example(i) for i in range(120)]
    lines[41] = b'{"messages": [{"role": "user", "content": "   "}]'
    spec = write_spec(tmp_path / "bad", name="e2e-bad", lines=lines, bucket="never-created")
    code, _, err = run("submit", str(spec), "--sandbox")
    assert code == 1
    assert "data.jsonl:42" in err and "Traceback" not in err
    assert "nothing was uploaded" in err
    code, listed, _ = run("list", "--sandbox", "--json", "--spec", "e2e-bad")
    assert listed["jobs"] == []


def test_over_budget_exits_3(use_sandbox: SandboxInfo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "budget", name="e2e-budget")
    spec.write_text(spec.read_text().replace("max_cost_usd: 5", "max_cost_usd: 0.00001"))
    code, _, err = run("submit", str(spec), "--sandbox")
    assert code == 3 and "over the budget" in err


def test_dry_run_shows_the_request(use_sandbox: SandboxInfo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "dry", name="e2e-dry")
    code, doc, _ = run("submit", str(spec), "--sandbox", "--dry-run", "--json")
    assert code == 0
    plan = doc["plan"]
    assert isinstance(plan, dict) and plan["action"] == "create"
    assert plan["request"]["labels"]["vertex-tuner-spec"] == "e2e-dry"
    assert plan["estimate"]["billable_tokens"] > 0


def test_evaluate_promote_resolve_rollback(use_sandbox: SandboxInfo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "eval", name="e2e-eval")
    assert run("submit", str(spec), "--sandbox")[0] == 0
    report = tmp_path / "report"
    code, result, err = run("evaluate", str(spec), "--sandbox", "--json", "--report", str(report))
    assert code == 0, err
    targets = result["targets"]
    assert isinstance(targets, dict)
    assert targets["tuned"]["metrics"]["rouge_l"] > targets["base"]["metrics"]["rouge_l"]
    assert result["gate"]["passed"] is True  # type: ignore[index]
    assert (report / "report.md").read_text().startswith("## Evaluation of `e2e-eval`")
    assert "<svg" in (report / "report.html").read_text()
    code, promoted, _ = run(
        "promote", "e2e-eval", "--alias", "production", "--if-gate", "--sandbox", "--json"
    )
    assert code == 0
    registry = Path(os.environ["VERTEX_TUNER_HOME"]) / "runs" / "sandbox"
    resolved = vertex_tuner.resolve("e2e-eval@production", registry=str(registry))
    assert resolved.endpoint == promoted["endpoint"] and resolved.sandbox
    assert resolved.metrics["rouge_l"] == targets["tuned"]["metrics"]["rouge_l"]
    # A second run (different data) promoted, then rolled back to the first.
    spec.parent.joinpath("data.jsonl").write_bytes(
        b"\n".join(example(i, f"Ticket {i}: on its way Friday.") for i in range(120)) + b"\n"
    )
    assert run("submit", str(spec), "--sandbox")[0] == 0
    assert run("evaluate", str(spec), "--sandbox")[0] in (0, 5)
    code, second, _ = run("promote", "e2e-eval", "--alias", "production", "--sandbox", "--json")
    assert code == 0 and second["run_id"] != promoted["run_id"]
    code, back, _ = run("rollback", "e2e-eval", "--alias", "production", "--sandbox", "--json")
    assert code == 0 and back["run_id"] == promoted["run_id"]
    code, aliases, _ = run("aliases", "e2e-eval", "--sandbox", "--json")
    history = aliases["aliases"]["production"]["history"]  # type: ignore[index]
    assert [h["action"] for h in history] == ["promote", "promote", "rollback"]


def test_failed_gate_exits_5_and_leaves_the_alias(use_sandbox: SandboxInfo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "gate", name="e2e-gate")
    spec.write_text(
        spec.read_text().replace("tuned.rouge_l >= base.rouge_l", "tuned.exact_match >= 0.99")
    )
    code, _, err = run("submit", str(spec), "--sandbox", "--evaluate", "--promote", "production")
    assert code == 5, err
    # The evaluation's size and cost are said before its first prompt is sent.
    assert "evaluating: " in err and " requests (online), ≈ $" in err
    code, aliases, _ = run("aliases", "e2e-gate", "--sandbox", "--json")
    assert aliases["aliases"] == {}


def test_faults_still_make_exactly_one_job_and_a_complete_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Sandbox(faults="503=0.3,429=0.1,lost=0.1", job_seconds=1.0, seed=11) as info:
        monkeypatch.setenv("VERTEX_TUNER_SANDBOX", orjson.dumps(info.to_json()).decode())
        spec = load_spec(write_spec(tmp_path / "faults", name="e2e-faults"), offline=True)
        with vertex_tuner.open_service(spec=spec, sandbox=True) as service:
            service.retry = FAST
            # Counting 300 examples through these faults only adds minutes of back-off; how
            # the count meets failures is tested with a fake counter (test_exact_tokens.py).
            service.counter = None
            result = service.submit(spec)
            jobs = service.list_jobs("e2e-faults")
        record = result.record
        assert record is not None and record.state == "SUCCEEDED"
        assert len(jobs) == 1 and jobs[0].name == record.job_name
        assert record.tuned_model and record.endpoint and record.data_stats
        assert record.train.uri and record.validation and record.holdout
        import urllib.request

        with urllib.request.urlopen(f"{info.vertex_base_url}/sandbox/stats") as response:
            stats = orjson.loads(response.read())
        assert stats["jobs_created"] == 1
        assert sum(stats["faults"].values()) > 0


def test_two_concurrent_submits_make_one_job(use_sandbox: SandboxInfo, tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path / "race", name="e2e-race"), offline=True)
    results = []

    def submit() -> None:
        with vertex_tuner.open_service(spec=spec, sandbox=True) as service:
            results.append(service.submit(spec, wait=False))

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    assert {r.record.job_name for r in results if r.record} == {
        results[0].record.job_name if results[0].record else None
    }
    assert sorted(r.created for r in results) == [False, True]


def test_two_submits_racing_across_a_lease_expiry_make_one_job(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    """The first submit freezes (SIGSTOP) mid-upload, holding the lease; with a 2 s ttl the
    second takes the lease over and creates the job. Thawed, the first finds its lease gone,
    creates nothing, and attaches to the second's job."""
    spec = write_spec(tmp_path / "lease-race", name="e2e-lease-race", rows=400)
    env = {**os.environ, "VERTEX_TUNER_LEASE_TTL": "2", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "vertex_tuner", "submit", str(spec), "--sandbox", "--json"]
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
    )
    assert first.stderr is not None
    said = []
    for line in first.stderr:
        said.append(line)
        if line.startswith(b"upload: "):  # its first file is up: it holds the lease
            first.send_signal(signal.SIGSTOP)
            break
    try:
        second = subprocess.run(
            command, env=env, capture_output=True, cwd=REPO, timeout=120, check=False
        )
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=120)
    assert second.returncode == 0, second.stderr.decode()
    taken = orjson.loads(second.stdout)
    assert taken["created"] is True and taken["plan"] == "create"
    assert b"waiting: another submit of this job is running: process" in second.stderr
    assert first.returncode == 0, (b"".join(said) + err).decode()
    resumed = orjson.loads(out)
    assert resumed["created"] is False and resumed["job_name"] == taken["job_name"]
    assert resumed["run_id"] == taken["run_id"]
    assert b"taken over" in err
    code, listed, _ = run("list", "--sandbox", "--json", "--spec", "e2e-lease-race")
    assert code == 0 and len(listed["jobs"]) == 1  # type: ignore[arg-type]


def test_every_checkpoint_is_evaluated_and_the_best_served(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "checkpoints", name="e2e-checkpoints")
    code, submitted, err = run("submit", str(spec), "--sandbox", "--json")
    assert code == 0, err
    code, doc, err = run("evaluate", str(spec), "--sandbox", "--checkpoints", "--json")
    assert code == 0, err
    ids = [str(c["checkpoint_id"]) for c in submitted["checkpoints"]]  # type: ignore[union-attr]
    assert list(doc["checkpoints"]) == ids and doc["passed"] == ids  # type: ignore[call-overload]
    code, promoted, err = run(
        "promote", "e2e-checkpoints", "--checkpoint", "best", "--sandbox", "--json"
    )
    assert code == 0, err
    assert promoted["checkpoint"] in ids and promoted["verdict"]
    endpoints = {str(c["checkpoint_id"]): c["endpoint"] for c in submitted["checkpoints"]}  # type: ignore[union-attr]
    assert promoted["endpoint"] == endpoints[str(promoted["checkpoint"])]


def test_the_judge_compares_both_orders_in_the_sandbox(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "judge", name="e2e-judge")
    text = spec.read_text()
    spec.write_text(
        text.replace(
            'metrics: [exact_match, rouge_l], promote_if: "tuned.rouge_l >= base.rouge_l"',
            "metrics: [rouge_l, judge], judge: {samples: 8}, "
            'promote_if: "significant(tuned.judge > base.judge)"',
        )
    )
    assert "judge" in spec.read_text()
    code, _, err = run("submit", str(spec), "--sandbox", "--json")
    assert code == 0, err
    code, doc, err = run("evaluate", str(spec), "--sandbox", "--json")
    judge = doc["binding"]["judge"]  # type: ignore[index]
    assert judge["model"] == "gemini-2.5-pro" and judge["samples"] == 8
    pair = judge["pairs"]["tuned-base"]
    assert pair["judged"] == 8 and pair["self_agreement"] == 1.0
    comparison = doc["comparisons"]["tuned-base"]["judge"]  # type: ignore[index]
    assert comparison["n"] == 8
    assert doc["usage"]["judge"]["prompt"] > 0  # type: ignore[index]
    judged = [e for e in doc["examples"] if e["judge"]]  # type: ignore[union-attr]
    assert len(judged) == 8
    assert all("sandbox stand-in judge" in e["judge"]["tuned-base"]["reasons"][0] for e in judged)
    # A verdict on 8 examples: the exit code follows the gate it printed.
    assert code == (0 if doc["gate"]["passed"] else 5), err  # type: ignore[index]


def test_a_model_that_answers_xyz_is_never_promoted_whatever_is_re_run(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    folder = tmp_path / "xyz"
    spec = write_spec(folder, name="e2e-xyz", lines=[example(i, "XYZ") for i in range(120)])
    (folder / "holdout.jsonl").write_bytes(
        b"\n".join(example(i) for i in range(1000, 1031)) + b"\n"
    )
    text = spec.read_text().replace("holdout: 0.1", "holdout: holdout.jsonl")
    gate = "significant(tuned.rouge_l > base.rouge_l)"
    spec.write_text(text.replace('"tuned.rouge_l >= base.rouge_l"', f'"{gate}"'))
    assert gate in spec.read_text()
    code, _, err = run("retrain", str(spec), "--sandbox", "--json")
    assert code == 5, err
    attempts = [
        ("evaluate", str(spec), "--sandbox", "--against", "production", "--json"),
        ("evaluate", str(spec), "--sandbox", "--json"),
        ("promote", "e2e-xyz", "--if-gate", "--sandbox", "--json"),
        ("promote", "e2e-xyz", "--checkpoint", "best", "--sandbox", "--json"),
        ("retrain", str(spec), "--sandbox", "--json"),
    ]
    for attempt in attempts:
        code, doc, err = run(*attempt)
        assert code == 5, (attempt, err)
        if attempt[0] == "evaluate" and "production" in attempt:
            assert "no base model" in str(doc["gate"]["explanation"])  # type: ignore[index]
    code, aliases, _ = run("aliases", "e2e-xyz", "--sandbox", "--json")
    assert code == 0 and aliases["aliases"] == {}


def test_a_killed_submit_reattaches_to_its_job(use_sandbox: SandboxInfo, tmp_path: Path) -> None:
    with Sandbox(job_seconds=6.0) as slow:
        env = {**os.environ, "VERTEX_TUNER_SANDBOX": orjson.dumps(slow.to_json()).decode()}
        spec = write_spec(tmp_path / "kill", name="e2e-kill")
        command = [sys.executable, "-m", "vertex_tuner", "submit", str(spec), "--sandbox", "--json"]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
        )
        runs = Path(env["VERTEX_TUNER_HOME"]) / "runs" / "sandbox" / "runs"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(runs.glob("e2e-kill-*.json")):
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        second = subprocess.run(
            command, env=env, capture_output=True, cwd=REPO, timeout=60, check=False
        )
        assert second.returncode == 0, second.stderr.decode()
        doc = orjson.loads(second.stdout)
        assert doc["plan"] == "attach" and doc["state"] == "SUCCEEDED"
        import urllib.request

        with urllib.request.urlopen(f"{slow.vertex_base_url}/sandbox/stats") as response:
            assert orjson.loads(response.read())["jobs_created"] == 1


def test_wait_timeout_exits_4_and_status_reads_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Sandbox(job_seconds=30.0) as slow:
        monkeypatch.setenv("VERTEX_TUNER_SANDBOX", orjson.dumps(slow.to_json()).decode())
        spec = write_spec(tmp_path / "timeout", name="e2e-timeout")
        code, doc, err = run("submit", str(spec), "--sandbox", "--timeout", "2s", "--json")
        assert code == 4, err
        assert "vertex-tuner wait" in err
        code, status, _ = run("status", str(doc["job_name"]), "--sandbox", "--json")
        assert code == 0 and status["state"] in ("RUNNING", "PENDING", "QUEUED")
        code, cancelled, _ = run("cancel", str(doc["job_name"]), "--sandbox", "--wait", "--json")
        assert code == 0 and cancelled["state"] == "CANCELLED"


def test_without_credentials_the_cloud_says_what_to_run(tmp_path: Path) -> None:
    code, _, err = run("submit", str(REPO / "jobs" / "support_tone.yaml"))
    assert code == 1
    assert "GOOGLE_CLOUD_PROJECT is not set" in err and "--sandbox" in err
    assert "Traceback" not in err


def test_ctrl_c_detaches_with_exit_130_and_says_how_to_resume(tmp_path: Path) -> None:
    with Sandbox(job_seconds=20.0) as slow:
        env = {**os.environ, "VERTEX_TUNER_SANDBOX": orjson.dumps(slow.to_json()).decode()}
        spec = write_spec(tmp_path / "ctrlc", name="e2e-ctrlc")
        process = subprocess.Popen(
            [sys.executable, "-m", "vertex_tuner", "submit", str(spec), "--sandbox"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        runs = Path(env["VERTEX_TUNER_HOME"]) / "runs" / "sandbox" / "runs"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(runs.glob("e2e-ctrlc-*.json")):
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 130
        assert b"detached" in err and b"vertex-tuner wait projects/" in err
        assert b"Traceback" not in err


def _python_blocks() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.sandbox
def test_the_readme_python_examples_run_in_the_sandbox_as_written(
    use_sandbox: SandboxInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release loop and the service examples, verbatim, from the repository's folder."""
    monkeypatch.chdir(REPO)
    loop, service = _python_blocks()[:2]
    scope: dict[str, Any] = {}
    exec(compile(loop, "README.md (release loop)", "exec"), scope)
    outcome = scope["outcome"]
    assert outcome.outcome == "promoted", outcome.message
    assert scope["run"].run_id == outcome.run_id
    assert scope["result"].verdict.passed
    evaluated = scope["result"]
    exec(compile(service, "README.md (service)", "exec"), scope)
    assert scope["result"].plan.action == "reuse"
    assert scope["record"].state == "SUCCEEDED"
    # The whole loop again through vertex_tuner.retrain: nothing changed, nothing to do.
    again = vertex_tuner.retrain("jobs/support_tone.yaml", sandbox=True)
    assert (again.outcome, again.run_id) == ("unchanged", outcome.run_id)
    # The shipped gate's significant() held on the full held-out set (31 examples) …
    significant = evaluated.verdict.clauses[0]
    assert significant.significant and significant.passed and significant.n == 31
    assert significant.ci_low > 0
    # … and on 5 of them the same model is not shown better than noise: the gate fails,
    # says how many examples it would take, and that verdict, the latest, now blocks --if-gate.
    shipped = load_spec(REPO / "jobs" / "support_tone.yaml", offline=True)
    assert shipped.evaluation is not None
    five = shipped.model_copy(
        update={"evaluation": shipped.evaluation.model_copy(update={"max_examples": 5})}
    )
    small = vertex_tuner.evaluate_run(five, outcome.run_id, sandbox=True)
    assert small.verdict is not None and not small.verdict.passed
    note = small.verdict.clauses[0].note
    assert "n = 5" in note and "examples" in note, note
    with pytest.raises(GateFailed, match="did not pass its gate"):
        vertex_tuner.promote("support-tone", outcome.run_id, if_gate=True, sandbox=True)


def test_submit_never_trusts_a_list_filter_vertex_might_ignore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the emulator's list ignoring its filter, each spec still gets its own job."""
    with Sandbox(faults="list-filter=ignore", job_seconds=1.0) as info:
        monkeypatch.setenv("VERTEX_TUNER_SANDBOX", orjson.dumps(info.to_json()).decode())
        first = write_spec(tmp_path / "a", name="e2e-filter-a")
        second = write_spec(
            tmp_path / "b", name="e2e-filter-b", lines=[example(i, "Other.") for i in range(120)]
        )
        code, a, err = run("submit", str(first), "--sandbox", "--json")
        assert code == 0, err
        code, b, err = run("submit", str(second), "--sandbox", "--json")
        assert code == 0, err
        assert b["created"] is True and b["job_name"] != a["job_name"]
        code, again, err = run("submit", str(first), "--sandbox", "--json")
        assert code == 0, err
        assert again["plan"] == "reuse" and again["job_name"] == a["job_name"]
        code, listed, _ = run("list", "e2e-filter-a", "--sandbox", "--json")
        assert [j["name"] for j in listed["jobs"]] == [a["job_name"]]  # type: ignore[index]
