"""``vertex-tuner sandbox serve``: the emulators, shared by several commands, until interrupted."""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
import orjson

from vertex_tuner.cli._common import handle_errors


@click.group()
def sandbox() -> None:
    """Local emulators of Cloud Storage and Vertex AI (a test double, not Google Cloud)."""


@sandbox.command()
@click.option(
    "--faults",
    metavar="SPEC",
    help="Inject faults, e.g. 503=0.3,429=0.1,lost=0.1,reset=0.05,latency=200ms.",
)
@click.option(
    "--job-seconds",
    type=float,
    default=3.0,
    show_default=True,
    help="How long a tuning job takes from QUEUED to SUCCEEDED.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep jobs and objects here across restarts (default: in memory).",
)
@click.option("--seed", type=int, help="Seed for fault injection, to repeat a run.")
@handle_errors
def serve(faults: str | None, job_seconds: float, state_dir: Path | None, seed: int | None) -> None:
    """Run the sandbox until SIGTERM or Ctrl-C.

    The first line on stdout is one JSON object (vertex_base_url, storage_emulator_host, …);
    point commands at it with VERTEX_TUNER_SANDBOX (that JSON, or a file holding it).
    """
    import os

    from vertex_tuner.sandbox import Sandbox

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    box = Sandbox(faults=faults, job_seconds=job_seconds, state_dir=state_dir, seed=seed)
    info = box.start()
    try:
        doc = {**info.to_json(), "pid": os.getpid()}
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        sys.stdout.flush()
        click.echo(
            f"sandbox: local emulators (not Google Cloud) at {info.vertex_base_url} and "
            f"{info.storage_emulator_host}; faults: {box.fault_spec}",
            err=True,
        )
        click.echo(
            "sandbox: in another terminal, point commands at it with:\n"
            f"  export VERTEX_TUNER_SANDBOX={shlex.quote(orjson.dumps(info.to_json()).decode())}",
            err=True,
        )
        stop.wait()
    finally:
        box.stop()
        click.echo("sandbox: stopped", err=True)
