"""Pacing for evaluation calls: an adaptive concurrency window and a request-rate cap.

A tuned endpoint shares its base model's quota with the production traffic the model serves, so
an evaluation must yield when the quota runs short instead of starving that traffic:

- :class:`AdaptiveConcurrency` is an AIMD window, as in TCP congestion control: it halves on a
  429 (once per burst, not once per response) and grows by one after a window's worth of
  successes, never above the configured concurrency nor below one;
- :class:`RateLimiter` is a token bucket that caps requests per second (``evaluation.max_qps``);
- :class:`Pacer` runs one call under both and tells the window how it went.

The pacer paces *attempts*, so it goes inside the retry policy, not around it::

    retrying(options, sleep=sleep)(lambda: pacer.call(lambda: generator.generate(...)))

That way every attempt, retries included, takes a slot and a token (the quota counts each
request sent, so the cap must too); each 429 reaches the window the moment it arrives, not after
the retries give up; and a call waiting out its backoff holds no slot, so the shrunken window
bounds what is really in flight. Wrapped the other way round, a backoff would sit on a slot, the
rate cap would count first attempts only, and the window would hear of a 429 only once the
retries ran out.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from vertex_tuner.errors import TransientBackendError

T = TypeVar("T")

#: The HTTP status of a quota rejection; the adapters keep it on the error's ``status``.
THROTTLED_STATUS = 429


class Outcome(enum.Enum):
    """How a paced call went, as far as the window is concerned."""

    SUCCESS = "success"
    #: The server said "too many requests": shrink the window.
    THROTTLED = "throttled"
    #: Any other failure (a 5xx, a timeout, a bad request): says nothing about the quota.
    FAILURE = "failure"


def is_throttled(exc: BaseException) -> bool:
    """Whether ``exc`` is a quota rejection (a retryable error that came with HTTP 429)."""
    return isinstance(exc, TransientBackendError) and exc.status == THROTTLED_STATUS


def classify(exc: BaseException | None) -> Outcome:
    """The outcome of a call that raised ``exc`` (``None``: it returned)."""
    if exc is None:
        return Outcome.SUCCESS
    return Outcome.THROTTLED if is_throttled(exc) else Outcome.FAILURE


class Permit:
    """One slot of the window, from :meth:`AdaptiveConcurrency.acquire` until it is released.

    It carries the order in which it was handed out, so the window can tell a response to a
    request sent before its last decrease (old news) from one sent after it.
    """

    __slots__ = ("_released", "ticket")

    def __init__(self, ticket: int) -> None:
        self.ticket = ticket
        self._released = False


@dataclass(frozen=True)
class ConcurrencyStats:
    """What the window did, for a report."""

    limit: int
    maximum: int
    #: The lowest the limit fell to.
    lowest: int
    #: The most calls that were in flight at once.
    peak_in_flight: int
    #: Every throttled response, including those that did not shrink the window.
    throttled: int
    decreases: int
    increases: int


class AdaptiveConcurrency:
    """An AIMD concurrency window: halve on a 429, grow by one after ``limit`` successes.

    A burst of 429s from the same moment is one signal, not many: after a decrease, throttled
    responses to requests that were already in flight are ignored (the decrease already
    accounted for them), as TCP shrinks its window at most once per round trip. Optionally a
    ``cooldown`` (seconds on ``clock``) must also pass between two decreases. Successes count
    towards growth only from requests sent after the last decrease, so the calls that were in
    flight when the window shrank cannot undo it at once.

    ``on_change(old, new)`` is called whenever the limit changes, outside the lock (so a slow
    observer holds up no other call); calls from different threads may arrive out of order.
    """

    def __init__(
        self,
        initial: int,
        maximum: int | None = None,
        *,
        cooldown: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        maximum = initial if maximum is None else maximum
        if not 1 <= initial <= maximum:
            raise ValueError(f"need 1 <= initial <= maximum, got {initial} and {maximum}")
        if cooldown < 0:
            raise ValueError(f"cooldown must not be negative, got {cooldown}")
        self._cond = threading.Condition()
        self._maximum = maximum
        self._limit = initial
        self._cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._in_flight = 0
        self._waiting = 0
        self._next_ticket = 0
        #: Permits with a ticket below this were handed out before the last decrease.
        self._fence = 0
        self._last_decrease = -math.inf
        self._successes = 0
        self._lowest = initial
        self._peak_in_flight = 0
        self._throttled = 0
        self._decreases = 0
        self._increases = 0

    @property
    def limit(self) -> int:
        """How many calls may be in flight now."""
        with self._cond:
            return self._limit

    @property
    def maximum(self) -> int:
        """The most the limit may grow to: what a worker pool running under it should hold."""
        return self._maximum

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    @property
    def waiting(self) -> int:
        """How many threads are blocked in :meth:`acquire`."""
        with self._cond:
            return self._waiting

    def acquire(self) -> Permit:
        """A slot, waiting until fewer than ``limit`` calls are in flight."""
        with self._cond:
            self._waiting += 1
            try:
                self._cond.wait_for(self._has_room)
            finally:
                self._waiting -= 1
            return self._take()

    def try_acquire(self) -> Permit | None:
        """A slot if one is free now, else ``None``."""
        with self._cond:
            return self._take() if self._has_room() else None

    def release(self, permit: Permit, outcome: Outcome) -> None:
        """Give the slot back, and adjust the window to how the call went."""
        with self._cond:
            if permit._released:
                raise RuntimeError("this permit was already released")
            permit._released = True
            self._in_flight -= 1
            old = self._limit
            if outcome is Outcome.THROTTLED:
                self._on_throttled(permit)
            elif outcome is Outcome.SUCCESS:
                self._on_success(permit)
            new = self._limit
            self._cond.notify(max(0, new - self._in_flight))
        if new != old and self._on_change is not None:
            self._on_change(old, new)

    def stats(self) -> ConcurrencyStats:
        with self._cond:
            return ConcurrencyStats(
                limit=self._limit,
                maximum=self._maximum,
                lowest=self._lowest,
                peak_in_flight=self._peak_in_flight,
                throttled=self._throttled,
                decreases=self._decreases,
                increases=self._increases,
            )

    # --- under the lock -------------------------------------------------------------------

    def _has_room(self) -> bool:
        return self._in_flight < self._limit

    def _take(self) -> Permit:
        permit = Permit(self._next_ticket)
        self._next_ticket += 1
        self._in_flight += 1
        self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        return permit

    def _on_throttled(self, permit: Permit) -> None:
        self._throttled += 1
        self._successes = 0
        now = self._clock()
        if permit.ticket < self._fence or now - self._last_decrease < self._cooldown:
            return  # the same burst: the last decrease already answered it
        self._fence = self._next_ticket
        self._last_decrease = now
        halved = max(1, self._limit // 2)
        if halved < self._limit:
            self._limit = halved
            self._decreases += 1
            self._lowest = min(self._lowest, halved)

    def _on_success(self, permit: Permit) -> None:
        if permit.ticket < self._fence or self._limit >= self._maximum:
            return
        self._successes += 1
        if self._successes >= self._limit:
            self._limit += 1
            self._increases += 1
            self._successes = 0


class RateLimiter:
    """A token bucket: at most ``burst`` calls at once after a pause, ``qps`` per second on
    average however many threads call it; ``qps=None`` lets everything through.

    A caller reserves its token under the lock (the bucket may go into debt) and sleeps off the
    debt outside it, so callers are served in the order they arrived, no two are handed the
    same token, and nobody sleeps holding the lock.
    """

    def __init__(
        self,
        qps: float | None,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if qps is not None and not qps > 0:
            raise ValueError(f"qps must be positive (or None for no limit), got {qps}")
        capacity = max(1.0, qps or 0.0) if burst is None else burst
        if capacity < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self._qps = qps
        self._capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = capacity
        self._stamp = clock()
        self._waited = 0.0

    @property
    def qps(self) -> float | None:
        return self._qps

    @property
    def waited(self) -> float:
        """Seconds callers have spent waiting for a token, in all."""
        with self._lock:
            return self._waited

    def acquire(self) -> float:
        """Wait for a token; the seconds waited."""
        if self._qps is None:
            return 0.0
        with self._lock:
            delay = self._reserve(self._qps)
            self._waited += delay
        if delay > 0:
            self._sleep(delay)
        return delay

    def _reserve(self, qps: float) -> float:
        """Take a token (into debt if need be); how long until it is really there."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * qps)
        self._stamp = now
        self._tokens -= 1
        return max(0.0, -self._tokens / qps)


