"""A cache of generations keyed by (model, prompt), so re-running an evaluation costs nothing.

Each answer is one small JSON file named by the sha256 of the namespace (which cloud project or
sandbox), the model, the system instruction, the contents and the generation settings. Files are
written atomically, so concurrent evaluations can share the folder.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from vertex_tuner.backends.interface import Generation


class GenerationCache:
    def __init__(self, root: Path, namespace: str) -> None:
        self.root = root
        self.namespace = namespace
        self.hits = 0
        self.misses = 0

    def key(
        self,
        model: str,
        contents: Sequence[Mapping[str, Any]],
        system_instruction: str | None,
        settings: Mapping[str, Any],
    ) -> str:
        body = orjson.dumps(
            {
                "ns": self.namespace,
                "model": model,
                "system": system_instruction,
                "contents": list(contents),
                "settings": dict(settings),
            },
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(body).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Generation | None:
        try:
            data = orjson.loads(self._path(key).read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            self.misses += 1
            return None
        self.hits += 1
        return Generation(
            text=data["text"],
            input_tokens=data.get("input_tokens"),
            output_tokens=data.get("output_tokens"),
        )

    def has(self, key: str) -> bool:
        """Whether an answer is stored (for estimates; not counted as a hit or a miss)."""
        return self._path(key).is_file()

    def put(self, key: str, generation: Generation) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = orjson.dumps(
            {
                "text": generation.text,
                "input_tokens": generation.input_tokens,
                "output_tokens": generation.output_tokens,
            }
        )
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        Path(tmp).replace(path)
