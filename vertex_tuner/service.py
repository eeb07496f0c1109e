"""The tuning service: from a job spec to a tuned model, exactly one job per change.

:class:`TuningService` is handed its collaborators (storage, tuner, run store, clock, sleep and a
progress observer) and holds the whole submit pipeline; the CLI and the Python API both call it:

1. prepare: read, convert and validate the dataset (errors stop here; nothing is uploaded);
2. plan: fingerprint the converted data and the settings that change the result, and look the
   fingerprint up in Vertex (a job label) and in the run store;
3. budget: refuse when the estimate is over ``budget.max_cost_usd``;
4. upload, content-addressed (``datasets/<sha256>.jsonl``, created only if absent);
5. create the job under a lease, never blindly retrying an ambiguous create;
6. wait with a growing poll interval, a wall-clock limit and retries on transient errors;
7. record everything about the run, and fail when Vertex dropped too much of the data.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import orjson

from vertex_tuner import _version, models
from vertex_tuner.backends.interface import Job, JobState, TuningRequest
from vertex_tuner.errors import (
    AmbiguousCreateError,
    BudgetExceeded,
    DatasetError,
    JobFailed,
    NotFoundError,
    TransientBackendError,
    VertexTunerError,
    WaitTimeout,
)
from vertex_tuner.records import (
    DatasetRef,
    DataStatsRecord,
    ErrorRecord,
    Estimate,
    RunRecord,
)
from vertex_tuner.retry import RetryOptions, retrying

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import Storage, Tuner
    from vertex_tuner.dataset import DatasetFile, PreparedDataset
    from vertex_tuner.runstore import RunStore
    from vertex_tuner.spec import JobSpec

LABEL_SPEC = "vertex-tuner-spec"
LABEL_FINGERPRINT = "vertex-tuner-fingerprint"
LABEL_VERSION = "vertex-tuner-version"
#: Label values are at most 63 characters; 40 hex digits (160 bits) of the sha256 are plenty.
FINGERPRINT_LABEL_LENGTH = 40

T = TypeVar("T")

PlanAction = Literal["create", "reuse", "attach", "blocked"]


class Observer(Protocol):
    """Told about progress; the CLI renders it, services may log it. Must not raise."""

    def event(self, name: str, **data: Any) -> None: ...


class _SilentObserver:
    def event(self, name: str, **data: Any) -> None:
        return None


@dataclass(frozen=True)
class Plan:
    """What a submit will do, and why."""

    action: PlanAction
    reason: str
    fingerprint: str
    request: TuningRequest
    estimate: Estimate
    budget_usd: float | None
    #: (local file, gs:// URI) pairs the submit uploads (content-addressed).
    uploads: tuple[tuple[Path, str], ...]
    job: Job | None = None

    @property
    def over_budget(self) -> bool:
        cost = self.estimate.cost_usd
        return self.budget_usd is not None and cost is not None and cost > self.budget_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "fingerprint": self.fingerprint,
            "job_name": self.job.name if self.job else None,
            "request": _request_json(self.request),
            "estimate": self.estimate.model_dump(mode="json"),
            "budget_usd": self.budget_usd,
            "over_budget": self.over_budget,
            "uploads": [{"path": str(p), "uri": u} for p, u in self.uploads],
        }


@dataclass(frozen=True)
class SubmitResult:
    plan: Plan
    record: RunRecord | None
    #: Bytes actually sent to Cloud Storage by this submit.
    bytes_uploaded: int = 0
    created: bool = False


@dataclass
class WaitOptions:
    timeout: float = 6 * 3600.0
    poll_initial: float = 1.0
    poll_factor: float = 1.5
    poll_max: float = 60.0


@dataclass
class _Prepared:
    """A prepared dataset kept alive (its files live in a temporary folder)."""

    dataset: PreparedDataset
    cleanup: Callable[[], None] = field(default=lambda: None)


class TuningService:
    """Submit, follow and record Gemini tuning jobs."""

    def __init__(
        self,
        *,
        storage: Storage,
        tuner: Tuner,
        runs: RunStore,
        project: str | None = None,
        location: str | None = None,
        sandbox: bool = False,
        retry: RetryOptions | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        observer: Observer | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.storage = storage
        self.tuner = tuner
        self.runs = runs
        self.project = project
        self.location = location
        self.sandbox = sandbox
        self.retry = retry or RetryOptions()
        self.clock = clock
        self.sleep = sleep
        self.observer: Observer = observer or _SilentObserver()
        self.workdir = workdir

    # --- public API ----------------------------------------------------------------------

    def prepare(self, spec: JobSpec, workdir: Path) -> PreparedDataset:
        """Read, convert and validate the spec's data; DatasetError when it has errors."""
        from vertex_tuner.dataset import prepare

        prepared = prepare(spec, workdir)
        self.observer.event("prepared", report=prepared.report)
        if not prepared.report.ok:
            errors = prepared.report.errors
            first = errors[0]
            where = (
                f"{first.file or spec.dataset.train}:{first.line}"
                if first.line
                else (first.file or spec.dataset.train)
            )
            raise DatasetError(
                f"the dataset has {len(errors)} error(s); first: {where}: {first.message}",
                hint=f"run `vertex-tuner validate {spec.spec_path}` for the full report; "
                "nothing was uploaded",
            )
        return prepared

    def plan(
        self,
        spec: JobSpec,
        prepared: PreparedDataset,
        *,
        force: bool = False,
        retry_failed: bool = False,
    ) -> Plan:
        """Decide what a submit would do, without changing anything."""
        base_model = self.resolve_base_model(spec)
        fingerprint = compute_fingerprint(spec, prepared, base_model)
        uploads = self._uploads(spec, prepared)
        request = build_request(spec, prepared, base_model, fingerprint, uploads)
        estimate = _estimate(spec, prepared)

        def make(action: PlanAction, reason: str, job: Job | None = None) -> Plan:
            return Plan(
                action,
                reason,
                fingerprint,
                request,
                estimate,
                spec.budget.max_cost_usd,
                tuple(uploads.values()),
                job,
            )

        if force:
            return make("create", "--force: a new job even if one matches")
        jobs = self.find_jobs(fingerprint)
        live = [j for j in jobs if not j.state.is_terminal]
        if live:
            return make(
                "attach",
                f"job {live[0].name} with this fingerprint is {live[0].state.value}",
                live[0],
            )
        done = [j for j in jobs if j.state.is_success]
        if done:
            return make(
                "reuse",
                f"job {done[0].name} already tuned this data and spec",
                done[0],
            )
        if jobs and not retry_failed:
            last = jobs[0]
            return make(
                "blocked",
                f"the last job with this fingerprint, {last.name}, ended {last.state.value}",
                last,
            )
        if jobs:
            return make("create", f"--retry-failed: the last job ended {jobs[0].state.value}")
        return make("create", "no job has tuned this data and spec yet")

    def submit(
        self,
        spec: JobSpec,
        *,
        dry_run: bool = False,
        wait: bool = True,
        force: bool = False,
        retry_failed: bool = False,
        timeout: float | None = None,
    ) -> SubmitResult:
        """Run the pipeline; see the module docstring. Returns the plan and the run record."""
        with self._workdir() as workdir:
            prepared = self.prepare(spec, workdir)
            plan = self.plan(spec, prepared, force=force, retry_failed=retry_failed)
            self.observer.event("plan", plan=plan)
            if dry_run:
                return SubmitResult(plan, None)
            if plan.action == "blocked":
                assert plan.job is not None
                raise JobFailed(
                    f"{plan.reason}; not creating another job for the same data and spec",
                    job_name=plan.job.name,
                    state=plan.job.state.value,
                    hint="fix the cause (see `vertex-tuner status "
                    f"{plan.job.name}`), then submit with --retry-failed",
                )
            created = False
            sent = 0
            if plan.action == "create":
                if plan.over_budget:
                    raise BudgetExceeded(
                        f"estimated cost ${plan.estimate.cost_usd:,.2f} is over the budget of "
                        f"${plan.budget_usd:,.2f} (budget.max_cost_usd in {spec.spec_path})",
                        hint="raise budget.max_cost_usd, use fewer epochs or a smaller "
                        "dataset; nothing was uploaded",
                    )
                plan, record, sent, created = self._create_under_lease(
                    spec, prepared, plan, force=force, retry_failed=retry_failed
                )
            else:
                assert plan.job is not None
                record = self._record_for(spec, prepared, plan, plan.job)
            self.observer.event("recorded", record=record)
        if wait and not JobState(record.state).is_terminal:
            record = self.wait(
                record,
                timeout=timeout if timeout is not None else spec.wait.timeout,
                poll_max=spec.wait.poll_interval_max,
                max_dropped_fraction=spec.dataset.max_dropped_fraction,
            )
        elif JobState(record.state).is_terminal:
            self._check_outcome(record, spec.dataset.max_dropped_fraction)
        return SubmitResult(plan, record, bytes_uploaded=sent, created=created)

    def wait(
        self,
        record_or_job: RunRecord | str,
        *,
        timeout: float,
        poll_max: float = 60.0,
        max_dropped_fraction: float | None = None,
    ) -> RunRecord:
        """Follow a job until it ends, updating its record; raise on failure or timeout."""
        record = self.record_of(record_or_job)
        job_name = record.job_name
        assert job_name is not None
        options = WaitOptions(timeout=timeout, poll_max=poll_max)
        deadline = self.clock() + options.timeout
        interval = options.poll_initial
        last_seen: tuple[str, str | None, int | None] | None = None
        while True:
            job = self.get_job(job_name)
            seen = (job.state.value, job.sub_state, job.steps_completed)
            if seen != last_seen:
                record = self._update_record(record, job)
                self.runs.save(record)
                self.observer.event("state", job=job, record=record)
                last_seen = seen
            if job.state.is_terminal:
                break
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise WaitTimeout(
                    f"{record.job_name} is still {job.state.value} after "
                    f"{_human_seconds(options.timeout)}",
                    job_name=job_name,
                    hint=f"the job keeps running in Vertex; resume with `vertex-tuner wait "
                    f"{record.job_name}`",
                )
            self.sleep(min(interval, remaining))
            interval = min(interval * options.poll_factor, options.poll_max)
        threshold = max_dropped_fraction if max_dropped_fraction is not None else 0.01
        self._check_outcome(record, threshold)
        return record

    def get_job(self, name: str) -> Job:
        """Read a job, retrying transient errors."""
        return self._retrying(lambda: self.tuner.get(name), "get")

    def find_jobs(self, fingerprint: str) -> list[Job]:
        """Jobs in Vertex labelled with this fingerprint, newest first."""
        label = fingerprint[:FINGERPRINT_LABEL_LENGTH]
        return self._retrying(
            lambda: list(self.tuner.list(labels={LABEL_FINGERPRINT: label})), "list"
        )

    def list_jobs(self, spec_name: str | None = None) -> list[Job]:
        """vertex-tuner's jobs in Vertex (all of them, or one spec's), newest first."""
        labels = {LABEL_SPEC: spec_name} if spec_name else None
        jobs = self._retrying(lambda: list(self.tuner.list(labels=labels)), "list")
        if spec_name is None:
            jobs = [j for j in jobs if LABEL_FINGERPRINT in j.labels]
        return jobs

    def cancel(self, ref: RunRecord | str, *, wait: bool = False, timeout: float = 600.0) -> Job:
        """Ask Vertex to cancel; with ``wait``, poll until the job has ended."""
        record = self.record_of(ref)
        assert record.job_name is not None
        name = record.job_name
        job = self.get_job(name)
        if not job.state.is_terminal:
            self._retrying(lambda: self.tuner.cancel(name), "cancel")
            self.observer.event("cancel-requested", job_name=name)
        if not wait:
            job = self.get_job(name)
            self._save_if_known(record, job)
            return job
        with contextlib.suppress(JobFailed):
            self.wait(record, timeout=timeout, max_dropped_fraction=1.0)
        job = self.get_job(name)
        self._save_if_known(record, job)
        return job

    def resolve_base_model(self, spec: JobSpec) -> str:
        """The base model to send: an alias (``name@alias``) becomes its run's tuned model."""
        base = spec.base_model
        if models.is_tuned_model_name(base) or "@" not in base:
            return base
        name, alias = base.split("@", 1)
        entry = self.runs.aliases(name).get(alias)
        if entry is None:
            raise NotFoundError(
                f"base_model {base!r}: no alias {alias!r} for {name!r} in {self.runs.location}",
                hint=f"promote a run first: vertex-tuner promote {name} RUN --alias {alias}",
            )
        tuned = self.runs.get(entry.run_id).tuned_model
        if not tuned:
            raise NotFoundError(f"base_model {base!r}: run {entry.run_id} has no tuned model")
        return tuned

    # --- steps ---------------------------------------------------------------------------

    def _create_under_lease(
        self,
        spec: JobSpec,
        prepared: PreparedDataset,
        plan: Plan,
        *,
        force: bool,
        retry_failed: bool,
    ) -> tuple[Plan, RunRecord, int, bool]:
        lease = self.runs.acquire_lease(plan.fingerprint, ttl=900.0, wait=900.0, sleep=self.sleep)
        try:
            if not force:
                # Someone may have created the job while we waited for the lease.
                replanned = self.plan(spec, prepared, retry_failed=retry_failed)
                if replanned.action in ("attach", "reuse"):
                    assert replanned.job is not None
                    self.observer.event("plan", plan=replanned)
                    return (
                        replanned,
                        self._record_for(spec, prepared, replanned, replanned.job),
                        0,
                        False,
                    )
            sent = self._upload(plan)
            job = self._create(plan)
            record = self._record_for(spec, prepared, plan, job)
            return plan, record, sent, True
        finally:
            self.runs.release_lease(lease)

    def _uploads(self, spec: JobSpec, prepared: PreparedDataset) -> dict[str, tuple[Path, str]]:
        base = f"gs://{spec.gcp.bucket}/{spec.gcp.prefix}".rstrip("/")
        out: dict[str, tuple[Path, str]] = {}
        for role, item, folder in (
            ("train", prepared.train, "datasets"),
            ("validation", prepared.validation, "datasets"),
            ("holdout", prepared.holdout, "holdout"),
        ):
            if item is not None:
                out[role] = (item.path, f"{base}/{folder}/{item.sha256}.jsonl")
        return out

    def _upload(self, plan: Plan) -> int:
        sent = 0
        for path, uri in plan.uploads:
            self.observer.event("upload-start", uri=uri, size=path.stat().st_size)

            def progress(done: int, total: int, uri: str = uri) -> None:
                self.observer.event("upload-progress", uri=uri, done=done, total=total)

            def upload(
                path: Path = path, uri: str = uri, progress: Callable[[int, int], None] = progress
            ) -> Any:
                return self.storage.upload_file(path, uri, if_generation_match=0, progress=progress)

            # Safe to retry: the precondition makes a repeated upload a no-op.
            result = self._retrying(upload, "upload")
            sent += result.bytes_sent
            self.observer.event("upload-done", result=result)
        return sent

    def _create(self, plan: Plan) -> Job:
        """Create the job once. After an ambiguous failure, look before creating again."""
        last: VertexTunerError | None = None
        for attempt in range(1, self.retry.attempts + 1):
            try:
                job = self.tuner.create(plan.request)
                self.observer.event("job-created", job=job)
                return job
            except AmbiguousCreateError as exc:
                last = exc
                self.observer.event("create-ambiguous", error=str(exc), attempt=attempt)
                found = self.find_jobs(plan.fingerprint)
                if found:
                    self.observer.event("job-found", job=found[0])
                    return found[0]
            except TransientBackendError as exc:
                last = exc
                self.observer.event("retry", call="create", error=str(exc), attempt=attempt)
            delay = min(self.retry.max_delay, self.retry.initial_delay * 2 ** (attempt - 1))
            retry_after = getattr(last, "retry_after", None)
            self.sleep(max(delay, retry_after or 0.0))
        assert last is not None
        raise last

    def _retrying(self, func: Callable[[], T], call: str) -> T:
        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.observer.event("retry", call=call, error=str(exc), attempt=state.attempt_number)

        return retrying(self.retry, sleep=self.sleep, before_sleep=before_sleep)(func)

    # --- records -------------------------------------------------------------------------

    def record_of(self, ref: RunRecord | str) -> RunRecord:
        """A run record from a record, a job name (recorded or not) or a run id."""
        if isinstance(ref, RunRecord):
            return ref
        if "/tuningJobs/" in ref:
            found = self.runs.by_job(ref)
            if found is not None:
                return found
            job = self.get_job(ref)
            return _bare_record(job, self.clock())
        return self.runs.get(ref)

    def refresh(self, record: RunRecord) -> RunRecord:
        """Read the record's job again; save the update when the record is in the store."""
        assert record.job_name is not None
        updated = self._update_record(record, self.get_job(record.job_name))
        self._save_if_known(updated, None)
        return updated

    def _save_if_known(self, record: RunRecord, job: Job | None) -> None:
        if job is not None:
            record = self._update_record(record, job)
        with contextlib.suppress(NotFoundError):
            self.runs.get(record.run_id)
            self.runs.save(record)

    def _record_for(
        self, spec: JobSpec, prepared: PreparedDataset, plan: Plan, job: Job
    ) -> RunRecord:
        existing = self.runs.by_fingerprint(plan.fingerprint)
        if existing is not None and existing.job_name == job.name:
            record = self._update_record(existing, job)
            self.runs.save(record)
            return record
        now = _iso(self.clock())
        uris = dict(plan.uploads)

        def ref(item: DatasetFile | None) -> DatasetRef | None:
            if item is None:
                return None
            return DatasetRef(
                uri=uris.get(item.path),
                sha256=item.sha256,
                size=item.size,
                examples=item.examples,
                source=item.source,
            )

        train = ref(prepared.train)
        assert train is not None
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self.clock()))
        record = RunRecord(
            run_id=f"{spec.name}-{stamp}-{plan.fingerprint[:8]}",
            spec_name=spec.name,
            spec_path=str(spec.spec_path),
            spec_digest=spec.digest(),
            fingerprint=plan.fingerprint,
            tool_version=_version.__version__,
            git_commit=_git_commit(spec.base_dir),
            sandbox=self.sandbox,
            project=self.project,
            location=self.location,
            job_name=job.name,
            created_at=now,
            updated_at=now,
            method=spec.method,
            base_model=plan.request.base_model,
            display_name=plan.request.display_name,
            description=plan.request.description,
            labels=dict(plan.request.labels),
            hyperparameters=spec.hyperparameters.model_dump(mode="json", exclude_none=True),
            train=train,
            validation=ref(prepared.validation),
            holdout=ref(prepared.holdout),
            estimate=plan.estimate,
        )
        record = self._update_record(record, job)
        self.runs.save(record)
        return record

    def _update_record(self, record: RunRecord, job: Job) -> RunRecord:
        stats = job.data_stats
        data_stats = record.data_stats
        billed = record.billed_tokens
        dropped = record.dropped_fraction
        if stats is not None:
            data_stats = DataStatsRecord(
                example_count=stats.example_count,
                billable_tokens=stats.billable_tokens,
                tuning_step_count=stats.tuning_step_count,
                truncated_examples=stats.truncated_examples,
                truncated_example_indices=list(stats.truncated_example_indices),
                dropped_example_reasons=list(stats.dropped_example_reasons),
            )
            epochs = record.estimate.epochs if record.estimate else 1
            if stats.billable_tokens is not None:
                billed = stats.billable_tokens * epochs
            total = stats.example_count or record.train.examples
            if total:
                dropped = stats.truncated_examples / total
        error = (
            ErrorRecord(code=job.error_code, message=job.error_message)
            if job.error_message
            else None
        )
        return record.model_copy(
            update={
                "state": job.state.value,
                "sub_state": job.sub_state,
                "updated_at": _iso(self.clock()),
                "job_create_time": job.create_time or record.job_create_time,
                "job_end_time": job.end_time,
                "tuned_model": job.tuned_model or record.tuned_model,
                "endpoint": job.endpoint or record.endpoint,
                "checkpoints": [
                    {
                        "checkpoint_id": c.checkpoint_id,
                        "epoch": c.epoch,
                        "step": c.step,
                        "endpoint": c.endpoint,
                    }
                    for c in job.checkpoints
                ]
                or record.checkpoints,
                "data_stats": data_stats,
                "billed_tokens": billed,
                "dropped_fraction": dropped,
                "error": error,
            }
        )

    def _check_outcome(self, record: RunRecord, max_dropped_fraction: float) -> None:
        state = JobState(record.state)
        if not state.is_success:
            detail = f": {record.error.message}" if record.error else ""
            raise JobFailed(
                f"{record.job_name} ended {state.value}{detail}",
                job_name=record.job_name,
                state=state.value,
                hint=f"the run record is {record.run_id}; see `vertex-tuner show {record.run_id}`",
            )
        if record.dropped_fraction is not None and record.dropped_fraction > max_dropped_fraction:
            reasons = (
                "; ".join(record.data_stats.dropped_example_reasons) if (record.data_stats) else ""
            )
            raise JobFailed(
                f"Vertex dropped or truncated {record.dropped_fraction:.1%} of the training "
                f"examples (limit {max_dropped_fraction:.1%}){': ' + reasons if reasons else ''}",
                job_name=record.job_name,
                state=state.value,
                hint="shorten the long examples (`vertex-tuner validate` lists them) or raise "
                "dataset.max_dropped_fraction",
            )

    @contextlib.contextmanager
    def _workdir(self) -> Iterator[Path]:
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            yield self.workdir
            return
        with tempfile.TemporaryDirectory(prefix="vertex-tuner-") as tmp:
            yield Path(tmp)


