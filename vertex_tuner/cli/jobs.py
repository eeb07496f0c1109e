"""Commands that submit and follow tuning jobs: submit, status, wait, cancel, list, runs, show."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from vertex_tuner.cli import _common
from vertex_tuner.cli._common import echo_json, handle_errors, stderr_console
from vertex_tuner.cli.options import cloud_options, load, parse_timeout, spec_or_none, store_options

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import Job
    from vertex_tuner.records import RunRecord
    from vertex_tuner.spec import JobSpec
    from vertex_tuner.tuning import TuningService


@contextlib.contextmanager
def _service(
    spec: JobSpec | None,
    *,
    sandbox: bool,
    registry: str | None,
    project: str | None,
    location: str | None,
    quiet: bool = False,
) -> Iterator[tuple[TuningService, Any]]:
    from vertex_tuner.cli._progress import ConsoleObserver
    from vertex_tuner.wiring import open_service

    observer = ConsoleObserver(stderr_console(), quiet=quiet)
    try:
        with open_service(
            spec=spec,
            sandbox=sandbox,
            registry=registry,
            project=project,
            location=location,
            observer=observer,
        ) as svc:
            yield svc, observer
    finally:
        observer.close()


def _record_for_ref(svc: TuningService, ref: str, spec: JobSpec | None) -> RunRecord:
    """A spec (the job for its current data), a job name, or a run id → the run record."""
    from vertex_tuner.release import current_run

    return svc.record_of(ref) if spec is None else current_run(svc, spec)


def _print_record(record: RunRecord, as_json: bool) -> None:
    if as_json:
        echo_json(record.to_json())
        return
    from vertex_tuner.cli._render import record_table

    stderr_console().print(record_table(record))
    click.echo(record.job_name or record.run_id)


@click.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@cloud_options
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan, the request and the cost estimate; change nothing.",
)
@click.option("--no-wait", is_flag=True, help="Return as soon as the job exists.")
@click.option("--force", is_flag=True, help="Create a new job even when one matches.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Create again when the last job for this data and spec failed.",
)
@click.option(
    "--evaluate",
    "then_evaluate",
    is_flag=True,
    help="After the job succeeds, evaluate it (exit 5 when the gate fails).",
)
@click.option(
    "--promote",
    "promote_alias",
    metavar="ALIAS",
    help="After a passing evaluation, point NAME@ALIAS at the run (implies --evaluate).",
)
@click.option(
    "--timeout",
    metavar="DURATION",
    help="Stop waiting after this long (e.g. 30m, 6h; default: the spec's "
    "wait.timeout). The job keeps running.",
)
@handle_errors
def submit(
    spec_path: str,
    sandbox: bool,
    as_json: bool,
    registry: str | None,
    project: str | None,
    location: str | None,
    dry_run: bool,
    no_wait: bool,
    force: bool,
    retry_failed: bool,
    then_evaluate: bool,
    promote_alias: str | None,
    timeout: str | None,
) -> None:
    """Validate, upload and tune SPEC, wait for the job and record the run.

    One job per change: an unchanged spec and dataset reuses (or attaches to) the job that
    already has its fingerprint. With --evaluate and --promote it runs the whole loop.
    """
    from vertex_tuner import release
    from vertex_tuner.cli._progress import ConsoleObserver
    from vertex_tuner.wiring import evaluator_for, open_context, service_for

    if force and retry_failed:
        raise click.UsageError("--force and --retry-failed do not go together")
    then_evaluate = then_evaluate or promote_alias is not None
    if then_evaluate and (no_wait or dry_run):
        raise click.UsageError("--evaluate/--promote need the job to finish: drop --no-wait")
    wait_for = parse_timeout(timeout, "--timeout")
    spec = load(spec_path, sandbox)
    observer = ConsoleObserver(stderr_console())
    with open_context(
        spec=spec, sandbox=sandbox, registry=registry, project=project, location=location
    ) as ctx:
        svc = service_for(ctx, observer)
        try:
            result = svc.submit(
                spec,
                dry_run=dry_run,
                wait=not no_wait,
                force=force,
                retry_failed=retry_failed,
                timeout=wait_for,
            )
        except KeyboardInterrupt:
            observer.close()
            job = observer.record.job_name if observer.record else None
            resume = f"resume with: vertex-tuner wait {job}" if job else "nothing was created"
            _common.fail(
                f"detached; the job keeps running in Vertex ({resume})", _common.EXIT_INTERRUPTED
            )
        except Exception as exc:
            if as_json:
                _emit_failure_record(svc, exc)
            raise
        finally:
            observer.close()
        result_record = result.record
        if then_evaluate and result_record is not None:
            from vertex_tuner.cli.release import render_result

            # The held-out set uploaded with the run: no second pass over the data.
            evaluation = release.evaluate_run(evaluator_for(ctx, observer), spec, result_record)
            observer.close()
            result_record = ctx.runs.get(result_record.run_id)
            render_result(evaluation, as_json=False, report=None)
            release.check_gate(evaluation)
            if promote_alias:
                promotion = release.promote(
                    ctx.runs, spec.name, result_record.run_id, alias=promote_alias, if_gate=True
                )
                stderr_console().print(
                    f"promoted {spec.name}@{promote_alias} -> {promotion.record.run_id}",
                    markup=False,
                )
    if dry_run:
        if as_json:
            echo_json({"dry_run": True, "plan": result.plan.to_json()})
        else:
            from vertex_tuner.cli._render import plan_text

            click.echo(plan_text(result.plan))
        return
    assert result_record is not None
    if as_json:
        echo_json(
            {
                **result_record.to_json(),
                "plan": result.plan.action,
                "bytes_uploaded": result.bytes_uploaded,
                "created": result.created,
            }
        )
    else:
        _print_record(result_record, False)


def _emit_failure_record(svc: TuningService, exc: Exception) -> None:
    from vertex_tuner.errors import JobFailed, WaitTimeout

    name = getattr(exc, "job_name", None)
    if isinstance(exc, (JobFailed, WaitTimeout)) and name:
        record = svc.runs.by_job(name)
        if record is not None:
            echo_json(record.to_json())


@click.command()
@click.argument("ref", metavar="JOB|SPEC|RUN")
@cloud_options
@handle_errors
def status(
    ref: str,
    sandbox: bool,
    as_json: bool,
    registry: str | None,
    project: str | None,
    location: str | None,
) -> None:
    """Show a job's state (a spec means the job for its current data and settings)."""
    spec = spec_or_none(ref, sandbox)
    with _service(
        spec, sandbox=sandbox, registry=registry, project=project, location=location, quiet=as_json
    ) as (svc, _):
        record = _record_for_ref(svc, ref, spec)
        record = svc.refresh(record)
    _print_record(record, as_json)


