"""The options commands share, and turning a SPEC argument into a loaded spec."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vertex_tuner import names

if TYPE_CHECKING:
    from vertex_tuner.spec import JobSpec

F = TypeVar("F", bound=Callable[..., Any])


def _checked(check: Callable[[str], str]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that holds a flag to the form :mod:`vertex_tuner.names` allows."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or value == "":
            return value
        try:
            return check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


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
                callback=_checked(names.registry),
                help="Run store (default: the spec's registry:, else $VERTEX_TUNER_HOME/runs).",
            ),
            click.option(
                "--project",
                envvar="GOOGLE_CLOUD_PROJECT",
                show_envvar=True,
                callback=_checked(names.project),
                help="Google Cloud project (default: the spec's gcp.project).",
            ),
            click.option(
                "--location",
                callback=_checked(names.location),
                help="Vertex region (default: the spec's gcp.location).",
            ),
        ]
    ):
        func = option(func)
    return func


def store_options(func: F) -> F:
    """The flags of commands that only read or write the run store."""
    for option in reversed(
        [
            click.option(
                "--registry",
                metavar="PATH|gs://…",
                callback=_checked(names.registry),
                help="Run store.",
            ),
            click.option("--sandbox", is_flag=True, help="Use the sandbox's run store."),
            click.option(
                "--json", "as_json", is_flag=True, help="Print one JSON document on stdout."
            ),
        ]
    ):
        func = option(func)
    return func


#: What an alias may be called: it becomes part of NAME@ALIAS, a key and a label value.
ALIAS_RE = re.compile(r"[a-z][a-z0-9-]{0,62}")


def check_alias(alias: str, option: str = "--alias") -> str:
    if ALIAS_RE.fullmatch(alias) is None:
        raise click.BadParameter(
            f"{alias!r} is not an alias name: use lowercase letters, digits and '-', starting "
            "with a letter (e.g. production, canary)",
            param_hint=option,
        )
    return alias


def alias_option(func: F) -> F:
    """``--alias`` (default production), checked when it is parsed."""
    return click.option(
        "--alias",
        default="production",
        show_default=True,
        callback=lambda ctx, param, value: check_alias(value),
        help="The alias: lowercase letters, digits and '-'.",
    )(func)


def looks_like_spec(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) and Path(ref).is_file()


#: Files that are datasets, not job specs.
_DATASET_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt")


def load(ref: str, sandbox: bool) -> JobSpec:
    """The job spec at ``ref``; a dataset file given instead is a usage error that says so."""
    from vertex_tuner.spec import load_spec

    if ref.lower().endswith(_DATASET_SUFFIXES):
        raise click.BadParameter(
            f"{ref} looks like a dataset, not a job spec (YAML); this command takes a spec "
            f"that names its data. To check the dataset alone: vertex-tuner validate {ref}",
            param_hint="SPEC",
        )
    return load_spec(ref, offline=sandbox)


def spec_or_none(ref: str, sandbox: bool) -> JobSpec | None:
    """The spec when REF names a spec file; None when it is a job or run id."""
    return load(ref, sandbox) if looks_like_spec(ref) else None


def spec_name(ref: str) -> str:
    """NAME as given, or the name of the spec when a spec file is given instead (``promote
    jobs/support_tone.yaml`` promotes support-tone). Only the name is read, so settings that
    only the cloud needs may be unset."""
    if not looks_like_spec(ref):
        if ref.endswith((".yaml", ".yml")):
            raise click.BadParameter(
                f"{ref}: no such spec file; give the path of a job spec, or the spec's name",
                param_hint="NAME",
            )
        return ref
    return load(ref, sandbox=True).name  # offline: only the name is read


def writable_dir(value: str | None, option: str) -> Path | None:
    """A folder the command will write to, made now and checked, so a bad path fails before the
    work starts (not after a whole evaluation)."""
    if value is None:
        return None
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"{value} is a file; name a folder", param_hint=option)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".vertex-tuner-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write to {value}: {exc.strerror or exc}", param_hint=option
        ) from None
    return path


def writable_store(registry: str | None, *, sandbox: bool, spec: JobSpec | None = None) -> None:
    """A local run store (and vertex-tuner's home, for the sandbox and the cache) that a command
    will write must be writable before it starts work: a record lost after a job was created is
    worse than no job."""
    from vertex_tuner.wiring import home, registry_location

    location = registry_location(spec, registry, sandbox=sandbox)
    option = "--registry" if registry else "VERTEX_TUNER_HOME or the spec's registry:"
    if not location.startswith("gs://"):
        writable_dir(location, option)
    writable_dir(str(home()), "VERTEX_TUNER_HOME")


def parse_timeout(value: str | None, param: str) -> float | None:
    from vertex_tuner.spec import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from None
