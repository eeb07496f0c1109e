"""The sandbox against the real google-genai and google-cloud-storage clients."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import orjson
import pytest
from google.genai import types

from vertex_tuner.errors import ConfigurationError
from vertex_tuner.sandbox import Sandbox, SandboxInfo, genai_client, parse_faults, storage_client
from vertex_tuner.sandbox.faults import FaultInjector

pytestmark = pytest.mark.sandbox

GOOD = (
    b'{"contents": [{"role": "user", "parts": [{"text": "Where is HH-000001?"}]}, '
    b'{"role": "model", "parts": [{"text": "It ships Thursday."}]}]}\n'
)


def upload(info: SandboxInfo, name: str, data: bytes) -> str:
    client = storage_client(info)
    bucket = client.bucket("emulator-tests")
    if not bucket.exists():
        client.create_bucket("emulator-tests")
    bucket.blob(name).upload_from_string(data)
    return f"gs://emulator-tests/{name}"


def tune(info: SandboxInfo, uri: str, **config: object) -> types.TuningJob:
    client = genai_client(info)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return client.tunings.tune(
            base_model="gemini-2.5-flash",
            training_dataset=types.TuningDataset(gcs_uri=uri),
            config=types.CreateTuningJobConfig(
                **{"epoch_count": 2, "labels": {"suite": "sdk"}, **config}  # type: ignore[arg-type]
            ),
        )


def wait_end(info: SandboxInfo, name: str) -> types.TuningJob:
    client = genai_client(info)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = client.tunings.get(name=name)
        if job.state and job.state.name in (
            "JOB_STATE_SUCCEEDED",
            "JOB_STATE_FAILED",
            "JOB_STATE_CANCELLED",
        ):
            return job
        time.sleep(0.1)
    raise AssertionError(f"{name} did not end")


def test_a_job_parses_into_sdk_types_with_every_field_we_read(sandbox_info: SandboxInfo) -> None:
    uri = upload(sandbox_info, "ok.jsonl", GOOD * 30)
    created = tune(sandbox_info, uri, tuned_model_display_name="sdk-test", description="d")
    assert created.name and created.name.startswith("projects/sandbox-project/locations/")
    assert created.state == types.JobState.JOB_STATE_QUEUED
    job = wait_end(sandbox_info, created.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.labels == {"suite": "sdk"}
    assert job.tuned_model_display_name == "sdk-test"
    assert job.tuned_model is not None
    assert job.tuned_model.model and "/models/" in job.tuned_model.model
    assert job.tuned_model.model.endswith("@1")
    assert job.tuned_model.endpoint and "/endpoints/" in job.tuned_model.endpoint
    assert [c.epoch for c in job.tuned_model.checkpoints or []] == [1, 2]
    stats = job.tuning_data_stats.supervised_tuning_data_stats  # type: ignore[union-attr]
    assert stats is not None
    assert stats.tuning_dataset_example_count == 30
    assert stats.total_billable_token_count and stats.total_billable_token_count > 0
    assert stats.total_truncated_example_count == 0
    assert stats.user_input_token_distribution is not None
    assert job.create_time and job.start_time and job.end_time
    assert job.tuning_job_metadata is not None
    assert job.tuning_job_metadata.completed_epoch_count == 2


def test_a_bad_dataset_fails_the_job_like_vertex(sandbox_info: SandboxInfo) -> None:
    bad = GOOD + b'{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}\n'
    job = wait_end(
        sandbox_info, tune(sandbox_info, upload(sandbox_info, "bad.jsonl", bad)).name or ""
    )
    assert job.state == types.JobState.JOB_STATE_FAILED
    assert job.error is not None and job.error.code == 3
    assert "line 2" in (job.error.message or "")


def test_over_long_rows_are_counted_as_truncated(sandbox_info: SandboxInfo) -> None:
    long_text = "word " * 140_000
    long = (
        orjson.dumps(
            {
                "contents": [
                    {"role": "user", "parts": [{"text": long_text}]},
                    {"role": "model", "parts": [{"text": "ok"}]},
                ]
            }
        )
        + b"\n"
    )
    job = wait_end(
        sandbox_info,
        tune(sandbox_info, upload(sandbox_info, "long.jsonl", GOOD * 9 + long)).name or "",
    )
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    stats = job.tuning_data_stats.supervised_tuning_data_stats  # type: ignore[union-attr]
    assert stats is not None
    assert stats.total_truncated_example_count == 1
    assert stats.truncated_example_indices == [10]
    assert stats.dropped_example_reasons


def test_list_filters_on_labels_and_pages(sandbox_info: SandboxInfo) -> None:
    client = genai_client(sandbox_info)
    uri = upload(sandbox_info, "list.jsonl", GOOD * 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = {
            client.tunings.tune(
                base_model="gemini-2.5-flash",
                training_dataset=types.TuningDataset(gcs_uri=uri),
                config=types.CreateTuningJobConfig(labels={"batch": "paging"}),
            ).name
            for _ in range(3)
        }
    found = client.tunings.list(config={"filter": 'labels.batch="paging"', "page_size": 2})
    assert {j.name for j in found} == names


def test_cancel_goes_through_cancelling(sandbox_info: SandboxInfo) -> None:
    client = genai_client(sandbox_info)
    job = tune(sandbox_info, upload(sandbox_info, "cancel.jsonl", GOOD * 5))
    client.tunings.cancel(name=job.name or "")
    assert client.tunings.get(name=job.name or "").state == types.JobState.JOB_STATE_CANCELLING
    assert wait_end(sandbox_info, job.name or "").state == types.JobState.JOB_STATE_CANCELLED


def test_continuous_tuning_makes_the_next_version(sandbox_info: SandboxInfo) -> None:
    uri = upload(sandbox_info, "cont.jsonl", GOOD * 5)
    first = wait_end(sandbox_info, tune(sandbox_info, uri, tuned_model_display_name="c").name or "")
    model = first.tuned_model.model  # type: ignore[union-attr]
    client = genai_client(sandbox_info)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        second = client.tunings.tune(
            base_model=model or "",
            training_dataset=types.TuningDataset(gcs_uri=uri),
            config=types.CreateTuningJobConfig(tuned_model_display_name="c"),
        )
    done = wait_end(sandbox_info, second.name or "")
    assert done.tuned_model is not None and done.tuned_model.model == (model or "")[:-2] + "@2"


def test_generate_content_for_base_and_tuned(sandbox_info: SandboxInfo) -> None:
    job = wait_end(
        sandbox_info, tune(sandbox_info, upload(sandbox_info, "gen.jsonl", GOOD * 3)).name or ""
    )
    client = genai_client(sandbox_info)
    tuned = client.models.generate_content(
        model=job.tuned_model.endpoint,  # type: ignore
        contents="Where is HH-000001 now?",
    )
    assert tuned.text == "It ships Thursday."
    base = client.models.generate_content(model="gemini-2.5-flash", contents="Where is it?")
    again = client.models.generate_content(model="gemini-2.5-flash", contents="Where is it?")
    assert base.text and base.text == again.text
    assert base.usage_metadata and base.usage_metadata.prompt_token_count


def test_thinking_settings_a_model_does_not_take_are_refused_like_vertex(
    sandbox_info: SandboxInfo,
) -> None:
    from google.genai import errors

    job = wait_end(
        sandbox_info, tune(sandbox_info, upload(sandbox_info, "think.jsonl", GOOD * 3)).name or ""
    )
    client = genai_client(sandbox_info)

    def call(model: str, **thinking: object) -> str | None:
        config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(**thinking))  # type: ignore[arg-type]
        return client.models.generate_content(model=model, contents="Where?", config=config).text

    assert call("gemini-2.5-flash", thinking_budget=0)
    assert call("gemini-3.5-flash", thinking_level=types.ThinkingLevel.MINIMAL)
    assert call(job.tuned_model.endpoint, thinking_budget=0)  # type: ignore[union-attr]
    refused = [
        ("gemini-2.5-flash", {"thinking_level": types.ThinkingLevel.MINIMAL}),
        ("gemini-3.5-flash", {"thinking_budget": 0}),
        ("gemini-2.0-flash-001", {"thinking_budget": 0}),
        # A model tuned on 2.5 Flash takes what its base takes.
        (job.tuned_model.endpoint, {"thinking_level": types.ThinkingLevel.MINIMAL}),  # type: ignore[union-attr]
    ]
    for model, thinking in refused:
        with pytest.raises(errors.ClientError) as caught:
            call(model or "", **thinking)
        assert caught.value.code == 400 and "not supported" in str(caught.value.message)


def test_storage_preconditions_hold(sandbox_info: SandboxInfo) -> None:
    from google.api_core import exceptions

    client = storage_client(sandbox_info)
    upload(sandbox_info, "pre.jsonl", b"1")
    blob = client.bucket("emulator-tests").blob("pre.jsonl")
    with pytest.raises(exceptions.PreconditionFailed):
        blob.upload_from_string(b"2", if_generation_match=0)


def test_fault_spec_parsing() -> None:
    spec = parse_faults("503=0.3,429=0.1,lost=0.1,reset=0.05,latency=200ms")
    assert spec.rates == {"503": 0.3, "429": 0.1, "lost": 0.1, "reset": 0.05}
    assert spec.latency_s == pytest.approx(0.2)
    for bad in ("504=0.1", "503=2", "503", "latency=soon", "503=0.6,429=0.6"):
        with pytest.raises(ConfigurationError):
            parse_faults(bad)
    injector = FaultInjector(parse_faults("503=0.5"), seed=1)
    draws = [injector.draw() for _ in range(1000)]
    assert 400 < draws.count("503") < 600 and set(draws) == {"503", None}


def test_faults_reach_the_wire() -> None:
    with Sandbox(faults="429=1.0") as info:
        request = urllib.request.Request(
            f"{info.vertex_base_url}/v1beta1/projects/p/locations/l/tuningJobs"
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request)
        assert caught.value.code == 429
        assert caught.value.headers["Retry-After"] == "1"
        caught.value.close()
        with urllib.request.urlopen(f"{info.vertex_base_url}/sandbox/stats") as response:
            stats = orjson.loads(response.read())
        assert stats["faults"] == {"429": 1}


def test_serve_prints_json_first_and_leaves_nothing_behind(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "vertex_tuner", "sandbox", "serve", "--job-seconds", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    info = orjson.loads(line)
    assert {"vertex_base_url", "storage_emulator_host", "pid"} <= set(info)
    with urllib.request.urlopen(f"{info['vertex_base_url']}/sandbox/health") as response:
        assert response.status == 200
    children = subprocess.run(
        ["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert children, "fake-gcs-server should run as a child"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
    process.stdout.close()
    if process.stderr:
        process.stderr.close()


def test_a_named_sandbox_that_is_not_running_is_a_clear_error(tmp_path: Path) -> None:
    from vertex_tuner.sandbox import open_sandbox

    env = {
        "VERTEX_TUNER_SANDBOX": '{"vertex_base_url": "http://127.0.0.1:9", '
        '"storage_emulator_host": "http://127.0.0.1:9"}'
    }
    with pytest.raises(ConfigurationError, match="not running"), open_sandbox(env):
        pass
    with (
        pytest.raises(ConfigurationError, match="neither"),
        open_sandbox({"VERTEX_TUNER_SANDBOX": str(tmp_path / "missing.json")}),
    ):
        pass


def test_a_resumable_upload_is_sent_once(sandbox_info: SandboxInfo, tmp_path: Path) -> None:
    from vertex_tuner.backends.gcs import GcsStorage

    # google-cloud-storage sends files up to 8 MiB in one request; past that, in chunks.
    storage = GcsStorage(
        storage_client(sandbox_info),
        create_missing_buckets=True,
        chunk_size=4 * 1024 * 1024,
        resumable_threshold=8 * 1024 * 1024,
    )
    path = tmp_path / "big.jsonl"
    path.write_bytes(os.urandom(9 * 1024 * 1024 + 17))
    progress: list[int] = []
    first = storage.upload_file(
        path, "gs://resumable-tests/big.jsonl", progress=lambda done, total: progress.append(done)
    )
    assert (first.bytes_sent, first.skipped) == (path.stat().st_size, False)
    assert progress[-1] == path.stat().st_size and len(progress) > 1
    assert storage.read("gs://resumable-tests/big.jsonl")[0] == path.read_bytes()
    second = storage.upload_file(path, "gs://resumable-tests/big.jsonl")
    assert (second.bytes_sent, second.skipped, second.generation) == (0, True, first.generation)


def test_checkpoints_appear_while_tuning_each_on_its_own_endpoint() -> None:
    with Sandbox(job_seconds=6.0) as info:
        created = tune(info, upload(info, "ckpt.jsonl", GOOD * 30), epoch_count=4)
        assert created.name
        client = genai_client(info)
        seen: list[list[str]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            job = client.tunings.get(name=created.name)
            checkpoints = job.tuned_model.checkpoints if job.tuned_model else None
            if job.state == types.JobState.JOB_STATE_RUNNING and checkpoints:
                seen.append([c.endpoint or "" for c in checkpoints])
            if job.state == types.JobState.JOB_STATE_SUCCEEDED:
                break
            time.sleep(0.1)
        assert job.state == types.JobState.JOB_STATE_SUCCEEDED
        assert seen, "no checkpoint was listed while the job was running"
        assert job.tuned_model is not None and job.tuned_model.model is not None
        final = [c.endpoint or "" for c in job.tuned_model.checkpoints or []]
        assert len(final) == 4 and len(set(final)) == 4
        assert job.tuned_model.endpoint not in final
        assert min(len(s) for s in seen) < 4  # some while epochs were still to come
        assert all(final[: len(s)] == s for s in seen)
        # A checkpoint's endpoint answers like the tuned one.
        reply = client.models.generate_content(model=final[0], contents="Where is HH-000001?")
        assert reply.text
