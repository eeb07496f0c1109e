"""The run store: run records, submit leases and aliases, on a local folder or in Cloud Storage.

Both kinds sit on one small key-value interface with compare-and-swap by generation
(:class:`BlobStore`), so the record, lease and alias logic is written once:

- :class:`LocalBlobStore` keeps files under a folder; a ``flock`` on the folder makes the
  compare-and-swap atomic across processes on one machine, and ``os.replace`` makes every write
  all-or-nothing.
- :class:`StorageBlobStore` keeps objects under ``gs://bucket/prefix`` and relies on Cloud
  Storage's ``ifGenerationMatch`` preconditions, so CI runners on different machines share it.

Layout under the root::

    runs/<run_id>.json          one record per job
    fingerprints/<fp>.json      {"run_id": …} of the newest run with that fingerprint
    leases/<fp>.json            a short lease held while one submit creates the job
    aliases/<name>.json         {"aliases": {alias: {"run_id": …, "history": […]}}}
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from vertex_tuner.errors import NotFoundError, PreconditionFailed, VertexTunerError
from vertex_tuner.records import RunRecord

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import Storage


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


@dataclass(frozen=True)
class Lease:
    key: str
    owner: str
    generation: int


@dataclass(frozen=True)
class AliasEntry:
    alias: str
    run_id: str
    set_at: str
    history: tuple[dict[str, Any], ...]


class RunStore:
    """Records, leases and aliases on a :class:`BlobStore`."""

    def __init__(self, blobs: BlobStore, *, clock: Callable[[], float] = time.time) -> None:
        self.blobs = blobs
        self.clock = clock

    @property
    def location(self) -> str:
        return self.blobs.location

    # --- records -------------------------------------------------------------------------

    def save(self, record: RunRecord) -> None:
        """Write a record (last writer wins: one process owns a run while it runs)."""
        data = orjson.dumps(record.to_json(), option=orjson.OPT_INDENT_2)
        self.blobs.write(f"runs/{record.run_id}.json", data, if_generation_match=None)
        pointer = orjson.dumps({"run_id": record.run_id, "job_name": record.job_name})
        self.blobs.write(
            f"fingerprints/{record.fingerprint}.json", pointer, if_generation_match=None
        )

    def get(self, run_id: str) -> RunRecord:
        found = self.blobs.read(f"runs/{run_id}.json")
        if found is None:
            raise NotFoundError(
                f"no run {run_id!r} in {self.location}", hint="list runs with: vertex-tuner runs"
            )
        return _parse_record(found[0], run_id)

    def by_fingerprint(self, fingerprint: str) -> RunRecord | None:
        found = self.blobs.read(f"fingerprints/{fingerprint}.json")
        if found is None:
            return None
        run_id = orjson.loads(found[0])["run_id"]
        try:
            return self.get(run_id)
        except NotFoundError:
            return None

    def by_job(self, job_name: str) -> RunRecord | None:
        for record in self.list():
            if record.job_name == job_name:
                return record
        return None

    def list(self, spec_name: str | None = None) -> list[RunRecord]:
        """Records, newest first."""
        out = []
        for key in self.blobs.keys("runs/"):
            found = self.blobs.read(key)
            if found is None:
                continue
            record = _parse_record(found[0], key)
            if spec_name is None or record.spec_name == spec_name:
                out.append(record)
        out.sort(key=lambda r: r.created_at, reverse=True)
        return out

    # --- leases --------------------------------------------------------------------------

    def acquire_lease(
        self,
        name: str,
        *,
        ttl: float = 120.0,
        wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Lease:
        """Hold ``leases/<name>`` so that one submit at a time creates a job for a fingerprint.

        A lease whose holder died expires after ``ttl`` seconds and is taken over with a
        generation precondition, so two waiters cannot both take it.
        """
        key = f"leases/{name}.json"
        owner = uuid.uuid4().hex
        deadline = self.clock() + wait
        while True:
            body = orjson.dumps({"owner": owner, "expires_at": self.clock() + ttl})
            current = self.blobs.read(key)
            try:
                if current is None:
                    return Lease(key, owner, self.blobs.write(key, body, if_generation_match=0))
                held = orjson.loads(current[0])
                if float(held.get("expires_at", 0)) < self.clock():
                    return Lease(
                        key, owner, self.blobs.write(key, body, if_generation_match=current[1])
                    )
            except PreconditionFailed:
                pass  # someone else got there first; look again
            if self.clock() >= deadline:
                raise VertexTunerError(
                    f"another submit of the same job is still running (lease {key} in "
                    f"{self.location})",
                    hint="wait for it to finish, or run `vertex-tuner status` on the spec",
                )
            sleep(0.5)

    def release_lease(self, lease: Lease) -> None:
        with contextlib.suppress(PreconditionFailed):
            self.blobs.delete(lease.key, if_generation_match=lease.generation)

    # --- aliases -------------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, AliasEntry]:
        found = self.blobs.read(f"aliases/{name}.json")
        if found is None:
            return {}
        doc = orjson.loads(found[0])
        return {
            alias: AliasEntry(
                alias, entry["run_id"], entry["set_at"], tuple(entry.get("history", ()))
            )
            for alias, entry in doc.get("aliases", {}).items()
        }

    def set_alias(
        self,
        name: str,
        alias: str,
        run_id: str | None,
        *,
        actor: str = "",
        reason: str = "",
        max_attempts: int = 20,
    ) -> AliasEntry:
        """Point ``name@alias`` at ``run_id`` (None: back to the previous one), keeping history.

        Read-modify-write with a generation precondition, retried on a lost race, so two
        promoters can never lose each other's update.
        """
        key = f"aliases/{name}.json"
        for _ in range(max_attempts):
            found = self.blobs.read(key)
            doc: dict[str, Any] = orjson.loads(found[0]) if found else {"aliases": {}}
            generation = found[1] if found else 0
            entry = doc["aliases"].get(alias)
            history: list[dict[str, Any]] = list(entry.get("history", [])) if entry else []
            now = _iso(self.clock())
            if run_id is None:
                target = _previous_target(history, entry)
                if target is None:
                    raise NotFoundError(f"{name}@{alias} has no earlier run to roll back to")
                action = "rollback"
            else:
                target, action = run_id, "promote"
            history.append(
                {
                    "run_id": target,
                    "at": now,
                    "action": action,
                    "previous": entry["run_id"] if entry else None,
                    "actor": actor,
                    "reason": reason,
                }
            )
            doc["aliases"][alias] = {"run_id": target, "set_at": now, "history": history}
            try:
                self.blobs.write(
                    key,
                    orjson.dumps(doc, option=orjson.OPT_INDENT_2),
                    if_generation_match=generation,
                )
            except PreconditionFailed:
                continue
            return AliasEntry(alias, target, now, tuple(history))
        raise VertexTunerError(f"could not update {name}@{alias}: too many concurrent updates")


def _previous_target(history: list[dict[str, Any]], entry: dict[str, Any] | None) -> str | None:
    """The run a rollback goes back to: replay the history as a stack of promotions."""
    if not entry:
        return None
    stack: list[str] = []
    for event in history:
        if event.get("action") == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(str(event["run_id"]))
    return stack[-2] if len(stack) >= 2 else None


def _parse_record(data: bytes, where: str) -> RunRecord:
    try:
        return RunRecord.model_validate(orjson.loads(data))
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise VertexTunerError(
            f"run record {where} is damaged: {exc}", hint="restore it from a backup or delete it"
        ) from None


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
