"""Mirroring an alias to the Vertex Model Registry (google-cloud-aiplatform, mocked)."""

from __future__ import annotations

import sys
import types

import pytest
from pytest_mock import MockerFixture
from records_support import run_record

from vertex_tuner.backends.model_registry import mirror_alias, split_model_version
from vertex_tuner.errors import BackendError, ConfigurationError
from vertex_tuner.records import RunRecord


def record(**updates: object) -> RunRecord:
    fields = {
        "tuned_model": "projects/p/locations/us-central1/models/42@3",
        "project": "p",
        "location": "us-central1",
    }
    return run_record(**{**fields, **updates})


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
