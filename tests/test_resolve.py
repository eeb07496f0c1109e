"""Resolving name@alias for services, with a short cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from records_support import run_record

from vertex_tuner.errors import NotFoundError, VertexTunerError
from vertex_tuner.registry import clear_cache, genai_client_for, parse_ref, resolve
from vertex_tuner.runstore import LocalBlobStore, RunStore


def seed(store: RunStore, run_id: str, endpoint: str | None, *, sandbox: bool = False) -> None:
    store.save(
        run_record(
            run_id,
            fingerprint=run_id * 8,
            job_name=f"projects/p/locations/l/tuningJobs/{run_id}",
            endpoint=endpoint,
            tuned_model=f"projects/p/locations/l/models/9@{run_id[-1]}",
            project="p",
            location="us-central1",
            sandbox=sandbox,
            evaluation={"targets": {"tuned": {"metrics": {"rouge_l": 0.61}}}},
        )
    )


def test_parse_ref() -> None:
    assert parse_ref("support-tone@canary") == ("support-tone", "canary")
    assert parse_ref("support-tone") == ("support-tone", "production")
    with pytest.raises(VertexTunerError):
        parse_ref("@production")


def test_resolve_follows_promotions_after_the_cache_expires(tmp_path: Path) -> None:
    store = RunStore(LocalBlobStore(tmp_path))
    seed(store, "r1", "projects/p/locations/l/endpoints/1")
    seed(store, "r2", "projects/p/locations/l/endpoints/2")
    store.set_alias("support-tone", "production", "r1")
    now = [0.0]
    got = resolve("support-tone@production", registry=str(tmp_path), clock=lambda: now[0])
    assert (got.endpoint, got.run_id, got.metrics) == (
        "projects/p/locations/l/endpoints/1",
        "r1",
        {"rouge_l": 0.61},
    )
    store.set_alias("support-tone", "production", "r2")
    now[0] = 10.0  # still cached
    assert (
        resolve("support-tone@production", registry=str(tmp_path), clock=lambda: now[0]).run_id
        == "r1"
    )
    now[0] = 31.0  # expired
    assert (
        resolve("support-tone@production", registry=str(tmp_path), clock=lambda: now[0]).run_id
        == "r2"
    )
    clear_cache()


def test_unknown_alias_says_how_to_promote(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        resolve("support-tone@production", registry=str(tmp_path))
    assert "vertex-tuner promote support-tone" in (info.value.hint or "")


def test_sandbox_runs_have_no_cloud_client(tmp_path: Path) -> None:
    store = RunStore(LocalBlobStore(tmp_path))
    seed(store, "r1", "projects/p/locations/l/endpoints/1", sandbox=True)
    store.set_alias("support-tone", "production", "r1")
    with pytest.raises(VertexTunerError, match="sandbox"):
        genai_client_for("support-tone@production", registry=str(tmp_path))
