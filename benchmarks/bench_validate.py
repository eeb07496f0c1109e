"""Validation speed, memory and cold start, per dataset shape, each beside its reference.

    python benchmarks/bench_validate.py [--examples 100000] [--repeat 3] [--shapes chat,gemini]

For every shape users write (see :data:`SHAPES`) it generates a dataset under benchmarks/.data/
(git-ignored) of realistic rows: seeded random texts of varied length and content, drawn from a
pool of sentences with names, numbers and some non-Latin text, never one template repeated. Each
file is read once so every contender finds it in the page cache, vertex-tuner's modules are
compiled to bytecode as an installed package has them, and each contender is measured in a fresh
process, the contenders taking turns (best of ``--repeat``, since other work on the machine
only ever slows a run down):

- parsing every line with orjson alone (for CSV, reading every row with the ``csv`` module): the
  floor any validator pays;
- ``vertex-tuner``'s validator (formats, Vertex's rules, tokens, duplicates, quality, stats),
  with its worker processes: wall time, and peak RSS of the process plus its workers;
- the best peer's local checker, together's ``check_file``, when the package is installed
  (``pip install -e '.[bench]'``). It reads every JSONL shape (it checks each line is a JSON
  object); a CSV it reads only for evaluation data, so that is what it is asked for there.

Then the cold start of ``vertex-tuner validate`` on a small file against one ``import
google.genai``. Prints one line per shape with both ratios and PASS or MISS; exits 1 when a
limit is missed on any shape: validate >= 0.5x the floor, >= 2x together, peak RSS <= 150 MB.

Vertex has no prompt-only format for reinforcement tuning that vertex-tuner reads; the prompt-only
shape measured is distillation's (``contents`` ending on a user turn).
"""

from __future__ import annotations

import argparse
import compileall
import csv
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
RSS_LIMIT_MB = 150.0
FLOOR_RATIO = 0.5
PEER_RATIO = 2.0
#: Bumped whenever the generator changes, so an old file is never measured as a new one.
GENERATOR_VERSION = 3

# Each contender runs in its own interpreter: the clock starts before its imports, and
# RUSAGE_CHILDREN adds the validator's worker processes (the largest of them) to its own peak.
CONTENDER = r"""
import json, resource, sys, time
kind, path, method = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
if kind == "orjson":
    import orjson
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                orjson.loads(line)
elif kind == "csv":
    import csv
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            pass
elif kind == "vertex-tuner":
    from pathlib import Path
    from vertex_tuner.dataset import Validator
    report = Validator(model="gemini-2.5-flash", method=method).run(
        Path(path), display=path).report
    assert report.ok, report.errors[:3]
    assert report.stats["examples"] > 0
elif kind == "together":
    try:
        from together.lib.utils.files import check_file
    except ImportError:
        from together.utils.files import check_file
    purpose = "eval" if path.endswith(".csv") else "fine-tune"
    result = check_file(path, purpose=purpose)
    assert result["is_check_passed"], result
seconds = time.perf_counter() - start
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": own, "worker_peak_mb": workers}))
"""


class Texts:
    """Random texts of varied length from a seeded pool of sentences. A prompt holds at least
    two of them, so that prompts repeat about as rarely as in real data."""

    SUBJECTS = (
        "my order",
        "the grinder",
        "your courier",
        "the refund",
        "this kettle",
        "the invoice",
        "our subscription",
        "the roast schedule",
        "my password",
        "the warranty",
        "that parcel",
        "the API key",
        "a cron job",
        "the staging cluster",
        "the migration",
        "her account",
    )
    VERBS = (
        "has not arrived",
        "stopped working",
        "was charged twice",
        "needs a replacement",
        "keeps timing out",
        "was cancelled",
        "shows the wrong address",
        "will ship on Monday",
        "is covered for two years",
        "returns a 403 error",
        "was rolled back",
        "needs a review",
    )
    TAILS = (
        "since last week",
        "after the update",
        "according to the tracking page",
        "even though I paid for express delivery",
        "and I would like to know why",
        "which is the third time this month",
        "so please advise",
        "before the deadline",
        "in the eu-west region",
        "on every second request",
        "as far as I can tell",
    )
    EXTRAS = (
        "Merci beaucoup.",
        "Danke!",
        "ありがとうございます。",
        "Спасибо.",
        "谢谢。",
        "¡Gracias!",
        "Thanks 🙂",
        "Cheers,",
        "Best regards.",
        "Kind regards — Sam.",
    )

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pool = [self._sentence() for _ in range(20_000)]

    def _sentence(self) -> str:
        r = self.rng
        s = f"{r.choice(self.SUBJECTS).capitalize()} {r.choice(self.VERBS)} {r.choice(self.TAILS)}"
        if r.random() < 0.3:
            s += f" (ref {r.choice('ABCDEFGH')}{r.randrange(10**6):06d})"
        if r.random() < 0.1:
            s += " " + r.choice(self.EXTRAS)
        return s + r.choice([".", ".", "?", "!"])

    def text(self, low: int, high: int) -> str:
        """Between ``low`` and ``high`` sentences, skewed towards the short end."""
        n = min(high, low + int(self.rng.expovariate(1 / max(1, (high - low) / 3))))
        return " ".join(self.rng.choices(self.pool, k=max(1, n)))

    def word(self) -> str:
        return self.rng.choice(["lookup_order", "refund", "reset_password", "track", "schedule"])


