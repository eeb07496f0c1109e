"""How to reach a running sandbox: the JSON ``sandbox serve`` prints first."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from vertex_tuner.errors import ConfigurationError

ENV = "VERTEX_TUNER_SANDBOX"


@dataclass(frozen=True)
class SandboxInfo:
    vertex_base_url: str
    storage_emulator_host: str
    project: str = "sandbox-project"
    location: str = "us-central1"
    pid: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SandboxInfo:
        try:
            return cls(
                vertex_base_url=str(doc["vertex_base_url"]),
                storage_emulator_host=str(doc["storage_emulator_host"]),
                project=str(doc.get("project", "sandbox-project")),
                location=str(doc.get("location", "us-central1")),
                pid=doc.get("pid"),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"{ENV} lacks {exc}: it must be the JSON `vertex-tuner sandbox serve` prints",
                hint="start one with: vertex-tuner sandbox serve > sandbox.json &",
            ) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SandboxInfo | None:
        """The sandbox named by VERTEX_TUNER_SANDBOX (JSON, or a file holding it), if any."""
        value = environ.get(ENV, "").strip()
        if not value:
            return None
        text = value
        if not value.startswith("{"):
            try:
                text = Path(value).read_text().strip().splitlines()[0]
            except (OSError, IndexError):
                raise ConfigurationError(
                    f"{ENV}={value!r} is neither sandbox JSON nor a readable file holding it",
                    hint="start one with: vertex-tuner sandbox serve > sandbox.json &",
                ) from None
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ConfigurationError(f"{ENV} does not hold JSON") from None
        if not isinstance(doc, dict):
            raise ConfigurationError(f"{ENV} must hold a JSON object")
        return cls.from_json(doc)
