"""The sandbox validates tuningJobs requests against Vertex's published schema."""

from __future__ import annotations

import ast
import importlib.util
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from google.genai import errors, types

from vertex_tuner.sandbox import Sandbox, SandboxInfo, genai_client, parse_faults, storage_client
from vertex_tuner.sandbox import contract as contract_module
from vertex_tuner.sandbox.contract import ContractError, load, snake
from vertex_tuner.sandbox.vertex import VertexEmulator

REPO = Path(__file__).resolve().parent.parent
TUNING_JOB = {v: load(v).root("TuningJob") for v in ("v1beta1", "v1")}
GOOD = (
    b'{"contents": [{"role": "user", "parts": [{"text": "Where is HH-000001?"}]}, '
    b'{"role": "model", "parts": [{"text": "It ships Thursday."}]}]}\n'
)
PREFERENCE = orjson.dumps(
    {
        "contents": [{"role": "user", "parts": [{"text": "Where is HH-000001?"}]}],
        "completions": [
            {"score": 1, "completion": {"role": "model", "parts": [{"text": "Thursday."}]}},
            {"score": 0, "completion": {"role": "model", "parts": [{"text": "No idea."}]}},
        ],
    }
)
PROMPT = b'{"contents": [{"role": "user", "parts": [{"text": "Where is HH-000001?"}]}]}'
UNKNOWN = (
    'Invalid JSON payload received. Unknown name "exportLastCheckpointOnly" at '
    "'tuning_job.distillation_spec': Cannot find field."
)


def extractor() -> ModuleType:
    path = REPO / "scripts" / "extract_vertex_schema.py"
    spec = importlib.util.spec_from_file_location("extract_vertex_schema", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def supervised(**spec: Any) -> dict[str, Any]:
    return {
        "baseModel": "gemini-2.5-flash",
        "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/train.jsonl", **spec},
    }


def rejection(body: dict[str, Any], version: str = "v1beta1") -> ContractError:
    with pytest.raises(ContractError) as caught:
        load(version).validate(body, TUNING_JOB[version], path="tuning_job")
    return caught.value


# --- the extract ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1beta1", "v1"])
def test_the_committed_extract_is_what_the_installed_client_publishes(version: str) -> None:
    script = extractor()
    committed = REPO / "vertex_tuner" / "sandbox" / "contract" / f"aiplatform.{version}.json"
    assert committed.read_text(encoding="utf-8") == script.render(version), (
        f"the discovery document of aiplatform {version} in the installed google-api-python-"
        f"client differs from the committed extract: re-run `{script.COMMAND}`, review the "
        "diff, and fix the sandbox where the schema changed"
    )
    doc = orjson.loads(committed.read_bytes())
    assert doc["revision"] == load(version).revision
    assert all(root in doc["schemas"] for root in doc["roots"])


def test_the_contract_ships_inside_the_package() -> None:
    # hatchling packages every file under vertex_tuner/ that git does not ignore.
    from importlib import resources

    folder = resources.files("vertex_tuner.sandbox").joinpath("contract")
    assert {"aiplatform.v1.json", "aiplatform.v1beta1.json"} <= {p.name for p in folder.iterdir()}
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'packages = ["vertex_tuner"]' in pyproject
    assert "google-api-python-client>=2.200" in pyproject


# --- validation ----------------------------------------------------------------------------


def test_an_unknown_field_is_the_front_ends_400() -> None:
    error = rejection(
        {
            "baseModel": "gemini-2.5-flash",
            "distillationSpec": {
                "promptDatasetUri": "gs://b/p.jsonl",
                "exportLastCheckpointOnly": True,
            },
        }
    )
    assert error.body() == {
        "error": {
            "code": 400,
            "message": UNKNOWN,
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [
                        {"field": "tuning_job.distillation_spec", "description": UNKNOWN}
                    ],
                }
            ],
        }
    }
    top = rejection({**supervised(), "bogus": 1})
    assert top.field == "tuning_job"
    assert top.message.endswith("Unknown name \"bogus\" at 'tuning_job': Cannot find field.")


