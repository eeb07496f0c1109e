"""The main job end to end in the sandbox: wall time, and API calls per job.

    python benchmarks/bench_submit.py [--job-seconds 3]

Runs ``vertex-tuner submit jobs/support_tone.yaml --sandbox`` twice against one sandbox (the
second must create nothing and upload nothing) and reads the emulator's request counters. Prints
the end-to-end time beside the job's own duration (the overhead is ours), the tuning API calls per
job beside a budget of 30, and the countTokens calls of each submit beside theirs (the unchanged
second submit makes none); exits 1 when a limit is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CALL_BUDGET = 30
#: The calibration sample (dataset.validate.CALIBRATION_SAMPLE) plus a few near-limit examples.
COUNT_BUDGET = 320
OVERHEAD_LIMIT_S = 5.0


def main() -> int:
    from vertex_tuner.sandbox import Sandbox

    parser = argparse.ArgumentParser()
    parser.add_argument("--job-seconds", type=float, default=3.0)
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as home, Sandbox(job_seconds=args.job_seconds) as info:
        env = {
            **os.environ,
            "VERTEX_TUNER_HOME": home,
            "VERTEX_TUNER_SANDBOX": json.dumps(info.to_json()),
        }
        command = [
            sys.executable,
            "-m",
            "vertex_tuner",
            "submit",
            "jobs/support_tone.yaml",
            "--sandbox",
            "--json",
        ]
        timings = []
        docs = []
        counted = []
        for _ in range(2):
            began = time.perf_counter()
            done = subprocess.run(
                command, env=env, cwd=REPO, capture_output=True, text=True, check=False
            )
            timings.append(time.perf_counter() - began)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            docs.append(json.loads(done.stdout))
            with urllib.request.urlopen(f"{info.vertex_base_url}/sandbox/stats") as response:
                stats = json.loads(response.read())
            counted.append(stats["requests"].get("count_tokens", 0) - sum(counted))
    first, second = timings
    overhead = first - args.job_seconds
    # countTokens is free and has its own quota: it is held to its own budget, and the
    # unchanged second submit must ask for none.
    calls = sum(n for name, n in stats["requests"].items() if name != "count_tokens")
    print(
        f"submit (sandbox, end to end): {first:.2f} s for a {args.job_seconds:.0f} s job "
        f"(overhead {overhead:.2f} s, limit {OVERHEAD_LIMIT_S:.1f} s, ratio "
        f"{overhead / OVERHEAD_LIMIT_S:.2f})"
    )
    ok &= overhead <= OVERHEAD_LIMIT_S
    print(
        f"API calls for one job over two submits: {calls} ({stats['requests']}) | budget "
        f"{CALL_BUDGET} (ratio {calls / CALL_BUDGET:.2f}); jobs created: "
        f"{stats['jobs_created']}"
    )
    ok &= calls <= CALL_BUDGET and stats["jobs_created"] == 1
    print(
        f"countTokens: {counted[0]} on the first submit (budget {COUNT_BUDGET}: the "
        f"calibration sample and the near-limit examples), {counted[1]} on the unchanged "
        "second (budget 0)"
    )
    ok &= counted[0] <= COUNT_BUDGET and counted[1] == 0
    print(
        f"unchanged second submit: {second:.2f} s, plan {docs[1]['plan']}, "
        f"{docs[1]['bytes_uploaded']} bytes uploaded, created {docs[1]['created']}"
    )
    ok &= docs[1]["bytes_uploaded"] == 0 and not docs[1]["created"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
