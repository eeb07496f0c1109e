"""Validation speed, memory and cold start, each beside its reference, measured in one run.

    python benchmarks/bench_validate.py [--examples 300000]

Generates a chat-format dataset under benchmarks/.data/ (git-ignored), then measures, each in a
fresh process so peak RSS is the process's own:
- parsing every line with orjson alone (the floor any validator pays);
- ``vertex-tuner``'s validator (convert, rules, tokens, quality checks, stats);
- the best peer's local checker, together's ``check_file``, when the package is installed;
- the cold start of ``vertex-tuner validate`` on a small file against one ``import google.genai``.
Prints one line per figure with the reference and the ratio; exits 1 when a limit is missed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
RSS_LIMIT_MB = 150.0

WORKER = r"""
import json, resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if kind == "orjson":
    import orjson
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                orjson.loads(line)
elif kind == "vertex-tuner":
    from pathlib import Path
    from vertex_tuner.dataset import Validator
    report = Validator(model="gemini-2.5-flash", method="supervised").run(
        Path(path), display=path).report
    assert report.ok, report.errors[:3]
elif kind == "together":
    from together.lib.utils.files import check_file
    check_file(path)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
# Worker processes (the validator splits large files across cores): the largest of them.
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak, "worker_peak_mb": workers}))
"""


def generate(path: Path, examples: int) -> None:
    if path.exists() and path.stat().st_size > 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    topics = ["delivery", "refund", "grinder", "subscription", "password", "kettle", "roast"]
    with path.open("w") as f:
        for i in range(examples):
            topic = topics[i % len(topics)]
            row = {
                "messages": [
                    {
                        "role": "system",
                        "content": "You are the support assistant for Harbor & Hearth "
                        "Coffee Co. Be warm and concrete, own the problem, say what happens next.",
                    },
                    {
                        "role": "user",
                        "content": f"Hi, this is ticket {i}. I have a question about my "
                        f"{topic}: order HH-{i % 1000000:06d} has not behaved the way I "
                        "expected and I would like to know what you can do about it, and by "
                        "when, please. " * 2,
                    },
                    {
                        "role": "assistant",
                        "content": f"Thanks for writing in about your {topic}. I have "
                        f"looked at HH-{i % 1000000:06d} and here is the plan: I will sort it "
                        "out today and email you by tomorrow morning with the details and a "
                        "tracking link. If anything else comes up, just reply to this "
                        "message. " * 2,
                    },
                ]
            }
            f.write(json.dumps(row, separators=(",", ":")) + "\n")


def measure(kind: str, path: Path) -> dict[str, float] | None:
    result = subprocess.run(
        [sys.executable, "-c", WORKER, kind, str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        if kind == "together":
            return None
        raise SystemExit(f"{kind} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cold(command: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=300_000)
    args = parser.parse_args()
    path = DATA / f"chat-{args.examples}.jsonl"
    generate(path, args.examples)
    mb = path.stat().st_size / 1e6
    ok = True

    floor = measure("orjson", path)
    ours = measure("vertex-tuner", path)
    peer = measure("together", path)
    assert floor is not None and ours is not None
    ours_speed = mb / ours["seconds"]
    floor_speed = mb / floor["seconds"]
    line = (
        f"validate: {mb:.1f} MB ({args.examples:,} examples) in {ours['seconds']:.2f} s = "
        f"{ours_speed:.0f} MB/s | orjson-only {floor_speed:.0f} MB/s "
        f"(ratio {ours_speed / floor_speed:.2f}, need >= 0.5)"
    )
    ok &= ours_speed / floor_speed >= 0.5
    if peer is not None:
        peer_speed = mb / peer["seconds"]
        line += (
            f" | together check_file {peer_speed:.0f} MB/s "
            f"(ratio {ours_speed / peer_speed:.2f}, need >= 2.0)"
        )
        ok &= ours_speed / peer_speed >= 2.0
    else:
        line += (
            f" | together not installed: against its measured 120 MB/s "
            f"(ratio {ours_speed / 120:.2f}, need >= 2.0)"
        )
        ok &= ours_speed / 120 >= 2.0
    workers = 2 if ours["worker_peak_mb"] > 0 else 0
    total = ours["peak_mb"] + workers * ours["worker_peak_mb"]
    line += (
        f" | peak RSS {total:.0f} MB = main {ours['peak_mb']:.0f} + {workers} worker(s) x "
        f"{ours['worker_peak_mb']:.0f} (limit {RSS_LIMIT_MB:.0f}, ratio "
        f"{total / RSS_LIMIT_MB:.2f})"
    )
    ok &= total <= RSS_LIMIT_MB
    print(line)

    small = DATA / "small.jsonl"
    generate(small, 50)
    ours_cold = cold([sys.executable, "-m", "vertex_tuner", "validate", str(small)])
    genai_cold = cold([sys.executable, "-c", "import google.genai"])
    print(
        f"cold start: vertex-tuner validate small.jsonl {ours_cold:.2f} s vs import "
        f"google.genai {genai_cold:.2f} s (ratio {ours_cold / genai_cold:.2f})"
    )
    print("result: " + ("all limits met" if ok else "LIMITS MISSED (see the ratios above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
