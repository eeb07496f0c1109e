"""The run store: run records, submit leases and aliases, on a local folder or in Cloud Storage.

Both kinds sit on one small key-value interface with compare-and-swap by generation
(:class:`BlobStore`), so the record, lease and alias logic is written once:

- :class:`LocalBlobStore` keeps files under a folder; a ``flock`` on the folder makes the
  compare-and-swap atomic across processes on one machine, and ``os.replace`` makes every write
  all-or-nothing.
- :class:`StorageBlobStore` keeps objects under ``gs://bucket/prefix`` and relies on Cloud
  Storage's ``ifGenerationMatch`` preconditions, so CI runners on different machines share it.

Layout under the root (version 2)::

    layout.json                       {"version": 2}: every record below has its pointers
    runs/<run_id>.json                one record per job
    fingerprints/<fp>.json            {"run_id", "job_name"} of the newest run with that fingerprint
    jobs/<job resource name>.json     {"run_id"} of the run of a tuning job, e.g.
                                      jobs/projects/p/locations/l/tuningJobs/123.json
    specs/<spec_name>/<run_id>.json   {"run_id", "created_at"}: one spec's runs, one per run
    evaluations/<run_id>/<id>.json    every evaluation of a run, each written once, never replaced
    leases/<fp>.json                  a short lease held while one submit creates the job
    aliases/<name>.json               {"aliases": {alias: {"run_id": …, "history": […]}}}

Why: a shared ``gs://`` store keeps every run of every spec, thousands after a year of weekly
retraining, and ``status JOB``, ``wait JOB`` and ``runs NAME`` used to read all of them, one
after another. With the pointers a job is found by key (two reads), and one spec's runs by
listing one prefix and reading only those records, in parallel. The cost follows what is asked
for, not the size of the store. In the ``jobs/`` and ``specs/`` keys every segment of a name is
percent-encoded (dots too), so no job or spec name can make a ``..`` segment, leave its folder,
or list as part of another (``specs/support/`` is not a prefix of ``specs/support-tone/``).

:meth:`RunStore.save` writes the pointers before the record, so a record in a version-2 store
implies its pointers: a process that has read a record does not write them again (Cloud Storage
allows about one write per second to one object, and every write is a request). A pointer left
by a crash before its record names a run that does not exist, and is passed over.

Stores written before version 2 have records and fingerprint pointers but no ``layout.json``.
Reading one, ``by_job`` and ``list(name)`` fall back to reading every record, as before, and
then write the missing pointers and the marker (best effort: without write access the store is
simply read the old way), so the full read happens once per store. ``save`` does the same before
writing to such a store; on an empty store it writes the marker first, so a store created by this
version never needs the full read. (A version before this one writing into a version-2 store
adds records without pointers, which ``by_job`` and ``list(name)`` do not see.)

Cloud Storage also allows only about one write per second to one object, and one submit saves
its record several times within milliseconds. So :meth:`RunStore.save` does not write a record
whose content, ``updated_at`` aside, is what this instance last wrote or read for the run, and
idempotent writes (records, pointers: no precondition) are retried on a
:class:`~vertex_tuner.errors.TransientBackendError` under the one retry policy
(:func:`vertex_tuner.retry.retrying`). Writes with a precondition (leases, aliases, the marker)
keep their compare-and-swap loops and are retried too; a lease write whose answer was lost is
recognised by reading the lease back and finding its own owner id in it.

A damaged record met while listing is left out and described in :attr:`RunStore.skipped`, so one
bad file does not stop ``runs`` for every spec; asked for by id (``get``) it is still an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import math
import os
import socket
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote

import orjson

from vertex_tuner.errors import (
    LeaseHeld,
    LeaseLost,
    NotFoundError,
    PreconditionFailed,
    TransientBackendError,
    VertexTunerError,
)
from vertex_tuner.records import RunRecord, human_seconds, iso
from vertex_tuner.retry import RetryOptions, retrying

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import Storage

#: The marker of the version-2 layout (see the module docstring).
LAYOUT_KEY = "layout.json"
LAYOUT_VERSION = 2
#: Records read at once when listing. The Google clients' HTTP session keeps 10 connections per
#: host (requests' default pool); more threads than that would open and discard connections.
READ_WORKERS = 10

T = TypeVar("T")


class BlobStore(ABC):
    """Keys to bytes, each with a generation that changes on every write."""

    #: Where the store is, for messages.
    location: str

    @abstractmethod
    def read(self, key: str) -> tuple[bytes, int] | None:
        """The value and its generation, or None."""

    @abstractmethod
    def write(self, key: str, data: bytes, *, if_generation_match: int | None) -> int:
        """Write when the precondition holds (0: must not exist; None: always)."""

    @abstractmethod
    def delete(self, key: str, *, if_generation_match: int | None = None) -> None:
        """Delete when the precondition holds; a missing key is not an error."""

    @abstractmethod
    def keys(self, prefix: str) -> Iterator[str]:
        """Keys starting with ``prefix``."""


class LocalBlobStore(BlobStore):
    """Files under a folder. The generation of a file is kept in a small sidecar."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _path(self, key: str) -> Path:
        if ".." in key.split("/") or key.startswith("/"):
            raise ValueError(f"invalid key {key!r}")
        return self.root / key

    def _generation(self, path: Path) -> int:
        gen = path.with_name(path.name + ".gen")
        try:
            return int(gen.read_text())
        except (FileNotFoundError, ValueError):
            return 1 if path.exists() else 0

    def read(self, key: str) -> tuple[bytes, int] | None:
        path = self._path(key)
        with self._locked():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as exc:  # a folder where the file should be, no permission, ...
                raise VertexTunerError(
                    f"cannot read {path}: {exc.strerror or exc}",
                    hint="restore the file, or fix its permissions; vertex-tuner will not "
                    "overwrite it",
                ) from None
            return data, self._generation(path)

    def write(self, key: str, data: bytes, *, if_generation_match: int | None) -> int:
        path = self._path(key)
        with self._locked():
            current = self._generation(path) if path.exists() else 0
            if if_generation_match is not None and current != if_generation_match:
                raise PreconditionFailed(
                    f"{self.location}/{key} changed (generation {current}, "
                    f"expected {if_generation_match})"
                )
            # Like Cloud Storage, never reuse a generation, even after a delete.
            generation = max(current + 1, time.time_ns())
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, data)
            _atomic_write(path.with_name(path.name + ".gen"), str(generation).encode())
            return generation

    def delete(self, key: str, *, if_generation_match: int | None = None) -> None:
        path = self._path(key)
        with self._locked():
            if not path.exists():
                return
            if if_generation_match is not None and self._generation(path) != if_generation_match:
                raise PreconditionFailed(f"{self.location}/{key} changed; not deleted")
            path.unlink()
            path.with_name(path.name + ".gen").unlink(missing_ok=True)

    def keys(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.endswith(".gen") and path.name != ".lock":
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StorageBlobStore(BlobStore):
    """Objects under a ``gs://bucket/prefix`` URI, through a :class:`Storage` backend."""

    def __init__(self, storage: Storage, base_uri: str) -> None:
        self.storage = storage
        self.base = base_uri.rstrip("/")
        self.location = self.base

    def read(self, key: str) -> tuple[bytes, int] | None:
        try:
            return self.storage.read(f"{self.base}/{key}")
        except NotFoundError:
            return None

    def write(self, key: str, data: bytes, *, if_generation_match: int | None) -> int:
        return self.storage.write(
            f"{self.base}/{key}", data, if_generation_match=if_generation_match
        )

    def delete(self, key: str, *, if_generation_match: int | None = None) -> None:
        self.storage.delete(f"{self.base}/{key}", if_generation_match=if_generation_match)

    def keys(self, prefix: str) -> Iterator[str]:
        start = len(self.base) + 1
        for info in self.storage.list(f"{self.base}/{prefix}"):
            yield info.uri[start:]


#: How long a lease lasts without renewal when nothing else is said. The holder renews it
#: about every third of that; a holder that died blocks the next submit for about this long.
DEFAULT_LEASE_TTL = 60.0
#: The range a holder's declared ttl is clamped to when read back.
LEASE_TTL_RANGE = (1.0, 3600.0)
#: How often a waiter looks at a held lease.
LEASE_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Lease:
    """A lease this process holds, as of its last write."""

    key: str
    owner: str
    generation: int
    ttl: float = DEFAULT_LEASE_TTL
    renewals: int = 0
    #: When it was acquired (this process's clock), written with every renewal so waiters
    #: always hear since when it has been held.
    acquired: float | None = None


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease, as its holder wrote it: for messages, never compared with our clock."""

    owner: str | None
    host: str | None
    pid: int | None
    acquired_at: str | None
    renewed_at: str | None
    ttl: float
    generation: int

    @classmethod
    def read(cls, data: bytes, generation: int) -> LeaseHolder:
        """A lease file; a damaged or older one reads as an unknown holder with the default
        ttl (it is then taken over like any other once it has not changed for that long)."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            doc = {}

        def text(key: str) -> str | None:
            value = doc.get(key)
            return value if isinstance(value, str) else None

        ttl = doc.get("ttl")
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not math.isfinite(ttl):
            ttl = DEFAULT_LEASE_TTL
        low, high = LEASE_TTL_RANGE
        pid = doc.get("pid")
        return cls(
            owner=text("owner"),
            host=text("host"),
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            acquired_at=text("acquired_at"),
            renewed_at=text("renewed_at"),
            ttl=min(max(float(ttl), low), high),
            generation=generation,
        )

    def describe(self) -> str:
        """``process 4242 on runner-7 (since 12:00:01Z, last renewed 12:03:01Z)``."""
        who = f"process {self.pid}" if self.pid is not None else "a process"
        if self.host:
            who += f" on {self.host}"
        times = [f"since {self.acquired_at}"] if self.acquired_at else []
        if self.renewed_at and self.renewed_at != self.acquired_at:
            times.append(f"last renewed {self.renewed_at}")
        return f"{who} ({', '.join(times)})" if times else who


@dataclass(frozen=True)
class AliasEntry:
    alias: str
    run_id: str
    set_at: str
    history: tuple[dict[str, Any], ...]
    #: The run's checkpoint the alias serves (its own endpoint); None: the run's final model.
    checkpoint: str | None = None


class RunStore:
    """Records, leases and aliases on a :class:`BlobStore`.

    ``skipped`` holds a message for each damaged record the last :meth:`list` (or a full read
    of an old store) passed over, so one bad file does not hide every other run.
    """

    def __init__(
        self,
        blobs: BlobStore,
        *,
        clock: Callable[[], float] = time.time,
        workers: int = READ_WORKERS,
        retry: RetryOptions | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.blobs = blobs
        self.clock = clock
        self.workers = max(1, workers)
        self.retry = retry or RetryOptions()
        self.sleep = sleep
        self.skipped: list[str] = []
        # Whether layout.json is known to be there: checked once per instance, never again.
        self._indexed = False
        # An old store this instance could not migrate (no write access): do not try again.
        self._migration_failed = False
        # Pointer key -> bytes this instance wrote or read, so an identical write is skipped.
        self._known: dict[str, bytes] = {}
        # Run id -> the pointers of the version of its record this instance read or wrote,
        # which (pointers being written first) are in the store when the layout is version 2.
        self._stored: dict[str, dict[str, bytes]] = {}
        # Run id -> the content (``updated_at`` aside) of the record this instance last wrote or
        # read, so a save that changes nothing else makes no write.
        self._contents: dict[str, bytes] = {}

    @property
    def location(self) -> str:
        return self.blobs.location

    def _retried(self, func: Callable[[], T]) -> T:
        """``func`` under the one retry policy: transient failures are tried again."""
        return retrying(self.retry, sleep=self.sleep)(func)

    def _put(self, key: str, data: bytes) -> int:
        """An idempotent write (no precondition): safe to repeat, so retried."""
        return self._retried(lambda: self.blobs.write(key, data, if_generation_match=None))

    # --- records -------------------------------------------------------------------------

    def save(self, record: RunRecord) -> None:
        """Write a record and its pointers (last writer wins: one process owns a run while it
        runs). Pointers already in the store with the same content are not written again, nor
        is a record whose content, ``updated_at`` aside, is what this instance last wrote or
        read for the run (the stored one keeps its older ``updated_at``)."""
        indexed = self._ensure_indexed()
        pointers = _pointers(record)
        content = _content(record)
        if indexed and self._contents.get(record.run_id) == content:
            return
        stored = self._stored.get(record.run_id, {}) if indexed else {}
        for key, data in pointers.items():
            if self._known.get(key) == data or stored.get(key) == data:
                continue
            self._put(key, data)
            self._known[key] = data
        body = orjson.dumps(record.to_json(), option=orjson.OPT_INDENT_2)
        self._put(_run_key(record.run_id), body)
        self._stored[record.run_id] = pointers
        self._contents[record.run_id] = content

    def get(self, run_id: str) -> RunRecord:
        found = self.blobs.read(_run_key(run_id))
        if found is None:
            raise NotFoundError(
                f"no run {run_id!r} in {self.location}", hint="list runs with: vertex-tuner runs"
            )
        return self._remember(_parse_record(found[0], run_id))

    def by_fingerprint(self, fingerprint: str) -> RunRecord | None:
        key = _fingerprint_key(fingerprint)
        found = self.blobs.read(key)
        if found is None:
            return None
        self._known[key] = found[0]
        try:
            return self.get(_pointed_run(found[0], f"{self.location}/{key}"))
        except NotFoundError:
            return None

    def _scan(self, keys: Sequence[str]) -> list[RunRecord]:
        """The records under ``keys``, read in parallel, newest first.

        Ties keep the order of the keys under ``runs/``, as the one-by-one reading had it.
        """
        keys = sorted(keys)
        found: Iterable[tuple[bytes, int] | None] = ()
        if keys:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(keys))) as pool:
                found = list(pool.map(self.blobs.read, keys))
        records = []
        for key, item in zip(keys, found, strict=True):
            if item is None:
                continue  # deleted since it was listed, or a pointer left by a crash
            try:
                records.append(self._remember(_parse_record(item[0], f"{self.location}/{key}")))
            except VertexTunerError as exc:
                self.skipped.append(exc.message)
        records.sort(key=lambda r: r.created_at, reverse=True)
        return records

    def _remember(self, record: RunRecord) -> RunRecord:
        self._stored[record.run_id] = _pointers(record)
        self._contents[record.run_id] = _content(record)
        return record

    def by_job(self, job_name: str) -> RunRecord | None:
        """The run of a tuning job: two reads in a version-2 store."""
        if not job_name:
            return None
        key = _job_key(job_name)
        found = self.blobs.read(key)
        if found is not None:
            self._known[key] = found[0]
            with contextlib.suppress(NotFoundError):
                record = self.get(_pointed_run(found[0], f"{self.location}/{key}"))
                if record.job_name == job_name:
                    return record
        if self._has_marker():
            return None
        # An old store: look the slow way, and write the pointers so it is the last time.
        self.skipped = []
        keys = list(self.blobs.keys("runs/"))
        records = self._scan(keys)
        self._migrate(records, keys)
        return next((r for r in records if r.job_name == job_name), None)

    def list(self, spec_name: str | None = None, *, newest: int | None = None) -> list[RunRecord]:
        """Records, newest first; damaged ones are left out and named in ``skipped``.

        ``newest``: read only that many of one spec's records, those whose run ids sort last
        (a run id starts with its creation time), so a trend costs the same after a year of
        runs as after a month.
        """
        self.skipped = []
        if spec_name is not None and self._has_marker():
            prefix = _spec_prefix(spec_name)
            run_ids = [
                unquote(key[len(prefix) :].removesuffix(".json"))
                for key in self.blobs.keys(prefix)
                if "/" not in key[len(prefix) :]
            ]
            if newest is not None:
                run_ids = sorted(run_ids)[-newest:] if newest > 0 else []
            records = self._scan([_run_key(run_id) for run_id in run_ids])
        else:
            keys = list(self.blobs.keys("runs/"))
            records = self._scan(keys)
            if spec_name is not None:
                self._migrate(records, keys)
        if spec_name is not None:
            records = [r for r in records if r.spec_name == spec_name]
        return records

    # --- layout --------------------------------------------------------------------------

    def _has_marker(self) -> bool:
        if not self._indexed:
            self._indexed = self.blobs.read(LAYOUT_KEY) is not None
        return self._indexed

    def _write_marker(self) -> None:
        body = orjson.dumps({"version": LAYOUT_VERSION})
        with contextlib.suppress(PreconditionFailed):  # another process wrote it first
            # A retry after a lost answer meets our own marker: the same 412, the same outcome.
            self._retried(lambda: self.blobs.write(LAYOUT_KEY, body, if_generation_match=0))
        self._indexed = True

    def _ensure_indexed(self) -> bool:
        """Before a write: make the store version 2 (mark an empty one, migrate an old one)."""
        if self._indexed:
            return True
        if self._migration_failed:
            return False  # tried once in this process; the next one tries again
        if self._has_marker():
            return True
        keys = list(self.blobs.keys("runs/"))
        if not keys:
            self._write_marker()
            return True
        self.skipped = []
        self._migrate(self._scan(keys), keys)
        return self._indexed

    def _migrate(self, records: Sequence[RunRecord], keys: Sequence[str]) -> None:
        """Write the job and spec pointers of an old store's records, then the marker.

        ``records`` is every readable record under ``keys`` (all of ``runs/``), newest first, so
        a job recorded twice points at its newest run, as the full read found it. Pointers are
        only created, never replaced: one already there was written by a save, which knows
        better. Best effort: a store this process may not write is read the old way.
        """
        if self._indexed or self._migration_failed or not keys:
            return
        wanted: dict[str, bytes] = {}
        for record in records:
            for key, data in _pointers(record).items():
                if not key.startswith(_FINGERPRINTS):  # old stores have those already
                    wanted.setdefault(key, data)

        def create(item: tuple[str, bytes]) -> None:
            with contextlib.suppress(PreconditionFailed):  # there already, maybe from a retry
                self._retried(lambda: self.blobs.write(item[0], item[1], if_generation_match=0))

        try:
            if wanted:
                with ThreadPoolExecutor(max_workers=min(self.workers, len(wanted))) as pool:
                    list(pool.map(create, wanted.items()))
            self._write_marker()
        except (VertexTunerError, OSError):
            self._migration_failed = True

    # --- verdicts ------------------------------------------------------------------------

    def add_evaluation(self, run_id: str, doc: dict[str, Any]) -> str:
        """Keep one evaluation of a run, never overwritten: a new object each time, written
        only if absent. Returns its id (``<created_at>-<random>``), which sorts by time."""
        stamp = str(doc.get("created_at") or iso(self.clock())).replace(":", "")
        verdict_id = f"{stamp}-{uuid.uuid4().hex[:8]}"
        key = _evaluation_key(run_id, verdict_id)
        body = orjson.dumps({**doc, "id": verdict_id}, option=orjson.OPT_INDENT_2)
        self._write_cas(key, body, 0, _equal_to(body))
        return verdict_id

    def evaluation(self, run_id: str, verdict_id: str) -> dict[str, Any]:
        """One stored evaluation of a run, by id."""
        found = self._retried(lambda: self.blobs.read(_evaluation_key(run_id, verdict_id)))
        if found is None:
            raise NotFoundError(f"run {run_id} has no evaluation {verdict_id} in {self.location}")
        doc = orjson.loads(found[0])
        if not isinstance(doc, dict):
            raise VertexTunerError(f"evaluation {verdict_id} of run {run_id} is damaged")
        return doc

    # --- leases --------------------------------------------------------------------------

    def acquire_lease(
        self,
        name: str,
        *,
        ttl: float = DEFAULT_LEASE_TTL,
        wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Callable[[LeaseHolder, float], None] | None = None,
    ) -> Lease:
        """Hold ``leases/<name>`` so that one submit at a time creates a job for a fingerprint.

        The holder renews its lease (:meth:`renew_lease`), each renewal a new generation. A
        lease is taken over only when this process has watched it stay at one generation for
        the holder's ``ttl``, timed by this process's own clock: no clock of another machine
        is ever compared with ours, so a runner whose clock is ahead cannot take a live lease.
        The take-over is a write with a generation precondition, so two waiters cannot both
        take it. ``on_wait(holder, seconds)`` is called when the lease is found held (again
        when its holder changes), with the holder's own description and how long, unrenewed,
        it would still be kept. Waits at most ``wait`` seconds, then raises.
        """
        key = f"leases/{name}.json"
        owner = uuid.uuid4().hex
        start = self.clock()
        seen: tuple[int, float] | None = None  # (generation, when we first saw it)
        told: str | None = None
        while True:
            stamp = self.clock()
            body = _lease_body(owner, ttl, 0, stamp, stamp)
            current = self._retried(lambda: self.blobs.read(key))
            try:
                if current is None:
                    generation = self._write_lease(key, body, owner, 0)
                    return Lease(key, owner, generation, ttl, acquired=stamp)
                now = self.clock()
                if seen is None or seen[0] != current[1]:
                    seen = (current[1], now)
                holder = LeaseHolder.read(current[0], current[1])
                if now - seen[1] >= holder.ttl:
                    generation = self._write_lease(key, body, owner, current[1])
                    return Lease(key, owner, generation, ttl, acquired=stamp)
            except PreconditionFailed:
                seen = None  # someone else got there first; look again
                continue
            if on_wait is not None and holder.owner != told:
                told = holder.owner
                on_wait(holder, holder.ttl - (now - seen[1]))
            if now - start >= wait:
                raise LeaseHeld(
                    f"another submit of the same job is still running: {holder.describe()} "
                    f"holds lease {key} in {self.location} (waited {human_seconds(wait)})",
                    hint="wait for it to finish, then submit again; a holder that died loses "
                    f"the lease {human_seconds(holder.ttl)} after its last renewal",
                )
            sleep(min(LEASE_POLL_SECONDS, max(0.0, holder.ttl - (now - seen[1]))) or 0.01)

    def renew_lease(self, lease: Lease) -> Lease:
        """Write the lease again, at the generation we last wrote: proof that it is still ours.

        :class:`LeaseLost` when someone else took it over; a transient failure (after the
        retries) is raised as it is, and the caller decides how long it can go unrenewed.
        """
        body = _lease_body(lease.owner, lease.ttl, lease.renewals + 1, self.clock(), lease.acquired)
        try:
            generation = self._write_cas(lease.key, body, lease.generation, _equal_to(body))
        except PreconditionFailed:
            raise LeaseLost(
                f"lease {lease.key} in {self.location} was taken over by another submit"
            ) from None
        return dataclasses.replace(lease, generation=generation, renewals=lease.renewals + 1)

    def _write_lease(self, key: str, body: bytes, owner: str, generation: int) -> int:
        """Write a lease; one found holding ``owner`` after a lost answer is ours."""
        return self._write_cas(key, body, generation, lambda data: _lease_owner(data) == owner)

    def _write_cas(
        self, key: str, body: bytes, generation: int, is_ours: Callable[[bytes], bool]
    ) -> int:
        """Write with a generation precondition, retrying transient failures with care.

        A write can happen while its answer is lost (a 503 or a timeout after the server acted);
        the retry then fails its precondition on our own object. So after a transient failure
        the object is read back, and one that ``is_ours`` is taken as written, at its
        generation. Raises :class:`PreconditionFailed` when another process changed it.
        """
        uncertain = False

        def ours() -> int | None:
            found = self.blobs.read(key)  # a transient failure here is retried with the write
            return found[1] if found is not None and is_ours(found[0]) else None

        def attempt() -> int:
            nonlocal uncertain
            try:
                return self.blobs.write(key, body, if_generation_match=generation)
            except TransientBackendError:
                uncertain = True
                written = ours()
                if written is not None:
                    return written
                raise  # not written (or not visible yet): try the write again
            except PreconditionFailed:
                written = ours() if uncertain else None
                if written is not None:
                    return written
                raise

        return self._retried(attempt)

    def release_lease(self, lease: Lease) -> None:
        """Delete the lease if it is still ours. A retried delete whose first answer was lost
        finds nothing, which is fine; if Cloud Storage stays unavailable the lease is left to
        expire after its ttl rather than failing a submit that has done its work."""
        with contextlib.suppress(PreconditionFailed, TransientBackendError):
            self._retried(
                lambda: self.blobs.delete(lease.key, if_generation_match=lease.generation)
            )

    # --- aliases -------------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, AliasEntry]:
        key = f"aliases/{name}.json"
        found = self.blobs.read(key)
        if found is None:
            return {}
        doc = self._alias_doc(key, found[0])
        return {
            alias: AliasEntry(
                alias,
                entry["run_id"],
                entry["set_at"],
                tuple(entry.get("history", ())),
                entry.get("checkpoint") if isinstance(entry.get("checkpoint"), str) else None,
            )
            for alias, entry in doc["aliases"].items()
        }

    def _alias_doc(self, key: str, data: bytes) -> dict[str, Any]:
        """An alias file, checked: a damaged one is an error naming it, never overwritten."""
        try:
            doc = orjson.loads(data)
            entries = doc["aliases"]
            ok = isinstance(entries, dict) and all(
                isinstance(e, dict)
                and isinstance(e.get("run_id"), str)
                and isinstance(e.get("set_at"), str)
                and isinstance(e.get("history", []), list)
                for e in entries.values()
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            raise VertexTunerError(
                f"the alias file {self.location}/{key} is damaged (not "
                '{"aliases": {ALIAS: {"run_id", "set_at", "history"}}})',
                hint="restore it from a backup (or from the history in another copy); "
                "vertex-tuner will not overwrite it",
            )
        return dict(doc)

    def rollback_target(self, name: str, alias: str) -> str | None:
        """The run a rollback of ``name@alias`` would point at now (None: nothing earlier)."""
        entry = self.aliases(name).get(alias)
        if entry is None:
            return None
        previous = _previous_target(list(entry.history), {"run_id": entry.run_id})
        return previous[0] if previous else None

    def set_alias(
        self,
        name: str,
        alias: str,
        run_id: str | None,
        *,
        actor: str = "",
        reason: str = "",
        max_attempts: int = 20,
        checkpoint: str | None = None,
        smoke: dict[str, Any] | None = None,
    ) -> AliasEntry:
        """Point ``name@alias`` at ``run_id`` (None: back to the previous one), keeping history.

        ``checkpoint``: serve that checkpoint of the run instead of its final model; a rollback
        goes back to the run and checkpoint the alias served before. ``smoke``: the smoke
        test's result, kept in the move's history event.

        Read-modify-write with a generation precondition, retried on a lost race, so two
        promoters can never lose each other's update; a write whose answer was lost is not
        applied twice (see :meth:`_write_cas`).
        """
        key = f"aliases/{name}.json"
        for _ in range(max_attempts):
            found = self._retried(lambda: self.blobs.read(key))
            doc: dict[str, Any] = self._alias_doc(key, found[0]) if found else {"aliases": {}}
            generation = found[1] if found else 0
            entry = doc["aliases"].get(alias)
            history: list[dict[str, Any]] = list(entry.get("history", [])) if entry else []
            now = iso(self.clock())
            if run_id is None:
                previous = _previous_target(history, entry)
                if previous is None:
                    raise NotFoundError(f"{name}@{alias} has no earlier run to roll back to")
                (target, served), action = previous, "rollback"
            else:
                target, served, action = run_id, checkpoint, "promote"
            event: dict[str, Any] = {
                "run_id": target,
                "at": now,
                "action": action,
                "previous": entry["run_id"] if entry else None,
                "actor": actor,
                "reason": reason,
            }
            current: dict[str, Any] = {"run_id": target, "set_at": now, "history": history}
            if served is not None:
                event["checkpoint"] = current["checkpoint"] = served
            if smoke is not None:
                event["smoke"] = smoke
            history.append(event)
            doc["aliases"][alias] = current
            body = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
            try:
                # After a lost answer, finding these very bytes means our update is in.
                self._write_cas(key, body, generation, _equal_to(body))
            except PreconditionFailed:
                continue
            return AliasEntry(alias, target, now, tuple(history), served)
        raise VertexTunerError(f"could not update {name}@{alias}: too many concurrent updates")

    def refuse_move(
        self, name: str, alias: str, event: dict[str, Any], *, max_attempts: int = 20
    ) -> None:
        """Keep a move that was refused (its smoke test failed) in the alias file's
        ``refused`` list, beside the history of moves that happened; the alias is unchanged."""
        key = f"aliases/{name}.json"
        for _ in range(max_attempts):
            found = self._retried(lambda: self.blobs.read(key))
            doc: dict[str, Any] = self._alias_doc(key, found[0]) if found else {"aliases": {}}
            refused = doc.setdefault("refused", {})
            if not isinstance(refused, dict):
                refused = doc["refused"] = {}
            refused.setdefault(alias, []).append({"at": iso(self.clock()), **event})
            body = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
            try:
                self._write_cas(key, body, found[1] if found else 0, _equal_to(body))
            except PreconditionFailed:
                continue
            return
        raise VertexTunerError(f"could not update {name}@{alias}: too many concurrent updates")

    def refused_moves(self, name: str) -> dict[str, tuple[dict[str, Any], ...]]:
        """Moves of ``name``'s aliases that were refused, per alias, oldest first."""
        key = f"aliases/{name}.json"
        found = self.blobs.read(key)
        refused = self._alias_doc(key, found[0]).get("refused") if found else None
        return {a: tuple(v) for a, v in refused.items()} if isinstance(refused, dict) else {}


_FINGERPRINTS = "fingerprints/"


def _key_part(text: str) -> str:
    """One key segment: percent-encoded, dots too, so it is never ``.``, ``..`` or has a ``/``."""
    return quote(text, safe="").replace(".", "%2E")


def _evaluation_key(run_id: str, verdict_id: str) -> str:
    return f"evaluations/{_key_part(run_id)}/{_key_part(verdict_id)}.json"


def _run_key(run_id: str) -> str:
    return f"runs/{run_id}.json"


def _fingerprint_key(fingerprint: str) -> str:
    return f"{_FINGERPRINTS}{fingerprint}.json"


def _job_key(job_name: str) -> str:
    """``jobs/projects/p/locations/l/tuningJobs/123.json`` for a resource name.

    Each segment is encoded on its own so the key keeps the name's shape; a name with an empty
    segment is encoded whole (no ``/`` left), so two names never share a key.
    """
    parts = job_name.split("/")
    path = "/".join(map(_key_part, parts)) if all(parts) else _key_part(job_name)
    return f"jobs/{path}.json"


def _spec_prefix(spec_name: str) -> str:
    # The trailing slash keeps "support" from listing "support-tone"'s runs.
    return f"specs/{_key_part(spec_name)}/"


def _pointers(record: RunRecord) -> dict[str, bytes]:
    """The pointer objects a record has in the version-2 layout, by key."""
    out = {}
    if record.job_name:
        out[_job_key(record.job_name)] = orjson.dumps({"run_id": record.run_id})
    spec_key = f"{_spec_prefix(record.spec_name)}{_key_part(record.run_id)}.json"
    out[spec_key] = orjson.dumps({"run_id": record.run_id, "created_at": record.created_at})
    out[_fingerprint_key(record.fingerprint)] = orjson.dumps(
        {"run_id": record.run_id, "job_name": record.job_name}
    )
    return out


def _content(record: RunRecord) -> bytes:
    """A record's content apart from ``updated_at``, to tell whether a save changes anything."""
    doc = record.to_json()
    doc.pop("updated_at", None)
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def _equal_to(data: bytes) -> Callable[[bytes], bool]:
    return lambda found: found == data


def _lease_body(owner: str, ttl: float, renewals: int, now: float, acquired: float | None) -> bytes:
    """A lease as its holder writes it. ``expires_at`` (the holder's clock plus ``ttl``) is
    kept for older versions, which compare it with their own clock; this one never reads it."""
    stamp = iso(now)
    doc: dict[str, Any] = {
        "owner": owner,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "ttl": ttl,
        "renewals": renewals,
        "renewed_at": stamp,
        "expires_at": now + ttl,
    }
    if acquired is not None:
        doc["acquired_at"] = iso(acquired)
    return orjson.dumps(doc)


def _lease_owner(data: bytes) -> str | None:
    try:
        owner = orjson.loads(data).get("owner")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return owner if isinstance(owner, str) else None


def _pointed_run(data: bytes, where: str) -> str:
    """The run id a pointer object names."""
    try:
        run_id = orjson.loads(data)["run_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        run_id = None
    if not isinstance(run_id, str):
        raise VertexTunerError(
            f"pointer {where} is damaged",
            hint="delete it: the next save of its run writes it again",
        )
    return run_id


def _previous_target(
    history: list[dict[str, Any]], entry: dict[str, Any] | None
) -> tuple[str, str | None] | None:
    """The run (and checkpoint) a rollback goes back to: replay the history as a stack of
    promotions."""
    if not entry:
        return None
    stack: list[tuple[str, str | None]] = []
    for event in history:
        if event.get("action") == "rollback":
            if stack:
                stack.pop()
        else:
            checkpoint = event.get("checkpoint")
            stack.append(
                (str(event["run_id"]), checkpoint if isinstance(checkpoint, str) else None)
            )
    return stack[-2] if len(stack) >= 2 else None


def _parse_record(data: bytes, where: str) -> RunRecord:
    try:
        return RunRecord.model_validate(orjson.loads(data))
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise VertexTunerError(
            f"run record {where} is damaged: {exc}", hint="restore it from a backup or delete it"
        ) from None
