"""Fault injection for the sandbox: ``503=0.3,429=0.1,lost=0.1,reset=0.05,latency=200ms``.

- ``503`` / ``429``: reject the request before handling it (429 with ``Retry-After: 1``);
- ``lost``: handle the request, then fail the response (the ambiguous case);
- ``reset``: close the connection without answering;
- ``latency``: delay every request;
- ``list-filter=ignore``: tuningJobs.list and batchPredictionJobs.list ignore their ``filter``
  and return every job, so client code that trusts the filter can be tested
  (``list-filter=honour``, the default, applies it);
- ``batch-line``: that fraction of a batch prediction job's lines fail with a 500 in their
  ``status``, as a line the model could not answer, while the job still succeeds (a rate of its
  own: it is drawn per line, not per request, so it is not added to the others).

Decisions come from a seeded random generator so a run can be repeated.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field

from vertex_tuner.errors import ConfigurationError

KINDS = ("503", "429", "lost", "reset")
LIST_FILTER_MODES = ("honour", "ignore")


@dataclass(frozen=True)
class FaultSpec:
    rates: dict[str, float] = field(default_factory=dict)
    latency_s: float = 0.0
    list_filter: str = "honour"
    batch_line: float = 0.0

    def __str__(self) -> str:
        parts = [f"{k}={v:g}" for k, v in self.rates.items()]
        if self.latency_s:
            parts.append(f"latency={self.latency_s * 1000:g}ms")
        if self.list_filter != "honour":
            parts.append(f"list-filter={self.list_filter}")
        if self.batch_line:
            parts.append(f"batch-line={self.batch_line:g}")
        return ",".join(parts) or "none"


def parse_faults(text: str | None) -> FaultSpec:
    if not text:
        return FaultSpec()
    rates: dict[str, float] = {}
    latency = 0.0
    list_filter = "honour"
    batch_line = 0.0
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise ConfigurationError(
                f"--faults: {item!r} is not KIND=VALUE",
                hint="e.g. 503=0.3,429=0.1,lost=0.1,reset=0.05,latency=200ms",
            )
        if key == "latency":
            number = value.removesuffix("ms")
            try:
                latency = float(number) / (1000 if value.endswith("ms") else 1)
            except ValueError:
                raise ConfigurationError(
                    f"--faults: latency {value!r} is not a duration like 200ms"
                ) from None
            continue
        if key == "list-filter":
            if value not in LIST_FILTER_MODES:
                raise ConfigurationError(
                    f"--faults: list-filter={value!r} is not one of {', '.join(LIST_FILTER_MODES)}"
                )
            list_filter = value
            continue
        if key != "batch-line" and key not in KINDS:
            raise ConfigurationError(
                f"--faults: unknown fault {key!r}",
                hint=f"use {', '.join(KINDS)}, latency, list-filter or batch-line",
            )
        rate = _rate(key, value)
        if key == "batch-line":
            batch_line = rate
        else:
            rates[key] = rate
    if sum(rates.values()) > 1:
        raise ConfigurationError("--faults: the rates add up to more than 1")
    return FaultSpec(rates, latency, list_filter, batch_line)


def _rate(key: str, value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise ConfigurationError(f"--faults: {key}={value!r} is not a number") from None
    if not 0 <= rate <= 1:
        raise ConfigurationError(f"--faults: {key}={rate} must be between 0 and 1")
    return rate


class FaultInjector:
    """Draws one fault (or none) per request."""

    def __init__(self, spec: FaultSpec, seed: int | None = None) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()

    def count(self, kind: str) -> None:
        """Record a fault applied outside :meth:`draw` (``list-filter``), for /sandbox/stats."""
        with self.lock:
            self.injected[kind] += 1

    def line_fails(self) -> bool:
        """Whether one batch prediction line fails (the ``batch-line`` fault), counted."""
        if not self.spec.batch_line:
            return False
        with self.lock:
            failed = self.rng.random() < self.spec.batch_line
            if failed:
                self.injected["batch-line"] += 1
        return failed

    def draw(self) -> str | None:
        if not self.spec.rates:
            return None
        with self.lock:
            u = self.rng.random()
        for kind, rate in self.spec.rates.items():
            if u < rate:
                with self.lock:
                    self.injected[kind] += 1
                return kind
            u -= rate
        return None
