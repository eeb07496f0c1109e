"""``vertex-tuner prune``: which tuned models may go, deleting them, and the emulator's
``models.delete``."""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from records_support import run_record
from sandbox_support import example, write_spec

from vertex_tuner.backends.fake import FakeGenerator, FakeStorage, FakeTuner
from vertex_tuner.cli import cli
from vertex_tuner.errors import BackendError, TransientBackendError, VertexTunerError
from vertex_tuner.pruning import PruneRow, blind_spots, choose, delete_unused
from vertex_tuner.records import RunRecord
from vertex_tuner.retry import RetryOptions
from vertex_tuner.runstore import AliasEntry, LocalBlobStore, RunStore
from vertex_tuner.sandbox import SandboxInfo, genai_client
from vertex_tuner.sandbox.vertex import _ROUTES, ApiError, VertexEmulator
from vertex_tuner.wiring import Context
from vertex_tuner.wiring.backends import Backends

NAME = "support-tone"
PREFIX = "projects/p/locations/us-central1/models"
NO_WAIT = RetryOptions(attempts=3, initial_delay=0, max_delay=0, jitter=0)


def run(run_id: str, model: str | None = None, **fields: Any) -> RunRecord:
    """A succeeded run of support-tone whose tuned model is ``PREFIX/model`` (``ID@V``)."""
    values: dict[str, Any] = {
        "state": "SUCCEEDED",
        "tuned_model": f"{PREFIX}/{model}" if model else None,
        "created_at": f"2026-01-01T00:00:{int(run_id.lstrip('r')):02d}Z",
        "project": "p",
        "location": "us-central1",
    }
    values.update(fields)
    return run_record(run_id, **values)


def moves(*targets: str, action: str = "promote") -> tuple[dict[str, Any], ...]:
    """A history of promotes onto ``targets``, each recording the run it moved from."""
    events, previous = [], None
    for target in targets:
        events.append({"run_id": target, "at": "t", "action": action, "previous": previous})
        previous = target
    return tuple(events)


def alias(name: str, run_id: str, history: tuple[dict[str, Any], ...] = ()) -> AliasEntry:
    return AliasEntry(name, run_id, "t", history or moves(run_id))


def actions(rows: list[PruneRow]) -> dict[str, tuple[str, str]]:
    return {r.run_id: (r.action, r.reason) for r in rows}


# --- choosing ------------------------------------------------------------------------------


def test_the_run_an_alias_serves_is_kept_and_the_unused_ones_go() -> None:
    records = [run("r3", "3@1"), run("r2", "2@1"), run("r1", "1@1")]
    rows = actions(choose(NAME, records, {"production": alias("production", "r3")}, keep=0))
    assert rows == {
        "r3": ("keep", "serves support-tone@production"),
        "r2": ("delete", "no alias uses it"),
        "r1": ("delete", "no alias uses it"),
    }


def test_the_last_n_moves_of_every_alias_are_kept() -> None:
    records = [run(f"r{i}", f"{i}@1") for i in range(8, 0, -1)]
    history = moves("r1", "r2", "r3", "r4", "r5", "r6", "r7")
    aliases = {"staging": alias("staging", "r7", history), "production": alias("production", "r8")}
    rows = actions(choose(NAME, records, aliases, keep=3))
    # The last 3 moves: r4 -> r5, r5 -> r6, r6 -> r7 (each keeps its target and where it came from).
    assert {r for r, (a, _) in rows.items() if a == "keep"} == {"r8", "r7", "r6", "r5", "r4"}
    assert rows["r5"] == ("keep", "among the last 3 moves of support-tone@staging")
    assert rows["r7"] == ("keep", "serves support-tone@staging")
    assert rows["r3"][0] == rows["r1"][0] == "delete"


def test_a_rollback_keeps_the_run_it_rolled_back_from() -> None:
    records = [run("r2", "2@1"), run("r1", "1@1")]
    history = (
        *moves("r1", "r2"),
        {"run_id": "r1", "at": "t", "action": "rollback", "previous": "r2"},
    )
    aliases = {"production": alias("production", "r1", history)}
    rows = actions(choose(NAME, records, aliases, keep=1))
    assert rows["r2"] == ("keep", "among the last 1 moves of support-tone@production")
    assert rows["r1"] == ("keep", "serves support-tone@production")


def test_keep_0_keeps_only_what_aliases_serve_now() -> None:
    records = [run("r2", "2@1"), run("r1", "1@1")]
    aliases = {"production": alias("production", "r2", moves("r1", "r2"))}
    assert actions(choose(NAME, records, aliases, keep=0))["r1"][0] == "delete"
    assert actions(choose(NAME, records, aliases, keep=5))["r1"][0] == "keep"