class Pacer:
    """One call at a time under the window and the rate cap: see the module's docstring for why
    it goes inside the retry policy.

    A call takes its slot first and its token second, so the requests that leave are spaced by
    the rate cap (tokens taken first would pile up behind a full window and leave together).
    """

    def __init__(
        self,
        concurrency: AdaptiveConcurrency,
        rate: RateLimiter | None = None,
        *,
        classify: Callable[[BaseException | None], Outcome] = classify,
    ) -> None:
        self.concurrency = concurrency
        self.rate = rate or RateLimiter(None)
        self._classify = classify

    @classmethod
    def build(
        cls,
        concurrency: int,
        max_qps: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_change: Callable[[int, int], None] | None = None,
    ) -> Pacer:
        """A pacer for an evaluation's settings: the window starts at and never exceeds
        ``concurrency``, and ``max_qps`` (``None``: no cap) bounds the request rate."""
        window = AdaptiveConcurrency(concurrency, clock=clock, on_change=on_change)
        return cls(window, RateLimiter(max_qps, clock=clock, sleep=sleep))

    @property
    def workers(self) -> int:
        """How many threads to run calls in: the most the window may ever let through."""
        return self.concurrency.maximum

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` under a slot and a token; its exception, if any, is re-raised."""
        permit = self.concurrency.acquire()
        outcome = Outcome.FAILURE  # what an interrupt (not an Exception) counts as
        try:
            self.rate.acquire()
            result = fn()
            outcome = self._classify(None)
            return result
        except Exception as exc:
            outcome = self._classify(exc)
            raise
        finally:
            self.concurrency.release(permit, outcome)
