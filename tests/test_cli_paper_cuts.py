"""The CLI never leaves you stuck: commands that run as pasted, clean failures, output once."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result
from sandbox_support import write_spec

from vertex_tuner.cli import cli
from vertex_tuner.cli._common import located
from vertex_tuner.sandbox import SandboxInfo


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def commands_in(text: str) -> list[str]:
    return re.findall(r"vertex-tuner (?!sandbox\b)[a-z]+[^`;)\n]*", text)


def test_located_adds_the_flags_to_every_command_once() -> None:
    text = "resume with `vertex-tuner wait J`; list runs with: vertex-tuner runs"
    assert located(text, ["--sandbox"]) == (
        "resume with `vertex-tuner wait J --sandbox`; list runs with: vertex-tuner runs --sandbox"
    )
    assert located("see `vertex-tuner show R --sandbox`", ["--sandbox"]) == (
        "see `vertex-tuner show R --sandbox`"
    )
    assert (
        located("run vertex-tuner sandbox serve", ["--sandbox"]) == "run vertex-tuner sandbox serve"
    )
    assert (
        located("vertex-tuner runs", ["--registry", "'/a b'"])
        == "vertex-tuner runs --registry '/a b'"
    )
    assert located("no command here", ["--sandbox"]) == "no command here"


def test_a_missing_run_in_the_sandbox_store_gets_a_hint_with_sandbox() -> None:
    result = invoke("show", "nothing-here", "--sandbox")
    assert result.exit_code == 1
    assert "vertex-tuner runs --sandbox" in result.stderr
    for command in commands_in(result.stderr):
        assert "--sandbox" in command, command


def test_a_sandbox_run_asked_for_without_sandbox_says_where_it_is(tmp_path: Path) -> None:
    from records_support import run_record

    from vertex_tuner.wiring import registry_location, run_store

    record = run_record("demo-1", spec_name="demo", display_name="demo")
    run_store(registry_location(None, None, sandbox=True), None).save(record)
    result = invoke("show", "demo-1")
    assert result.exit_code == 1
    assert "it is in the sandbox's run store" in result.stderr
    assert "hint: add --sandbox" in result.stderr
    assert invoke("show", "demo-1", "--sandbox").exit_code == 0


def test_json_failures_print_one_document_on_stdout() -> None:
    result = invoke("show", "nothing-here", "--sandbox", "--json")
    assert result.exit_code == 1
    doc = orjson.loads(result.stdout)
    assert doc["exit_code"] == 1 and "no run 'nothing-here'" in doc["error"]
    assert "--sandbox" in doc["hint"]
    usage = invoke("submit", "x.yaml", "--force", "--retry-failed", "--json")
    assert usage.exit_code == 2
    assert orjson.loads(usage.stdout)["exit_code"] == 2


def test_submit_on_a_dataset_file_says_submit_takes_a_spec(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"messages": []}\n')
    result = invoke("submit", str(data), "--sandbox")
    assert result.exit_code == 2
    assert "looks like a dataset, not a job spec" in result.stderr
    assert f"vertex-tuner validate {data}" in result.stderr


def test_validate_accepts_sandbox_like_every_command(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "job", name="cli-validate")
    assert invoke("validate", str(spec), "--sandbox").exit_code == 0


@pytest.mark.parametrize("alias", ["Bad Alias!", "production\n", "-x", ""])
def test_alias_names_are_checked(alias: str) -> None:
    result = invoke("promote", "demo", "--alias", alias, "--sandbox")
    assert result.exit_code == 2
    assert "is not an alias name" in result.stderr


@pytest.mark.sandbox
def test_a_dry_run_over_budget_exits_3_and_prints_the_plan_once(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "job", name="cli-budget", bucket="cli-paper-cuts")
    text = spec.read_text().replace("max_cost_usd: 5", "max_cost_usd: 0.0001")
    spec.write_text(text)
    result = invoke("submit", str(spec), "--sandbox", "--dry-run")
    assert result.exit_code == 3, result.stderr
    assert result.stdout.count("plan: create") == 1
    assert "plan: create" not in result.stderr
    assert "OVER BUDGET" in result.stdout and "is over the budget" in result.stderr
    as_json = invoke("submit", str(spec), "--sandbox", "--dry-run", "--json")
    assert as_json.exit_code == 3
    assert orjson.loads(as_json.stdout)["plan"]["over_budget"] is True


@pytest.mark.sandbox
def test_a_job_id_alone_works_and_cancel_on_a_finished_job_says_so(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "job", name="cli-ids", bucket="cli-paper-cuts")
    submitted = invoke("submit", str(spec), "--sandbox", "--json")
    assert submitted.exit_code == 0, submitted.stderr
    job_name = orjson.loads(submitted.stdout)["job_name"]
    job_id = job_name.rsplit("/", 1)[-1]
    status = invoke("status", job_id, "--sandbox", "--json")
    assert status.exit_code == 0, status.stderr
    assert orjson.loads(status.stdout)["job_name"] == job_name
    cancelled = invoke("cancel", job_id, "--sandbox", "--json")
    assert cancelled.exit_code == 0
    assert orjson.loads(cancelled.stdout) == {
        "job_name": job_name,
        "state": "SUCCEEDED",
        "cancelled": False,
    }
    assert "had already ended SUCCEEDED; nothing to cancel" in cancelled.stderr
    # aliases shows the history of moves, show the stored evaluation and verdict.
    run_id = orjson.loads(submitted.stdout)["run_id"]
    assert invoke("evaluate", str(spec), "--sandbox").exit_code in (0, 5)
    assert invoke("promote", "cli-ids", run_id, "--sandbox").exit_code == 0
    aliases = invoke("aliases", "cli-ids", "--sandbox")
    assert "promote" in aliases.stderr and run_id in aliases.stderr
    assert aliases.stdout.startswith(f"cli-ids@production\t{run_id}\t")
    shown = invoke("show", run_id, "--sandbox")
    assert "evaluated: tuned" in shown.stderr and "gate" in shown.stderr
    assert shown.stdout.strip() == job_name  # piped: the id once, on stdout


def test_mirror_vertex_in_the_sandbox_changes_nothing(tmp_path: Path) -> None:
    from vertex_tuner.wiring import registry_location

    result = invoke("promote", "demo", "r-1", "--mirror-vertex", "--sandbox")
    assert result.exit_code == 1
    assert "nothing was changed" in result.stderr
    assert not (Path(registry_location(None, None, sandbox=True)) / "aliases").exists()


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_an_unwritable_report_folder_fails_before_any_work(tmp_path: Path, kind: str) -> None:
    # A folder under a file cannot be made, whoever runs the test (root ignores permissions).
    (tmp_path / "plain-file").write_text("x")
    target = tmp_path / "plain-file" if kind == "file" else tmp_path / "plain-file" / "report"
    spec = write_spec(tmp_path / "job", name="cli-report")
    result = invoke("evaluate", str(spec), "--sandbox", "--report", str(target))
    assert result.exit_code == 2
    assert ("is a file" if kind == "file" else "cannot write to") in result.stderr
    assert "Traceback" not in result.output
    # Nothing was started: no sandbox state, no run store.
    assert "sandbox: started" not in result.stderr


def test_a_bad_dataset_fails_before_any_emulator_or_client_starts(tmp_path: Path) -> None:
    from sandbox_support import example

    lines = [example(i) for i in range(120)]
    lines[7] = b"{not json"
    spec = write_spec(tmp_path / "bad", name="cli-bad", lines=lines)
    result = invoke("submit", str(spec), "--sandbox")
    assert result.exit_code == 1
    assert "data.jsonl:8" in result.stderr
    assert "sandbox:" not in result.stderr  # no private sandbox was started
    retrain = invoke("retrain", str(spec), "--sandbox", "--json")
    assert retrain.exit_code == 1
    (outcome,) = orjson.loads(retrain.stdout)["outcomes"]
    assert (outcome["outcome"], outcome["message"]) == ("failed", "submit failed")
    assert "data.jsonl:8" in outcome["error"]
    assert "sandbox:" not in retrain.stderr


def test_an_unwritable_home_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plain-file").write_text("x")
    monkeypatch.setenv("VERTEX_TUNER_HOME", str(tmp_path / "plain-file" / "home"))
    spec = write_spec(tmp_path / "job", name="cli-home")
    for args in (
        ["submit", str(spec), "--sandbox"],
        ["promote", "cli-home", "--sandbox"],
        ["rollback", "cli-home", "--sandbox"],
        ["retrain", str(spec), "--sandbox"],
    ):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "cannot write to" in result.stderr and "Traceback" not in result.output
        assert "sandbox: started" not in result.stderr


def test_a_folder_where_a_record_should_be_is_named(tmp_path: Path) -> None:
    from vertex_tuner.wiring import registry_location

    store = Path(registry_location(None, None, sandbox=True))
    (store / "runs" / "demo-1.json").mkdir(parents=True)
    result = invoke("show", "demo-1", "--sandbox")
    assert result.exit_code == 1
    assert f"cannot read {store / 'runs' / 'demo-1.json'}" in result.stderr
    assert "Traceback" not in result.output


def test_a_spec_key_typo_suggests_the_key(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: a\ndataset: {train: d.jsonl}\nhyperparameters:\n  epoch: 3\n")
    result = invoke("validate", str(spec))
    assert result.exit_code == 1
    assert "spec.yaml:4: hyperparameters.epoch: unknown key; did you mean 'epochs'?" in (
        result.stderr
    )


def test_model_options_on_a_spec_are_refused_not_ignored(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "job", name="cli-model")
    result = invoke("validate", str(spec), "--model", "gemini-2.5-pro")
    assert result.exit_code == 2
    assert "--model applies to bare dataset files" in result.stderr


def test_resolve_reaches_the_sandbox_store(tmp_path: Path) -> None:
    import vertex_tuner
    from vertex_tuner.errors import NotFoundError

    with pytest.raises(NotFoundError, match=r"runs/sandbox"):
        vertex_tuner.resolve("demo@production", sandbox=True)


@pytest.mark.sandbox
@pytest.mark.parametrize(
    "args",
    [
        ["show", "no-such-run"],
        ["status", "no-such-run"],
        ["wait", "no-such-run"],
        ["cancel", "no-such-run"],
        ["evaluate", "no-such-run"],
        ["promote", "no-such-spec"],
        ["rollback", "no-such-spec"],
        ["runs", "no-such-spec"],
    ],
)
@pytest.mark.parametrize("registry", [None, "custom-store"])
def test_every_command_a_sandbox_failure_prints_locates_the_run(
    use_sandbox: SandboxInfo, tmp_path: Path, args: list[str], registry: str | None
) -> None:
    extra = ["--sandbox"] + (["--registry", str(tmp_path / registry)] if registry else [])
    result = invoke(*args, *extra)
    printed = commands_in(result.stderr)
    for command in printed:
        assert "--sandbox" in command, command
        if registry:
            assert f"--registry {tmp_path / registry}" in command, command
    if result.exit_code != 0:
        assert "Traceback" not in result.output


def test_commands_that_take_a_name_take_the_spec_file_too(tmp_path: Path) -> None:
    from records_support import run_record

    from vertex_tuner.wiring import registry_location, run_store

    spec = write_spec(tmp_path / "job", name="demo")
    store = run_store(registry_location(None, None, sandbox=True), None)
    store.save(run_record("demo-1", spec_name="demo", display_name="demo"))
    store.save(run_record("other-1", spec_name="other", display_name="other"))
    listed = orjson.loads(invoke("runs", str(spec), "--sandbox", "--json").stdout)
    assert [run["run_id"] for run in listed["runs"]] == ["demo-1"]
    aliases = orjson.loads(invoke("aliases", str(spec), "--sandbox", "--json").stdout)
    assert aliases["name"] == "demo"


@pytest.mark.parametrize("command", ["promote", "rollback", "aliases", "runs"])
def test_a_spec_file_that_is_not_there_is_named_not_searched_for(
    command: str, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.yaml"
    result = invoke(command, str(missing), "--sandbox")
    assert result.exit_code == 2
    assert f"{missing}: no such spec file" in result.stderr
    assert "Traceback" not in result.output