def test_a_version_of_a_kept_model_is_kept_since_the_whole_model_would_go() -> None:
    records = [run("r4", "40@2"), run("r3", "40@1"), run("r2", "7@2"), run("r1", "7@1")]
    rows = actions(choose(NAME, records, {"production": alias("production", "r2")}, keep=0))
    assert rows["r1"] == (
        "keep",
        "shares model ID with run r2, which is kept; google-genai deletes whole models",
    )
    # Both versions of an unused model go together.
    assert rows["r3"][0] == rows["r4"][0] == "delete"


def test_runs_without_a_succeeded_model_are_kept() -> None:
    records = [
        run("r5", None, state="RUNNING", base_model=f"{PREFIX}/1@1", parent_run_id="r1"),
        run("r4", None, state="FAILED"),
        run("r3", None, state="PLANNED"),
        run("r2", None),
        run("r1", "1@1"),
    ]
    rows = actions(choose(NAME, records, {}, keep=5))
    assert rows["r4"] == (
        "keep",
        "its job is FAILED, not succeeded: there is no tuned model to delete",
    )
    assert rows["r3"][0] == rows["r5"][0] == "keep"
    assert rows["r2"] == ("keep", "its job recorded no tuned model")
    # A job still tuning from a model needs it until it ends.
    assert rows["r1"] == ("keep", "run r5 is still tuning from its model")


def test_a_model_already_deleted_is_kept_and_does_not_protect_its_versions() -> None:
    records = [run("r2", "9@2"), run("r1", "9@1", model_deleted_at="2026-02-01T00:00:00Z")]
    rows = actions(choose(NAME, records, {}, keep=5))
    assert rows["r1"] == ("keep", "its model was already deleted (2026-02-01T00:00:00Z)")
    assert rows["r2"][0] == "delete"


def test_an_alias_on_a_run_without_a_record_is_a_blind_spot() -> None:
    records = [run("r1", "1@1")]
    aliases = {"production": alias("production", "r9")}
    assert blind_spots(records, aliases, []) == [
        "alias production serves run r9, which has no record here"
    ]
    assert blind_spots(records, {}, ["runs/x.json is damaged"]) == [
        "a record could not be read: runs/x.json is damaged"
    ]