def test_a_wrong_enum_and_a_wrong_type() -> None:
    error = rejection(supervised(hyperParameters={"adapterSize": "ADAPTER_SIZE_SEVENTEEN"}))
    where = "tuning_job.supervised_tuning_spec.hyper_parameters.adapter_size"
    assert error.field == where
    assert error.message == f"Invalid value at '{where}' (TYPE_ENUM), \"ADAPTER_SIZE_SEVENTEEN\""
    assert rejection({**supervised(), "description": 5}).message == (
        "Invalid value at 'tuning_job.description' (TYPE_STRING), 5"
    )
    assert "(TYPE_INT64)" in rejection(supervised(hyperParameters={"epochCount": "two"})).message
    assert "(TYPE_BOOL)" in rejection(supervised(exportLastCheckpointOnly="yes")).message
    assert "(TYPE_STRING)" in rejection({**supervised(), "labels": {"a": 1}}).message
    listed = rejection({**supervised(), "description": ["a"]})
    assert "Proto field is not repeating, cannot start list." in listed.message


def test_v1_has_no_v1beta1_only_fields() -> None:
    assert rejection({**supervised(), "outputUri": "gs://b/out"}, "v1").message.endswith(
        "Unknown name \"outputUri\" at 'tuning_job': Cannot find field."
    )
    distill = {"baseModel": "gemini-2.5-flash", "distillationSpec": {"promptDatasetUri": "x"}}
    assert 'Unknown name "distillationSpec"' in rejection(distill, "v1").message
    load("v1beta1").validate(
        {**supervised(), "outputUri": "gs://b/o"}, TUNING_JOB["v1beta1"], path="tuning_job"
    )


def test_snake_case_names_are_accepted_and_stored_by_their_json_names() -> None:
    body = {
        "base_model": "gemini-2.5-flash",
        "supervised_tuning_spec": {
            "training_dataset_uri": "gs://b/t.jsonl",
            "hyper_parameters": {"epoch_count": 3, "adapter_size": "ADAPTER_SIZE_FOUR"},
        },
        "pre_tuned_model": {"tuned_model_name": "projects/p/locations/l/models/1"},
        "labels": {"team_name": "x"},
        "tuned_model_display_name": None,
    }
    clean = load("v1beta1").validate(body, TUNING_JOB["v1beta1"], path="tuning_job")
    assert clean == {
        "baseModel": "gemini-2.5-flash",
        "supervisedTuningSpec": {
            "trainingDatasetUri": "gs://b/t.jsonl",
            "hyperParameters": {"epochCount": 3, "adapterSize": "ADAPTER_SIZE_FOUR"},
        },
        "preTunedModel": {"tunedModelName": "projects/p/locations/l/models/1"},
        "labels": {"team_name": "x"},  # map keys are data, not field names
    }
    assert snake("tunedModelDisplayName") == "tuned_model_display_name"


def test_output_only_fields_are_checked_then_ignored() -> None:
    body = {
        **supervised(),
        "name": "projects/p/locations/l/tuningJobs/1",
        "state": "JOB_STATE_RUNNING",
    }
    clean = load("v1beta1").validate(body, TUNING_JOB["v1beta1"], path="tuning_job")
    assert "name" not in clean and "state" not in clean
    assert "(TYPE_ENUM)" in rejection({**supervised(), "state": "RUNNING_FAST"}).message


def test_int64_as_strings_or_integers() -> None:
    for value in ("3", 3, 3.0, "-1"):
        load("v1beta1").validate(
            supervised(hyperParameters={"epochCount": value}), TUNING_JOB["v1beta1"], path="t"
        )
    for value in ("3.5", 3.5, True, "0x3"):
        with pytest.raises(ContractError):
            load("v1beta1").validate(
                supervised(hyperParameters={"epochCount": value}), TUNING_JOB["v1beta1"], path="t"
            )


