"""Where google-genai, Vertex and vertex-tuner could part ways, and how we keep them together.

- the API version is pinned to v1beta1, whatever GOOGLE_GENAI_API_VERSION says;
- data statistics of every tuning method reach our DataStats (so max_dropped_fraction fires);
- the server's label filter is not trusted for idempotency;
- settings the SDK or Vertex would drop or reject are refused when the spec loads.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from dataset_support import spec_with_chat_data
from google.genai import types
from records_support import run_record

from vertex_tuner.backends.fake import FakeStorage, FakeTuner
from vertex_tuner.backends.genai import GenaiTuner, to_job
from vertex_tuner.backends.interface import Job, JobState, TuningRequest
from vertex_tuner.errors import AmbiguousCreateError, JobFailed, SpecError
from vertex_tuner.records import DatasetRef
from vertex_tuner.registry import clear_cache, genai_client_for
from vertex_tuner.runstore import LocalBlobStore, RunStore
from vertex_tuner.sandbox.clients import genai_client
from vertex_tuner.sandbox.info import SandboxInfo
from vertex_tuner.service import LABEL_FINGERPRINT, TuningService
from vertex_tuner.spec import JobSpec, load_spec
from vertex_tuner.tuning.recording import check_outcome, update_record
from vertex_tuner.vocabulary import LABEL_SPEC

# --- 1. the API version ------------------------------------------------------------------


def api_version(client: Any) -> str | None:
    return client._api_client._http_options.api_version  # type: ignore[no-any-return]


class _Server(http.server.ThreadingHTTPServer):
    paths: list[str]


class _Recorder(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        body = json.dumps(
            {"name": self.path.split("/", 2)[-1], "state": "JOB_STATE_RUNNING"}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_vertex() -> Iterator[tuple[str, list[str]]]:
    paths: list[str] = []
    server = _Server(("127.0.0.1", 0), _Recorder)
    server.paths = paths
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", paths
    finally:
        server.shutdown()
        server.server_close()


def test_sandbox_client_requests_go_to_v1beta1_despite_the_environment(
    monkeypatch: pytest.MonkeyPatch, fake_vertex: tuple[str, list[str]]
) -> None:
    monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", "v1")
    base_url, paths = fake_vertex
    client = genai_client(SandboxInfo(vertex_base_url=base_url, storage_emulator_host=base_url))
    assert api_version(client) == "v1beta1"
    assert client._api_client._http_options.base_url == base_url
    name = "projects/sandbox-project/locations/us-central1/tuningJobs/7"
    job = GenaiTuner(client, timeout_s=5).get(name)
    assert job.state == JobState.RUNNING
    assert paths == [f"/v1beta1/{name}"]


def test_cloud_client_is_pinned_to_v1beta1(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth
    from google.oauth2.credentials import Credentials

    from vertex_tuner.wiring.backends import cloud_backends

    monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", "v1")
    monkeypatch.setattr(
        google.auth,
        "default",
        lambda **_: (Credentials(token="t"), "p"),  # type: ignore[no-untyped-call]
    )
    backends = cloud_backends("p", "us-central1")
    assert isinstance(backends.tuner, GenaiTuner)
    client = backends.tuner.client
    assert api_version(client) == "v1beta1"
    assert client._api_client._http_options.base_url == (
        "https://us-central1-aiplatform.googleapis.com/"
    )


def test_registry_client_is_pinned_and_keeps_the_callers_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", "v1")
    store = RunStore(LocalBlobStore(tmp_path))
    store.save(
        run_record(
            "r1",
            job_name="projects/p/locations/us-central1/tuningJobs/1",
            endpoint="projects/p/locations/us-central1/endpoints/1",
            project="p",
            location="us-central1",
        )
    )
    store.set_alias("support-tone", "production", "r1")
    clear_cache()
    try:
        plain, _ = genai_client_for("support-tone@production", registry=str(tmp_path))
        assert api_version(plain) == "v1beta1"
        client, endpoint = genai_client_for(
            "support-tone@production",
            registry=str(tmp_path),
            http_options={"headers": {"x-team": "support"}, "api_version": "v1"},
        )
    finally:
        clear_cache()
    assert endpoint == "projects/p/locations/us-central1/endpoints/1"
    assert api_version(client) == "v1beta1"
    assert client._api_client._http_options.headers["x-team"] == "support"


# --- 2. data statistics of every method ----------------------------------------------------


def job_with(stats: Mapping[str, Any]) -> types.TuningJob:
    return types.TuningJob.model_validate(
        {
            "name": "projects/p/locations/us-central1/tuningJobs/1",
            "state": "JOB_STATE_SUCCEEDED",
            "tuningDataStats": stats,
        }
    )


def test_supervised_stats_keep_their_count() -> None:
    job = to_job(
        job_with(
            {
                "supervisedTuningDataStats": {
                    "tuningDatasetExampleCount": "100",
                    "totalBillableTokenCount": "5000",
                    "tuningStepCount": "20",
                    "totalTruncatedExampleCount": "7",
                    "truncatedExampleIndices": ["3", "9"],
                    "droppedExampleReasons": ["too many tokens", "too many tokens"],
                }
            }
        )
    )
    stats = job.data_stats
    assert stats is not None
    assert (stats.example_count, stats.billable_tokens, stats.tuning_step_count) == (100, 5000, 20)
    assert stats.truncated_examples == 7
    assert stats.truncated_example_indices == (3, 9)
    assert stats.method == "supervised"
    assert stats.indices_are_sample and not stats.count_is_lower_bound


def test_preference_stats_are_read() -> None:
    stats = to_job(
        job_with(
            {
                "preferenceOptimizationDataStats": {
                    "tuningDatasetExampleCount": "50",
                    "totalBillableTokenCount": "9000",
                    "tuningStepCount": "10",
                    "droppedExampleIndices": ["2", "4", "8"],
                    "droppedExampleReasons": ["no completions", "too long", "too long"],
                }
            }
        )
    ).data_stats
    assert stats is not None
    assert (stats.example_count, stats.billable_tokens, stats.tuning_step_count) == (50, 9000, 10)
    # No count field in PreferenceOptimizationDataStats: the sample's size is a lower bound.
    assert stats.truncated_examples == 3
    assert stats.truncated_example_indices == (2, 4, 8)
    assert stats.dropped_example_reasons == ("no completions", "too long", "too long")
    assert stats.method == "preference"
    assert stats.indices_are_sample and stats.count_is_lower_bound


def test_distillation_stats_are_read_from_the_training_dataset_stats() -> None:
    stats = to_job(
        job_with(
            {
                "distillationDataStats": {
                    "trainingDatasetStats": {
                        "tuningDatasetExampleCount": "40",
                        "totalBillableTokenCount": "1200",
                        "tuningStepCount": "8",
                        "droppedExampleIndices": ["5"],
                        "droppedExampleReasons": ["too many tokens"],
                    }
                }
            }
        )
    ).data_stats
    assert stats is not None
    assert (stats.example_count, stats.billable_tokens, stats.tuning_step_count) == (40, 1200, 8)
    assert stats.truncated_examples == 1
    assert stats.method == "distillation"
    assert stats.count_is_lower_bound


def test_reinforcement_stats_are_read() -> None:
    stats = to_job(
        job_with(
            {
                "reinforcement_tuning_data_stats": {
                    "tuning_dataset_example_count": 30,
                    "total_billable_token_count": 700,
                    "tuning_step_count": 6,
                    "dropped_example_indices": [1, 2],
                    "dropped_example_reasons": ["bad reward", "bad reward"],
                }
            }
        )
    ).data_stats
    assert stats is not None
    assert (stats.example_count, stats.billable_tokens, stats.tuning_step_count) == (30, 700, 6)
    assert stats.truncated_examples == 2
    assert stats.method == "reinforcement"


def test_preference_drops_fail_the_run_and_billed_tokens_are_kept() -> None:
    job = to_job(
        job_with(
            {
                "preferenceOptimizationDataStats": {
                    "tuningDatasetExampleCount": "50",
                    "totalBillableTokenCount": "9000",
                    "droppedExampleIndices": ["2", "4", "8"],
                    "droppedExampleReasons": ["too long", "too long", "too long"],
                }
            }
        )
    )
    record = update_record(
        run_record(method="preference", train=DatasetRef(sha256="a" * 64, size=1, examples=50)),
        job,
        now=0.0,
    )
    assert record.billed_tokens == 9000
    assert record.dropped_fraction == pytest.approx(0.06)
    assert record.data_stats is not None and record.data_stats.count_is_lower_bound
    # Preference reports only a sample of the dropped indices: the run says "at least".
    with pytest.raises(JobFailed, match=r"dropped or truncated at least 6\.0%"):
        check_outcome(record, 0.05)


# --- 3. idempotency without trusting the server's filter -----------------------------------


class IgnoringFilterTuner(FakeTuner):
    """A tuner whose list ignores the label filter, as a lax server might."""

    def list(self, *, labels: Mapping[str, str] | None = None) -> Iterator[Job]:
        return super().list(labels=None)


SPEC = """\
name: support-tone
base_model: gemini-2.5-flash
dataset: {train: data.jsonl}
hyperparameters: {epochs: 2, adapter_size: 4}
gcp: {project: acme-project, bucket: acme-tuning, prefix: vt}
"""


def make_spec(tmp_path: Path, rows: int = 40) -> JobSpec:
    return load_spec(spec_with_chat_data(tmp_path, SPEC, rows), environ={})


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def lax() -> IgnoringFilterTuner:
    return IgnoringFilterTuner(clock=Clock())


def service_for(tuner: FakeTuner, tmp_path: Path) -> TuningService:
    clock = Clock()
    return TuningService(
        storage=FakeStorage(),
        tuner=tuner,
        runs=RunStore(LocalBlobStore(tmp_path / "runs"), clock=clock),
        project="p",
        location="us-central1",
        clock=clock,
        sleep=clock.sleep,
    )


def unrelated_job(tuner: FakeTuner, *, spec: str = "other-spec") -> Job:
    return tuner.create(
        TuningRequest(
            method="supervised",
            base_model="gemini-2.5-flash",
            training_uri="gs://elsewhere/train.jsonl",
            display_name=spec,
            description="not ours",
            labels={LABEL_SPEC: spec, LABEL_FINGERPRINT: "0" * 40},
        )
    )


def creates(tuner: FakeTuner) -> int:
    return sum(1 for name, _ in tuner.calls if name == "create")


@pytest.mark.parametrize("state", [JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED])
def test_submit_ignores_unrelated_jobs_the_server_returns(
    lax: IgnoringFilterTuner, tmp_path: Path, state: JobState
) -> None:
    lax.script([state])
    other = unrelated_job(lax)
    lax.get(other.name)  # now in `state`
    lax.script([JobState.SUCCEEDED])
    result = service_for(lax, tmp_path).submit(make_spec(tmp_path))
    assert result.plan.action == "create" and result.created
    assert result.record is not None and result.record.job_name != other.name
    assert creates(lax) == 2


def test_ambiguous_create_does_not_pick_up_an_unrelated_job(
    lax: IgnoringFilterTuner, tmp_path: Path
) -> None:
    other = unrelated_job(lax)
    lax.fail_next("create", AmbiguousCreateError("503 after send"), after_effect=False)
    # --force skips the plan's look-up, so only the ambiguous create's look-up can go wrong.
    result = service_for(lax, tmp_path).submit(make_spec(tmp_path), force=True)
    assert result.record is not None and result.record.job_name != other.name
    assert result.created
    assert creates(lax) == 3  # the unrelated job, the ambiguous attempt, the real one


def test_ambiguous_create_still_finds_its_own_job(lax: IgnoringFilterTuner, tmp_path: Path) -> None:
    unrelated_job(lax)
    lax.fail_next("create", AmbiguousCreateError("connection reset"), after_effect=True)
    result = service_for(lax, tmp_path).submit(make_spec(tmp_path), force=True)
    assert result.record is not None
    assert result.record.labels[LABEL_SPEC] == "support-tone"
    assert creates(lax) == 2


def test_list_jobs_keeps_only_the_spec_asked_for(lax: IgnoringFilterTuner, tmp_path: Path) -> None:
    unrelated_job(lax, spec="other-spec")
    mine = unrelated_job(lax, spec="support-tone")
    service = service_for(lax, tmp_path)
    assert [j.name for j in service.list_jobs("support-tone")] == [mine.name]
    assert len(service.list_jobs()) == 2


# --- 4. settings refused when the spec loads ----------------------------------------------

BASE = """\
name: support-tone
base_model: gemini-2.5-flash
dataset:
  train: data/x.jsonl
