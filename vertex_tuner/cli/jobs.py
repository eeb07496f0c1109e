"""Commands that submit and follow tuning jobs: submit, status, wait, cancel, list, runs, show."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from vertex_tuner.cli import _common
from vertex_tuner.cli._common import echo_json, handle_errors, stderr_console
from vertex_tuner.cli.options import (
    check_alias,
    cloud_options,
    load,
    parse_timeout,
    spec_name,
    spec_or_none,
    store_options,
    writable_store,
)

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
    """A spec (the job for its current data), a job name, its id alone (as `list` and `runs`
    show it), or a run id → the run record."""
    from vertex_tuner.release import current_run

    if spec is not None:
        return current_run(svc, spec)
    if ref.isdigit():
        ref = f"projects/{svc.project}/locations/{svc.location}/tuningJobs/{ref}"
    with not_found_elsewhere(ref, sandbox=svc.sandbox):
        return svc.record_of(ref)


@contextlib.contextmanager
def not_found_elsewhere(run_id: str, *, sandbox: bool) -> Iterator[None]:
    """A run that is not in this run store but in the sandbox's (or the other way round) is
    named as such, with the option that finds it."""
    from vertex_tuner.errors import NotFoundError

    try:
        yield
    except NotFoundError as exc:
        ctx = click.get_current_context(silent=True)
        registry = ctx.params.get("registry") if ctx is not None else None
        other = _other_store_has(run_id, registry, sandbox=not sandbox)
        if other is None:
            raise
        where = "the sandbox's run store" if not sandbox else "the run store of real runs"
        flag = "add --sandbox" if not sandbox else "drop --sandbox"
        raise NotFoundError(f"{exc.message}; it is in {where} ({other})", hint=flag) from None


def _other_store_has(run_id: str, registry: str | None, *, sandbox: bool) -> str | None:
    """The other local run store's location when it holds ``run_id`` (gs:// stores: not checked)."""
    from vertex_tuner.errors import VertexTunerError
    from vertex_tuner.wiring import registry_location, run_store

    location = registry_location(None, registry, sandbox=sandbox)
    if location.startswith("gs://") or "/" in run_id:
        return None
    try:
        run_store(location, None).get(run_id)
    except VertexTunerError:
        return None
    return location


def _print_record(record: RunRecord, as_json: bool) -> None:
    if as_json:
        echo_json(record.to_json())
        return
    from vertex_tuner.cli._render import record_table

    _common.emit(record_table(record), [record.job_name or record.run_id])


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
@click.option(
    "--exact-tokens/--no-exact-tokens",
    default=True,
    show_default=True,
    help="Count the examples near the token limit, and a sample that calibrates the cost, "
    "with Vertex's countTokens (the emulator's with --sandbox) before planning.",
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
    exact_tokens: bool,
) -> None:
    """Validate, upload and tune SPEC, wait for the job and record the run.

    One job per change: an unchanged spec and dataset reuses (or attaches to) the job that
    already has its fingerprint. With --evaluate and --promote it runs the whole loop.
    """
    from vertex_tuner import api, release
    from vertex_tuner.cli._progress import ConsoleObserver
    from vertex_tuner.tuning.preparation import prepare, require_valid
    from vertex_tuner.wiring import evaluator_for, open_context, service_for

    if force and retry_failed:
        raise click.UsageError("--force and --retry-failed do not go together")
    then_evaluate = then_evaluate or promote_alias is not None
    if then_evaluate and (no_wait or dry_run):
        raise click.UsageError("--evaluate/--promote need the job to finish: drop --no-wait")
    wait_for = parse_timeout(timeout, "--timeout")
    if promote_alias is not None:
        check_alias(promote_alias, "--promote")
    spec = load(spec_path, sandbox)
    if not dry_run:
        writable_store(registry, sandbox=sandbox, spec=spec)
    # A dry run prints the plan itself, once.
    observer = ConsoleObserver(stderr_console(), show_plan=not dry_run)
    # The data is checked before the emulators or a cloud client start: a bad line fails first.
    # (the converted files live until the command ends: click closes the folder then)
    workdir = click.get_current_context().with_resource(
        tempfile.TemporaryDirectory(prefix="vertex-tuner-")
    )
    prepared = require_valid(spec, prepare(spec, Path(workdir)))
    with open_context(
        spec=spec, sandbox=sandbox, registry=registry, project=project, location=location
    ) as ctx:
        svc = service_for(ctx, observer, exact_tokens=exact_tokens)
        try:
            result = svc.submit(
                spec,
                dry_run=dry_run,
                wait=not no_wait,
                force=force,
                retry_failed=retry_failed,
                timeout=wait_for,
                prepared=prepared,
            )
        except KeyboardInterrupt:
            observer.close()
            job = observer.record.job_name if observer.record else None
            resume = f"resume with: vertex-tuner wait {job}" if job else "nothing was created"
            _common.fail(
                f"detached; the job keeps running in Vertex ({resume})", _common.EXIT_INTERRUPTED
            )
        except Exception as exc:
            _remember_failed_job(svc, exc)
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
                    ctx.runs,
                    spec.name,
                    result_record.run_id,
                    alias=promote_alias,
                    if_gate=True,
                    gate=release.spec_gate(spec),
                    generation=release.spec_generation(spec),
                    smoke=api.smoke_test_for(ctx),
                    actor=release.default_actor(),
                )
                stderr_console().print(
                    f"promoted {spec.name}@{promote_alias} -> {promotion.record.run_id}",
                    markup=False,
                )
    if dry_run:
        plan = result.plan
        if as_json:
            echo_json({"dry_run": True, "plan": plan.to_json()})
        else:
            from vertex_tuner.cli._render import plan_text

            click.echo(plan_text(plan))
        if plan.action == "create" and plan.over_budget:
            # The real submit would refuse: fail here too, so CI catches it before merge.
            where = escape(str(spec.spec_path))
            stderr_console().print(
                f"[bold red]error:[/] estimated cost ${plan.estimate.cost_usd:,.2f} is over the "
                f"budget of ${plan.budget_usd:,.2f} (budget.max_cost_usd in {where})"
            )
            sys.exit(_common.EXIT_BUDGET)
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


