"""The tuning service: from a job spec to a tuned model, exactly one job per change.

:class:`TuningService` is handed its collaborators (storage, tuner, run store, clock, sleep and a
progress observer) and holds the submit pipeline; the release loop, the CLI and Python callers
all call it:

1. prepare: read, convert and validate the dataset (errors stop here; nothing is uploaded);
2. plan: fingerprint the converted data and the settings that change the result, and look the
   fingerprint up in Vertex (a job label);
3. budget: refuse when the estimate is over ``budget.max_cost_usd``;
4. upload, content-addressed (``datasets/<sha256>.jsonl``, created only if absent);
5. create the job under a lease, never blindly retrying an ambiguous create;
6. follow it (:mod:`.follow`) and record everything about the run (:mod:`.recording`), failing
   when Vertex dropped too much of the data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vertex_tuner import models
from vertex_tuner.backends.interface import Job, JobState
from vertex_tuner.dataset.validate import count_exactly
from vertex_tuner.errors import (
    AmbiguousCreateError,
    BudgetExceeded,
    CreateUnconfirmed,
    JobFailed,
    LeaseHeld,
    LeaseLost,
    NotFoundError,
    TransientBackendError,
)
from vertex_tuner.events import (
    CancelRequested,
    CreateAmbiguous,
    DatasetPrepared,
    JobCreated,
    JobFound,
    LeaseLostNotice,
    LeaseWaiting,
    Observer,
    Recorded,
    Retried,
    SilentObserver,
    UploadDone,
    UploadProgress,
    UploadStarted,
)
from vertex_tuner.records import RunRecord
from vertex_tuner.retry import RetryOptions, is_retryable, retrying
from vertex_tuner.runstore import DEFAULT_LEASE_TTL
from vertex_tuner.tuning import plan as planning
from vertex_tuner.tuning.follow import WaitOptions, follow
from vertex_tuner.tuning.lease import HeldLease
from vertex_tuner.tuning.plan import Plan, PlanAction, SubmitResult
from vertex_tuner.tuning.preparation import prepare, require_valid
from vertex_tuner.tuning.recording import (
    UNCONFIRMED,
    bare_record,
    check_outcome,
    new_record,
    pending_record,
    update_record,
)
from vertex_tuner.tuning.rewards import require_passing
from vertex_tuner.vocabulary import FINGERPRINT_LABEL_LENGTH, LABEL_FINGERPRINT, LABEL_SPEC

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import RewardValidator, Storage, Tuner
    from vertex_tuner.dataset import PreparedDataset
    from vertex_tuner.dataset.tokens import TokenCounter
    from vertex_tuner.runstore import RunStore
    from vertex_tuner.spec import JobSpec

T = TypeVar("T")

#: How long a submit waits for another submit's create lease (renewed while that one works).
LEASE_WAIT_SECONDS = 900.0
#: How many times a submit that lost its lease waits for it again before giving up.
LEASE_ROUNDS = 3


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
        lease_ttl: float = DEFAULT_LEASE_TTL,
        monotonic: Callable[[], float] = time.monotonic,
        counter: TokenCounter | None = None,
        rewards: RewardValidator | None = None,
    ) -> None:
        self.storage = storage
        self.tuner = tuner
        self.runs = runs
        self.project = project
        self.location = location
        #: Stamped on the records this service writes, so sandbox runs are never taken for real.
        self.sandbox = sandbox
        self.retry = retry or RetryOptions()
        self.clock = clock
        self.sleep = sleep
        self.observer: Observer = observer or SilentObserver()
        self.workdir = workdir
        #: How long the create lease lasts unrenewed (a dead submit blocks the next this long).
        self.lease_ttl = lease_ttl
        #: Times how long the lease went unrenewed (monotonic, so clock steps cannot fool it).
        self.monotonic = monotonic
        #: Counts near-limit examples and a calibration sample exactly before a create (Vertex's
        #: countTokens); None: estimates only.
        self.counter = counter
        #: Scores a reinforcement spec's reward test cases before a create (Vertex's
        #: validateReinforcementTuningReward); None: code rewards run locally only.
        self.rewards = rewards

    # --- public API ----------------------------------------------------------------------

    def prepare(self, spec: JobSpec, workdir: Path) -> PreparedDataset:
        """Read, convert and validate the spec's data; DatasetError when it has errors."""
        prepared = prepare(spec, workdir)
        self.observer.notify(DatasetPrepared(prepared.report))
        return require_valid(spec, prepared)

    def plan(
        self,
        spec: JobSpec,
        prepared: PreparedDataset,
        *,
        force: bool = False,
        retry_failed: bool = False,
    ) -> Plan:
        """Decide what a submit would do, without changing anything."""
        base_model, parent_run_id = self.resolve_base(spec)
        fingerprint = planning.compute_fingerprint(spec, prepared, base_model)
        uploads = planning.uploads_for(spec, prepared)
        request = planning.build_request(spec, prepared, base_model, fingerprint, uploads)
        jobs = [] if force else self.find_jobs(fingerprint)
        action, reason, job = planning.decide(jobs, force=force, retry_failed=retry_failed)
        return Plan(
            action,
            reason,
            fingerprint,
            request,
            planning.estimate(spec, prepared),
            spec.budget.max_cost_usd,
            tuple(uploads.values()),
            job,
            parent_run_id,
        )

    def submit(
        self,
        spec: JobSpec,
        *,
        dry_run: bool = False,
        wait: bool = True,
        force: bool = False,
        retry_failed: bool = False,
        timeout: float | None = None,
        prepared: PreparedDataset | None = None,
    ) -> SubmitResult:
        """Run the pipeline; see the module docstring. Returns the plan and the run record.

        ``prepared``: the spec's data, already validated (:func:`.preparation.prepare`), when
        the caller checked it before starting anything (its files must live until this
        returns); otherwise it is prepared here.
        """
        with self._workdir() as workdir:
            if prepared is None:
                prepared = self.prepare(spec, workdir)
            else:
                require_valid(spec, prepared)
            plan = self.plan(spec, prepared, force=force, retry_failed=retry_failed)
            if plan.action == "create" and self.counter is not None:
                # Only data that will be tuned is counted exactly: an unchanged submit (reuse,
                # attach) asks Vertex for nothing.
                prepared = require_valid(spec, count_exactly(prepared, self.counter))
                plan = dataclasses.replace(plan, estimate=planning.estimate(spec, prepared))
            self.observer.notify(plan.event())
            if dry_run:
                return SubmitResult(plan, None)
            if plan.action == "blocked":
                assert plan.job is not None
                raise _blocked(plan.job, plan.reason)
            created = False
            sent = 0
            if plan.action == "create":
                if plan.over_budget:
                    raise BudgetExceeded(
                        f"estimated cost {_cost_words(plan)} is over the budget of "
                        f"${plan.budget_usd:,.2f} (budget.max_cost_usd in {spec.spec_path})",
                        hint="raise budget.max_cost_usd, use fewer epochs or a smaller "
                        "dataset; nothing was uploaded",
                    )
                if spec.method == "reinforcement":
                    # A reward that scores its own test cases wrongly would waste every step.
                    require_passing(spec, self.rewards)
                plan, record, sent, created = self._create_under_lease(
                    spec, prepared, plan, force=force, retry_failed=retry_failed
                )
            else:
                assert plan.job is not None
                record = self.record_for(spec, prepared, plan, plan.job)
            self.observer.notify(Recorded(record))
        if wait and not JobState.parse(record.state).is_terminal:
            record = self.wait(
                record,
                timeout=timeout if timeout is not None else spec.wait.timeout,
                poll_max=spec.wait.poll_interval_max,
                max_dropped_fraction=spec.dataset.max_dropped_fraction,
            )
        elif JobState.parse(record.state).is_terminal:
            check_outcome(record, spec.dataset.max_dropped_fraction)
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
        _job_of(record)
        record = follow(
            record,
            WaitOptions(timeout=timeout, poll_max=poll_max),
            get_job=self.get_job,
            save=self.runs.save,
            clock=self.clock,
            sleep=self.sleep,
            observer=self.observer,
        )
        check_outcome(record, max_dropped_fraction)
        return record

    def get_job(self, name: str) -> Job:
        """Read a job, retrying transient errors."""
        return self._retrying(lambda: self.tuner.get(name), "get")

    def find_jobs(self, fingerprint: str) -> list[Job]:
        """Jobs in Vertex labelled with this fingerprint, newest first.

        The label filter sent to Vertex only narrows the listing (``tuningJobs.list`` documents
        ``filter`` as no more than "the standard list filter"); the labels of each job returned
        are checked here, so an unrelated job is never attached to or reused.
        """
        label = fingerprint[:FINGERPRINT_LABEL_LENGTH]
        wanted = {LABEL_FINGERPRINT: label}
        jobs = self._retrying(lambda: list(self.tuner.list(labels=wanted)), "list")
        return [j for j in jobs if _has_labels(j, wanted)]

    def list_jobs(self, spec_name: str | None = None) -> list[Job]:
        """vertex-tuner's jobs in Vertex (all of them, or one spec's), newest first.

        As in :meth:`find_jobs`, the server's label filter is trusted only to narrow the list.
        """
        labels = {LABEL_SPEC: spec_name} if spec_name else None
        jobs = self._retrying(lambda: list(self.tuner.list(labels=labels)), "list")
        if labels is None:
            return [j for j in jobs if LABEL_FINGERPRINT in j.labels]
        return [j for j in jobs if _has_labels(j, labels)]

    def cancel(self, ref: RunRecord | str, *, wait: bool = False, timeout: float = 600.0) -> Job:
        """Ask Vertex to cancel; with ``wait``, poll until the job has ended."""
        record = self.record_of(ref)
        name = _job_of(record)
        job = self.get_job(name)
        if not job.state.is_terminal:
            self._retrying(lambda: self.tuner.cancel(name), "cancel")
            self.observer.notify(CancelRequested(name))
        if wait:
            with contextlib.suppress(JobFailed):
                self.wait(record, timeout=timeout, max_dropped_fraction=1.0)
        job = self.get_job(name)
        self._save_if_known(update_record(record, job, now=self.clock()))
        return job

    def resolve_base_model(self, spec: JobSpec) -> str:
        """The base model to send: an alias (``name@alias``) becomes its run's tuned model."""
        return self.resolve_base(spec)[0]

    def resolve_base(self, spec: JobSpec) -> tuple[str, str | None]:
        """The base model to send, and the run it comes from when it is an alias's."""
        base = spec.base_model
        if models.is_tuned_model_name(base) or "@" not in base:
            return base, None
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
        return tuned, entry.run_id

    # --- records -------------------------------------------------------------------------

    def record_of(self, ref: RunRecord | str) -> RunRecord:
        """A run record from a record, a job name (recorded or not) or a run id."""
        if isinstance(ref, RunRecord):
            return ref
        if "/tuningJobs/" in ref:
            found = self.runs.by_job(ref)
            if found is not None:
                return found
            return bare_record(self.get_job(ref), self.clock())
        return self.runs.get(ref)

    def refresh(self, record: RunRecord) -> RunRecord:
        """Read the record's job again; save the update when the record is in the store."""
        updated = update_record(record, self.get_job(_job_of(record)), now=self.clock())
        self._save_if_known(updated)
        return updated

    def _save_if_known(self, record: RunRecord) -> None:
        with contextlib.suppress(NotFoundError):
            self.runs.get(record.run_id)
            self.runs.save(record)

    def record_for(
        self, spec: JobSpec, prepared: PreparedDataset, plan: Plan, job: Job
    ) -> RunRecord:
        """The run record of ``job``, made for this spec's data, saved.

        One job has one record: a record that already names the job is updated, a bare one
        (written by ``status JOB`` for a job it did not know) gets the spec's details under
        its run id, and so does the pending record of a create whose answer was lost.
        """
        existing = self.runs.by_job(job.name)
        pending_id = None
        if existing is None:
            candidate = self.runs.by_fingerprint(plan.fingerprint)
            if candidate is not None and candidate.job_name == job.name:
                existing = candidate
            else:
                pending_id = _pending_run_id(candidate)
        if existing is not None and existing.spec_digest:
            record = update_record(existing, job, now=self.clock())
        else:
            record = new_record(
                spec,
                prepared,
                plan,
                job,
                now=self.clock(),
                sandbox=self.sandbox,
                project=self.project,
                location=self.location,
                run_id=existing.run_id if existing is not None else pending_id,
            )
        self.runs.save(record)
        return record

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
        """Upload and create under the fingerprint's lease (see :mod:`.lease`).

        A submit that loses its lease creates nothing: it waits for the lease again and looks
        once more, finding the job the new holder created (``--force`` stops instead: it would
        create a second job on purpose).
        """
        for _ in range(LEASE_ROUNDS):
            try:
                lease = self.runs.acquire_lease(
                    plan.fingerprint,
                    ttl=self.lease_ttl,
                    wait=LEASE_WAIT_SECONDS,
                    sleep=self.sleep,
                    on_wait=lambda holder, left: self.observer.notify(
                        LeaseWaiting(holder.describe(), left)
                    ),
                )
            except LeaseHeld as held_elsewhere:
                raise LeaseHeld(
                    held_elsewhere.message,
                    hint=f"see what it is doing: vertex-tuner status {spec.spec_path}; then "
                    f"submit again ({held_elsewhere.hint})",
                ) from None
            try:
                with HeldLease(self.runs, lease, clock=self.monotonic) as held:
                    return self._create_held(
                        spec, prepared, plan, held, force=force, retry_failed=retry_failed
                    )
            except LeaseLost as lost:
                self.observer.notify(LeaseLostNotice(lost.message))
                if force:
                    raise LeaseLost(
                        f"{lost.message}; --force does not create a job without the lease",
                        hint=f"run `vertex-tuner status {spec.spec_path}` to see what the "
                        "other submit created",
                    ) from None
        raise LeaseLost(
            f"lost the lease for {plan.fingerprint[:12]} {LEASE_ROUNDS} times; no job created",
            hint=f"run `vertex-tuner status {spec.spec_path}`, then submit again",
        )

    def _create_held(
        self,
        spec: JobSpec,
        prepared: PreparedDataset,
        plan: Plan,
        held: HeldLease,
        *,
        force: bool,
        retry_failed: bool,
    ) -> tuple[Plan, RunRecord, int, bool]:
        if not force:
            # Someone may have created the job while we waited for the lease.
            found = self._existing(
                spec, prepared, plan, self.find_jobs(plan.fingerprint), retry_failed=retry_failed
            )
            if found is not None:
                return found
        sent = self._upload(plan)
        # The upload may have taken long: prove the lease is still ours, then look again.
        held.confirm()
        known = self.find_jobs(plan.fingerprint)
        if not force:
            found = self._existing(spec, prepared, plan, known, retry_failed=retry_failed)
            if found is not None:
                return found[0], found[1], sent, False
        try:
            job = self._create(plan, held, known={j.name for j in known})
        except CreateUnconfirmed as exc:
            record = self._pending_record(spec, prepared, plan)
            raise CreateUnconfirmed(
                f"{exc.message}; recorded as run {record.run_id} "
                f"({record.state}), so nothing will create a second job for it",
                hint=f"submit again once Vertex answers: vertex-tuner submit {spec.spec_path} "
                "(it looks for the job first and records it under the same run)",
            ) from None
        return plan, self.record_for(spec, prepared, plan, job), sent, True

    def _existing(
        self,
        spec: JobSpec,
        prepared: PreparedDataset,
        plan: Plan,
        jobs: list[Job],
        *,
        retry_failed: bool,
    ) -> tuple[Plan, RunRecord, int, bool] | None:
        """The job another submit made for this fingerprint, recorded; None to go on creating."""
        action, reason, job = planning.decide(jobs, force=False, retry_failed=retry_failed)
        if action == "create":
            return None
        assert job is not None
        if action == "blocked":
            raise _blocked(job, reason)
        replanned = dataclasses.replace(plan, action=action, reason=reason, job=job)
        self.observer.notify(replanned.event())
        return replanned, self.record_for(spec, prepared, replanned, job), 0, False

    def _pending_record(self, spec: JobSpec, prepared: PreparedDataset, plan: Plan) -> RunRecord:
        """A record for a create whose answer was lost and whose job could not be looked up."""
        record = pending_record(
            spec,
            prepared,
            plan,
            now=self.clock(),
            sandbox=self.sandbox,
            project=self.project,
            location=self.location,
            run_id=_pending_run_id(self.runs.by_fingerprint(plan.fingerprint)),
        )
        self.runs.save(record)
        self.observer.notify(Recorded(record))
        return record

    def _upload(self, plan: Plan) -> int:
        sent = 0
        for path, uri in plan.uploads:
            self.observer.notify(UploadStarted(uri, path.stat().st_size))

            def progress(done: int, total: int, uri: str = uri) -> None:
                self.observer.notify(UploadProgress(uri, done, total))

            def upload(
                path: Path = path, uri: str = uri, progress: Callable[[int, int], None] = progress
            ) -> Any:
                return self.storage.upload_file(path, uri, if_generation_match=0, progress=progress)

            # Safe to retry: the precondition makes a repeated upload a no-op.
            result = self._retrying(upload, "upload")
            sent += result.bytes_sent
            self.observer.notify(UploadDone(result))
        return sent

    def _create(self, plan: Plan, held: HeldLease, *, known: set[str]) -> Job:
        """Create the job once. After an ambiguous failure, look before creating again.

        The one retry policy paces the attempts; only the look-up decides whether another
        create is safe, so an ambiguous failure is retried only when the job is not found.
        The look-up accepts only a job that was not there before this create (``known``), so
        ``--force`` and ``--retry-failed`` never take an older job for the new one. Each
        attempt is made under a freshly confirmed lease. When the look-up itself fails, the
        create is not tried again: :class:`CreateUnconfirmed`.
        """
        attempts = 0

        def once() -> Job:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                held.confirm()
            try:
                job = self.tuner.create(plan.request)
            except AmbiguousCreateError as exc:
                self.observer.notify(CreateAmbiguous(str(exc), attempts))
                try:
                    found = [j for j in self.find_jobs(plan.fingerprint) if j.name not in known]
                except TransientBackendError as lookup:
                    raise CreateUnconfirmed(
                        f"Vertex did not answer the create ({exc.message}) and looking the job "
                        f"up failed too ({lookup.message}): a job labelled "
                        f"{LABEL_FINGERPRINT}={plan.fingerprint[:FINGERPRINT_LABEL_LENGTH]} "
                        "may exist"
                    ) from None
                if found:
                    self.observer.notify(JobFound(found[0]))
                    return found[0]
                raise
            self.observer.notify(JobCreated(job))
            return job

        return self._retrying(
            once, "create", retry_if=lambda exc: isinstance(exc, TransientBackendError)
        )

    def _retrying(
        self,
        func: Callable[[], T],
        call: str,
        *,
        retry_if: Callable[[BaseException], bool] | None = None,
    ) -> T:
        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.observer.notify(Retried(call, str(exc), state.attempt_number))

        return retrying(
            self.retry,
            sleep=self.sleep,
            before_sleep=before_sleep,
            retry_if=retry_if or is_retryable,
        )(func)

    @contextlib.contextmanager
    def _workdir(self) -> Iterator[Path]:
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            yield self.workdir
            return
        with tempfile.TemporaryDirectory(prefix="vertex-tuner-") as tmp:
            yield Path(tmp)