@click.command()
@click.argument("ref", metavar="JOB|SPEC|RUN")
@cloud_options
@click.option(
    "--timeout",
    metavar="DURATION",
    default="6h",
    show_default=True,
    help="Stop waiting after this long; the job keeps running.",
)
@handle_errors
def wait(
    ref: str,
    sandbox: bool,
    as_json: bool,
    registry: str | None,
    project: str | None,
    location: str | None,
    timeout: str,
) -> None:
    """Follow a job to the end (exit 0 succeeded, 1 failed, 4 still running at --timeout)."""
    seconds = parse_timeout(timeout, "--timeout")
    assert seconds is not None
    spec = spec_or_none(ref, sandbox)
    with _service(spec, sandbox=sandbox, registry=registry, project=project, location=location) as (
        svc,
        observer,
    ):
        record = _record_for_ref(svc, ref, spec)
        try:
            record = svc.wait(
                record,
                timeout=seconds,
                max_dropped_fraction=spec.dataset.max_dropped_fraction if spec else None,
            )
        except KeyboardInterrupt:
            observer.close()
            _common.fail(
                f"detached; {record.job_name} keeps running (resume with: "
                f"vertex-tuner wait {record.job_name})",
                _common.EXIT_INTERRUPTED,
            )
        except Exception:
            if as_json:
                latest = svc.runs.by_job(record.job_name or "")
                if latest is not None:
                    echo_json(latest.to_json())
            raise
    _print_record(record, as_json)


