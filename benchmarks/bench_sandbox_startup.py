"""Start-up time of a private sandbox, which every ``--sandbox`` command pays.

    python benchmarks/bench_sandbox_startup.py [--runs 10]

Starts and stops the sandbox (fake-gcs-server plus the Vertex emulator) several times and prints
the median start-up beside the 2-second limit; exits 1 over the limit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

LIMIT_S = 2.0


def main() -> int:
    from vertex_tuner.sandbox import Sandbox

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    starts = []
    for _ in range(args.runs):
        box = Sandbox()
        began = time.perf_counter()
        box.start()
        starts.append(time.perf_counter() - began)
        box.stop()
    median = statistics.median(starts)
    print(
        f"sandbox start-up: median {median:.3f} s over {args.runs} runs (max {max(starts):.3f} s)"
        f" | limit {LIMIT_S:.1f} s (ratio {median / LIMIT_S:.2f}, need <= 1.0)"
    )
    return 0 if median <= LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())
