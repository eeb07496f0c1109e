"""The run store's cost against its size: storage requests and time per command.

    python benchmarks/bench_runstore.py [--runs 1000 --specs 50 --small-runs 10 --small-specs 1]

Seeds two ``gs://`` run stores in a private sandbox's Cloud Storage (fake-gcs-server, through the
same GcsStorage adapter the CLI uses): a large one (by default 1,000 runs of 50 specs) and a small
one (10 runs of one spec). On each it measures what three commands ask of the store, each on a
fresh RunStore as a new process would have it:

- ``status JOB``: ``by_job(job)`` then ``get(run_id)``;
- ``runs NAME``: ``list(name)``, for the spec with the most runs;
- ``aliases NAME``: ``aliases(name)``;
- ``report trend``: ``list(name, newest=20)``, what ``evaluate --report`` reads for its trend.

Prints, per command, the storage requests (read, write, delete, list pages) and the best wall
time of ``--repeat`` tries, large beside small, with their ratio. Targets: the request ratio of
``status JOB`` and ``aliases NAME`` at most 1.5 (the store's size must not matter), and
``runs NAME`` at most that spec's run count + 3 requests (it follows the spec, not the store),
``report trend`` at most 20 + 3 (it follows neither).
Exits 1 when a target is missed or an answer is wrong.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from vertex_tuner.backends.gcs import GcsStorage, split_uri
from vertex_tuner.backends.interface import ObjectInfo, ProgressCallback, Storage, UploadResult
from vertex_tuner.evaluation.report import TREND
from vertex_tuner.records import DatasetRef, RunRecord
from vertex_tuner.runstore import RunStore, StorageBlobStore

BUCKET = "vertex-tuner-bench"
#: Objects per page of a Cloud Storage listing: GcsStorage.list sets no page size, so the client
#: gets the API's default (and maximum) maxResults, 1,000, and one more request per extra page.
LIST_PAGE = 1000
RATIO_LIMIT = 1.5
RUNS_SLACK = 3


class CountingStorage(Storage):
    """A Storage backend that counts the requests made through it."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.requests = 0
        self._lock = threading.Lock()

    def _count(self, n: int = 1) -> None:
        with self._lock:
            self.requests += n

    def stat(self, uri: str) -> ObjectInfo | None:
        self._count()
        return self.inner.stat(uri)

    def upload_file(
        self,
        path: Path,
        uri: str,
        *,
        if_generation_match: int | None = 0,
        progress: ProgressCallback | None = None,
    ) -> UploadResult:
        self._count()
        return self.inner.upload_file(
            path, uri, if_generation_match=if_generation_match, progress=progress
        )

    def read(self, uri: str) -> tuple[bytes, int]:
        self._count()
        return self.inner.read(uri)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None) -> int:
        self._count()
        return self.inner.write(uri, data, if_generation_match=if_generation_match)

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        self._count()
        self.inner.delete(uri, if_generation_match=if_generation_match)

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        items = list(self.inner.list(prefix_uri))
        self._count(1 + max(0, len(items) - 1) // LIST_PAGE)
        return iter(items)


class SeedingStorage(GcsStorage):
    """GcsStorage whose unconditional writes go straight to the emulator's upload endpoint.

    For seeding only: the client's own work per upload (about 10 ms of CPU) would double the
    time fake-gcs-server needs. One kept-alive connection per thread.
    """

    def __init__(self, client: Any, endpoint: str) -> None:
        super().__init__(client, create_missing_buckets=True)
        self.host = urllib.parse.urlsplit(endpoint).netloc
        self.local = threading.local()

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None) -> int:
        if if_generation_match is not None:
            return super().write(uri, data, if_generation_match=if_generation_match)
        bucket, name = split_uri(uri)
        if not hasattr(self.local, "conn"):
            self.local.conn = http.client.HTTPConnection(self.host, timeout=30)
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        self.local.conn.request(
            "POST",
            f"/upload/storage/v1/b/{bucket}/o?{query}",
            body=data,
            headers={"Content-Type": "application/json"},
        )
        response = self.local.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"seeding {uri}: {response.status} {body[:200]!r}")
        return int(orjson.loads(body)["generation"])


def generate(runs: int, specs: int, *, project: str, location: str) -> list[RunRecord]:
    """``runs`` records spread round-robin over ``specs`` specs, one job and fingerprint each."""
    train = DatasetRef(uri=f"gs://{BUCKET}/data/train.jsonl", sha256="a" * 64, size=1, examples=1)
    return [
        RunRecord(
            run_id=f"spec-{i % specs:03d}-{i:06d}",
            spec_name=f"spec-{i % specs:03d}",
            spec_digest="d" * 64,
            fingerprint=f"{i:064x}",
            tool_version="bench",
            job_name=f"projects/{project}/locations/{location}/tuningJobs/{900000 + i}",
            state="SUCCEEDED",
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1.7e9 + 3600 * i)),
            updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1.7e9 + 3600 * i)),
            method="supervised",
            base_model="gemini-2.5-flash",
            display_name=f"spec-{i % specs:03d}",
            train=train,
        )
        for i in range(runs)
    ]