Row = dict[str, Any]


def _user(text: str) -> Row:
    return {"role": "user", "parts": [{"text": text}]}


def _model(text: str) -> Row:
    return {"role": "model", "parts": [{"text": text}]}


def _system(t: Texts) -> str:
    return "You are the support assistant for " + t.text(1, 4)


def chat(t: Texts, *, system: float, exchanges: Callable[[], int]) -> Row:
    messages = []
    if t.rng.random() < system:
        messages.append({"role": "system", "content": _system(t)})
    for _ in range(exchanges()):
        messages.append({"role": "user", "content": t.text(2, 8)})
        messages.append(
            {"role": t.rng.choice(["assistant", "assistant", "model"]), "content": t.text(1, 12)}
        )
    return {"messages": messages}


def gemini(t: Texts, *, spelling: str, exchanges: Callable[[], int]) -> Row:
    contents = []
    for _ in range(exchanges()):
        contents += [_user(t.text(2, 8)), _model(t.text(1, 12))]
    row: Row = {}
    r = t.rng.random()
    if spelling == "either":
        spelling = "systemInstruction" if r < 0.5 else "system_instruction"
    if r < 0.85:
        parts = [{"text": _system(t)}]
        if t.rng.random() < 0.2:
            parts.append({"text": t.text(1, 2)})
        system: Row = {"parts": parts}
        if t.rng.random() < 0.3:
            system = {"role": "system", **system}
        if spelling == "system_instruction" and t.rng.random() < 0.1:
            row["systemInstruction"] = None  # a null camelCase key beside the snake_case one
        row[spelling] = system
    row["contents"] = contents
    return row


def functions(t: Texts) -> Row:
    name = t.word()
    call = {"name": name, "args": {"order": f"HH-{t.rng.randrange(10**6)}", "urgent": True}}
    answer = {"name": name, "response": {"output": t.text(1, 3), "code": t.rng.randrange(500)}}
    contents: list[Row] = [_user(t.text(2, 5))]
    if t.rng.random() < 0.5:
        contents.append({"role": "model", "parts": [{"functionCall": call}]})
        contents.append({"parts": [{"functionResponse": answer}]})
    else:
        contents.append(
            {"role": "model", "parts": [{"text": "Let me check."}, {"functionCall": call}]}
        )
        contents.append({"role": "user", "parts": [{"functionResponse": answer}]})
    contents.append(_model(t.text(1, 6)))
    tools = [
        {
            "functionDeclarations": [
                {
                    "name": name,
                    "description": "Look the order up.",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"order": {"type": "STRING"}},
                        "required": ["order"],
                    },
                }
            ]
        }
    ]
    return {
        "systemInstruction": {"parts": [{"text": _system(t)}]},
        "contents": contents,
        "tools": tools,
    }


def files(t: Texts) -> Row:
    mime, ext = t.rng.choice(
        [
            ("image/jpeg", "jpg"),
            ("image/png", "png"),
            ("application/pdf", "pdf"),
            ("video/mp4", "mp4"),
        ]
    )
    uri = f"gs://harbor-tuning/{t.rng.choice(['tickets', 'scans'])}/{t.rng.randrange(10**7)}.{ext}"
    key = t.rng.choice(["fileData", "fileData", "file_data"])
    media = {key: {"mimeType": mime, "fileUri": uri}}
    parts: list[Row] = [{"text": t.text(2, 4)}, media]
    if t.rng.random() < 0.5:
        parts.reverse()
    return {"contents": [{"role": "user", "parts": parts}, _model(t.text(1, 8))]}


