"""Keeping the create lease while a submit uploads, and proving it is still held before a create.

A submit takes the lease for its fingerprint (:meth:`~vertex_tuner.runstore.RunStore.acquire_lease`)
before it uploads, and the upload can take longer than any fixed lease: 150 MB on a slow link,
or a Cloud Storage brown-out under the storage library's own retries. So :class:`HeldLease`
renews the lease from a background thread about every third of its ttl, each renewal a write
with a generation precondition. Another submit takes the lease over only after watching it stay
unchanged for the whole ttl, by its own clock.

Immediately before a create, :meth:`HeldLease.confirm` renews the lease once more, in the
calling thread. A renewal that succeeds proves the lease is ours at that moment, and that no one
can take it for at least a ttl afterwards (a taker must see the new generation unchanged for
that long). A renewal that fails, or a background renewal that could not succeed for a whole
ttl, means the lease may be someone else's: :class:`~vertex_tuner.errors.LeaseLost`, and the
submit creates nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from vertex_tuner.errors import LeaseLost, TransientBackendError

if TYPE_CHECKING:
    from vertex_tuner.runstore import Lease, RunStore


class HeldLease:
    """A lease this process holds, renewed in the background until the ``with`` block ends.

    ``clock`` is monotonic time for how long the lease went unrenewed; ``interval`` is how
    often the background thread renews it (a third of the ttl by default).
    """

    def __init__(
        self,
        runs: RunStore,
        lease: Lease,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float | None = None,
    ) -> None:
        self.runs = runs
        self.clock = clock
        self.interval = lease.ttl / 3 if interval is None else interval
        self._lease = lease
        self._renewed = clock()
        self._lost: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"lease {lease.key}", daemon=True)

    @property
    def lease(self) -> Lease:
        with self._lock:
            return self._lease

    def __enter__(self) -> HeldLease:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        if self._lost is None:
            self.runs.release_lease(self.lease)

    def renew(self) -> None:
        """Renew now. LeaseLost when the lease was taken over, or has gone unrenewed for a
        whole ttl (someone may have taken it); a transient failure within the ttl is raised."""
        with self._lock:
            if self._lost is not None:
                raise LeaseLost(self._lost)
            try:
                self._lease = self.runs.renew_lease(self._lease)
            except LeaseLost as exc:
                self._lost = exc.message
                raise
            except TransientBackendError as exc:
                if self.clock() - self._renewed >= self._lease.ttl:
                    self._lost = (
                        f"lease {self._lease.key} could not be renewed for its whole ttl of "
                        f"{self._lease.ttl:g}s ({exc.message}); another submit may hold it now"
                    )
                    raise LeaseLost(self._lost) from None
                raise
            self._renewed = self.clock()

    def confirm(self) -> None:
        """Prove the lease is still ours, right before a create: LeaseLost if it is not."""
        try:
            self.renew()
        except TransientBackendError as exc:
            raise LeaseLost(
                f"lease {self.lease.key} could not be renewed before the create "
                f"({exc.message}); not creating a job without it"
            ) from None

    def _keep(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew()
            except LeaseLost:
                return
            except TransientBackendError:
                continue  # tried again at the next interval, until the ttl runs out
