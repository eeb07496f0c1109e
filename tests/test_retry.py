"""The one retry policy: what is retried, how long it waits, when it gives up."""

from __future__ import annotations

import random

import pytest

from vertex_tuner.errors import AmbiguousCreateError, BackendError, TransientBackendError
from vertex_tuner.retry import RetryOptions, call_with_retry, is_retryable, retrying


def flaky(errors: list[Exception]):  # type: ignore[no-untyped-def]
    calls = []

    def func() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "ok"

    return func, calls


def test_retries_transient_then_succeeds() -> None:
    slept: list[float] = []
    func, calls = flaky([TransientBackendError("503", status=503)] * 3)
    assert call_with_retry(func, RetryOptions(jitter=0), sleep=slept.append) == "ok"
    assert len(calls) == 4
    assert slept == [1.0, 2.0, 4.0]


def test_backoff_is_capped_and_jittered() -> None:
    slept: list[float] = []
    func, _ = flaky([TransientBackendError("x")] * 7)
    options = RetryOptions(attempts=8, max_delay=5.0, jitter=1.0)
    retrying(options, sleep=slept.append, rng=random.Random(1))(func)
    assert all(1.0 <= s <= 6.0 for s in slept)
    assert max(slept) > 5.0  # jitter is added on top of the cap


def test_retry_after_is_honoured_and_capped() -> None:
    slept: list[float] = []
    func, _ = flaky(
        [
            TransientBackendError("429", status=429, retry_after=7.0),
            TransientBackendError("429", status=429, retry_after=999.0),
        ]
    )
    call_with_retry(func, RetryOptions(jitter=0, max_retry_after=60.0), sleep=slept.append)
    assert slept == [7.0, 60.0]


def test_permanent_and_ambiguous_errors_are_not_retried() -> None:
    for error in (BackendError("400 bad request", status=400), AmbiguousCreateError("reset")):
        func, calls = flaky([error])
        with pytest.raises(type(error)):
            call_with_retry(func, RetryOptions(), sleep=lambda s: None)
        assert len(calls) == 1
        assert not is_retryable(error)


def test_gives_up_after_attempts_with_the_last_error() -> None:
    func, calls = flaky([TransientBackendError(f"e{i}") for i in range(10)])
    with pytest.raises(TransientBackendError, match="e2"):
        call_with_retry(func, RetryOptions(attempts=3), sleep=lambda s: None)
    assert len(calls) == 3
