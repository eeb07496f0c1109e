"""The options commands share, and turning a SPEC argument into a loaded spec."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from vertex_tuner.spec import JobSpec

F = TypeVar("F", bound=Callable[..., Any])


def cloud_options(func: F) -> F:
    """The flags every command that reaches Vertex shares."""
    for option in reversed(
        [
            click.option(
                "--sandbox",
                is_flag=True,
                help="Use local emulators instead of Google Cloud (VERTEX_TUNER_SANDBOX "
                "names a running one; otherwise a private one is started).",
            ),
            click.option(
                "--json", "as_json", is_flag=True, help="Print one JSON document on stdout."
            ),
            click.option(
                "--registry",
                metavar="PATH|gs://…",
                help="Run store (default: the spec's registry:, else $VERTEX_TUNER_HOME/runs).",
            ),
            click.option(
                "--project",
                envvar="GOOGLE_CLOUD_PROJECT",
                show_envvar=True,
                help="Google Cloud project (default: the spec's gcp.project).",
            ),
            click.option("--location", help="Vertex region (default: the spec's gcp.location)."),
        ]
    ):
        func = option(func)
    return func


def store_options(func: F) -> F:
    """The flags of commands that only read or write the run store."""
    for option in reversed(
        [
            click.option("--registry", metavar="PATH|gs://…", help="Run store."),
            click.option("--sandbox", is_flag=True, help="Use the sandbox's run store."),
            click.option(
                "--json", "as_json", is_flag=True, help="Print one JSON document on stdout."
            ),
        ]
    ):
        func = option(func)
    return func


def looks_like_spec(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) and Path(ref).is_file()


def load(ref: str, sandbox: bool) -> JobSpec:
    from vertex_tuner.spec import load_spec

    return load_spec(ref, offline=sandbox)


def spec_or_none(ref: str, sandbox: bool) -> JobSpec | None:
    """The spec when REF names a spec file; None when it is a job or run id."""
    return load(ref, sandbox) if looks_like_spec(ref) else None


def parse_timeout(value: str | None, param: str) -> float | None:
    from vertex_tuner.spec import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from None
