"""Batch prediction in the sandbox, through the real google-genai and Cloud Storage clients."""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.genai import errors, types

from vertex_tuner.sandbox import Sandbox, SandboxInfo, genai_client, parse_faults, storage_client
from vertex_tuner.sandbox.contract import ContractError
from vertex_tuner.sandbox.vertex import _ROUTES, VertexEmulator

pytestmark = pytest.mark.sandbox

BUCKET = "batch-tests"
FINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")
TRAINING = (
    b'{"contents": [{"role": "user", "parts": [{"text": "Where is HH-000001?"}]}, '
    b'{"role": "model", "parts": [{"text": "It ships Thursday."}]}]}\n'
)
PROMPTS = ("Where is HH-000001 now?", "Can I change my address?", "Where is my refund?")


def request(prompt: str, **generation: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if generation:
        body["generationConfig"] = generation
    return body


def upload(info: SandboxInfo, name: str, lines: list[dict[str, Any]] | bytes) -> str:
    client = storage_client(info)
    bucket = client.bucket(BUCKET)
    if not bucket.exists():
        client.create_bucket(BUCKET)
    data = lines if isinstance(lines, bytes) else b"".join(orjson.dumps(x) + b"\n" for x in lines)
    bucket.blob(name).upload_from_string(data)
    return f"gs://{BUCKET}/{name}"


def create(info: SandboxInfo, model: str, src: str, **config: Any) -> types.BatchJob:
    folder = secrets.token_hex(4)
    settings = {"display_name": f"batch-{folder}", "dest": f"gs://{BUCKET}/out/{folder}", **config}
    client = genai_client(info)  # held: a client closes its connections when collected
    return client.batches.create(
        model=model, src=src, config=types.CreateBatchJobConfig(**settings)
    )


def wait_end(info: SandboxInfo, name: str) -> types.BatchJob:
    client = genai_client(info)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = client.batches.get(name=name)
        if job.state and job.state.name in FINAL:
            return job
        time.sleep(0.1)
    raise AssertionError(f"{name} did not end")


def predictions(info: SandboxInfo, job: types.BatchJob) -> list[dict[str, Any]]:
    assert job.output_info is not None and job.output_info.gcs_output_directory
    directory = job.output_info.gcs_output_directory.removeprefix(f"gs://{BUCKET}/")
    blob = storage_client(info).bucket(BUCKET).blob(f"{directory}/predictions.jsonl")
    return [orjson.loads(line) for line in blob.download_as_bytes().splitlines()]


def comparable(response: types.GenerateContentResponse) -> dict[str, Any]:
    return response.model_dump(
        exclude={"sdk_http_response", "automatic_function_calling_history"}, exclude_none=True
    )


def online(info: SandboxInfo, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """What generateContent answers for ``body``, parsed as google-genai parses it."""
    temperature = (body.get("generationConfig") or {}).get("temperature")
    config = types.GenerateContentConfig(temperature=temperature)
    client = genai_client(info)
    return comparable(
        client.models.generate_content(model=model, contents=body["contents"], config=config)
    )


def tuned_model(info: SandboxInfo) -> types.TuningJob:
    client = genai_client(info)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = client.tunings.tune(
            base_model="gemini-2.5-flash",
            training_dataset=types.TuningDataset(gcs_uri=upload(info, "train.jsonl", TRAINING * 3)),
        )
    deadline = time.monotonic() + 20
    while job.state is None or job.state.name not in FINAL:
        assert time.monotonic() < deadline, "the tuning job did not end"
        time.sleep(0.1)
        job = client.tunings.get(name=job.name or "")
    assert job.state.name == "JOB_STATE_SUCCEEDED" and job.tuned_model is not None
    return job


# --- answers -------------------------------------------------------------------------------


def test_a_base_model_job_answers_each_line_as_generate_content_does(
    sandbox_info: SandboxInfo,
) -> None:
    lines = [
        {"request": request(p, temperature=0.2), "custom_id": f"id-{i}"}
        for i, p in enumerate(PROMPTS)
    ]
    created = create(sandbox_info, "gemini-2.5-flash", upload(sandbox_info, "base.jsonl", lines))
    assert created.name and re.fullmatch(
        r"projects/sandbox-project/locations/[^/]+/batchPredictionJobs/\d{19}", created.name
    )
    assert created.state == types.JobState.JOB_STATE_PENDING
    assert created.model == "publishers/google/models/gemini-2.5-flash"
    assert created.src is not None and created.src.format == "jsonl"
    job = wait_end(sandbox_info, created.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.create_time and job.start_time and job.end_time and job.update_time
    assert job.completion_stats is not None
    assert job.completion_stats.successful_count == len(PROMPTS)
    assert job.completion_stats.failed_count is None  # a zero count is left out
    assert job.dest is not None and job.output_info is not None
    stamp = job.create_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert job.output_info.gcs_output_directory == f"{job.dest.gcs_uri}/prediction-model-{stamp}"
    written = predictions(sandbox_info, job)
    by_id = {line["custom_id"]: line for line in written}
    assert sorted(by_id) == sorted(line["custom_id"] for line in lines)
    for line in lines:
        out = by_id[line["custom_id"]]
        assert out["status"] == "" and out["request"] == line["request"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", out["processed_time"])
        answer = comparable(types.GenerateContentResponse.model_validate(out["response"]))
        assert answer == online(sandbox_info, "gemini-2.5-flash", line["request"])


def test_a_tuned_model_is_answered_by_its_endpoint(sandbox_info: SandboxInfo) -> None:
    tuned = tuned_model(sandbox_info).tuned_model
    assert tuned is not None and tuned.model and tuned.endpoint
    lines = [{"request": request(p)} for p in PROMPTS]
    src = upload(sandbox_info, "tuned.jsonl", lines)
    for model in (tuned.model, tuned.model.rsplit("@", 1)[0]):  # a version, or the latest
        job = wait_end(sandbox_info, create(sandbox_info, model, src).name or "")
        assert job.state == types.JobState.JOB_STATE_SUCCEEDED and job.model == model
        answers = {json.dumps(x["request"]): x["response"] for x in predictions(sandbox_info, job)}
        for line in lines:
            answer = types.GenerateContentResponse.model_validate(
                answers[json.dumps(line["request"])]
            )
            assert comparable(answer) == online(sandbox_info, tuned.endpoint, line["request"])
        assert "It ships Thursday." in {
            types.GenerateContentResponse.model_validate(a).text for a in answers.values()
        }


def test_bad_lines_carry_their_error_and_the_job_still_succeeds(sandbox_info: SandboxInfo) -> None:
    lines = [
        {"request": request("Where is HH-000001?"), "custom_id": "good"},
        {"request": {"contents": [{"role": "user", "parts": [{"txt": "hi"}]}]}, "custom_id": "bad"},
        {"prompt": "no request here", "custom_id": "none"},
    ]
    job = wait_end(
        sandbox_info,
        create(sandbox_info, "gemini-2.5-flash", upload(sandbox_info, "bad.jsonl", lines)).name
        or "",
    )
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.completion_stats is not None
    assert (job.completion_stats.successful_count, job.completion_stats.failed_count) == (1, 2)
    by_id = {line["custom_id"]: line for line in predictions(sandbox_info, job)}
    assert by_id["good"]["status"] == "" and "response" in by_id["good"]
    bad = by_id["bad"]
    assert "response" not in bad and bad["request"] == lines[1]["request"]
    assert bad["status"].startswith("Bad Request: ")
    error = json.loads(bad["status"].removeprefix("Bad Request: "))["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert 'Unknown name "txt"' in error["message"]
    assert by_id["none"]["prompt"] == "no request here" and by_id["none"]["status"]


# --- failures --------------------------------------------------------------------------------


def test_a_missing_input_file_fails_the_job(sandbox_info: SandboxInfo) -> None:
    upload(sandbox_info, "exists.jsonl", [{"request": request("hi")}])
    missing = create(sandbox_info, "gemini-2.5-flash", f"gs://{BUCKET}/nowhere.jsonl")
    job = wait_end(sandbox_info, missing.name or "")
    assert job.state == types.JobState.JOB_STATE_FAILED
    assert job.error is not None and job.error.code == 3
    assert f"gs://{BUCKET}/nowhere.jsonl" in (job.error.message or "")
    assert job.end_time and job.completion_stats is None
    no_bucket = create(sandbox_info, "gemini-2.5-flash", "gs://no-such-bucket/in.jsonl")
    job = wait_end(sandbox_info, no_bucket.name or "")
    assert job.error is not None and job.error.code == 9
    assert "no-such-bucket" in (job.error.message or "")


def test_bodies_vertex_refuses_are_refused_with_its_400(sandbox_info: SandboxInfo) -> None:
    src = upload(sandbox_info, "refused.jsonl", [{"request": request("hi")}])
    client = genai_client(sandbox_info)
    before = len(list(client.batches.list()))
    unknown = types.HttpOptions(extra_body={"inputConfig": {"gcsSource": {"uri": src}}})
    cases = [
        # A field the schema does not have.
        (
            {"src": src, "config": types.CreateBatchJobConfig(http_options=unknown)},
            "Unknown name \"uri\" at 'batch_prediction_job.input_config.gcs_source'",
        ),
        # An instances format Gemini does not read from Cloud Storage.
        (
            {"src": types.BatchJobSource(format="csv", gcs_uri=[src])},
            "Unsupported input format csv",
        ),
        # No destination (google-genai derives one only from a .jsonl source).
        (
            {"src": src.removesuffix(".jsonl")},
            "batch_prediction_job.output_config; Message: Required field is not set.",
        ),
    ]
    for arguments, message in cases:
        with pytest.raises(errors.ClientError) as caught:
            client.batches.create(model="gemini-2.5-flash", **arguments)
        assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
        assert message in str(caught.value.message)
    assert len(list(client.batches.list())) == before  # nothing was created


def test_an_unknown_model_is_404(sandbox_info: SandboxInfo) -> None:
    src = upload(sandbox_info, "unknown.jsonl", [{"request": request("hi")}])
    prefix = f"projects/{sandbox_info.project}/locations/{sandbox_info.location}"
    for model, message in (
        (f"{prefix}/models/1234567890123456789", "not found"),
        (f"{prefix}/models/1234567890123456789@2", "not found"),
        ("claude-next", "does not exist"),
    ):
        with pytest.raises(errors.ClientError) as caught:
            create(sandbox_info, model, src)
        assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"
        assert message in str(caught.value.message)


# --- list, cancel, delete --------------------------------------------------------------------


def test_list_filters_on_display_name_and_state_and_pages(sandbox_info: SandboxInfo) -> None:
    client = genai_client(sandbox_info)
    src = upload(sandbox_info, "list.jsonl", [{"request": request("hi")}])
    display = f"listed-{secrets.token_hex(4)}"
    names = {
        create(sandbox_info, "gemini-2.5-flash", src, display_name=display).name for _ in "abc"
    }
    create(sandbox_info, "gemini-2.5-flash", src, display_name=f"{display}-other")
    pager = client.batches.list(
        config=types.ListBatchJobsConfig(filter=f'display_name="{display}"', page_size=2)
    )
    assert len(pager.page) == 2
    assert {j.name for j in pager} == names
    wildcard = client.batches.list(config={"filter": f'display_name:"{display}*"'})
    assert len({j.name for j in wildcard}) == 4
    for name in names:
        wait_end(sandbox_info, name or "")
    done = client.batches.list(
        config={"filter": f'state=JOB_STATE_SUCCEEDED AND display_name="{display}"'}
    )
    assert {j.name for j in done} == names
    failed = client.batches.list(
        config={"filter": f'display_name="{display}" and state="JOB_STATE_FAILED"'}
    )
    assert list(failed) == []
    with pytest.raises(errors.ClientError) as caught:
        client.batches.list(config={"filter": 'create_time>"2026-01-01T00:00:00Z"'})
    assert caught.value.code == 400 and "not emulated" in str(caught.value.message)


def test_cancel_goes_through_cancelling_and_a_finished_job_can_be_deleted(
    sandbox_info: SandboxInfo,
) -> None:
    client = genai_client(sandbox_info)
    src = upload(sandbox_info, "cancel.jsonl", [{"request": request("hi")}])
    job = create(sandbox_info, "gemini-2.5-flash", src)
    with pytest.raises(errors.ClientError) as running:
        client.batches.delete(name=job.name or "")
    assert running.value.code == 400 and running.value.status == "FAILED_PRECONDITION"
    client.batches.cancel(name=job.name or "")
    assert client.batches.get(name=job.name or "").state == types.JobState.JOB_STATE_CANCELLING
    cancelled = wait_end(sandbox_info, job.name or "")
    assert cancelled.state == types.JobState.JOB_STATE_CANCELLED
    assert cancelled.error is not None and cancelled.error.code == 1 and cancelled.end_time
    with pytest.raises(errors.ClientError) as again:
        client.batches.cancel(name=job.name or "")
    assert again.value.code == 400 and again.value.status == "FAILED_PRECONDITION"
    deleted = client.batches.delete(name=job.name or "")
    assert deleted.done is True and deleted.error is None
    with pytest.raises(errors.ClientError) as gone:
        client.batches.get(name=job.name or "")
    assert gone.value.code == 404


# --- faults, persistence and the contract ----------------------------------------------------


def test_the_batch_line_fault_fails_lines_not_the_job() -> None:
    spec = parse_faults("503=0.6,batch-line=0.5")  # drawn per line: not added to the others
    assert (spec.rates, spec.batch_line, str(spec)) == ({"503": 0.6}, 0.5, "503=0.6,batch-line=0.5")
    with Sandbox(faults="batch-line=1.0", job_seconds=0.5) as info:
        lines = [{"request": request(p)} for p in PROMPTS]
        job = wait_end(
            info, create(info, "gemini-2.5-flash", upload(info, "faulty.jsonl", lines)).name or ""
        )
        assert job.state == types.JobState.JOB_STATE_SUCCEEDED
        assert job.completion_stats is not None
        assert (job.completion_stats.successful_count, job.completion_stats.failed_count) == (
            None,
            len(PROMPTS),
        )
        for line in predictions(info, job):
            assert line["status"].startswith("Internal Server Error: ") and "response" not in line
        with urllib.request.urlopen(f"{info.vertex_base_url}/sandbox/stats") as response:
            stats = orjson.loads(response.read())
        assert stats["faults"] == {"batch-line": len(PROMPTS)}
        assert stats["requests"]["batch_create"] == 1


def test_jobs_survive_a_restart(tmp_path: Path) -> None:
    now = [1000.0]
    written: dict[str, bytes] = {}
    line = orjson.dumps({"request": request("hi")}) + b"\n"

    def emulator() -> VertexEmulator:
        restarted = VertexEmulator(
            storage_url="http://unused",
            job_seconds=1.0,
            state_dir=tmp_path,
            clock=lambda: now[0],
            fetch=lambda uri: line,
        )
        restarted.batches.store = lambda uri, data: written.setdefault(uri, data) is data
        return restarted

    body = {
        "displayName": "kept",
        "model": "publishers/google/models/gemini-2.5-flash",
        "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["gs://b/in.jsonl"]}},
        "outputConfig": {
            "predictionsFormat": "jsonl",
            "gcsDestination": {"outputUriPrefix": "gs://b/out/"},
        },
    }
    job = emulator().batches.create("p", "l", body, "v1beta1")
    job_id = job["name"].rsplit("/", 1)[-1]
    now[0] += 0.5
    running = emulator().batches.get(job_id, "v1beta1")
    assert running["state"] == "JOB_STATE_RUNNING" and len(written) == 1
    now[0] += 1
    done = emulator().batches.get(job_id, "v1beta1")
    assert done["state"] == "JOB_STATE_SUCCEEDED" and len(written) == 1  # answered once
    assert done["createTime"] == job["createTime"]
    assert done["completionStats"] == {"successfulCount": "1"}
    assert f"{done['outputInfo']['gcsOutputDirectory']}/predictions.jsonl" in written
    assert done["outputInfo"]["gcsOutputDirectory"].startswith("gs://b/out/prediction-model-")


def test_a_v1_body_with_a_v1beta1_field_is_refused(tmp_path: Path) -> None:
    emulator = VertexEmulator(storage_url="http://unused", state_dir=tmp_path)
    body = {"displayName": "d", "endpoint": "projects/p/locations/l/endpoints/1"}
    with pytest.raises(ContractError) as caught:
        emulator.batches.create("p", "l", body, "v1")
    assert "Unknown name \"endpoint\" at 'batch_prediction_job'" in caught.value.message


def discovery(version: str) -> dict[str, Any]:
    import googleapiclient  # type: ignore[import-untyped]

    folder = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"
    doc: dict[str, Any] = json.loads((folder / f"aiplatform.{version}.json").read_text("utf-8"))
    return doc


@pytest.mark.parametrize("version", ["v1beta1", "v1"])
def test_each_batch_route_is_the_discovery_documents_method(version: str) -> None:
    doc = discovery(version)
    resources = doc["resources"]["projects"]["resources"]["locations"]["resources"]
    methods = resources["batchPredictionJobs"]["methods"]
    expected = {
        "create": "batch_create",
        "list": "batch_list",
        "get": "batch_get",
        "cancel": "batch_cancel",
        "delete": "batch_delete",
    }
    assert set(expected) <= set(methods)
    for method, route in expected.items():
        found = methods[method]
        path = "/" + re.sub(r"\{[^}]+\}", "123", found["flatPath"])
        assert [
            n for verb, pattern, n in _ROUTES if verb == found["httpMethod"] and pattern.match(path)
        ] == [route]
    assert set(methods["list"]["parameters"]) >= {"filter", "pageSize", "pageToken"}