def _pending_run_id(record: RunRecord | None) -> str | None:
    """The run id of a pending record (a create whose answer was lost), else None."""
    if record is not None and record.job_name is None and record.state == UNCONFIRMED:
        return record.run_id
    return None


def _cost_words(plan: Plan) -> str:
    """The cost the budget was held to: the upper end of a calibrated estimate."""
    estimate = plan.estimate
    if estimate.cost_high_usd is not None:
        central = estimate.cost_usd or 0
        return f"up to ${estimate.cost_high_usd:,.2f} (calibrated; central ${central:,.2f})"
    return f"${estimate.cost_usd or 0:,.2f}"


def _job_of(record: RunRecord) -> str:
    """The record's job; NotFoundError for a pending record, whose create was never confirmed."""
    if record.job_name is None:
        where = record.spec_path or "SPEC"
        raise NotFoundError(
            f"run {record.run_id} has no job yet ({record.state}): its create was never confirmed",
            hint=f"submit it again to find or create its job: vertex-tuner submit {where}",
        )
    return record.job_name


def _blocked(job: Job, reason: str) -> JobFailed:
    return JobFailed(
        f"{reason}; not creating another job for the same data and spec",
        job_name=job.name,
        state=job.state.value,
        hint=f"fix the cause (see `vertex-tuner status {job.name}`), then submit with "
        "--retry-failed",
    )


def _has_labels(job: Job, wanted: dict[str, str]) -> bool:
    """Whether the job's own labels carry every wanted key with exactly that value."""
    return all(job.labels.get(key) == value for key, value in wanted.items())


__all__ = ["Plan", "PlanAction", "SubmitResult", "TuningService"]
