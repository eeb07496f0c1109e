"""Smaller places where vertex-tuner, google-genai and Vertex could part ways.

- an unset epoch count is an assumption the plan says out loud, and the record bills the epochs
  the job reports;
- a budget is refused for distillation, whose cost cannot be estimated beforehand;
- the dry run shows the REST body google-genai would send, and the sandbox's schema accepts it;
- 403s say which of Google's reasons it was, with the command that fixes it;
- a CMEK key outside the job's region is refused when the spec loads;
- ``base_checkpoint`` reaches ``preTunedModel`` for continuous tuning, and only there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from dataset_support import spec_with_chat_data
from google.genai import errors as genai_errors
from google.genai import types
from records_support import run_record

from vertex_tuner.backends.fake import FakeStorage, FakeTuner
from vertex_tuner.backends.genai import LOGIN_HINT, request_body, to_job, translate
from vertex_tuner.backends.interface import JobState, TuningRequest
from vertex_tuner.cli._render import plan_text
from vertex_tuner.errors import ConfigurationError, SpecError
from vertex_tuner.records import DatasetRef, Estimate
from vertex_tuner.runstore import LocalBlobStore, RunStore
from vertex_tuner.sandbox import contract
from vertex_tuner.service import TuningService
from vertex_tuner.spec import JobSpec, load_spec
from vertex_tuner.tuning.plan import ASSUMED_EPOCHS, Plan, epochs_assumed
from vertex_tuner.tuning.recording import update_record

SPEC = """\
name: support-tone
base_model: gemini-2.5-flash
dataset: {train: data.jsonl}
hyperparameters: {epochs: 2, adapter_size: 4}
gcp: {project: acme-project, bucket: acme-tuning, prefix: vt}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def make_spec(tmp_path: Path, text: str = SPEC) -> JobSpec:
    return load_spec(spec_with_chat_data(tmp_path, text), environ={})


def service_for(tmp_path: Path) -> TuningService:
    clock = Clock()
    return TuningService(
        storage=FakeStorage(),
        tuner=FakeTuner(clock=clock),
        runs=RunStore(LocalBlobStore(tmp_path / "runs"), clock=clock),
        project="p",
        location="us-central1",
        clock=clock,
        sleep=clock.sleep,
    )


def dry_plan(tmp_path: Path, text: str = SPEC) -> Plan:
    return service_for(tmp_path).submit(make_spec(tmp_path, text), dry_run=True).plan


def spec_error(tmp_path: Path, text: str) -> SpecError:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path, environ={})
    return info.value


# --- 1. unset epochs -------------------------------------------------------------------------


def test_unset_epochs_are_an_assumption_the_plan_states(tmp_path: Path) -> None:
    plan = dry_plan(tmp_path, SPEC.replace("epochs: 2, ", ""))
    assert plan.estimate.epochs == ASSUMED_EPOCHS
    assert epochs_assumed(plan.estimate)
    assert "hyperparameters.epochs is unset" in plan.to_json()["estimate"]["note"]
    text = plan_text(plan)
    assert f"over {ASSUMED_EPOCHS} epoch(s) (assumed)" in text
    assert "Vertex picks the epoch count" in text
    # Nothing is sent for the epochs: Vertex chooses.
    assert "epochCount" not in orjson.dumps(plan.to_json()["request_body"]).decode()


def test_set_epochs_are_not_called_assumed(tmp_path: Path) -> None:
    plan = dry_plan(tmp_path)
    assert plan.estimate.epochs == 2
    assert not epochs_assumed(plan.estimate)
    assert "(assumed)" not in plan_text(plan)


def tuning_job(spec_key: str, epochs: int | None, tokens: int = 1000) -> types.TuningJob:
    body: dict[str, Any] = {
        "name": "projects/p/locations/us-central1/tuningJobs/1",
        "state": "JOB_STATE_SUCCEEDED",
        "tuningDataStats": {
            "supervisedTuningDataStats": {
                "tuningDatasetExampleCount": "10",
                "totalBillableTokenCount": str(tokens),
            }
        },
    }
    if epochs is not None:
        body[spec_key] = {"hyperParameters": {"epochCount": str(epochs)}}
    return types.TuningJob.model_validate(body)


@pytest.mark.parametrize(
    "spec_key", ["supervisedTuningSpec", "preferenceOptimizationSpec", "distillationSpec"]
)
def test_billed_tokens_use_the_epochs_the_job_reports(spec_key: str) -> None:
    record = run_record(
        estimate=Estimate(billable_tokens=1000, epochs=1),
        train=DatasetRef(sha256="a" * 64, size=1, examples=10),
    )
    updated = update_record(record, to_job(tuning_job(spec_key, 4)), now=0.0)
    assert updated.billed_tokens == 4000


