"""Following a tuning job to its end: a growing poll interval, a time limit, every change saved.

Every terminal state ends the wait (PARTIALLY_SUCCEEDED included, which google-genai's
``has_ended`` misses). A timeout leaves the job running in Vertex and says how to resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vertex_tuner.backends.interface import Job
from vertex_tuner.errors import WaitTimeout
from vertex_tuner.events import Observer, StateChanged
from vertex_tuner.records import RunRecord, human_seconds
from vertex_tuner.tuning.recording import update_record


@dataclass(frozen=True)
class WaitOptions:
    """How to poll: from ``poll_initial`` seconds, growing by ``poll_factor`` to ``poll_max``."""

    timeout: float = 6 * 3600.0
    poll_initial: float = 1.0
    poll_factor: float = 1.5
    poll_max: float = 60.0


def follow(
    record: RunRecord,
    options: WaitOptions,
    *,
    get_job: Callable[[str], Job],
    save: Callable[[RunRecord], None],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    observer: Observer,
) -> RunRecord:
    """Poll the record's job until it ends; the record as of its terminal state."""
    job_name = record.job_name
    assert job_name is not None
    deadline = clock() + options.timeout
    interval = options.poll_initial
    last_seen: tuple[str, str | None, int | None] | None = None
    while True:
        job = get_job(job_name)
        seen = (job.state.value, job.sub_state, job.steps_completed)
        if seen != last_seen:
            record = update_record(record, job, now=clock())
            save(record)
            observer.notify(StateChanged(job, record))
            last_seen = seen
        if job.state.is_terminal:
            return record
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitTimeout(
                f"{job_name} is still {job.state.value} after {human_seconds(options.timeout)}",
                job_name=job_name,
                hint=f"the job keeps running in Vertex; resume with `vertex-tuner wait {job_name}`",
            )
        sleep(min(interval, remaining))
        interval = min(interval * options.poll_factor, options.poll_max)
