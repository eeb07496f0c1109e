"""Shared helpers for tests that run the real Google clients against the sandbox."""

from __future__ import annotations

from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent


def example(i: int, answer: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "messages": [
                {"role": "system", "content": "Be warm and concrete."},
                {"role": "user", "content": f"Where is my order HH-{i:06d}? It is late, day {i}."},
                {"role": "assistant", "content": answer or f"Order HH-{i:06d} ships Thursday."},
            ]
        }
    )


def write_spec(
    folder: Path,
    *,
    name: str = "demo",
    rows: int = 120,
    bucket: str = "test-bucket",
    extra: str = "",
    lines: list[bytes] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = lines if lines is not None else [example(i) for i in range(rows)]
    (folder / "data.jsonl").write_bytes(b"\n".join(data) + b"\n")
    spec = folder / "spec.yaml"
    spec.write_text(
        f"name: {name}\n"
        "base_model: gemini-2.5-flash\n"
        "dataset: {train: data.jsonl, validation: 0.1}\n"
        "hyperparameters: {epochs: 2, adapter_size: 4}\n"
        f'gcp: {{project: "${{GOOGLE_CLOUD_PROJECT}}", bucket: {bucket}}}\n'
        "budget: {max_cost_usd: 5}\n"
        "evaluation: {holdout: 0.1, metrics: [exact_match, rouge_l], "
        'promote_if: "tuned.rouge_l >= base.rouge_l"}\n' + extra
    )
    return spec