def _remember_failed_job(svc: TuningService, exc: Exception) -> None:
    """A failed or timed-out job's record goes into the failure's --json document."""
    from vertex_tuner.errors import JobFailed, WaitTimeout

    name = getattr(exc, "job_name", None)
    if isinstance(exc, (JobFailed, WaitTimeout)) and name:
        _common.remember_record(svc.runs.by_job(name))


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
    help="Stop waiting after this long; the job keeps running (default: the spec's "
    "wait.timeout for a SPEC, else 6h).",
)
@handle_errors
def wait(
    ref: str,
    sandbox: bool,
    as_json: bool,
    registry: str | None,
    project: str | None,
    location: str | None,
    timeout: str | None,
) -> None:
    """Follow a job to the end (exit 0 succeeded, 1 failed, 4 still running at --timeout)."""
    spec = spec_or_none(ref, sandbox)
    seconds = parse_timeout(timeout, "--timeout")
    if seconds is None:
        seconds = spec.wait.timeout if spec is not None else 6 * 3600.0
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
        except Exception as exc:
            _remember_failed_job(svc, exc)
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
        assert record.job_name is not None
        before = svc.get_job(record.job_name)
        job = before if before.state.is_terminal else svc.cancel(record, wait=wait_)
    if before.state.is_terminal:
        stderr_console().print(
            f"{escape(job.name)} had already ended {job.state.value}; nothing to cancel"
        )
    if as_json:
        echo_json(
            {
                "job_name": job.name,
                "state": job.state.value,
                "cancelled": not before.state.is_terminal,
            }
        )
    else:
        click.echo(f"{job.name} {job.state.value}")


@click.command(name="list")
@click.argument("name", required=False)
@cloud_options
@click.option("--spec", "spec_name", metavar="NAME", help="Only the jobs of this spec (as NAME).")
@handle_errors
def list_(
    name: str | None,
    sandbox: bool,
    as_json: bool,
    registry: str | None,
    project: str | None,
    location: str | None,
    spec_name: str | None,
) -> None:
    """List vertex-tuner's tuning jobs in Vertex (all, or spec NAME's), newest first."""
    if name and spec_name and name != spec_name:
        raise click.UsageError(f"NAME {name!r} and --spec {spec_name!r} disagree; give one")
    spec_name = spec_name or name
    with _service(
        None, sandbox=sandbox, registry=registry, project=project, location=location, quiet=True
    ) as (svc, _):
        jobs = svc.list_jobs(spec_name)
    if as_json:
        echo_json({"jobs": [_job_json(j) for j in jobs]})
        return
    from vertex_tuner.cli._render import jobs_table

    if not jobs:
        stderr_console().print("no vertex-tuner jobs in Vertex yet")
    _common.emit(jobs_table(jobs) if jobs else None, [job.name for job in jobs])


@click.command()
@click.argument("name", required=False)
@store_options
@handle_errors
def runs(name: str | None, registry: str | None, sandbox: bool, as_json: bool) -> None:
    """List run records (all, or one spec's: NAME or the spec's file), newest first."""
    from vertex_tuner.wiring import open_run_store

    if name is not None:
        name = spec_name(name)
    with open_run_store(registry, sandbox=sandbox) as store:
        records = store.list(name)
    for message in store.skipped:
        stderr_console().print(f"[yellow]warning:[/] skipped {escape(message)}")
    if as_json:
        echo_json({"runs": [r.to_json() for r in records], "skipped": list(store.skipped)})
        return
    from vertex_tuner.cli._render import runs_table

    if not records:
        stderr_console().print("no runs recorded yet")
    _common.emit(runs_table(records) if records else None, [r.run_id for r in records])


@click.command()
@click.argument("run_id", metavar="RUN")
@store_options
@handle_errors
def show(run_id: str, registry: str | None, sandbox: bool, as_json: bool) -> None:
    """Show one run record."""
    from vertex_tuner.wiring import open_run_store

    with (
        open_run_store(registry, sandbox=sandbox) as store,
        not_found_elsewhere(run_id, sandbox=sandbox),
    ):
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