def pairs(t: Texts) -> Row:
    a, b = ("input_text", "output_text") if t.rng.random() < 0.5 else ("prompt", "completion")
    return {a: t.text(2, 8), b: t.text(1, 10)}


def csv_row(t: Texts) -> Row:
    system = "" if t.rng.random() < 0.5 else _system(t)
    return {"system": system, "prompt": t.text(2, 8), "response": t.text(1, 10)}


def preference(t: Texts) -> Row:
    contents = [_user(t.text(2, 6))]
    if t.rng.random() < 0.3:
        contents = [_user(t.text(1, 4)), _model(t.text(1, 4)), _user(t.text(1, 4))]
    scores = [1, 0] if t.rng.random() < 0.5 else [0, 1]
    row: Row = {
        "contents": contents,
        "completions": [{"score": s, "completion": _model(t.text(1, 10))} for s in scores],
    }
    if t.rng.random() < 0.6:
        row = {"system_instruction": {"parts": [{"text": _system(t)}]}, **row}
    return row


def prompts(t: Texts) -> Row:
    row: Row = {"contents": [_user(t.text(2, 12))]}
    if t.rng.random() < 0.5:
        row["systemInstruction"] = {"parts": [{"text": _system(t)}]}
    return row


def _mixed(t: Texts, low: int, high: int) -> Callable[[], int]:
    return lambda: t.rng.randint(low, high)


#: name -> (file suffix, tuning method, row generator).
SHAPES: dict[str, tuple[str, str, Callable[[Texts], Row]]] = {
    "chat": (".jsonl", "supervised", lambda t: chat(t, system=0.0, exchanges=lambda: 1)),
    "chat-system": (".jsonl", "supervised", lambda t: chat(t, system=1.0, exchanges=lambda: 1)),
    "chat-1-in-5-two": (
        ".jsonl",
        "supervised",
        lambda t: chat(t, system=0.5, exchanges=lambda: 2 if t.rng.random() < 0.2 else 1),
    ),
    "chat-3-exchanges": (
        ".jsonl",
        "supervised",
        lambda t: chat(t, system=0.5, exchanges=lambda: 3),
    ),
    "chat-1-10-exchanges": (
        ".jsonl",
        "supervised",
        lambda t: chat(t, system=0.5, exchanges=_mixed(t, 1, 10)),
    ),
    "gemini-camel": (
        ".jsonl",
        "supervised",
        lambda t: gemini(t, spelling="systemInstruction", exchanges=lambda: 1),
    ),
    "gemini-snake": (
        ".jsonl",
        "supervised",
        lambda t: gemini(t, spelling="system_instruction", exchanges=lambda: 1),
    ),
    "gemini-multi-turn": (
        ".jsonl",
        "supervised",
        lambda t: gemini(t, spelling="either", exchanges=_mixed(t, 2, 6)),
    ),
    "gemini-functions": (".jsonl", "supervised", functions),
    "gemini-file-data": (".jsonl", "supervised", files),
    "text-pairs": (".jsonl", "supervised", pairs),
    "csv": (".csv", "supervised", lambda t: csv_row(t)),
    "preference": (".jsonl", "preference", preference),
    "distillation-prompts": (".jsonl", "distillation", prompts),
}


def rows(shape: str, examples: int) -> Iterator[Row]:
    rng = random.Random(f"{shape}-{GENERATOR_VERSION}")
    texts = Texts(rng)
    make = SHAPES[shape][2]
    for _ in range(examples):
        yield make(texts)


def generate(shape: str, examples: int) -> Path:
    suffix = SHAPES[shape][0]
    path = DATA / f"{shape}-{examples}-v{GENERATOR_VERSION}{suffix}"
    if path.exists() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        if suffix == ".csv":
            writer = csv.writer(f)
            writer.writerow(["system", "prompt", "response"])
            for row in rows(shape, examples):
                writer.writerow([row["system"], row["prompt"], row["response"]])
        else:
            for row in rows(shape, examples):
                f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    tmp.replace(path)
    return path