hyperparameters:
  epochs: 3
gcp:
  project: acme-project
"""


def spec_error(tmp_path: Path, text: str) -> SpecError:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path, environ={})
    return info.value


DISTILLATION = BASE + "method: distillation\ndistillation: {teacher_model: gemini-2.5-pro}\n"


@pytest.mark.parametrize("value", ["true", "false"])
def test_export_last_checkpoint_only_is_refused_for_distillation(
    tmp_path: Path, value: str
) -> None:
    text = DISTILLATION.replace(
        "  epochs: 3\n", f"  epochs: 3\n  export_last_checkpoint_only: {value}\n"
    )
    err = spec_error(tmp_path, text)
    assert err.location.field == "hyperparameters.export_last_checkpoint_only"
    assert err.location.line == 7
    assert "distillation" in err.message


def test_export_last_checkpoint_only_is_fine_for_supervised(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        BASE.replace("  epochs: 3\n", "  epochs: 3\n  export_last_checkpoint_only: true\n")
    )
    assert load_spec(path, environ={}).hyperparameters.export_last_checkpoint_only is True


def test_output_uri_is_refused_for_gemini(tmp_path: Path) -> None:
    err = spec_error(tmp_path, BASE + "  output_uri: gs://acme/out\n")
    assert err.location.field == "gcp.output_uri"
    assert err.location.line == 9
    assert "open models" in err.message


@pytest.mark.parametrize("method", ["supervised", "distillation"])
def test_beta_is_refused_outside_preference_at_its_line(tmp_path: Path, method: str) -> None:
    text = (DISTILLATION if method == "distillation" else BASE).replace(
        "  epochs: 3\n", "  epochs: 3\n  beta: 0.1\n"
    )
    err = spec_error(tmp_path, text)
    assert err.location.field == "hyperparameters.beta"
    assert err.location.line == 7
    assert "preference" in err.message


def test_beta_is_fine_for_preference(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        BASE.replace("  epochs: 3\n", "  epochs: 3\n  beta: 0.1\n") + "method: preference\n"
    )
    assert load_spec(path, environ={}).hyperparameters.beta == 0.1
