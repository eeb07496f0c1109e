"""Checks against real Google Cloud: skipped unless VERTEX_TUNER_CLOUD_TESTS=1.

They need Application Default Credentials, GOOGLE_CLOUD_PROJECT and VERTEX_TUNER_BUCKET (a
bucket the credentials may write to). They create nothing that costs money: a dry run lists
jobs, and the storage check writes one small object under a generation precondition.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from vertex_tuner.cli import cli

pytestmark = pytest.mark.cloud
REPO = Path(__file__).resolve().parent.parent


def test_dry_run_against_vertex() -> None:
    result = CliRunner().invoke(
        cli, ["submit", str(REPO / "jobs" / "support_tone.yaml"), "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    plan = orjson.loads(result.stdout)["plan"]
    assert plan["action"] in ("create", "reuse", "attach", "blocked")


def test_generation_preconditions_in_cloud_storage() -> None:
    from vertex_tuner.errors import PreconditionFailed
    from vertex_tuner.wiring.backends import cloud_backends

    backends = cloud_backends(None, "us-central1")
    uri = f"gs://{os.environ['VERTEX_TUNER_BUCKET']}/vertex-tuner/tests/{uuid.uuid4().hex}"
    generation = backends.storage.write(uri, b"1", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        backends.storage.write(uri, b"2", if_generation_match=0)
    backends.storage.delete(uri, if_generation_match=generation)


def test_rendered_request_body_is_what_vertex_parses() -> None:
    """The dry run's ``request_body``, POSTed as is, is parsed by Vertex without a schema error.

    The training file does not exist, so Vertex refuses the job (or fails it at once, and it is
    cancelled here): nothing is tuned and nothing is billed. A body Vertex could not parse would
    come back as ``Invalid JSON payload … Unknown name``.
    """
    from google.genai import errors

    from vertex_tuner.backends.genai import GenaiTuner, http_options, request_body
    from vertex_tuner.backends.interface import TuningRequest
    from vertex_tuner.wiring.backends import cloud_backends

    tuner = cloud_backends(None, "us-central1").tuner
    assert isinstance(tuner, GenaiTuner)
    missing = f"gs://{os.environ['VERTEX_TUNER_BUCKET']}/vertex-tuner/tests/{uuid.uuid4().hex}"
    body = request_body(
        TuningRequest(
            method="supervised",
            base_model="gemini-2.5-flash",
            training_uri=f"{missing}.jsonl",
            display_name="vertex-tuner-body-check",
            description="vertex-tuner cloud test: the training file does not exist",
            labels={"vt-test": "request-body"},
            epochs=1,
            adapter_size=1,
            export_last_checkpoint_only=True,
        )
    )
    api = tuner.client._api_client
    try:
        response = api.request("post", "tuningJobs", body, http_options(timeout=60_000))
    except errors.APIError as exc:
        assert exc.code == 400, exc
        assert "Invalid JSON payload" not in str(exc.message), exc.message
        assert "Unknown name" not in str(exc.message), exc.message
        return
    name = orjson.loads(response.body)["name"]
    tuner.cancel(name)


def test_a_list_filtered_on_a_random_fingerprint_returns_nothing() -> None:
    """Settles the assumption that tuningJobs.list honours a labels filter (docs/sandbox.md).

    vertex-tuner checks labels itself after listing, so a lax filter costs only bandwidth; this
    says whether it is lax.
    """
    from vertex_tuner.vocabulary import LABEL_FINGERPRINT
    from vertex_tuner.wiring.backends import cloud_backends

    backends = cloud_backends(None, os.environ.get("GOOGLE_CLOUD_LOCATION", "us-central1"))
    jobs = list(backends.tuner.list(labels={LABEL_FINGERPRINT: uuid.uuid4().hex}))
    assert jobs == []


def test_a_tuned_3x_endpoint_is_named_in_its_serving_location() -> None:
    """Settles the assumption that a tuned 3.x model's endpoint name says locations/us (or eu).

    Needs VERTEX_TUNER_3X_ENDPOINT: the endpoint of a tuned Gemini 3.x model in the project.
    """
    from vertex_tuner.models import resource_location

    endpoint = os.environ.get("VERTEX_TUNER_3X_ENDPOINT")
    if not endpoint:
        pytest.skip("set VERTEX_TUNER_3X_ENDPOINT to the endpoint of a tuned 3.x model")
    assert resource_location(endpoint) in ("us", "eu")


def test_count_tokens_against_vertex() -> None:
    """Vertex's countTokens of what the validator counts, for a few English chats: within the
    30% margin of the local estimate, and the system instruction counts."""
    from sandbox_support import example

    from vertex_tuner.dataset import formats
    from vertex_tuner.dataset.tokens import counted_request
    from vertex_tuner.dataset.validate import EXACT_MARGIN
    from vertex_tuner.wiring.backends import cloud_backends

    counter = cloud_backends(None, "us-central1").counter
    assert counter is not None and counter.source == "Vertex"
    for i in (1, 22, 333):
        converted = formats.convert(orjson.loads(example(i)), "messages")
        request = counted_request(converted, "supervised")
        exact = counter.count(
            "gemini-2.5-flash",
            request.contents,
            system_instruction=request.system_instruction,
            tools=request.tools,
        )
        bare = counter.count("gemini-2.5-flash", request.contents)
        assert abs(exact - request.estimate) <= EXACT_MARGIN * request.estimate, (i, exact)
        assert exact > bare