def seed(store: RunStore, records: list[RunRecord]) -> None:
    """Save the records concurrently; the first alone, so it lays the store out."""
    if not records:
        return
    store.save(records[0])
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(store.save, records[1:]))


@dataclass(frozen=True)
class Target:
    """What to ask one store, chosen from what it holds rather than from how it was made."""

    job_name: str
    run_id: str
    spec_name: str
    spec_runs: int

    @classmethod
    def of(cls, records: list[RunRecord]) -> Target:
        counts = collections.Counter(r.spec_name for r in records)
        spec_name, spec_runs = counts.most_common(1)[0]
        job = next(r for r in records[len(records) // 2 :] if r.job_name)
        assert job.job_name is not None
        return cls(job.job_name, job.run_id, spec_name, spec_runs)


@dataclass(frozen=True)
class Measure:
    requests: int
    seconds: float


def measure(
    storage: CountingStorage, uri: str, repeat: int, operation: Callable[[RunStore], bool]
) -> Measure:
    """Requests and best time of ``operation`` on a fresh RunStore; False from it is an error."""
    requests, best = 0, float("inf")
    for _ in range(repeat):
        store = RunStore(StorageBlobStore(storage, uri))
        before = storage.requests
        began = time.perf_counter()
        ok = operation(store)
        best = min(best, time.perf_counter() - began)
        requests = max(requests, storage.requests - before)
        if not ok:
            raise SystemExit(f"wrong answer from {uri}")
    return Measure(requests, best)


def operations(target: Target) -> dict[str, Callable[[RunStore], bool]]:
    def status(store: RunStore) -> bool:
        found = store.by_job(target.job_name)
        return found is not None and store.get(found.run_id).run_id == target.run_id

    def runs(store: RunStore) -> bool:
        listed = store.list(target.spec_name)
        return len(listed) == target.spec_runs and not store.skipped

    def aliases(store: RunStore) -> bool:
        return "production" in store.aliases(target.spec_name)

    def trend(store: RunStore) -> bool:
        listed = store.list(target.spec_name, newest=TREND)
        return len(listed) == min(TREND, target.spec_runs) and not store.skipped

    return {
        "status JOB": status,
        "runs NAME": runs,
        "aliases NAME": aliases,
        "report trend": trend,
    }


def main() -> int:
    from vertex_tuner.sandbox import Sandbox, storage_client

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--specs", type=int, default=50)
    parser.add_argument("--small-runs", type=int, default=10)
    parser.add_argument("--small-specs", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ok = True
    # The filesystem backend: fake-gcs-server's in-memory one slows down with every object
    # added to a bucket (seeding 4,000 objects takes twice as long).
    with tempfile.TemporaryDirectory() as state, Sandbox(state_dir=Path(state)) as info:
        client = storage_client(info)
        storage = CountingStorage(GcsStorage(client))
        seeding = SeedingStorage(client, info.storage_emulator_host)
        stores: dict[str, tuple[str, Target]] = {}
        began = time.perf_counter()
        for label, runs, specs in (
            ("large", args.runs, args.specs),
            ("small", args.small_runs, args.small_specs),
        ):
            uri = f"gs://{BUCKET}/{label}"
            records = generate(runs, specs, project=info.project, location=info.location)
            writer = RunStore(StorageBlobStore(seeding, uri))
            seed(writer, records)
            target = Target.of(records)
            writer.set_alias(target.spec_name, "production", target.run_id)
            stores[label] = (uri, target)
        print(
            f"seeded {args.runs} runs of {args.specs} specs and {args.small_runs} of "
            f"{args.small_specs} in {time.perf_counter() - began:.1f} s"
        )
        large_uri, large = stores["large"]
        small_uri, small = stores["small"]
        large_ops, small_ops = operations(large), operations(small)
        for name in large_ops:
            big = measure(storage, large_uri, args.repeat, large_ops[name])
            little = measure(storage, small_uri, args.repeat, small_ops[name])
            ratio = big.requests / little.requests
            figures = (
                f"{name}: {big.requests} vs {little.requests} requests (ratio {ratio:.2f})"
                f" | {big.seconds * 1000:.1f} ms vs {little.seconds * 1000:.1f} ms (ratio "
                f"{big.seconds / little.seconds:.2f}), {args.runs} vs {args.small_runs} runs"
            )
            if name == "report trend":
                limit = TREND + RUNS_SLACK
                met = big.requests <= limit and little.requests <= limit
                print(f"{figures} | need <= {limit} requests, whatever the spec's runs")
            elif name == "runs NAME":
                limits = (large.spec_runs + RUNS_SLACK, small.spec_runs + RUNS_SLACK)
                met = big.requests <= limits[0] and little.requests <= limits[1]
                print(
                    f"{figures} | spec of {large.spec_runs} vs {small.spec_runs} runs, need <= "
                    f"{limits[0]} / {limits[1]} requests"
                )
            else:
                met = ratio <= RATIO_LIMIT
                print(f"{figures} | need request ratio <= {RATIO_LIMIT}")
            ok &= met
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