# --- pure helpers ------------------------------------------------------------------------


def compute_fingerprint(spec: JobSpec, prepared: PreparedDataset, base_model: str) -> str:
    """sha256 of the converted data, the settings that change the result and the major version."""
    body = {
        "train": prepared.train.sha256,
        "validation": prepared.validation.sha256 if prepared.validation else None,
        "spec": {**spec.result_fields(), "base_model": base_model},
        "tool_major": _version.__version__.split(".")[0],
    }
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def build_request(
    spec: JobSpec,
    prepared: PreparedDataset,
    base_model: str,
    fingerprint: str,
    uploads: dict[str, tuple[Path, str]],
) -> TuningRequest:
    """The tuning request for a spec whose data is (or will be) at ``uploads``' URIs."""
    hp = spec.hyperparameters
    labels = {
        **spec.labels,
        LABEL_SPEC: spec.name,
        LABEL_FINGERPRINT: fingerprint[:FINGERPRINT_LABEL_LENGTH],
        LABEL_VERSION: _version.__version__.replace(".", "-"),
    }
    digests = f"train sha256:{prepared.train.sha256[:16]} ({prepared.train.examples} examples)"
    if prepared.validation is not None:
        digests += (
            f", validation sha256:{prepared.validation.sha256[:16]} "
            f"({prepared.validation.examples})"
        )
    description = f"{spec.description} [{digests}; vertex-tuner {_version.__version__}]".strip()
    validation = uploads.get("validation")
    return TuningRequest(
        method=spec.method,
        base_model=base_model,
        training_uri=uploads["train"][1],
        validation_uri=validation[1] if validation else None,
        display_name=spec.name,
        description=description,
        labels=labels,
        epochs=hp.epochs,
        learning_rate_multiplier=hp.learning_rate_multiplier,
        adapter_size=hp.adapter_size,
        beta=hp.beta,
        teacher_model=spec.distillation.teacher_model if spec.distillation else None,
        kms_key_name=spec.gcp.kms_key_name,
        service_account=spec.gcp.service_account,
        output_uri=spec.gcp.output_uri,
        export_last_checkpoint_only=hp.export_last_checkpoint_only,
    )


