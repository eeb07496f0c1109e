"""``vertex-tuner validate``: every problem Vertex would reject, truncate or drop, before upload.

The report goes to stdout (readable, or one JSON document with ``--json``); under GitHub Actions
each finding is also written to stderr as an ``::error``/``::warning`` annotation. Exit 0 when
there are no errors, 1 when there are, 2 for a usage error.

Offline, token figures are estimates. ``--exact-tokens`` has Vertex's countTokens (or, with
``--sandbox``, the emulator's) count the examples near the limit and a calibration sample.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vertex_tuner import models
from vertex_tuner.cli._common import EXIT_INVALID, echo_json, handle_errors, is_github_actions
from vertex_tuner.models import DEFAULT_BASE_MODEL, MODELS, model_info
from vertex_tuner.vocabulary import DATASET_FORMATS, METHODS

if TYPE_CHECKING:
    import datetime as dt

    from vertex_tuner.backends.interface import TokenCounter
    from vertex_tuner.dataset import Report
    from vertex_tuner.spec import JobSpec

EXACT_TOKENS_HINT = (
    "run `gcloud auth application-default login` and set GOOGLE_CLOUD_PROJECT, add --sandbox "
    "to count with the local emulator, or drop --exact-tokens to estimate offline"
)


@contextlib.contextmanager
def _counter(*, sandbox: bool) -> Iterator[TokenCounter]:
    """countTokens in Google Cloud (Application Default Credentials), or in the sandbox."""
    from vertex_tuner.errors import ConfigurationError
    from vertex_tuner.wiring import backends, default_location

    with contextlib.ExitStack() as stack:
        try:
            b = stack.enter_context(
                backends(sandbox=sandbox, project=None, location=default_location())
            )
        except ConfigurationError as exc:
            if sandbox:
                raise
            raise ConfigurationError(
                f"--exact-tokens counts with Vertex's countTokens: {exc.message}",
                hint=EXACT_TOKENS_HINT,
            ) from None
        assert b.counter is not None
        yield b.counter


#: The finding code of a spec whose base model retires within :data:`models.WARN_DAYS`.
RETIRING_CODE = "base-retiring"
_BASE_MODEL_LINE = re.compile(r"^base_model[ \t]*:", re.M)


def _with_retirement_warning(report: Report, spec: JobSpec, path: str, today: dt.date) -> Report:
    """The report, with a warning when the spec's Gemini base retires within
    :data:`models.WARN_DAYS` (a retired one is already a spec error)."""
    from vertex_tuner.dataset.findings import Finding

    if spec.is_continuous:
        return report
    retirement = models.retirement(spec.base_model, today)
    if retirement.retired or not retirement.within(models.WARN_DAYS):
        return report
    text = Path(path).read_text(encoding="utf-8")
    match = _BASE_MODEL_LINE.search(text)
    line = text.count("\n", 0, match.start()) + 1 if match else None
    finding = Finding(
        "warning", RETIRING_CODE, retirement.message, line=line, file=path, field="base_model"
    )
    stats = dict(report.stats)
    stats["warning_count"] = stats.get("warning_count", len(report.warnings)) + 1
    counts = dict(stats.get("counts_by_code", {}))
    counts[RETIRING_CODE] = counts.get(RETIRING_CODE, 0) + 1
    stats["counts_by_code"] = dict(sorted(counts.items()))
    return dataclasses.replace(report, warnings=[finding, *report.warnings], stats=stats)


def _known_model(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if model_info(value) is None:
        raise click.BadParameter(
            f"{value!r} is not a tunable base model; use one of {', '.join(MODELS)}"
        )
    return value


@click.command()
@click.argument(
    "paths",
    metavar="PATH...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False),
)
@click.option(
    "--model",
    default=DEFAULT_BASE_MODEL,
    show_default=True,
    callback=_known_model,
    help="Base model whose limits apply to a bare dataset file.",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="supervised",
    show_default=True,
    help="Tuning method, for a bare dataset file.",
)
@click.option(
    "--format",
    "fmt",
    default="auto",
    show_default=True,
    type=click.Choice(DATASET_FORMATS),
    help="Dataset format, for a bare dataset file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option(
    "--exact-tokens",
    is_flag=True,
    help="Count examples near the token limit, and a sample that calibrates the cost, with "
    "Vertex's countTokens (free; needs Google Cloud credentials, or --sandbox).",
)
@click.option(
    "--sandbox",
    is_flag=True,
    help="With --exact-tokens, count with the local emulator; otherwise validate reaches no "
    "cloud, so it changes nothing.",
)
@handle_errors
def validate(
    paths: tuple[str, ...],
    model: str,
    method: str,
    fmt: str,
    as_json: bool,
    exact_tokens: bool,
    sandbox: bool,
) -> None:
    """Check job specs (and their data) or dataset files: exit 0 clean, 1 with errors.

    A spec (.yaml/.yml) is checked as submit would: its data read, converted and split with the
    spec's model, method and format. Any other file is a dataset checked against --model's
    limits.
    """
    from rich.console import Console

    from vertex_tuner.cli.render_validation import github_annotations, render_text
    from vertex_tuner.dataset import Validator
    from vertex_tuner.spec import load_spec
    from vertex_tuner.tuning.preparation import prepare

    reports: list[tuple[str, Report]] = []
    ctx = click.get_current_context()
    counter = ctx.with_resource(_counter(sandbox=sandbox)) if exact_tokens else None
    given = [
        f"--{name.replace('fmt', 'format')}"
        for name in ("model", "method", "fmt")
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    ]
    specs = [p for p in paths if p.endswith((".yaml", ".yml"))]
    if given and specs:
        raise click.UsageError(
            f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to bare dataset "
            f"files; {specs[0]} is a spec, whose "
            "base_model, method and dataset.format decide how it is checked"
        )
    today = models.today()
    for path in paths:
        if path.endswith((".yaml", ".yml")):
            spec = load_spec(path, offline=True, today=today)
            with tempfile.TemporaryDirectory(prefix="vertex-tuner-") as tmp:
                report = prepare(spec, Path(tmp), counter=counter).report
            reports.append((path, _with_retirement_warning(report, spec, path, today)))
        else:
            validator = Validator(model=model, method=method, fmt=fmt)
            reports.append((path, validator.run(Path(path), display=path, counter=counter).report))
    ok = all(r.ok for _, r in reports)
    if is_github_actions():
        for path, report in reports:
            for line in github_annotations(report, path):
                click.echo(line, err=True)
    if as_json:
        if len(reports) == 1:
            echo_json(reports[0][1].to_json())
        else:
            documents = [r.to_json() for _, r in reports]
            echo_json(
                {
                    "ok": ok,
                    "errors": [e for d in documents for e in d["errors"]],
                    "warnings": [w for d in documents for w in d["warnings"]],
                    "stats": {p: r.stats for p, r in reports},
                }
            )
    else:
        console = Console(highlight=False, soft_wrap=True)
        for path, report in reports:
            render_text(report, console, source=path)
    if not ok:
        sys.exit(EXIT_INVALID)
