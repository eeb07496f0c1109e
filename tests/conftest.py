"""Shared fixtures: a clean environment for every test, and no real cloud unless asked for."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from vertex_tuner.sandbox import Sandbox, SandboxInfo

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_environment(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """No Google variables from the developer's shell (but for cloud tests), state in tmp_path."""
    keep_google = request.node.get_closest_marker("cloud") is not None
    for name in list(os.environ):
        if keep_google and name.startswith(("GOOGLE_", "CLOUDSDK_", "VERTEX_TUNER_BUCKET")):
            continue
        if name.startswith(("GOOGLE_", "CLOUDSDK_", "VERTEX_TUNER_", "GITHUB_")) or name in (
            "STORAGE_EMULATOR_HOST",
            "CI",
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VERTEX_TUNER_HOME", str(tmp_path / "home"))
    from vertex_tuner.registry import clear_cache

    clear_cache()
    yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("VERTEX_TUNER_CLOUD_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="needs real Google Cloud: set VERTEX_TUNER_CLOUD_TESTS=1")
    for item in items:
        if "cloud" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sandbox_info() -> Iterator[SandboxInfo]:
    """One sandbox for the whole session, with jobs that take a second."""
    with Sandbox(job_seconds=1.0) as info:
        yield info


@pytest.fixture
def use_sandbox(sandbox_info: SandboxInfo, monkeypatch: pytest.MonkeyPatch) -> SandboxInfo:
    """Point --sandbox commands at the session sandbox (after the environment is cleared)."""
    monkeypatch.setenv("VERTEX_TUNER_SANDBOX", orjson.dumps(sandbox_info.to_json()).decode())
    return sandbox_info
