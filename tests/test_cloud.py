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
