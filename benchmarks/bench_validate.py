"""Validation speed, memory and cold start, each beside its reference, measured in one run.

    python benchmarks/bench_validate.py [--examples 300000] [--repeat 5]

Generates a chat-format dataset under benchmarks/.data/ (git-ignored; 300,000 examples are about
270 MB), reads it once so every contender finds it in the page cache, compiles vertex-tuner's
modules to bytecode as an installed package has them, then measures each contender in a fresh
process (best of ``--repeat``, since other work on the machine only ever slows a run down):
- parsing every line with orjson alone (the floor any validator pays);
- ``vertex-tuner``'s validator (formats, Vertex's rules, tokens, duplicates, quality, stats),
  with its worker processes: wall time, and peak RSS of the process plus its workers;
- the best peer's local checker, together's ``check_file``, when the package is installed
  (``pip install -e '.[bench]'``); otherwise its figure measured here before, labelled as such;
- the cold start of ``vertex-tuner validate`` on a small file against one ``import google.genai``.

Prints one line per figure with the reference and the ratio; exits 1 when a limit is missed:
validate >= 0.5x orjson alone, >= 2x together, peak RSS <= 150 MB.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
RSS_LIMIT_MB = 150.0
#: together's check_file on this machine when it was measured without the package at hand.
TOGETHER_FALLBACK_MB_S = 120.0

# Each contender runs in its own interpreter: the clock starts before its imports, and
# RUSAGE_CHILDREN adds the validator's worker processes (the largest of them) to its own peak.
CONTENDER = r"""
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
    assert report.stats["examples"] > 0
elif kind == "together":
    try:
        from together.lib.utils.files import check_file
    except ImportError:
        from together.utils.files import check_file
    result = check_file(path)
    assert result["is_check_passed"], result
seconds = time.perf_counter() - start
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": own, "worker_peak_mb": workers}))
"""


def generate(path: Path, examples: int) -> None:
    if path.exists() and path.stat().st_size > 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    topics = ["delivery", "refund", "grinder", "subscription", "password", "kettle", "roast"]
    system = (
        "You are the support assistant for Harbor & Hearth Coffee Co. Be warm and concrete, "
        "own the problem, say what happens next."
    )
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for i in range(examples):
            topic = topics[i % len(topics)]
            order = f"HH-{i % 1_000_000:06d}"
            question = (
                f"Hi, this is ticket {i}. I have a question about my {topic}: order {order} has "
                "not behaved the way I expected and I would like to know what you can do about "
                "it, and by when, please. "
            ) * 2
            answer = (
                f"Thanks for writing in about your {topic}. I have looked at {order} and here is "
                "the plan: I will sort it out today and email you by tomorrow morning with the "
                "details and a tracking link. If anything else comes up, just reply to this "
                "message. You will not be charged twice, and your next delivery keeps its date."
            )
            row = {
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    tmp.replace(path)


def warm(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(8 * 1024 * 1024):
            pass


def measure(kind: str, path: Path, repeat: int) -> dict[str, float] | None:
    """The fastest of ``repeat`` runs, with the largest peak RSS seen."""
    best: dict[str, float] | None = None
    peak = worker_peak = 0.0
    for _ in range(repeat):
        result = subprocess.run(
            [sys.executable, "-c", CONTENDER, kind, str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            if kind == "together":
                return None
            raise SystemExit(f"{kind} failed:\n{result.stderr[-2000:]}")
        run = json.loads(result.stdout.strip().splitlines()[-1])
        peak, worker_peak = max(peak, run["peak_mb"]), max(worker_peak, run["worker_peak_mb"])
        if best is None or run["seconds"] < best["seconds"]:
            best = run
    assert best is not None
    return {**best, "peak_mb": peak, "worker_peak_mb": worker_peak}


def cold(command: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def workers_used() -> int:
    sys.path.insert(0, str(HERE.parent))
    from vertex_tuner.dataset.scan import processes

    return processes() - 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    path = DATA / f"chat-{args.examples}.jsonl"
    generate(path, args.examples)
    warm(path)
    compileall.compile_dir(HERE.parent / "vertex_tuner", quiet=1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f} before the run")
    mb = path.stat().st_size / 1e6
    ok = True

    floor = measure("orjson", path, args.repeat)
    ours = measure("vertex-tuner", path, args.repeat)
    peer = measure("together", path, args.repeat)
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
            f" | together not installed: against its earlier {TOGETHER_FALLBACK_MB_S:.0f} MB/s "
            f"(ratio {ours_speed / TOGETHER_FALLBACK_MB_S:.2f}, need >= 2.0)"
        )
        ok &= ours_speed / TOGETHER_FALLBACK_MB_S >= 2.0
    workers = workers_used() if ours["worker_peak_mb"] > 0 else 0
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
    ours_cold = cold([sys.executable, "-m", "vertex_tuner", "validate", str(small)], args.repeat)
    genai_cold = cold([sys.executable, "-c", "import google.genai"], args.repeat)
    print(
        f"cold start: vertex-tuner validate small.jsonl {ours_cold:.2f} s vs import "
        f"google.genai {genai_cold:.2f} s (ratio {ours_cold / genai_cold:.2f})"
    )
    print("result: " + ("all limits met" if ok else "LIMITS MISSED (see the ratios above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
