"""Commands that judge and ship tuned models: evaluate, promote, rollback, aliases."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from vertex_tuner.cli._common import echo_json, handle_errors, stderr_console
from vertex_tuner.cli.jobs import cloud_options, store_options

if TYPE_CHECKING:
    from vertex_tuner.evaluation.results import EvaluationResult
    from vertex_tuner.records import RunRecord
    from vertex_tuner.runstore import RunStore
    from vertex_tuner.service import Observer
    from vertex_tuner.spec import JobSpec
    from vertex_tuner.wiring import Context


def _spec_and_record(
    ctx: Context, ref: str, spec: JobSpec | None, observer: Observer
) -> tuple[JobSpec, RunRecord, Path | None]:
    """A spec means its newest finished run for the current data; a run id means that run."""
    from vertex_tuner.errors import NotFoundError, SpecError
    from vertex_tuner.spec import load_spec
    from vertex_tuner.wiring import service_for

    if spec is not None:
        svc = service_for(ctx, observer)
        workdir = Path(tempfile.mkdtemp(prefix="vertex-tuner-eval-"))
        prepared = svc.prepare(spec, workdir)
        plan = svc.plan(spec, prepared)
        if plan.job is None:
            raise NotFoundError(
                f"no job has tuned the current data of {spec.name}",
                hint=f"submit it first: vertex-tuner submit {spec.spec_path}",
            )
        record = svc.refresh(svc.record_of(plan.job.name))
        holdout = prepared.holdout.path if prepared.holdout else None
        return spec, record, holdout
    record = ctx.runs.get(ref)
    if not record.spec_path or not Path(record.spec_path).is_file():
        raise SpecError(
            f"run {ref} was made from {record.spec_path or 'an unknown spec'}, which is not here",
            hint="run evaluate with the spec file instead of the run id",
        )
    return load_spec(record.spec_path, offline=ctx.sandbox), record, None


def run_evaluation(
    ctx: Context,
    spec: JobSpec,
    record: RunRecord,
    *,
    against: list[str],
    holdout: Path | None,
    observer: Observer,
) -> EvaluationResult:
    """Evaluate one run as the spec says (shared by ``evaluate`` and ``submit --evaluate``)."""
    from vertex_tuner.errors import SpecError
    from vertex_tuner.wiring import evaluator_for

    if spec.evaluation is None:
        raise SpecError(
            f"{spec.spec_path}: the spec has no evaluation section",
            hint="add evaluation: {holdout: 0.1, metrics: [exact_match, rouge_l]}",
        )
    schema: dict[str, Any] | None = None
    if spec.evaluation.json_schema:
        path = spec.resolve_path(spec.evaluation.json_schema)
        try:
            schema = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SpecError(f"evaluation.json_schema: cannot read {path}: {exc}") from None
    evaluator = evaluator_for(ctx, observer)
    return evaluator.evaluate(
        record, spec.evaluation, against=against, holdout_file=holdout, json_schema=schema
    )


def render_result(result: EvaluationResult, *, as_json: bool, report: str | None) -> None:
    from vertex_tuner.evaluation.report import write_report

    if report:
        written = write_report(result, Path(report))
        stderr_console().print(f"report: {', '.join(str(p) for p in written)}")
    if as_json:
        echo_json(result.to_json())
        return
    from rich.markup import escape

    from vertex_tuner.cli._render import evaluation_table

    console = stderr_console()
    console.print(evaluation_table(result))
    if result.verdict is not None:
        # The explanation starts with "passed:" or "failed:".
        colour = "green" if result.verdict.passed else "red"
        console.print(f"[{colour}]gate[/] {escape(result.verdict.explanation)}")


def check_gate(result: EvaluationResult) -> None:
    from vertex_tuner.errors import GateFailed

    if result.verdict is not None and not result.verdict.passed:
        raise GateFailed(
            f"the evaluation gate {result.verdict.explanation}",
            hint="the alias was not moved; see the report for the regressions",
        )


@click.command()
@click.argument("ref", metavar="SPEC|RUN")
@cloud_options
@click.option(
    "--against",
    default="base,production",
    show_default=True,
    help="Comparison targets besides the tuned model.",
)
@click.option(
    "--report", metavar="DIR", help="Write report.md, report.html and results.json to DIR."
)
@handle_errors
def evaluate(
    ref: str,
    sandbox: bool,
    as_json: bool,
    registry: str | None,
    project: str | None,
    location: str | None,
    against: str,
    report: str | None,
) -> None:
    """Compare the tuned model with the base and production models on held-out examples.

    Exits 5 when the spec's gate (evaluation.promote_if) fails.
    """
    from vertex_tuner.cli._progress import ConsoleObserver
    from vertex_tuner.cli.jobs import _load, _looks_like_spec
    from vertex_tuner.wiring import open_context

    spec = _load(ref, sandbox) if _looks_like_spec(ref) else None
    targets = [t.strip() for t in against.split(",") if t.strip()]
    observer = ConsoleObserver(stderr_console(), quiet=as_json)
    with open_context(
        spec=spec, sandbox=sandbox, registry=registry, project=project, location=location
    ) as ctx:
        spec, record, holdout = _spec_and_record(ctx, ref, spec, observer)
        result = run_evaluation(
            ctx, spec, record, against=targets, holdout=holdout, observer=observer
        )
    observer.close()
    render_result(result, as_json=as_json, report=report)
    check_gate(result)


def promote_run(
    runs: RunStore, name: str, run_id: str | None, alias: str, *, if_gate: bool
) -> tuple[RunRecord, Any]:
    """Point ``name@alias`` at a run (default: the newest successful one)."""
    from vertex_tuner.errors import GateFailed, NotFoundError

    if run_id is None:
        ok = [
            r
            for r in runs.list(name)
            if r.state in ("SUCCEEDED", "PARTIALLY_SUCCEEDED") and r.endpoint
        ]
        if not ok:
            raise NotFoundError(
                f"{name} has no successful run to promote",
                hint=f"list runs with: vertex-tuner runs {name}",
            )
        record = ok[0]
    else:
        record = runs.get(run_id)
        if record.spec_name != name:
            raise NotFoundError(f"run {run_id} belongs to {record.spec_name}, not {name}")
    if not record.endpoint:
        raise NotFoundError(f"run {record.run_id} has no endpoint (state {record.state})")
    if if_gate:
        gate = (record.evaluation or {}).get("gate")
        if gate is None:
            raise GateFailed(
                f"run {record.run_id} has no evaluation gate result",
                hint=f"evaluate it first: vertex-tuner evaluate {record.run_id}",
            )
        if not gate.get("passed"):
            raise GateFailed(
                f"run {record.run_id} did not pass its gate ({gate.get('explanation', '')})"
            )
    entry = runs.set_alias(name, alias, record.run_id, reason="--if-gate" if if_gate else "")
    return record, entry


@click.command()
@click.argument("name")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--alias", default="production", show_default=True)
@click.option("--if-gate", is_flag=True, help="Only when the run passed its evaluation gate.")
@click.option(
    "--mirror-vertex",
    is_flag=True,
    help="Also set the alias on the model version in the Vertex Model Registry "
    "(needs the 'registry' extra).",
)
@store_options
@handle_errors
def promote(
    name: str,
    run_id: str | None,
    alias: str,
    if_gate: bool,
    mirror_vertex: bool,
    registry: str | None,
    sandbox: bool,
    as_json: bool,
) -> None:
    """Point NAME@ALIAS at RUN (default: NAME's newest successful run)."""
    from vertex_tuner.cli.jobs import _store

    with _store(registry, sandbox) as runs:
        record, entry = promote_run(runs, name, run_id, alias, if_gate=if_gate)
    if mirror_vertex:
        from vertex_tuner.backends.model_registry import mirror_alias

        mirror_alias(record, alias)
    _print_alias(name, alias, entry.run_id, record.endpoint, as_json)


@click.command()
@click.argument("name")
@click.option("--alias", default="production", show_default=True)
@store_options
@handle_errors
def rollback(name: str, alias: str, registry: str | None, sandbox: bool, as_json: bool) -> None:
    """Move NAME@ALIAS back to the run it pointed at before."""
    from vertex_tuner.cli.jobs import _store

    with _store(registry, sandbox) as runs:
        entry = runs.set_alias(name, alias, None)
        record = runs.get(entry.run_id)
    _print_alias(name, alias, entry.run_id, record.endpoint, as_json)


@click.command()
@click.argument("name")
@store_options
@handle_errors
def aliases(name: str, registry: str | None, sandbox: bool, as_json: bool) -> None:
    """List NAME's aliases and their history."""
    from vertex_tuner.cli.jobs import _store

    with _store(registry, sandbox) as runs:
        entries = runs.aliases(name)
    if as_json:
        echo_json(
            {
                "name": name,
                "aliases": {
                    a: {"run_id": e.run_id, "set_at": e.set_at, "history": list(e.history)}
                    for a, e in entries.items()
                },
            }
        )
        return
    if not entries:
        stderr_console().print(f"{name} has no aliases yet")
    for alias, entry in sorted(entries.items()):
        click.echo(f"{name}@{alias}\t{entry.run_id}\t{entry.set_at}")


def _print_alias(name: str, alias: str, run_id: str, endpoint: str | None, as_json: bool) -> None:
    if as_json:
        echo_json({"name": name, "alias": alias, "run_id": run_id, "endpoint": endpoint})
    else:
        click.echo(f"{name}@{alias} -> {run_id} ({endpoint})")
