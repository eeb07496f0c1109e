"""The one retry policy: which failures are retried, how long to wait, when to give up.

Every retried call in vertex-tuner goes through :func:`retrying`. Waits grow exponentially with
jitter up to a cap and honour a server's ``Retry-After``. The sleep function is injected, so
tests pass a no-op and never wait on real time.

A create is not idempotent on Vertex, so :func:`is_retryable` never retries one that failed
ambiguously: the tuning service paces its create attempts with this same policy, but looks for
the job after an ambiguous failure and only tries again when it is not there
(``TuningService._create``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from vertex_tuner.errors import AmbiguousCreateError, TransientBackendError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryOptions:
    """How hard to try. The defaults ride out a few minutes of a flaky network."""

    attempts: int = 8
    initial_delay: float = 1.0
    max_delay: float = 30.0
    jitter: float = 1.0
    #: Longest ``Retry-After`` we honour; a larger one is capped.
    max_retry_after: float = 120.0


def is_retryable(exc: BaseException) -> bool:
    """Transient failures of calls that are safe to repeat."""
    return isinstance(exc, TransientBackendError) and not isinstance(exc, AmbiguousCreateError)


class _Wait(tenacity.wait.wait_base):
    """Exponential backoff with jitter, but never shorter than the server's Retry-After."""

    def __init__(self, options: RetryOptions, rng: random.Random) -> None:
        self.options = options
        self.rng = rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        n = retry_state.attempt_number
        backoff = min(self.options.max_delay, self.options.initial_delay * 2 ** (n - 1))
        delay = backoff + self.rng.uniform(0, self.options.jitter)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, TransientBackendError) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self.options.max_retry_after))
        return float(delay)


def retrying(
    options: RetryOptions,
    *,
    sleep: Callable[[float], None] = time.sleep,
    retry_if: Callable[[BaseException], bool] = is_retryable,
    rng: random.Random | None = None,
    before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
) -> tenacity.Retrying:
    """A tenacity ``Retrying`` for the policy; the last error is re-raised when it gives up."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(options.attempts),
        wait=_Wait(options, rng or random.Random()),
        retry=tenacity.retry_if_exception(retry_if),
        sleep=sleep,
        reraise=True,
        before_sleep=before_sleep,
    )


def call_with_retry(
    func: Callable[[], T],
    options: RetryOptions,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``func`` under the retry policy."""
    return retrying(options, sleep=sleep)(func)
