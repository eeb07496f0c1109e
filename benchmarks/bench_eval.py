"""Evaluation at scale in the sandbox: online beside its ideal, and batch beside online.

    python benchmarks/bench_eval.py [--examples 5000] [--latency-ms 300] [--concurrency 32]

Tunes a small job in a sandbox whose every request waits ``--latency-ms`` first, writes a
held-out set of ``--examples`` seeded prompts of varied length, and evaluates the tuned model
against its base (two targets) twice, each time with an empty generation cache:

- online, with ``--concurrency`` calls at once: wall time beside the ideal
  ``requests × latency / concurrency`` (the ratio is the overhead: ≤ 1.5 passes), and the
  generateContent requests beside the prompts (≤ 1.02: retries only);
- batch: wall time and Vertex requests of every kind beside online's (≤ 1% of online's).

Both must give the same metrics. Prints one line per mode with its ratios, and exits 1 when a
limit is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OVERHEAD_LIMIT = 1.5
RETRY_LIMIT = 1.02
BATCH_REQUEST_SHARE = 0.01
WORDS = [
    "order",
    "parcel",
    "refund",
    "invoice",
    "delivery",
    "address",
    "warehouse",
    "Thursday",
    "courier",
    "tracking",
    "package",
    "delay",
    "label",
    "customs",
    "return",
    "exchange",
    "Müller",
    "東京",
    "São",
    "voucher",
    "account",
]


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def example(rng: random.Random, i: int) -> bytes:
    question = f"Ticket {i}: " + sentence(rng, rng.randint(4, 40))
    answer = sentence(rng, rng.randint(3, 60))
    return json.dumps(
        {
            "systemInstruction": {"parts": [{"text": "Answer as the support team."}]},
            "contents": [
                {"role": "user", "parts": [{"text": question}]},
                {"role": "model", "parts": [{"text": answer}]},
            ],
        },
        ensure_ascii=False,
    ).encode()


@contextlib.contextmanager
def sandbox(latency_ms: float, state: Path) -> Iterator[Any]:
    """``vertex-tuner sandbox serve`` in a process of its own, as a shared sandbox runs, so the
    emulator's work does not share the evaluating process's interpreter."""
    from vertex_tuner.sandbox import SandboxInfo

    command = [sys.executable, "-m", "vertex_tuner", "sandbox", "serve"]
    command += ["--faults", f"latency={latency_ms:g}ms", "--job-seconds", "2"]
    command += ["--state-dir", str(state / "sandbox")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        yield SandboxInfo.from_json(json.loads(process.stdout.readline()))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def stats(base_url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{base_url}/sandbox/stats") as answer:
        return dict(json.loads(answer.read())["requests"])


def tune(info: Any, storage: Any) -> tuple[str, str]:
    """A tuned model in the sandbox, and its endpoint."""
    from google.genai import types

    from vertex_tuner.sandbox import genai_client

    rng = random.Random(7)
    train = b"\n".join(example(rng, i) for i in range(200)) + b"\n"
    storage.write("gs://bench-eval/train.jsonl", train, if_generation_match=None)
    client = genai_client(info)
    job = client.tunings.tune(
        base_model="gemini-2.5-flash",
        training_dataset=types.TuningDataset(gcs_uri="gs://bench-eval/train.jsonl"),
        config=types.CreateTuningJobConfig(epoch_count=1, tuned_model_display_name="bench"),
    )
    while not (job.state and job.state.name in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED")):
        time.sleep(0.5)
        job = client.tunings.get(name=job.name or "")
    assert job.tuned_model and job.tuned_model.model and job.tuned_model.endpoint, job.error
    return job.tuned_model.model, job.tuned_model.endpoint


def evaluate(
    backends: Any, url: str, record: Any, store: Path, *, mode: str, concurrency: int
) -> tuple[float, dict[str, dict[str, float]], dict[str, int]]:
    from vertex_tuner.evaluation.cache import GenerationCache
    from vertex_tuner.evaluation.runner import Evaluator
    from vertex_tuner.runstore import LocalBlobStore, RunStore
    from vertex_tuner.spec import EvaluationSpec

    runs = RunStore(LocalBlobStore(store))
    runs.save(record)
    evaluator = Evaluator(
        generator=backends.generator,
        runs=runs,
        storage=backends.storage,
        cache=GenerationCache(store / "cache", mode),
        batch=backends.batch,
    )
    settings = EvaluationSpec(
        metrics=["exact_match", "rouge_l"], concurrency=concurrency, mode=mode
    )
    before = stats(url)
    began = time.perf_counter()
    result = evaluator.evaluate(record, settings, against=["base"], staging="gs://bench-eval/vt")
    wall = time.perf_counter() - began
    after = stats(url)
    sent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    metrics = {role: dict(t.metrics) for role, t in result.targets.items()}
    return wall, metrics, {k: v for k, v in sent.items() if v}


def main() -> int:
    from vertex_tuner.records import DatasetRef, RunRecord
    from vertex_tuner.wiring.backends import sandbox_backends

    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    ok = True
    with tempfile.TemporaryDirectory() as tmp, sandbox(args.latency_ms, Path(tmp)) as info:
        backends = sandbox_backends(info)
        storage = backends.storage
        model, endpoint = tune(info, storage)
        rng = random.Random(42)
        held_out = b"\n".join(example(rng, 10_000 + i) for i in range(args.examples)) + b"\n"
        storage.write("gs://bench-eval/holdout.jsonl", held_out, if_generation_match=None)
        record = RunRecord(
            run_id="bench-run",
            spec_name="bench",
            spec_digest="-",
            fingerprint="-",
            tool_version="-",
            created_at="2026-01-01T00:00:00Z",
            updated_at="2026-01-01T00:00:00Z",
            method="supervised",
            display_name="bench",
            train=DatasetRef(sha256="-", size=len(held_out), examples=200),
            state="SUCCEEDED",
            base_model="gemini-2.5-flash",
            tuned_model=model,
            endpoint=endpoint,
            sandbox=True,
            holdout=DatasetRef(
                uri="gs://bench-eval/holdout.jsonl",
                sha256="0" * 64,
                size=len(held_out),
                examples=args.examples,
            ),
        )
        prompts = 2 * args.examples
        url = info.vertex_base_url
        online_wall, online_metrics, online_sent = evaluate(
            backends, url, record, Path(tmp) / "online", mode="online", concurrency=args.concurrency
        )
        batch_wall, batch_metrics, batch_sent = evaluate(
            backends, url, record, Path(tmp) / "batch", mode="batch", concurrency=args.concurrency
        )
    generated = sum(v for k, v in online_sent.items() if k.startswith("generate"))
    ideal = prompts * latency / args.concurrency
    overhead = online_wall / ideal
    retries = generated / prompts
    online_requests = sum(online_sent.values())
    batch_requests = sum(batch_sent.values())
    share = batch_requests / online_requests
    ok_online = overhead <= OVERHEAD_LIMIT and retries <= RETRY_LIMIT
    ok_batch = share <= BATCH_REQUEST_SHARE and batch_metrics == online_metrics
    print(
        f"online  {prompts} prompts x {args.latency_ms:g} ms, concurrency {args.concurrency}: "
        f"{online_wall:.1f} s vs ideal {ideal:.1f} s (ratio {overhead:.2f}, limit "
        f"{OVERHEAD_LIMIT}) | {generated} generateContent for {prompts} prompts (ratio "
        f"{retries:.3f}, limit {RETRY_LIMIT}) {'PASS' if ok_online else 'MISS'}"
    )
    print(
        f"batch   {prompts} prompts: {batch_wall:.1f} s vs online {online_wall:.1f} s (ratio "
        f"{batch_wall / online_wall:.2f}) | {batch_requests} requests vs online "
        f"{online_requests} (ratio {share:.4f}, limit {BATCH_REQUEST_SHARE}) {batch_sent} | "
        f"metrics {'equal' if batch_metrics == online_metrics else 'DIFFER'} "
        f"{'PASS' if ok_batch else 'MISS'}"
    )
    ok = ok_online and ok_batch
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
