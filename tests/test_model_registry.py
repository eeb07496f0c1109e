"""Mirroring an alias to the Vertex Model Registry (google-cloud-aiplatform, mocked)."""

from __future__ import annotations

import sys
import types

import pytest
from pytest_mock import MockerFixture

from vertex_tuner.backends.model_registry import mirror_alias, split_model_version
from vertex_tuner.errors import BackendError, ConfigurationError
from vertex_tuner.records import DatasetRef, RunRecord


def record(**updates: object) -> RunRecord:
    base = RunRecord(
        run_id="r1",
        spec_name="support-tone",
        spec_digest="d",
        fingerprint="f" * 64,
        tool_version="0.1.0",
        created_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
        method="supervised",
        base_model="gemini-2.5-flash",
        display_name="support-tone",
        train=DatasetRef(sha256="a" * 64, size=1, examples=1),
        tuned_model="projects/p/locations/us-central1/models/42@3",
        project="p",
        location="us-central1",
    )
    return base.model_copy(update=updates)


def test_split_model_version() -> None:
    assert split_model_version("projects/p/locations/l/models/42@3") == (
        "projects/p/locations/l/models/42",
        "3",
    )
    with pytest.raises(BackendError):
        split_model_version("projects/p/locations/l/models/42")


def test_mirror_sets_the_version_alias(mocker: MockerFixture) -> None:
    registry_cls = mocker.MagicMock()
    module = types.ModuleType("google.cloud.aiplatform.models")
    module.ModelRegistry = registry_cls  # type: ignore[attr-defined]
    mocker.patch.dict(sys.modules, {"google.cloud.aiplatform.models": module})
    mirror_alias(record(), "production")
    registry_cls.assert_called_once_with(
        "projects/p/locations/us-central1/models/42", location="us-central1", project="p"
    )
    registry_cls.return_value.add_version_aliases.assert_called_once_with(["production"], "3")


def test_mirror_without_the_extra_says_how_to_install(mocker: MockerFixture) -> None:
    mocker.patch.dict(sys.modules, {"google.cloud.aiplatform.models": None})
    with pytest.raises(ConfigurationError) as info:
        mirror_alias(record(), "production")
    assert "vertex-tuner[registry]" in (info.value.hint or "")


def test_sandbox_runs_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="sandbox"):
        mirror_alias(record(sandbox=True), "production")