def test_billed_tokens_fall_back_to_completed_then_estimated_epochs() -> None:
    record = run_record(
        estimate=Estimate(billable_tokens=1000, epochs=2),
        train=DatasetRef(sha256="a" * 64, size=1, examples=10),
    )
    job = to_job(tuning_job("supervisedTuningSpec", None))
    assert update_record(record, job, now=0.0).billed_tokens == 2000
    finished = to_job(
        types.TuningJob.model_validate(
            {
                **tuning_job("supervisedTuningSpec", None).model_dump(exclude_none=True),
                "tuning_job_metadata": {"completed_epoch_count": 5},
            }
        )
    )
    assert finished.state == JobState.SUCCEEDED and finished.epochs_completed == 5
    assert update_record(record, finished, now=0.0).billed_tokens == 5000


# --- 2. distillation budgets -----------------------------------------------------------------

DISTILLATION = """\
name: support-tone
base_model: gemini-2.5-flash
method: distillation
distillation: {teacher_model: gemini-2.5-pro}
dataset:
  train: data/x.jsonl
gcp:
  project: acme-project
budget:
  max_cost_usd: 50
"""


def test_budget_is_refused_for_distillation_at_its_line(tmp_path: Path) -> None:
    err = spec_error(tmp_path, DISTILLATION)
    assert err.location.field == "budget.max_cost_usd"
    assert err.location.line == 10
    assert "cannot be estimated for distillation" in err.message