def warm(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(8 * 1024 * 1024):
            pass


def measure(kinds: list[str], path: Path, method: str, repeat: int) -> dict[str, dict[str, float]]:
    """Per contender, the fastest of ``repeat`` runs with the largest peak RSS seen (together is
    left out when it fails). The contenders take turns, run by run, so that a spell of other
    work on the machine slows each of them alike rather than one."""
    best: dict[str, dict[str, float]] = {}
    peaks: dict[str, tuple[float, float]] = {}
    failed: set[str] = set()
    for _ in range(repeat):
        for kind in kinds:
            if kind in failed:
                continue
            result = subprocess.run(
                [sys.executable, "-c", CONTENDER, kind, str(path), method],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                if kind == "together":
                    failed.add(kind)
                    continue
                raise SystemExit(f"{kind} failed on {path.name}:\n{result.stderr[-2000:]}")
            run = json.loads(result.stdout.strip().splitlines()[-1])
            peak, worker_peak = peaks.get(kind, (0.0, 0.0))
            peaks[kind] = (max(peak, run["peak_mb"]), max(worker_peak, run["worker_peak_mb"]))
            if kind not in best or run["seconds"] < best[kind]["seconds"]:
                best[kind] = run
    return {
        kind: {**run, "peak_mb": peaks[kind][0], "worker_peak_mb": peaks[kind][1]}
        for kind, run in best.items()
    }


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


def shape_line(shape: str, examples: int, repeat: int) -> tuple[str, bool]:
    """The line for one shape, and whether every limit held on it."""
    suffix, method, _ = SHAPES[shape]
    path = generate(shape, examples)
    warm(path)
    mb = path.stat().st_size / 1e6
    floor_kind = "csv" if suffix == ".csv" else "orjson"
    runs = measure([floor_kind, "vertex-tuner", "together"], path, method, repeat)
    floor, ours, peer = runs[floor_kind], runs["vertex-tuner"], runs.get("together")
    ok = True
    ours_speed = mb / ours["seconds"]
    to_floor = floor["seconds"] / ours["seconds"]
    ok &= to_floor >= FLOOR_RATIO
    line = (
        f"{shape:<21} {mb:6.1f} MB {ours['seconds']:5.2f} s {ours_speed:4.0f} MB/s"
        f" | {floor_kind}-only {floor['seconds']:5.2f} s x{to_floor:.2f} (>= {FLOOR_RATIO})"
    )
    if peer is not None:
        to_peer = peer["seconds"] / ours["seconds"]
        ok &= to_peer >= PEER_RATIO
        line += f" | together {peer['seconds']:5.2f} s x{to_peer:.2f} (>= {PEER_RATIO})"
    else:
        line += " | together: not installed or does not read it"
    workers = workers_used() if ours["worker_peak_mb"] > 0 else 0
    total = ours["peak_mb"] + workers * ours["worker_peak_mb"]
    ok &= total <= RSS_LIMIT_MB
    line += f" | RSS {total:3.0f} MB (<= {RSS_LIMIT_MB:.0f}) {'PASS' if ok else 'MISS'}"
    return line, ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=100_000, help="rows per shape")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender (best kept)")
    parser.add_argument(
        "--shapes", default="all", help="comma-separated shapes, or all: " + ", ".join(SHAPES)
    )
    args = parser.parse_args()
    chosen = list(SHAPES) if args.shapes == "all" else args.shapes.split(",")
    unknown = [s for s in chosen if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {', '.join(unknown)}; use {', '.join(SHAPES)}")
    compileall.compile_dir(HERE.parent / "vertex_tuner", quiet=1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f} before the run")
    print(f"validate, {args.examples:,} examples per shape, best of {args.repeat}:")
    ok = True
    missed = []
    for shape in chosen:
        line, held = shape_line(shape, args.examples, args.repeat)
        print(line, flush=True)
        ok &= held
        if not held:
            missed.append(shape)

    small = generate("chat-system", 50)
    ours_cold = cold([sys.executable, "-m", "vertex_tuner", "validate", str(small)], args.repeat)
    genai_cold = cold([sys.executable, "-c", "import google.genai"], args.repeat)
    print(
        f"cold start: vertex-tuner validate of 50 examples {ours_cold:.2f} s vs import "
        f"google.genai {genai_cold:.2f} s (ratio {ours_cold / genai_cold:.2f})"
    )
    print("result: " + ("all limits met" if ok else "LIMITS MISSED on " + ", ".join(missed)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
