"""Pacing of evaluation calls: the AIMD window, the token bucket, and the pacer around a call."""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
import threading
import time
from collections.abc import Callable

import pytest

from vertex_tuner.errors import BackendError, TransientBackendError
from vertex_tuner.evaluation.pacing import (
    AdaptiveConcurrency,
    Outcome,
    Pacer,
    Permit,
    RateLimiter,
    classify,
    is_throttled,
)
from vertex_tuner.retry import RetryOptions, retrying

#: The longest any test waits for another thread; only a guard against a hang, never a measure.
GUARD = 10.0


class FakeClock:
    """A clock that moves only when slept on (or told to)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def throttled(message: str = "429 RESOURCE_EXHAUSTED") -> TransientBackendError:
    return TransientBackendError(message, status=429, retry_after=1.0)


def take(window: AdaptiveConcurrency, n: int) -> list[Permit]:
    permits = [window.try_acquire() for _ in range(n)]
    assert all(p is not None for p in permits), "the window was full before it should be"
    return [p for p in permits if p is not None]


def wait_until(condition: Callable[[], bool]) -> None:
    """Poll until ``condition`` holds; fail (not hang) if it never does."""
    deadline = time.monotonic() + GUARD
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("gave up waiting for another thread")
        time.sleep(0.001)


# --- classifying ----------------------------------------------------------------------------


def test_only_a_transient_429_counts_as_throttled() -> None:
    assert is_throttled(throttled())
    assert classify(throttled()) is Outcome.THROTTLED
    assert classify(TransientBackendError("503 UNAVAILABLE", status=503)) is Outcome.FAILURE
    assert classify(TransientBackendError("connection reset")) is Outcome.FAILURE
    assert classify(BackendError("400 INVALID_ARGUMENT", status=400)) is Outcome.FAILURE
    assert classify(ValueError("boom")) is Outcome.FAILURE
    assert classify(None) is Outcome.SUCCESS


# --- the window -----------------------------------------------------------------------------


def test_a_burst_of_429s_halves_the_limit_once() -> None:
    window = AdaptiveConcurrency(8)
    for permit in take(window, 8):
        window.release(permit, Outcome.THROTTLED)
    stats = window.stats()
    assert (stats.limit, stats.decreases, stats.throttled) == (4, 1, 8)


def test_a_429_to_a_request_sent_after_the_decrease_halves_again() -> None:
    window = AdaptiveConcurrency(8)
    window.release(take(window, 1)[0], Outcome.THROTTLED)
    assert window.limit == 4
    window.release(take(window, 1)[0], Outcome.THROTTLED)
    assert window.limit == 2


def test_the_limit_never_falls_below_one() -> None:
    window = AdaptiveConcurrency(5)
    for _ in range(10):
        window.release(take(window, 1)[0], Outcome.THROTTLED)
    stats = window.stats()
    assert (stats.limit, stats.lowest, stats.decreases) == (1, 1, 2)  # 5 -> 2 -> 1
    assert stats.throttled == 10


def test_cooldown_on_the_clock_spaces_decreases() -> None:
    clock = FakeClock()
    window = AdaptiveConcurrency(8, cooldown=30.0, clock=clock)
    window.release(take(window, 1)[0], Outcome.THROTTLED)
    clock.now = 29.0
    window.release(take(window, 1)[0], Outcome.THROTTLED)  # sent after the decrease, too soon
    assert window.limit == 4
    clock.now = 30.0
    window.release(take(window, 1)[0], Outcome.THROTTLED)
    assert window.limit == 2


def test_the_limit_grows_by_one_per_limit_successes_up_to_the_maximum() -> None:
    window = AdaptiveConcurrency(2, maximum=4)
    limits = []
    for _ in range(12):
        window.release(take(window, 1)[0], Outcome.SUCCESS)
        limits.append(window.limit)
    assert limits == [2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4]
    assert window.stats().increases == 2


def test_successes_in_flight_at_a_decrease_do_not_undo_it() -> None:
    window = AdaptiveConcurrency(4, maximum=8)
    first, *rest = take(window, 4)
    window.release(first, Outcome.THROTTLED)
    for permit in rest:
        window.release(permit, Outcome.SUCCESS)
    assert window.limit == 2
    for permit in take(window, 2):
        window.release(permit, Outcome.SUCCESS)
    assert window.limit == 3


def test_a_429_restarts_the_run_of_successes() -> None:
    clock = FakeClock()
    window = AdaptiveConcurrency(4, maximum=8, cooldown=60.0, clock=clock)
    window.release(take(window, 1)[0], Outcome.THROTTLED)
    assert window.limit == 2
    for outcome in (Outcome.SUCCESS, Outcome.THROTTLED, Outcome.SUCCESS):  # 429 in the cooldown
        window.release(take(window, 1)[0], outcome)
    assert window.limit == 2
    window.release(take(window, 1)[0], Outcome.SUCCESS)
    assert window.limit == 3


def test_other_failures_neither_shrink_nor_grow_the_window() -> None:
    window = AdaptiveConcurrency(2, maximum=4)
    for _ in range(10):
        window.release(take(window, 1)[0], Outcome.FAILURE)
    stats = window.stats()
    assert (stats.limit, stats.decreases, stats.increases) == (2, 0, 0)


@pytest.mark.parametrize("seed", range(5))
def test_limit_stays_within_one_and_the_maximum(seed: int) -> None:
    rng = random.Random(seed)
    window = AdaptiveConcurrency(3, maximum=6)
    held: list[Permit] = []
    seen = set()
    for _ in range(2000):
        permit = window.try_acquire() if rng.random() < 0.5 else None
        if permit is not None:
            held.append(permit)
        elif held:
            outcome = rng.choices(list(Outcome), weights=[0.85, 0.1, 0.05])[0]
            window.release(held.pop(rng.randrange(len(held))), outcome)
        assert 1 <= window.limit <= 6
        assert window.in_flight == len(held)
        seen.add(window.limit)
    stats = window.stats()
    assert stats.peak_in_flight <= 6
    assert stats.decreases > 0 and stats.increases > 0  # the walk did exercise both ways
    assert min(seen) == stats.lowest


def test_a_full_window_refuses_and_a_shrunk_one_waits_for_enough_releases() -> None:
    window = AdaptiveConcurrency(4)
    permits = take(window, 4)
    assert window.try_acquire() is None
    window.release(permits.pop(), Outcome.THROTTLED)  # limit 2, three still in flight
    assert window.try_acquire() is None
    window.release(permits.pop(), Outcome.SUCCESS)
    assert window.try_acquire() is None
    window.release(permits.pop(), Outcome.SUCCESS)
    assert window.try_acquire() is not None


def test_acquire_blocks_at_the_limit_and_wakes_on_release() -> None:
    window = AdaptiveConcurrency(1)
    held = take(window, 1)[0]
    got = threading.Event()

    def worker() -> None:
        window.release(window.acquire(), Outcome.SUCCESS)
        got.set()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    wait_until(lambda: window.waiting == 1)
    assert not got.is_set()  # blocked: the only slot is held
    window.release(held, Outcome.SUCCESS)
    assert got.wait(GUARD)
    thread.join(GUARD)
    assert window.in_flight == 0


def test_a_permit_is_released_once() -> None:
    window = AdaptiveConcurrency(2)
    permit = take(window, 1)[0]
    window.release(permit, Outcome.SUCCESS)
    with pytest.raises(RuntimeError, match="already released"):
        window.release(permit, Outcome.SUCCESS)
    assert window.in_flight == 0


def test_limit_changes_are_reported() -> None:
    changes: list[tuple[int, int]] = []
    window = AdaptiveConcurrency(4, on_change=lambda old, new: changes.append((old, new)))
    window.release(take(window, 1)[0], Outcome.THROTTLED)
    for _ in range(2):
        window.release(take(window, 1)[0], Outcome.SUCCESS)
    assert changes == [(4, 2), (2, 3)]


@pytest.mark.parametrize(("initial", "maximum"), [(0, 4), (5, 4), (-1, None)])
def test_window_bounds_are_checked(initial: int, maximum: int | None) -> None:
    with pytest.raises(ValueError):
        AdaptiveConcurrency(initial, maximum)


# --- the rate limiter -----------------------------------------------------------------------


def test_long_run_rate_is_the_cap() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20.0, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        limiter.acquire()
    assert 1000 / clock.now == pytest.approx(20.0, rel=0.03)
    assert limiter.waited == pytest.approx(clock.now)


def test_long_run_rate_is_the_cap_when_callers_also_work() -> None:
    clock = FakeClock()
    rng = random.Random(7)
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        limiter.acquire()
        clock.now += rng.uniform(0.0, 0.15)  # 0.075 s on average: faster than the cap allows
    assert 1000 / clock.now == pytest.approx(10.0, rel=0.03)


def test_many_threads_share_one_rate() -> None:
    clock = FakeClock()  # frozen: each caller is told how long until its own token
    limiter = RateLimiter(50.0, clock=clock, sleep=lambda _: None)
    delays: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(125):
            delay = limiter.acquire()
            with lock:
                delays.append(delay)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD)
    assert len(delays) == 1000
    delays.sort()
    assert delays[:50] == [0.0] * 50  # the burst
    gaps = [b - a for a, b in itertools.pairwise(delays[49:])]
    assert all(gap == pytest.approx(1 / 50) for gap in gaps)  # no token handed out twice
    assert 1000 / delays[-1] == pytest.approx(50.0, rel=0.06)


def test_a_pause_refills_at_most_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5.0, burst=3, clock=clock, sleep=clock.sleep)
    clock.now = 1000.0
    assert [limiter.acquire() for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.2)]


def test_a_rate_below_one_per_second_still_lets_one_through() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.5, clock=clock, sleep=clock.sleep)
    assert limiter.acquire() == 0.0
    assert limiter.acquire() == pytest.approx(2.0)


def test_no_rate_means_no_waiting() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    assert [limiter.acquire() for _ in range(1000)] == [0.0] * 1000
    assert clock.slept == []
    assert limiter.qps is None


@pytest.mark.parametrize("qps", [0.0, -1.0])
def test_a_rate_must_be_positive(qps: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(qps)


# --- the pacer ------------------------------------------------------------------------------


def test_pacer_returns_the_result_and_counts_a_success() -> None:
    pacer = Pacer(AdaptiveConcurrency(1, maximum=2))
    assert pacer.call(lambda: "answer") == "answer"
    assert (pacer.concurrency.limit, pacer.concurrency.in_flight) == (2, 0)


def test_pacer_reraises_a_429_and_shrinks_the_window() -> None:
    pacer = Pacer(AdaptiveConcurrency(4))
    error = throttled()

    def fail() -> str:
        raise error

    with pytest.raises(TransientBackendError) as raised:
        pacer.call(fail)
    assert raised.value is error
    stats = pacer.concurrency.stats()
    assert (stats.limit, stats.throttled) == (2, 1)
    assert pacer.concurrency.in_flight == 0


@pytest.mark.parametrize(
    "error", [TransientBackendError("503", status=503), BackendError("400", status=400), KeyError()]
)
def test_pacer_reraises_other_errors_as_failures(error: Exception) -> None:
    pacer = Pacer(AdaptiveConcurrency(4))

    def fail() -> str:
        raise error

    with pytest.raises(type(error)):
        pacer.call(fail)
    stats = pacer.concurrency.stats()
    assert (stats.limit, stats.throttled, stats.decreases) == (4, 0, 0)
    assert pacer.concurrency.in_flight == 0


def test_an_interrupt_gives_the_slot_back() -> None:
    pacer = Pacer(AdaptiveConcurrency(1))

    def interrupted() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pacer.call(interrupted)
    assert pacer.concurrency.try_acquire() is not None


def test_a_call_holds_its_slot_while_it_waits_for_a_token() -> None:
    clock = FakeClock()
    window = AdaptiveConcurrency(2)
    in_flight_while_waiting: list[int] = []

    def sleep(seconds: float) -> None:
        in_flight_while_waiting.append(window.in_flight)
        clock.sleep(seconds)

    pacer = Pacer(window, RateLimiter(1.0, clock=clock, sleep=sleep))
    for _ in range(3):
        pacer.call(lambda: None)
    assert in_flight_while_waiting == [1, 1]
    assert clock.now == pytest.approx(2.0)


def test_under_the_retry_policy_each_429_shrinks_and_backoff_holds_no_slot() -> None:
    pacer = Pacer.build(4)
    errors = [throttled(), throttled()]
    in_flight_while_backing_off: list[int] = []

    def generate() -> str:
        if errors:
            raise errors.pop(0)
        return "answer"

    def sleep(_: float) -> None:
        in_flight_while_backing_off.append(pacer.concurrency.in_flight)

    result = retrying(RetryOptions(jitter=0), sleep=sleep)(lambda: pacer.call(generate))
    assert result == "answer"
    assert in_flight_while_backing_off == [0, 0]
    stats = pacer.concurrency.stats()
    assert (stats.lowest, stats.throttled, stats.decreases) == (1, 2, 2)  # 4 -> 2 -> 1
    assert (stats.limit, stats.increases) == (2, 1)  # one success at 1 earns the next slot


def test_build_sizes_the_pool_and_caps_the_rate() -> None:
    pacer = Pacer.build(6, max_qps=2.5)
    assert (pacer.workers, pacer.concurrency.limit, pacer.rate.qps) == (6, 6, 2.5)
    assert Pacer.build(3).rate.qps is None


def test_many_threads_never_exceed_the_window() -> None:
    pacer = Pacer.build(4)
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    rng = random.Random(3)
    plan = [rng.random() < 0.1 for _ in range(400)]

    def work(fails: bool) -> None:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.0005)  # let the calls overlap
        with lock:
            state["now"] -= 1
        if fails:
            raise throttled()

    def worker(jobs: list[bool]) -> None:
        for fails in jobs:
            with contextlib.suppress(TransientBackendError):
                pacer.call(functools.partial(work, fails))

    threads = [threading.Thread(target=worker, args=(plan[i::8],), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD)
    assert not any(thread.is_alive() for thread in threads)
    stats = pacer.concurrency.stats()
    assert 1 <= state["peak"] <= 4
    assert stats.peak_in_flight <= 4
    assert stats.throttled == sum(plan)
    assert pacer.concurrency.in_flight == 0