def test_distillation_without_a_budget_loads(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(DISTILLATION.replace("budget:\n  max_cost_usd: 50\n", ""))
    assert load_spec(path, environ={}).budget.max_cost_usd is None


# --- 3. the body google-genai sends -----------------------------------------------------------


def schema_check(body: dict[str, Any]) -> dict[str, Any]:
    schema = contract.load("v1beta1")
    return schema.validate(body, schema.root("TuningJob"), path="tuning_job")


def test_dry_run_shows_the_body_google_genai_sends(tmp_path: Path) -> None:
    plan = dry_plan(tmp_path)
    body = plan.to_json()["request_body"]
    spec = body["supervisedTuningSpec"]
    assert spec["trainingDatasetUri"] == plan.request.training_uri
    assert spec["hyperParameters"] == {"epochCount": 2, "adapterSize": "ADAPTER_SIZE_FOUR"}
    assert body["baseModel"] == "gemini-2.5-flash"
    assert body["tunedModelDisplayName"] == "support-tone"
    assert body["labels"] == dict(plan.request.labels)
    assert "request body (what google-genai sends to Vertex):" in plan_text(plan)
    assert schema_check(body)["baseModel"] == "gemini-2.5-flash"


FULL = TuningRequest(
    method="supervised",
    base_model="projects/p/locations/us-central1/models/7@2",
    training_uri="gs://b/train.jsonl",
    validation_uri="gs://b/validation.jsonl",
    display_name="support-tone",
    description="d",
    labels={"vt-spec": "support-tone"},
    epochs=3,
    learning_rate_multiplier=0.5,
    adapter_size=8,
    checkpoint_id="4",
    kms_key_name="projects/p/locations/us-central1/keyRings/r/cryptoKeys/k",
    service_account="tuner@p.iam.gserviceaccount.com",
    export_last_checkpoint_only=True,
)


@pytest.mark.parametrize(
    "request_",
    [
        FULL,
        TuningRequest(
            method="preference",
            base_model="gemini-2.5-flash",
            training_uri="gs://b/t.jsonl",
            display_name="x",
            description="",
            labels={},
            beta=0.2,
        ),
        TuningRequest(
            method="distillation",
            base_model="gemini-2.5-flash",
            training_uri="gs://b/t.jsonl",
            display_name="x",
            description="",
            labels={},
            teacher_model="gemini-2.5-pro",
            epochs=2,
        ),
    ],
    ids=["continuous-everything", "preference", "distillation"],
)
def test_rendered_bodies_pass_the_sandbox_schema(request_: TuningRequest) -> None:
    body = request_body(request_)
    assert schema_check(body)


def test_continuous_body_and_extra_body_fields() -> None:
    body = request_body(FULL)
    assert "baseModel" not in body
    assert body["preTunedModel"] == {
        "tuned_model_name": FULL.base_model,
        "checkpoint_id": "4",
    }
    # serviceAccount is not a config field: it travels in http_options.extra_body.
    assert body["serviceAccount"] == FULL.service_account
    assert body["encryptionSpec"] == {"kms_key_name": FULL.kms_key_name}


# --- 4. 403 reasons --------------------------------------------------------------------------


def api_error(code: int, message: str, *details: dict[str, Any]) -> genai_errors.APIError:
    return genai_errors.APIError(
        code,
        {
            "error": {
                "code": code,
                "message": message,
                "status": "PERMISSION_DENIED" if code == 403 else "UNAUTHENTICATED",
                "details": list(details),
            }
        },
    )


def error_info(reason: str, **metadata: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": metadata,
    }


@pytest.mark.parametrize(
    ("error", "in_message", "in_hint"),
    [
        (
            api_error(
                403,
                "Vertex AI API has not been used in project 123456 before or it is disabled.",
                error_info(
                    "SERVICE_DISABLED",
                    service="aiplatform.googleapis.com",
                    consumer="projects/123456",
                ),
            ),
            "API is not enabled in project 123456",
            "gcloud services enable aiplatform.googleapis.com --project=123456",
        ),
        (
            api_error(403, "Vertex AI API has not been used in project acme-ml before."),
            "not enabled in project acme-ml",
            "gcloud services enable aiplatform.googleapis.com --project=acme-ml",
        ),
        (
            api_error(
                403,
                "Your application is authenticating by using local Application Default "
                "Credentials. The aiplatform.googleapis.com API requires a quota project, "
                "which is not set by default.",
                error_info("SERVICE_DISABLED", service="aiplatform.googleapis.com"),
            ),
            "quota project",
            "gcloud auth application-default set-quota-project",
        ),
        (
            api_error(
                403,
                "Caller does not have required permission to use project p.",
                error_info("USER_PROJECT_DENIED"),
            ),
            "quota project",
            "set-quota-project",
        ),
        (
            api_error(
                403,
                "Permission 'iam.serviceAccounts.actAs' denied on service account "
                "tuner@p.iam.gserviceaccount.com (or it may not exist).",
                error_info("IAM_PERMISSION_DENIED", permission="iam.serviceAccounts.actAs"),
            ),
            "iam.serviceAccounts.actAs",
            "add-iam-policy-binding tuner@p.iam.gserviceaccount.com",
        ),
        (
            api_error(
                403,
                "Permission 'aiplatform.tuningJobs.create' denied on resource.",
                error_info("IAM_PERMISSION_DENIED", permission="aiplatform.tuningJobs.create"),
            ),
            "permission denied",
            "roles/aiplatform.user",
        ),
    ],
    ids=["disabled", "disabled-message-only", "adc-quota", "user-project", "act-as", "role"],
)
def test_403_reasons_get_their_own_message_and_hint(
    error: genai_errors.APIError, in_message: str, in_hint: str
) -> None:
    ours = translate(error, what="create tuning job", create=True)
    assert isinstance(ours, ConfigurationError)
    assert in_message in ours.message
    assert ours.hint is not None and in_hint in ours.hint
    assert ours.hint != LOGIN_HINT


def test_403_hints_differ_and_401_still_says_log_in() -> None:
    ours = translate(api_error(401, "Request had invalid authentication credentials."), what="x")
    assert isinstance(ours, ConfigurationError) and ours.hint == LOGIN_HINT


# --- 5. CMEK region --------------------------------------------------------------------------

CMEK = """\
name: support-tone
base_model: gemini-2.5-flash
dataset:
  train: data/x.jsonl
gcp:
  project: acme-project
  location: europe-west4
  kms_key_name: projects/p/locations/us-central1/keyRings/r/cryptoKeys/k
"""


def test_cmek_key_in_another_region_is_refused_at_its_line(tmp_path: Path) -> None:
    err = spec_error(tmp_path, CMEK)
    assert err.location.field == "gcp.kms_key_name"
    assert err.location.line == 8
    assert "us-central1" in err.message and "europe-west4" in err.message
    assert err.hint is not None and "locations/europe-west4/" in err.hint


def test_cmek_key_in_the_jobs_region_loads(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(CMEK.replace("locations/us-central1/", "locations/europe-west4/"))
    assert load_spec(path, environ={}).gcp.kms_key_name is not None


def test_malformed_cmek_key_is_refused(tmp_path: Path) -> None:
    err = spec_error(tmp_path, CMEK.replace("locations/us-central1/", ""))
    assert err.location.field == "gcp.kms_key_name"
    assert "not a Cloud KMS key name" in err.message


# --- 6. base_checkpoint ----------------------------------------------------------------------

TUNED = "projects/p/locations/us-central1/models/7@2"


def test_base_checkpoint_reaches_pre_tuned_model(tmp_path: Path) -> None:
    text = SPEC.replace(
        "base_model: gemini-2.5-flash", f"base_model: {TUNED}\nbase_checkpoint: '3'"
    )
    plan = dry_plan(tmp_path, text)
    assert plan.request.checkpoint_id == "3"
    assert plan.to_json()["request_body"]["preTunedModel"]["checkpoint_id"] == "3"
    assert schema_check(plan.to_json()["request_body"])


def test_base_checkpoint_changes_the_fingerprint_only_when_set(tmp_path: Path) -> None:
    plain = make_spec(tmp_path, SPEC.replace("gemini-2.5-flash", TUNED))
    assert "base_checkpoint" not in plain.result_fields()
    with_checkpoint = make_spec(
        tmp_path, SPEC.replace("gemini-2.5-flash", f"{TUNED}\nbase_checkpoint: '3'")
    )
    assert with_checkpoint.result_fields()["base_checkpoint"] == "3"


def test_base_checkpoint_is_allowed_for_an_alias(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path, SPEC.replace("gemini-2.5-flash", "support-tone@production\nbase_checkpoint: '2'")
    )
    assert spec.base_checkpoint == "2"


def test_base_checkpoint_is_refused_for_a_gemini_base(tmp_path: Path) -> None:
    err = spec_error(tmp_path, SPEC.replace("dataset:", "base_checkpoint: '3'\ndataset:"))
    assert err.location.field == "base_checkpoint"
    assert err.location.line == 3
    assert "continuous tuning" in err.message


class _Sent(Exception):
    pass


def test_rendered_body_is_exactly_what_tunings_tune_posts(monkeypatch: pytest.MonkeyPatch) -> None:
    from vertex_tuner.backends.genai import GenaiTuner
    from vertex_tuner.sandbox.clients import genai_client
    from vertex_tuner.sandbox.info import SandboxInfo

    client = genai_client(
        SandboxInfo(vertex_base_url="http://127.0.0.1:9/", storage_emulator_host="127.0.0.1:9")
    )
    sent: list[dict[str, Any]] = []

    def capture(method: str, path: str, body: dict[str, Any], options: Any = None) -> Any:
        import copy

        merged = copy.deepcopy(body)
        extra = getattr(options, "extra_body", None)
        if extra:
            from google.genai import _common

            _common.recursive_dict_update(merged, extra)
        sent.append(merged)
        raise _Sent

    monkeypatch.setattr(client._api_client, "request", capture)
    for request_ in (FULL, FULL.__class__(**{**FULL.__dict__, "base_model": "gemini-2.5-flash"})):
        sent.clear()
        with pytest.raises(_Sent):
            GenaiTuner(client, timeout_s=5).create(request_)
        assert sent == [request_body(request_)]


# --- 3.x tuned endpoints are served from the multi-region endpoints -------------------------


def test_a_tuned_endpoint_is_called_where_its_name_says() -> None:
    from vertex_tuner.backends.genai import GenaiGenerator
    from vertex_tuner.models import resource_location

    assert resource_location("projects/p/locations/us/endpoints/7") == "us"
    assert resource_location("projects/p/locations/us-central1/endpoints/7") == "us-central1"
    assert resource_location("gemini-2.5-flash") is None

    class Client:
        def __init__(self, where: str) -> None:
            self.where = where
            self.models = self

        def generate_content(self, *, model: str, contents: Any, config: Any) -> Any:
            calls.append((self.where, model))
            raise RuntimeError("stop here")  # the routing is what is under test

    calls: list[tuple[str, str]] = []
    made: list[str] = []

    def client_for(where: str) -> Client:
        made.append(where)
        return Client(where)

    generator = GenaiGenerator(Client("us-central1"), location="us-central1", client_for=client_for)
    for model in (
        "gemini-2.5-flash",
        "projects/p/locations/us-central1/endpoints/1",
        "projects/p/locations/us/endpoints/2",
        "projects/p/locations/us/endpoints/3",
    ):
        with pytest.raises(Exception, match="stop here"):
            generator.generate(model, [{"role": "user", "parts": [{"text": "hi"}]}])
    assert [where for where, _ in calls] == ["us-central1", "us-central1", "us", "us"]
    assert made == ["us"]  # one client per extra location