# --- deleting ------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """support-tone: r4 serves production (model 4), r3 and r2 are versions 2 and 1 of model 2,
    r1 has model 1; only production was ever moved, once, onto r4."""
    root = tmp_path / "runs"
    runs = RunStore(LocalBlobStore(root))
    for record in (run("r4", "4@1"), run("r3", "2@2"), run("r2", "2@1"), run("r1", "1@1")):
        runs.save(record)
    runs.set_alias(NAME, "production", "r4")
    return root


@pytest.fixture
def tuner() -> FakeTuner:
    fake = FakeTuner()
    for model in ("4", "2", "1"):
        fake.add_model(f"{PREFIX}/{model}")
    return fake


@pytest.fixture
def contexts(monkeypatch: pytest.MonkeyPatch, tuner: FakeTuner) -> list[tuple[str, str]]:
    """The fake tuner behind every context prune opens; the (project, location) of each."""
    opened: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def open_context(
        *,
        spec: Any,
        sandbox: bool,
        registry: str | None = None,
        project: str | None = None,
        location: str | None = None,
    ) -> Iterator[Context]:
        assert registry is not None and spec is None
        opened.append((project or "?", location or "?"))
        backends = Backends(
            FakeStorage(), tuner, FakeGenerator(), project or "p", location or "l", False, "fakes"
        )
        yield Context(backends, RunStore(LocalBlobStore(Path(registry))))

    monkeypatch.setattr("vertex_tuner.api.open_context", open_context)
    return opened


def prune(store: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["prune", NAME, "--registry", str(store), *args])


def document(result: Result) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(result.stdout)
    return doc


def test_without_yes_it_lists_and_deletes_nothing(
    store: Path, tuner: FakeTuner, contexts: list[tuple[str, str]]
) -> None:
    result = prune(store, "--json")
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert set(doc) == {"name", "keep", "runs", "deleted", "failed"}
    assert doc["name"] == NAME and doc["keep"] == 5
    assert doc["deleted"] == doc["failed"] == []
    assert [set(r) for r in doc["runs"]] == [{"run_id", "tuned_model", "action", "reason"}] * 4
    assert {r["run_id"]: r["action"] for r in doc["runs"]} == {
        "r4": "keep",
        "r3": "delete",
        "r2": "delete",
        "r1": "delete",
    }
    assert f"vertex-tuner prune {NAME} --yes --registry {store}" in result.stderr
    assert contexts == [] and not [c for c in tuner.calls if c[0] == "delete_model"]
    assert RunStore(LocalBlobStore(store)).get("r1").model_deleted_at is None


def test_the_plain_listing_when_piped(store: Path, contexts: list[tuple[str, str]]) -> None:
    result = prune(store, "--keep", "0")
    assert result.exit_code == 0, result.output
    assert f"r1\tdelete\t{PREFIX}/1@1\tno alias uses it" in result.stdout.splitlines()
    assert "would delete 2 model(s)" in result.stderr
    assert f"vertex-tuner prune {NAME} --keep 0 --yes" in result.stderr


def test_yes_deletes_each_model_once_and_marks_the_records(
    store: Path, tuner: FakeTuner, contexts: list[tuple[str, str]]
) -> None:
    result = prune(store, "--yes", "--json")
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert doc["deleted"] == [f"{PREFIX}/1", f"{PREFIX}/2"] and doc["failed"] == []
    assert {r["run_id"]: r["action"] for r in doc["runs"]} == {
        "r4": "keep",
        "r3": "deleted",
        "r2": "deleted",
        "r1": "deleted",
    }
    deletes = [c[1] for c in tuner.calls if c[0] == "delete_model"]
    assert sorted(deletes) == [f"{PREFIX}/1", f"{PREFIX}/2"]  # versions 1 and 2: one call
    assert contexts == [("p", "us-central1")]
    assert tuner.model_exists(f"{PREFIX}/4") and not tuner.model_exists(f"{PREFIX}/2")
    runs = RunStore(LocalBlobStore(store))
    assert runs.get("r2").model_deleted_at and runs.get("r3").model_deleted_at
    assert runs.get("r4").model_deleted_at is None
    # The next prune finds nothing to do and calls nothing.
    again = document(prune(store, "--yes", "--json"))
    assert again["deleted"] == [] and len(tuner.calls) == len(deletes)
    assert {r["action"] for r in again["runs"]} == {"keep"}


def test_one_failed_delete_leaves_the_others_going_and_exits_1(
    store: Path, tuner: FakeTuner, contexts: list[tuple[str, str]]
) -> None:
    tuner.fail_next("delete_model", BackendError("delete model 2: 400 FAILED_PRECONDITION"))
    result = prune(store, "--yes", "--json")
    assert result.exit_code == 1, result.output
    doc = document(result)
    rows = {r["run_id"]: r for r in doc["runs"]}
    # Runs are newest first, so model 2 (r3, r2) is tried first and fails; model 1 still goes.
    assert rows["r3"]["action"] == rows["r2"]["action"] == "failed"
    assert "FAILED_PRECONDITION" in rows["r3"]["reason"]
    assert rows["r1"]["action"] == "deleted"
    assert doc["failed"] == [f"{PREFIX}/2"] and doc["deleted"] == [f"{PREFIX}/1"]
    assert RunStore(LocalBlobStore(store)).get("r2").model_deleted_at is None
    assert "Traceback" not in result.output


def test_a_model_already_gone_counts_as_deleted(
    store: Path, tuner: FakeTuner, contexts: list[tuple[str, str]]
) -> None:
    tuner.delete_model(f"{PREFIX}/1")  # deleted by hand in the console
    doc = document(prune(store, "--yes", "--json"))
    row = next(r for r in doc["runs"] if r["run_id"] == "r1")
    assert row == {
        "run_id": "r1",
        "tuned_model": f"{PREFIX}/1@1",
        "action": "deleted",
        "reason": "no alias uses it; it was already gone",
    }
    assert RunStore(LocalBlobStore(store)).get("r1").model_deleted_at


def test_a_lost_answer_is_retried_and_the_404_that_follows_is_a_deletion(
    store: Path, tuner: FakeTuner
) -> None:
    runs = RunStore(LocalBlobStore(store))
    records = runs.list(NAME)
    rows = choose(NAME, records, runs.aliases(NAME), keep=5)
    tuner.fail_next("delete_model", TransientBackendError("reset"), after_effect=True)
    out = delete_unused(NAME, 5, records, rows, runs=runs, tuner=tuner, retry=NO_WAIT)
    assert [r.action for r in out] == ["keep", "deleted", "deleted", "deleted"]
    assert [c[1] for c in tuner.calls].count(f"{PREFIX}/2") == 2


def test_an_alias_moved_onto_a_candidate_before_its_delete_saves_it(
    store: Path, tuner: FakeTuner
) -> None:
    runs = RunStore(LocalBlobStore(store))
    records = runs.list(NAME)
    rows = choose(NAME, records, runs.aliases(NAME), keep=0)
    assert actions(rows)["r2"][0] == "delete"
    runs.set_alias(NAME, "canary", "r2")  # while the listing was on screen
    out = actions(delete_unused(NAME, 0, records, rows, runs=runs, tuner=tuner, retry=NO_WAIT))
    assert out["r2"] == ("keep", "serves support-tone@canary")
    assert out["r3"][0] == "keep"  # its sibling version: the same model
    assert out["r1"][0] == "deleted"
    assert tuner.model_exists(f"{PREFIX}/2")
    # One alias read before each model's delete, nothing more.
    reads: list[str] = []
    fresh = RunStore(LocalBlobStore(store))
    read = fresh.aliases

    def counted(name: str) -> dict[str, AliasEntry]:
        reads.append(name)
        return read(name)

    fresh.aliases = counted  # type: ignore[method-assign]
    delete_unused(NAME, 0, records, rows, runs=fresh, tuner=tuner, retry=NO_WAIT)
    assert reads == [NAME, NAME]


def test_aliases_that_cannot_be_read_again_delete_nothing(store: Path, tuner: FakeTuner) -> None:
    runs = RunStore(LocalBlobStore(store))
    records = runs.list(NAME)
    rows = choose(NAME, records, runs.aliases(NAME), keep=5)

    def unreadable(name: str) -> dict[str, AliasEntry]:
        raise VertexTunerError("the alias file is damaged")

    runs.aliases = unreadable  # type: ignore[method-assign]
    out = delete_unused(NAME, 5, records, rows, runs=runs, tuner=tuner, retry=NO_WAIT)
    assert [r.action for r in out] == ["keep", "failed", "failed", "failed"]
    assert "the alias file is damaged" in out[1].reason
    assert tuner.calls == []


def test_a_model_is_deleted_where_its_run_was_tuned(
    tmp_path: Path, tuner: FakeTuner, contexts: list[tuple[str, str]]
) -> None:
    root = tmp_path / "runs"
    model = "projects/p2/locations/europe-west4/models/5@1"
    RunStore(LocalBlobStore(root)).save(
        run("r1", None, tuned_model=model, project="p2", location="europe-west4")
    )
    tuner.add_model(model)
    assert prune(root, "--yes").exit_code == 0
    assert contexts == [("p2", "europe-west4")]


def test_nothing_is_deleted_while_an_alias_serves_a_run_without_a_record(
    store: Path, tuner: FakeTuner, contexts: list[tuple[str, str]]
) -> None:
    RunStore(LocalBlobStore(store)).set_alias(NAME, "canary", "r9")
    listed = prune(store)
    assert listed.exit_code == 0 and "--yes will delete nothing" in listed.stderr
    result = prune(store, "--yes", "--json")
    assert result.exit_code == 1
    assert "run r9, which has no record here" in document(result)["error"]
    assert contexts == [] and tuner.calls == []


@pytest.mark.parametrize("name", ["Support Tone", "../runs", "x" * 49])
def test_a_bad_name_is_a_usage_error(tmp_path: Path, name: str) -> None:
    result = CliRunner().invoke(cli, ["prune", name, "--registry", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a spec name" in result.output and "Traceback" not in result.output


def test_a_name_without_runs_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["prune", "ghost", "--registry", str(tmp_path), "--json"])
    assert result.exit_code == 1
    doc = document(result)
    assert doc["error"].startswith("no runs of ghost in ")
    assert doc["hint"] == f"list the recorded runs with: vertex-tuner runs --registry {tmp_path}"
    assert "Traceback" not in result.output


def test_keep_must_not_be_negative(store: Path) -> None:
    result = prune(store, "--keep", "-1")
    assert result.exit_code == 2 and "--keep" in result.output


# --- the emulator's models.delete ------------------------------------------------------------


def discovery_method(version: str) -> dict[str, Any]:
    import googleapiclient  # type: ignore[import-untyped]

    folder = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"
    doc = json.loads((folder / f"aiplatform.{version}.json").read_text("utf-8"))
    models = doc["resources"]["projects"]["resources"]["locations"]["resources"]["models"]
    return {"method": models["methods"]["delete"], "schemas": doc["schemas"]}


def emulator_with_model(tmp_path: Path) -> VertexEmulator:
    emulator = VertexEmulator(storage_url="http://unused", state_dir=tmp_path)
    emulator.models["123"] = {"versions": 2, "display": "d", "base": "gemini-2.5-flash"}
    for endpoint, checkpoint in (("900", None), ("901", 1), ("902", 2)):
        emulator.endpoints[endpoint] = {"model": "123", "version": 2, "checkpoint": checkpoint}
    emulator.endpoints["800"] = {"model": "456", "version": 1}
    return emulator


@pytest.mark.parametrize("version", ["v1beta1", "v1"])
def test_the_delete_route_and_answer_follow_the_discovery_document(
    tmp_path: Path, version: str
) -> None:
    found = discovery_method(version)
    method, schemas = found["method"], found["schemas"]
    assert method["httpMethod"] == "DELETE"
    path = "/" + re.sub(r"\{[^}]+\}", "123", method["flatPath"])
    assert [n for verb, pattern, n in _ROUTES if verb == "DELETE" and pattern.match(path)] == [
        "delete_model"
    ]
    answer = emulator_with_model(tmp_path).delete_model("p", "l", "123", version)
    operation = schemas[method["response"]["$ref"]]["properties"]
    assert set(answer) <= set(operation) and answer["done"] is True
    assert re.fullmatch(r"projects/p/locations/l/operations/\d{19}", answer["name"])
    metadata = answer["metadata"]
    prefix = "GoogleCloudAiplatformV1beta1" if version == "v1beta1" else "GoogleCloudAiplatformV1"
    assert metadata["@type"] == (
        f"type.googleapis.com/google.cloud.aiplatform.{version}.DeleteOperationMetadata"
    )
    known = schemas[f"{prefix}DeleteOperationMetadata"]["properties"]
    assert set(metadata) - {"@type"} <= set(known)
    generic = schemas[f"{prefix}GenericOperationMetadata"]["properties"]
    assert set(metadata["genericMetadata"]) <= set(generic)


def test_a_delete_removes_every_endpoint_of_the_model_and_is_kept(tmp_path: Path) -> None:
    emulator = emulator_with_model(tmp_path)
    emulator.delete_model("p", "l", "123")
    restarted = VertexEmulator(storage_url="http://unused", state_dir=tmp_path)
    for state in (emulator, restarted):
        assert "123" not in state.models and set(state.endpoints) == {"800"}
    with pytest.raises(ApiError) as gone:
        restarted.delete_model("p", "l", "123")
    assert gone.value.http == 404 and gone.value.status == "NOT_FOUND"
    with pytest.raises(ApiError) as versioned:
        emulator_with_model(tmp_path / "b").delete_model("p", "l", "123@2")
    assert versioned.value.http == 400


@pytest.mark.sandbox
def test_prune_in_the_sandbox_deletes_the_unused_model_and_its_endpoints(
    use_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    from google.genai import errors

    def invoke(*args: str) -> dict[str, Any]:
        result = CliRunner().invoke(cli, [*args, "--sandbox", "--json"])
        assert result.exit_code == 0, result.output
        doc: dict[str, Any] = orjson.loads(result.stdout)
        return doc

    spec = write_spec(tmp_path / "job", name="e2e-prune")
    first = invoke("submit", str(spec))
    spec.parent.joinpath("data.jsonl").write_bytes(
        b"\n".join(example(i, f"Ticket {i}: on its way Friday.") for i in range(120)) + b"\n"
    )
    second = invoke("submit", str(spec))
    assert first["run_id"] != second["run_id"] and second["checkpoints"]
    invoke("promote", "e2e-prune", str(first["run_id"]), "--alias", "production")

    doc = invoke("prune", "e2e-prune", "--yes")
    rows = {r["run_id"]: r for r in doc["runs"]}
    assert rows[first["run_id"]]["action"] == "keep"
    assert rows[second["run_id"]]["action"] == "deleted"
    assert doc["deleted"] == [str(second["tuned_model"]).split("@")[0]]
    shown = invoke("show", str(second["run_id"]))
    assert shown["model_deleted_at"]

    client = genai_client(use_sandbox)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gone = [second["endpoint"], *(c["endpoint"] for c in second["checkpoints"])]
        for endpoint in gone:
            with pytest.raises(errors.ClientError) as caught:
                client.models.generate_content(model=endpoint, contents="Where is HH-000001?")
            assert caught.value.code == 404
        served = client.models.generate_content(
            model=first["endpoint"], contents="Where is HH-000001?"
        )
    assert served.text