@click.command()
@click.argument("ref", metavar="JOB|SPEC|RUN")
@cloud_options
@click.option("--wait", "wait_", is_flag=True, help="Poll until the job has ended.")
@handle_errors
def cancel(
    ref: str,
    sandbox: bool,
    as_json: bool,
    registry: str | None,
    project: str | None,
    location: str | None,
    wait_: bool,
) -> None:
    """Cancel a job (Vertex cancels asynchronously; --wait polls until it has ended)."""
    spec = spec_or_none(ref, sandbox)
    with _service(spec, sandbox=sandbox, registry=registry, project=project, location=location) as (
        svc,
        _,
    ):
        record = _record_for_ref(svc, ref, spec)
        job = svc.cancel(record, wait=wait_)
    if as_json:
        echo_json({"job_name": job.name, "state": job.state.value})
    else:
        click.echo(f"{job.name} {job.state.value}")


@click.command(name="list")
@cloud_options
@click.option("--spec", "spec_name", metavar="NAME", help="Only the jobs of this spec.")
@handle_errors
def list_(
    sandbox: bool,
    as_json: bool,
    registry: str | None,
    project: str | None,
    location: str | None,
    spec_name: str | None,
) -> None:
    """List vertex-tuner's tuning jobs in Vertex, newest first."""
    with _service(
        None, sandbox=sandbox, registry=registry, project=project, location=location, quiet=True
    ) as (svc, _):
        jobs = svc.list_jobs(spec_name)
    if as_json:
        echo_json({"jobs": [_job_json(j) for j in jobs]})
        return
    from vertex_tuner.cli._render import jobs_table

    if jobs:
        stderr_console().print(jobs_table(jobs))
    for job in jobs:
        click.echo(job.name)


@click.command()
@click.argument("name", required=False)
@store_options
@handle_errors
def runs(name: str | None, registry: str | None, sandbox: bool, as_json: bool) -> None:
    """List run records (all, or one spec's), newest first."""
    from vertex_tuner.wiring import open_run_store

    with open_run_store(registry, sandbox=sandbox) as store:
        records = store.list(name)
    for message in store.skipped:
        stderr_console().print(f"[yellow]warning:[/] skipped {escape(message)}")
    if as_json:
        echo_json({"runs": [r.to_json() for r in records], "skipped": list(store.skipped)})
        return
    from vertex_tuner.cli._render import runs_table

    if records:
        stderr_console().print(runs_table(records))
    else:
        stderr_console().print("no runs recorded yet")
    for record in records:
        click.echo(record.run_id)


@click.command()
@click.argument("run_id", metavar="RUN")
@store_options
@handle_errors
def show(run_id: str, registry: str | None, sandbox: bool, as_json: bool) -> None:
    """Show one run record."""
    from vertex_tuner.wiring import open_run_store

    with open_run_store(registry, sandbox=sandbox) as store:
        record = store.get(run_id)
    _print_record(record, as_json)


def _job_json(job: Job) -> dict[str, Any]:
    return {
        "name": job.name,
        "state": job.state.value,
        "sub_state": job.sub_state,
        "display_name": job.display_name,
        "labels": dict(job.labels),
        "base_model": job.base_model,
        "tuned_model": job.tuned_model,
        "endpoint": job.endpoint,
        "create_time": job.create_time,
        "end_time": job.end_time,
        "error": {"code": job.error_code, "message": job.error_message}
        if job.error_message
        else None,
    }
