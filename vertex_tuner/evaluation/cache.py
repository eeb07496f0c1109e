"""A cache of generations keyed by (model, prompt), so re-running an evaluation costs nothing;
and of reward scores keyed by (reward, example, answer), so re-scoring an unchanged answer (the
base's and production's, run after run) costs nothing either.

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

from vertex_tuner.backends.interface import Generation, RewardScore


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
        body = orjson.dumps(
            {
                "text": generation.text,
                "input_tokens": generation.input_tokens,
                "output_tokens": generation.output_tokens,
            }
        )
        self._write(key, body)

    # --- reward scores ---------------------------------------------------------------------

    def reward_key(
        self, reward_sha256: str, example: Mapping[str, Any], response: Mapping[str, Any]
    ) -> str:
        """The key of one answer's score by one reward (its settings and files' digest)."""
        body = orjson.dumps(
            {
                "ns": self.namespace,
                "reward": reward_sha256,
                "example": example,
                "response": response,
            },
            option=orjson.OPT_SORT_KEYS,
        )
        return "r" + hashlib.sha256(body).hexdigest()

    def get_reward(self, key: str) -> RewardScore | None:
        try:
            data = orjson.loads(self._path(key).read_bytes())
            score = RewardScore(
                float(data["overall"]),
                {str(k): (float(v), None) for k, v in data["details"].items()},
            )
        except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return score

    def put_reward(self, key: str, score: RewardScore) -> None:
        """Keep a score that is a score: no error, an overall, and every reward's value."""
        values = {k: v for k, (v, _) in score.details.items()}
        if score.error or score.overall is None or any(v is None for v in values.values()):
            return
        self._write(key, orjson.dumps({"overall": score.overall, "details": values}))

    def _write(self, key: str, body: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        Path(tmp).replace(path)