def test_validation_is_pure_stdlib() -> None:
    tree = ast.parse(Path(contract_module.__file__).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert {name.split(".")[0] for name in imported} <= set(sys.stdlib_module_names) | {
        "__future__"
    }


# --- the emulator --------------------------------------------------------------------------


def emulator(state_dir: Path | None = None, data: bytes = GOOD * 20) -> VertexEmulator:
    return VertexEmulator(
        storage_url="http://unused", job_seconds=1.0, state_dir=state_dir, fetch=lambda uri: data
    )


def test_ids_are_long_random_numbers_unique_per_sandbox(tmp_path: Path) -> None:
    first, second = emulator(), emulator()
    a = first.create("p", "l", supervised())["name"].rsplit("/", 1)[-1]
    b = second.create("p", "l", supervised())["name"].rsplit("/", 1)[-1]
    assert a != b and len(a) == len(b) == 19 and int(a) < 2**63
    saved = emulator(tmp_path)
    ids = {saved.create("p", "l", supervised())["name"] for _ in range(20)}
    assert len(ids) == 20
    assert {j["name"] for j in emulator(tmp_path).list_jobs("p", "l", {})["tuningJobs"]} == ids


def test_a_rejected_create_makes_nothing_and_unknown_fields_are_not_echoed() -> None:
    box = emulator()
    with pytest.raises(ContractError):
        box.create("p", "l", {**supervised(), "bogus": True})
    assert box.jobs == {} and box.jobs_created == 0
    job = box.create("p", "l", {**supervised(), "name": "mine", "labels": {"a": "b"}})
    assert job["name"].startswith("projects/p/locations/l/tuningJobs/")
    assert job["labels"] == {"a": "b"}


def finished(box: VertexEmulator, job: dict[str, Any], version: str = "v1beta1") -> dict[str, Any]:
    start = time.time()
    box.clock = lambda: start + 10
    return box.get(job["name"].rsplit("/", 1)[-1], version)


def test_each_method_reports_its_own_stats_block_shaped_like_the_schema() -> None:
    long = orjson.dumps(
        {
            "contents": [
                {"role": "user", "parts": [{"text": "word " * 140_000}]},
                {"role": "model", "parts": [{"text": "ok"}]},
            ]
        }
    )
    box = emulator(data=GOOD * 9 + long + b"\n")
    job = finished(box, box.create("p", "l", supervised()))
    stats = job["tuningDataStats"]["supervisedTuningDataStats"]
    assert stats["tuningDatasetExampleCount"] == "10"
    assert stats["truncatedExampleIndices"] == ["10"] and len(stats["droppedExampleReasons"]) == 1
    assert isinstance(stats["userInputTokenDistribution"]["sum"], str)
    # The whole answer is a TuningJob as the schema publishes it.
    load("v1beta1").validate(job, TUNING_JOB["v1beta1"], path="tuning_job")

    box = emulator(data=(PREFERENCE + b"\n") * 5)
    body = {
        "baseModel": "gemini-2.5-flash",
        "preferenceOptimizationSpec": {
            "trainingDatasetUri": "gs://b/pref.jsonl",
            "hyperParameters": {"beta": 0.1},
        },
    }
    job = finished(box, box.create("p", "l", body))
    assert job["state"] == "JOB_STATE_SUCCEEDED", job.get("error")
    assert list(job["tuningDataStats"]) == ["preferenceOptimizationDataStats"]
    pref = job["tuningDataStats"]["preferenceOptimizationDataStats"]
    assert pref["tuningDatasetExampleCount"] == "5"
    assert isinstance(pref["userInputTokenDistribution"]["sum"], float)
    load("v1beta1").validate(job, TUNING_JOB["v1beta1"], path="tuning_job")
    v1 = box.get(job["name"].rsplit("/", 1)[-1], "v1")
    load("v1").validate(v1, TUNING_JOB["v1"], path="tuning_job")

    box = emulator(data=(PROMPT + b"\n") * 5)
    body = {
        "baseModel": "gemini-2.5-flash",
        "distillationSpec": {
            "promptDatasetUri": "gs://b/prompts.jsonl",
            "baseTeacherModel": "gemini-2.5-pro",
        },
    }
    job = finished(box, box.create("p", "l", body))
    assert job["state"] == "JOB_STATE_SUCCEEDED", job.get("error")
    training = job["tuningDataStats"]["distillationDataStats"]["trainingDatasetStats"]
    assert training["tuningDatasetExampleCount"] == "5"
    load("v1beta1").validate(job, TUNING_JOB["v1beta1"], path="tuning_job")


def test_a_v1_job_reads_without_v1beta1_only_fields() -> None:
    box = emulator()
    created = box.create("p", "l", supervised(), "v1")
    assert "tuningJobState" not in finished(box, created, "v1")
    assert "tuningJobMetadata" not in finished(box, created, "v1")
    assert "tuningJobMetadata" in finished(box, created, "v1beta1")


def test_list_filter_ignore_is_a_fault() -> None:
    assert parse_faults("list-filter=ignore").list_filter == "ignore"
    assert str(parse_faults("503=0.1,list-filter=ignore")) == "503=0.1,list-filter=ignore"
    assert parse_faults(None).list_filter == "honour"
    with pytest.raises(Exception, match="list-filter"):
        parse_faults("list-filter=sometimes")


# --- over HTTP, with plain urllib and with the real google-genai client ---------------------


def post(info: SandboxInfo, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{info.vertex_base_url}{path}",
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, orjson.loads(exc.read())


def upload(info: SandboxInfo, name: str, data: bytes) -> str:
    client = storage_client(info)
    bucket = client.bucket("contract-tests")
    if not bucket.exists():
        client.create_bucket("contract-tests")
    bucket.blob(name).upload_from_string(data)
    return f"gs://contract-tests/{name}"


def jobs_created(info: SandboxInfo) -> int:
    with urllib.request.urlopen(f"{info.vertex_base_url}/sandbox/stats") as response:
        return int(orjson.loads(response.read())["jobs_created"])


JOBS = "/{v}/projects/sandbox-project/locations/us-central1/tuningJobs"


@pytest.mark.sandbox
def test_an_unknown_field_over_plain_http(sandbox_info: SandboxInfo) -> None:
    before = jobs_created(sandbox_info)
    body = {
        "baseModel": "gemini-2.5-flash",
        "distillationSpec": {
            "promptDatasetUri": "gs://b/p.jsonl",
            "exportLastCheckpointOnly": True,
        },
    }
    status, answer = post(sandbox_info, JOBS.format(v="v1beta1"), body)
    assert status == 400
    assert answer["error"]["message"] == UNKNOWN
    assert answer["error"]["details"][0]["fieldViolations"] == [
        {"field": "tuning_job.distillation_spec", "description": UNKNOWN}
    ]
    status, answer = post(
        sandbox_info, JOBS.format(v="v1"), {**supervised(), "outputUri": "gs://b/o"}
    )
    assert status == 400 and 'Unknown name "outputUri"' in answer["error"]["message"]
    assert jobs_created(sandbox_info) == before


@pytest.mark.sandbox
def test_valid_requests_of_each_method_over_http(sandbox_info: SandboxInfo) -> None:
    uris = {
        "supervised": upload(sandbox_info, "sft.jsonl", GOOD * 5),
        "preference": upload(sandbox_info, "pref.jsonl", (PREFERENCE + b"\n") * 5),
        "distillation": upload(sandbox_info, "distil.jsonl", (PROMPT + b"\n") * 5),
    }
    bodies = {
        "supervised": {
            "base_model": "gemini-2.5-flash",
            "supervised_tuning_spec": {
                "training_dataset_uri": uris["supervised"],
                "hyper_parameters": {"epoch_count": "2", "adapter_size": "ADAPTER_SIZE_FOUR"},
            },
        },
        "preference": {
            "baseModel": "gemini-2.5-flash",
            "preferenceOptimizationSpec": {
                "trainingDatasetUri": uris["preference"],
                "hyperParameters": {"beta": 0.1, "epochCount": 1},
            },
        },
        "distillation": {
            "baseModel": "gemini-2.5-flash",
            "distillationSpec": {
                "promptDatasetUri": uris["distillation"],
                "baseTeacherModel": "gemini-2.5-pro",
            },
            "outputUri": "gs://contract-tests/out",
        },
    }
    blocks = {
        "supervised": "supervisedTuningDataStats",
        "preference": "preferenceOptimizationDataStats",
        "distillation": "distillationDataStats",
    }
    names = {}
    for method, body in bodies.items():
        status, job = post(sandbox_info, JOBS.format(v="v1beta1"), body)
        assert status == 200, job
        names[method] = job["name"]
    client = genai_client(sandbox_info)
    for method, name in names.items():
        deadline = time.monotonic() + 20
        while True:
            job = client.tunings.get(name=name)
            if job.state and job.state.name == "JOB_STATE_SUCCEEDED":
                break
            assert job.state and job.state.name != "JOB_STATE_FAILED", job.error
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with urllib.request.urlopen(f"{sandbox_info.vertex_base_url}/v1beta1/{name}") as response:
            raw = orjson.loads(response.read())
        assert list(raw["tuningDataStats"]) == [blocks[method]]
    assert job.tuning_data_stats and job.tuning_data_stats.distillation_data_stats


@pytest.mark.sandbox
def test_the_real_client_gets_a_client_error(sandbox_info: SandboxInfo) -> None:
    client = genai_client(sandbox_info)
    before = jobs_created(sandbox_info)
    with warnings.catch_warnings(), pytest.raises(errors.ClientError) as caught:
        warnings.simplefilter("ignore")
        client.tunings.tune(
            base_model="gemini-2.5-flash",
            training_dataset=types.TuningDataset(gcs_uri="gs://contract-tests/sft.jsonl"),
            config=types.CreateTuningJobConfig(
                http_options=types.HttpOptions(extra_body={"learningRate": 0.1})
            ),
        )
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert "Unknown name \"learningRate\" at 'tuning_job'" in str(caught.value.message)
    assert jobs_created(sandbox_info) == before


@pytest.mark.sandbox
def test_the_real_client_sends_export_last_checkpoint_only_for_distillation(
    sandbox_info: SandboxInfo,
) -> None:
    """google-genai puts exportLastCheckpointOnly in distillationSpec, which has no such field."""
    client = genai_client(sandbox_info)
    with warnings.catch_warnings(), pytest.raises(errors.ClientError) as caught:
        warnings.simplefilter("ignore")
        client.tunings.tune(
            base_model="gemini-2.5-flash",
            training_dataset=types.TuningDataset(gcs_uri="gs://contract-tests/distil.jsonl"),
            config=types.CreateTuningJobConfig(
                method="DISTILLATION",
                base_teacher_model="gemini-2.5-pro",
                export_last_checkpoint_only=True,
            ),
        )
    assert caught.value.code == 400
    assert caught.value.message == UNKNOWN


@pytest.mark.sandbox
def test_list_filter_ignore_returns_unlabelled_jobs() -> None:
    with Sandbox(faults="list-filter=ignore", job_seconds=1.0) as info:
        for labels in ({"team": "a"}, {}):
            status, _ = post(info, JOBS.format(v="v1beta1"), {**supervised(), "labels": labels})
            assert status == 200
        client = genai_client(info)
        found = list(client.tunings.list(config={"filter": 'labels.team="a"'}))
        assert len(found) == 2 and {(j.labels or {}).get("team") for j in found} == {"a", None}
        with urllib.request.urlopen(f"{info.vertex_base_url}/sandbox/stats") as response:
            assert orjson.loads(response.read())["faults"] == {"list-filter": 1}
    with Sandbox(job_seconds=1.0) as info:
        post(info, JOBS.format(v="v1beta1"), {**supervised(), "labels": {"team": "a"}})
        post(info, JOBS.format(v="v1beta1"), supervised())
        client = genai_client(info)
        found = list(client.tunings.list(config={"filter": 'labels.team="a"'}))
        assert len(found) == 1
