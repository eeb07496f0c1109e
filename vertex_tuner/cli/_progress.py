"""Rendering the progress events of :mod:`vertex_tuner.events` on stderr.

On a terminal the upload and the evaluation show progress bars and the wait a spinner with the
job's sub-state and steps; elsewhere (CI logs) each change is one plain line, so logs stay
readable. :meth:`ConsoleObserver.notify` matches every event type; mypy checks that none is
missing (``_unhandled``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from vertex_tuner.events import (
    BatchState,
    CancelRequested,
    CreateAmbiguous,
    DatasetPrepared,
    EvaluationPlanned,
    Event,
    GenerationFailed,
    GenerationProgress,
    JobCreated,
    JobFound,
    LeaseLostNotice,
    LeaseWaiting,
    Planned,
    Recorded,
    Retried,
    StateChanged,
    Step,
    UploadDone,
    UploadProgress,
    UploadStarted,
)

if TYPE_CHECKING:
    from vertex_tuner.records import RunRecord

_SUB_STATES = {
    "WAITING_FOR_QUOTA": "waiting for tuning quota",
    "WAITING_FOR_CAPACITY": "waiting for capacity",
    "PROCESSING_DATASET": "processing the dataset",
    "TUNING": "tuning",
    "POST_PROCESSING": "post-processing",
}


def _unhandled(event: NoReturn) -> NoReturn:
    """mypy proves this is never reached: every member of Event has a case above it."""
    raise AssertionError(f"no handler for {event!r}")


class ConsoleObserver:
    """An :class:`~vertex_tuner.events.Observer` that writes to a rich console."""

    def __init__(self, console: Console, *, quiet: bool = False, show_plan: bool = True) -> None:
        self.console = console
        self.quiet = quiet
        #: False when the command prints the plan itself (a dry run), so it shows once.
        self.show_plan = show_plan
        self.live = console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._task: Any = None
        #: Evaluation progress: one bar per target while generating on a terminal.
        self._generating: dict[str, Any] = {}
        self._failed: dict[str, int] = {}
        #: The newest run record the work reported (what an interrupted command resumes).
        self.record: RunRecord | None = None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._generating = {}

    def _say(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False)

    def notify(self, event: Event) -> None:
        match event:
            case Planned():
                if self.show_plan:
                    self._planned(event)
            case UploadStarted(uri=uri, size=size):
                self._bar(
                    Progress(
                        TextColumn("upload"),
                        BarColumn(),
                        DownloadColumn(),
                        TransferSpeedColumn(),
                        console=self.console,
                        transient=True,
                    ),
                    uri,
                    size,
                )
            case UploadProgress(done=done, total=total):
                if self._progress is not None:
                    self._progress.update(self._task, completed=done, total=total)
            case UploadDone(result=result):
                self.close()
                if result.skipped:
                    self._say(f"upload: {escape(result.uri)} already there, 0 bytes sent")
                else:
                    sent = f"{result.bytes_sent:,} bytes, CRC32C checked"
                    self._say(f"upload: {escape(result.uri)} ({sent})")
            case JobCreated(job=job):
                self._say(f"created [bold]{escape(job.name)}[/]")
            case JobFound(job=job):
                self._say(
                    f"found {escape(job.name)} after an ambiguous create; not creating another"
                )
            case CreateAmbiguous(error=error):
                self._say(
                    f"[yellow]create may or may not have happened ({escape(error)}); "
                    "looking it up[/]"
                )
            case LeaseWaiting(holder=holder, seconds=seconds):
                self._say(
                    f"[yellow]waiting: another submit of this job is running: {escape(holder)}; "
                    f"if it stops renewing its lease, it is taken over in {seconds:.0f}s[/]"
                )
            case LeaseLostNotice(message=message):
                self._say(f"[yellow]{escape(message)}; nothing is created without it[/]")
            case Retried(call=call, error=error, attempt=attempt):
                self._say(
                    f"[yellow]retrying {escape(call)} (attempt {attempt + 1}): {escape(error)}[/]"
                )
            case CancelRequested(job_name=name):
                self._say(f"cancel requested for {escape(name)}")
            case StateChanged(record=record):
                self.record = record
                self._state(event)
            case GenerationProgress():
                self._generation(event)
            case GenerationFailed(target=target, index=index, error=error):
                self._failed[target] = self._failed.get(target, 0) + 1
                if not self.live:
                    self._say(
                        f"[yellow]{target}: held-out example {index} got no answer: "
                        f"{escape(error)}[/]"
                    )
            case EvaluationPlanned(summary=summary):
                self._say(f"evaluating: {escape(summary)}")
            case BatchState(target=target, job_name=name, state=state, requests=n, attached=a):
                how = "attached to" if a else "batch job"
                self._say(f"{escape(target)}: {how} {escape(name)} ({n} prompts): {escape(state)}")
            case Step(spec=spec, step=step, detail=detail):
                self.close()
                self._say(
                    f"[bold]{escape(spec)}[/]: {escape(step)}"
                    + (f" — {escape(detail)}" if detail else "")
                )
            case Recorded(record=record):
                self.record = record  # the command renders it when it is done
            case DatasetPrepared():
                pass  # the command renders the validation report itself
            case _:
                _unhandled(event)

    def _bar(self, progress: Progress, description: str, total: int) -> None:
        if not self.live:
            return
        self.close()
        self._progress = progress
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def _planned(self, plan: Planned) -> None:
        est = plan.estimate
        cost = f"${est.cost_usd:,.2f}" if est.cost_usd is not None else "unknown cost"
        self._say(f"plan: [bold]{plan.action}[/] — {escape(plan.reason)}")
        if est.calibrated_on is not None and est.billable_tokens_high is not None:
            tokens = (
                f"≈{est.billable_tokens:,} billable tokens ({est.billable_tokens_low or 0:,}–"
                f"{est.billable_tokens_high:,}, {est.epochs} epochs, calibrated on "
                f"{est.calibrated_on:,} examples counted by {escape(est.counted_by or '?')})"
            )
            if est.cost_high_usd is not None:
                cost += f" (up to ${est.cost_high_usd:,.2f})"
        else:
            tokens = f"~{est.billable_tokens:,} billable tokens ({est.epochs} epochs, estimated)"
        self._say(
            f"  fingerprint {plan.fingerprint[:16]}…  {tokens} ≈ {cost}"
            + (f" of a ${plan.budget_usd:,.2f} budget" if plan.budget_usd else "")
        )

    def _generation(self, event: GenerationProgress) -> None:
        if not self.live:
            # One line per target when it is done, so a CI log shows what was generated.
            if event.done == event.total:
                failed = self._failed.get(event.target, 0)
                done = "scored {} answers with" if event.scoring else "generated {} answers from"
                self._say(
                    f"{done.format(event.total)} {event.target}"
                    + (f" ([yellow]{failed} failed[/])" if failed else "")
                )
            return
        if self._progress is None or not self._generating:
            self.close()
            self._progress = Progress(
                TextColumn("generate {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        task = self._generating.get(event.target)
        if task is None:
            task = self._progress.add_task(event.target, total=event.total)
            self._generating[event.target] = task
        self._progress.update(task, completed=event.done, total=event.total)

    def _state(self, event: StateChanged) -> None:
        job = event.job
        state = job.state.value
        detail = _SUB_STATES.get(job.sub_state or "", job.sub_state or "")
        epochs = event.record.hyperparameters.get("epochs")
        total = int(epochs) if isinstance(epochs, int) and epochs > 0 else None
        steps = ""
        if job.epochs_completed is not None or job.steps_completed is not None:
            of = f"/{total}" if total else ""
            steps = f" (epoch {job.epochs_completed or 0}{of}, step {job.steps_completed or 0})"
        line = f"{state}{': ' + detail if detail and not job.state.is_terminal else ''}{steps}"
        if self.live and not job.state.is_terminal:
            if self._progress is None:
                # A bar over the epochs when the spec says how many; a spinner otherwise.
                self._progress = Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TimeElapsedColumn(),
                    console=self.console,
                    transient=True,
                )
                self._progress.start()
                self._task = self._progress.add_task(line, total=total)
            self._progress.update(
                self._task, description=line, completed=job.epochs_completed or 0, total=total
            )
            return
        self.close()
        self._say(f"{escape(job.name.rsplit('/', 1)[-1])}: {escape(line)}")
