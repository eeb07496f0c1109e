"""Commands that submit and follow tuning jobs: submit, status, wait, cancel, list, runs, show."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vertex_tuner.cli import _common
from vertex_tuner.cli._common import echo_json, handle_errors, stderr_console

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import Job
    from vertex_tuner.records import RunRecord
    from vertex_tuner.runstore import RunStore
    from vertex_tuner.service import TuningService
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


def _looks_like_spec(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) and Path(ref).is_file()


def _load(ref: str, sandbox: bool) -> JobSpec:
    from vertex_tuner.spec import load_spec

    return load_spec(ref, offline=sandbox)


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
    from vertex_tuner.errors import NotFoundError

    if spec is None:
        return svc.record_of(ref)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vertex-tuner-") as tmp:
        prepared = svc.prepare(spec, Path(tmp))
        plan = svc.plan(spec, prepared)
    if plan.job is None:
        raise NotFoundError(
            f"no job has tuned the current data and settings of {spec.name}",
            hint=f"submit it: vertex-tuner submit {ref}",
        )
    return svc.record_of(plan.job.name)


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
    from vertex_tuner.cli._progress import ConsoleObserver
    from vertex_tuner.spec import parse_duration
    from vertex_tuner.wiring import open_context, service_for

    if force and retry_failed:
        raise click.UsageError("--force and --retry-failed do not go together")
    then_evaluate = then_evaluate or promote_alias is not None
    if then_evaluate and (no_wait or dry_run):
        raise click.UsageError("--evaluate/--promote need the job to finish: drop --no-wait")
    try:
        wait_for = parse_duration(timeout) if timeout else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from None
    spec = _load(spec_path, sandbox)
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
            found = svc.runs.list(spec.name)
            job = found[0].job_name if found else None
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
        if then_evaluate and result.record is not None:
            from vertex_tuner.cli.evaluate import run_evaluation

            with tempfile.TemporaryDirectory(prefix="vertex-tuner-") as tmp:
                prepared = svc.prepare(spec, Path(tmp))
                holdout = prepared.holdout.path if prepared.holdout else None
                evaluation = run_evaluation(
                    ctx,
                    spec,
                    result.record,
                    against=["base", "production"],
                    holdout=holdout,
                    observer=observer,
                )
            result_record: RunRecord | None = ctx.runs.get(result.record.run_id)
            assert result_record is not None
            from vertex_tuner.cli.evaluate import check_gate, promote_run, render_result

            render_result(evaluation, as_json=False, report=None)
            check_gate(evaluation)
            if promote_alias:
                promote_run(ctx.runs, spec.name, result_record.run_id, promote_alias, if_gate=True)
                stderr_console().print(
                    f"promoted {spec.name}@{promote_alias} -> {result_record.run_id}"
                )
        else:
            result_record = result.record
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
    spec = _load(ref, sandbox) if _looks_like_spec(ref) else None
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
    from vertex_tuner.spec import parse_duration

    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from None
    spec = _load(ref, sandbox) if _looks_like_spec(ref) else None
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
    spec = _load(ref, sandbox) if _looks_like_spec(ref) else None
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
    with _store(registry, sandbox) as store:
        records = store.list(name)
    if as_json:
        echo_json({"runs": [r.to_json() for r in records]})
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
    with _store(registry, sandbox) as store:
        record = store.get(run_id)
    _print_record(record, as_json)


@contextlib.contextmanager
def _store(registry: str | None, sandbox: bool) -> Iterator[RunStore]:
    """A run store for read-only commands; only a gs:// one needs a storage backend."""
    from vertex_tuner.wiring import backends, registry_location, run_store

    location = registry_location(None, registry, sandbox=sandbox)
    if not location.startswith("gs://"):
        yield run_store(location, None)
        return
    with backends(sandbox=sandbox, project=None, location="us-central1") as b:
        yield run_store(location, b.storage)


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