def _estimate(spec: JobSpec, prepared: PreparedDataset) -> Estimate:
    stats = prepared.report.stats
    epochs = int(stats.get("epochs") or spec.hyperparameters.epochs or 1)
    return Estimate(
        billable_tokens=int(stats.get("billable_tokens", 0)),
        epochs=epochs,
        cost_usd=stats.get("estimated_cost_usd"),
        price_per_million=stats.get("price_per_million"),
        prices_as_of=stats.get("prices_as_of"),
    )


def _request_json(request: TuningRequest) -> dict[str, Any]:
    from dataclasses import asdict

    out = asdict(request)
    out["labels"] = dict(request.labels)
    return {k: v for k, v in out.items() if v is not None}


def _bare_record(job: Job, now: float) -> RunRecord:
    """A record for a job vertex-tuner did not submit from here (read-only use)."""
    stamp = _iso(now)
    return RunRecord(
        run_id=job.name.rsplit("/", 1)[-1],
        spec_name=job.labels.get(LABEL_SPEC, "unknown"),
        spec_digest="",
        fingerprint=job.labels.get(LABEL_FINGERPRINT, ""),
        tool_version=_version.__version__,
        job_name=job.name,
        created_at=stamp,
        updated_at=stamp,
        method="supervised",
        base_model=job.base_model or "",
        display_name=job.display_name or "",
        train=DatasetRef(sha256="", size=0, examples=0),
        state=job.state.value,
    )


def _git_commit(folder: Path) -> str | None:
    sha = os.environ.get("GITHUB_SHA")
    if sha:
        return sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _human_seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    if seconds >= 60:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


__all__ = [
    "Observer",
    "Plan",
    "SubmitResult",
    "TuningService",
    "build_request",
    "compute_fingerprint",
]
