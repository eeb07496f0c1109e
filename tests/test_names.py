"""Spec values and flags that reach a host, a path or a resource name: only documented forms."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from vertex_tuner import names
from vertex_tuner.cli import cli
from vertex_tuner.errors import SpecError
from vertex_tuner.spec import load_spec

SPEC = """\
name: demo
base_model: gemini-2.5-flash
dataset: {train: d.jsonl}
gcp:
  project: acme-project
  location: us-central1
  bucket: acme-tuning
  prefix: vertex-tuner
"""


def spec_error(tmp_path: Path, old: str, new: str) -> SpecError:
    path = tmp_path / "spec.yaml"
    assert old in SPEC
    path.write_text(SPEC.replace(old, new))
    with pytest.raises(SpecError) as info:
        load_spec(path, environ={})
    return info.value


@pytest.mark.parametrize(
    ("old", "new", "line", "field"),
    [
        ("location: us-central1", 'location: "localhost:8999/steal?"', 6, "gcp.location"),
        ("location: us-central1", "location: evil.example.com", 6, "gcp.location"),
        ("project: acme-project", 'project: "acme/../../v1/x"', 5, "gcp.project"),
        ("project: acme-project", 'project: "p?x=1"', 5, "gcp.project"),
        ("prefix: vertex-tuner", 'prefix: "a/../b"', 8, "gcp.prefix"),
        (
            "base_model: gemini-2.5-flash",
            'base_model: "projects/p/locations/x.y:1/models/1"',
            2,
            "base_model",
        ),
        ("base_model: gemini-2.5-flash", 'base_model: "gemini-2.5-flash/../x"', 2, "base_model"),
        (
            "bucket: acme-tuning",
            "bucket: acme-tuning\n  service_account: someone@example.com",
            8,
            "gcp.service_account",
        ),
        ("name: demo", 'name: "demo\\n"', 1, "name"),
    ],
)
def test_values_that_reach_hosts_and_paths_are_checked_when_the_spec_loads(
    tmp_path: Path, old: str, new: str, line: int, field: str
) -> None:
    err = spec_error(tmp_path, old, new)
    assert err.location.line == line and err.location.field == field, str(err)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("prefix: vertex-tuner", "prefix: vertex-tuner\nwait: {poll_interval_max: 0.001}"),
        ("prefix: vertex-tuner", "prefix: vertex-tuner\nwait: {timeout: .inf}"),
        ("prefix: vertex-tuner", "prefix: vertex-tuner\nbudget: {max_cost_usd: .inf}"),
    ],
)
def test_durations_and_budgets_are_finite(tmp_path: Path, old: str, new: str) -> None:
    spec_error(tmp_path, old, new)


def test_documented_forms_are_accepted(tmp_path: Path) -> None:
    for value in ("us-central1", "europe-west4", "us", "eu", "global", "northamerica-northeast1"):
        assert names.location(value) == value
    for value in ("acme-project", "example.com:acme-project", "123456789012"):
        assert names.project(value) == value
    for value in (
        "gemini-2.5-flash",
        "support-tone@production",
        "projects/123456789012/locations/us-central1/models/55@3",
    ):
        assert names.model(value) == value
    assert names.service_account("ci@acme-project.iam.gserviceaccount.com")
    assert names.registry("gs://acme-tuning/vertex-tuner/registry")


@pytest.mark.parametrize(
    "args",
    [
        ["status", "x", "--location", "localhost:8999/steal?"],
        ["status", "x", "--project", "a/../b"],
        ["runs", "--registry", "gs://Bad_Bucket/x"],
    ],
)
def test_flags_are_checked_too(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "is not" in result.stderr and "Traceback" not in result.output
