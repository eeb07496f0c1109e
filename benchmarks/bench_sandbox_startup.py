"""Start-up time of a private sandbox, which every ``--sandbox`` command pays, and the time of
one request to it, which every call of a sandboxed command pays.

    python benchmarks/bench_sandbox_startup.py [--runs 10] [--requests 200]

Starts and stops the sandbox (fake-gcs-server plus the Vertex emulator) several times and prints
the median start-up beside the 2-second limit. Then sends small requests over one kept-alive
connection, as google-genai's client does, to the Vertex emulator and to fake-gcs-server, and
prints the emulator's median round trip beside a 5 ms limit and beside fake-gcs-server's (a Go
server on the same loopback, the peer). A server that writes its headers and its body in two
packets with Nagle's algorithm on waits for the client's delayed ACK (about 40 ms) on every
request: this is the line that sees it. Exits 1 over either limit.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import time
from urllib.parse import urlsplit

LIMIT_S = 2.0
ROUND_TRIP_LIMIT_MS = 5.0


def round_trip_ms(base_url: str, path: str, requests: int) -> float:
    """The median milliseconds of a GET of ``path`` over one kept-alive connection."""
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    times = []
    try:
        for _ in range(requests):
            began = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - began)
            if response.status != 200:
                raise SystemExit(f"GET {base_url}{path} answered {response.status}")
    finally:
        conn.close()
    return statistics.median(times) * 1000


def main() -> int:
    from vertex_tuner.sandbox import Sandbox

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
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
    with Sandbox() as info:
        vertex = round_trip_ms(info.vertex_base_url, "/sandbox/stats", args.requests)
        storage = round_trip_ms(info.storage_emulator_host, "/storage/v1/b", args.requests)
    print(
        f"request round trip, kept alive: Vertex emulator median {vertex:.2f} ms over "
        f"{args.requests} | fake-gcs-server {storage:.2f} ms (x{vertex / storage:.1f}) | limit "
        f"{ROUND_TRIP_LIMIT_MS:.1f} ms (ratio {vertex / ROUND_TRIP_LIMIT_MS:.2f}, need <= 1.0)"
    )
    return 0 if median <= LIMIT_S and vertex <= ROUND_TRIP_LIMIT_MS else 1


if __name__ == "__main__":
    sys.exit(main())
