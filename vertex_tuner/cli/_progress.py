"""Rendering the service's progress events on stderr.

On a terminal the upload shows a progress bar and the wait a spinner with the job's sub-state
and steps; elsewhere (CI logs) each change is one plain line, so logs stay readable.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

_SUB_STATES = {
    "WAITING_FOR_QUOTA": "waiting for tuning quota",
    "WAITING_FOR_CAPACITY": "waiting for capacity",
    "PROCESSING_DATASET": "processing the dataset",
    "TUNING": "tuning",
    "POST_PROCESSING": "post-processing",
}


class ConsoleObserver:
    """An :class:`~vertex_tuner.service.Observer` that writes to a rich console."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._task: Any = None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _say(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False)

    def event(self, name: str, **data: Any) -> None:
        handler = getattr(self, "_on_" + name.replace("-", "_"), None)
        if handler is not None:
            handler(**data)

    def _on_plan(self, plan: Any) -> None:
        est = plan.estimate
        cost = f"${est.cost_usd:,.2f}" if est.cost_usd is not None else "unknown cost"
        self._say(f"plan: [bold]{plan.action}[/] — {plan.reason}")
        self._say(
            f"  fingerprint {plan.fingerprint[:16]}…  ~{est.billable_tokens:,} billable tokens "
            f"({est.epochs} epochs, estimated) ≈ {cost}"
            + (f" of a ${plan.budget_usd:,.2f} budget" if plan.budget_usd else "")
        )

    def _on_upload_start(self, uri: str, size: int) -> None:
        if self.live:
            self._progress = Progress(
                TextColumn("upload"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(uri, total=size)

    def _on_upload_progress(self, uri: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)

    def _on_upload_done(self, result: Any) -> None:
        self.close()
        if result.skipped:
            self._say(f"upload: {result.uri} already there, 0 bytes sent")
        else:
            self._say(f"upload: {result.uri} ({result.bytes_sent:,} bytes, CRC32C checked)")

    def _on_job_created(self, job: Any) -> None:
        self._say(f"created [bold]{job.name}[/]")

    def _on_job_found(self, job: Any) -> None:
        self._say(f"found {job.name} after an ambiguous create; not creating another")

    def _on_create_ambiguous(self, error: str, attempt: int) -> None:
        self._say(f"[yellow]create may or may not have happened ({error}); looking it up[/]")

    def _on_retry(self, call: str, error: str, attempt: int) -> None:
        self._say(f"[yellow]retrying {call} (attempt {attempt + 1}): {error}[/]")

    def _on_cancel_requested(self, job_name: str) -> None:
        self._say(f"cancel requested for {job_name}")

    def _on_state(self, job: Any, record: Any) -> None:
        state = job.state.value
        detail = _SUB_STATES.get(job.sub_state or "", job.sub_state or "")
        steps = ""
        if job.epochs_completed is not None or job.steps_completed is not None:
            steps = f" (epoch {job.epochs_completed or 0}, step {job.steps_completed or 0})"
        line = f"{state}{': ' + detail if detail and not job.state.is_terminal else ''}{steps}"
        if self.live and not job.state.is_terminal:
            if self._progress is None:
                self._progress = Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    TimeElapsedColumn(),
                    console=self.console,
                    transient=True,
                )
                self._progress.start()
                self._task = self._progress.add_task(line)
            else:
                self._progress.update(self._task, description=line)
            return
        self.close()
        self._say(f"{job.name.rsplit('/', 1)[-1]}: {line}")
