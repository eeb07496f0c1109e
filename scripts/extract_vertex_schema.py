"""Extract the tuningJobs schemas of Vertex AI from the published discovery documents.

Reads ``aiplatform.v1beta1.json`` and ``aiplatform.v1.json`` from the discovery cache that ships
with google-api-python-client, keeps the transitive closure of the schemas referenced from
the ``ROOTS`` (``TuningJob``, ``GenerateContentRequest``, ``BatchPredictionJob``, …, and for
v1beta1 the ``BETA_ROOTS`` of ``validateReinforcementTuningReward``), and
writes them, stripped of descriptions (output-only fields keep ``"readOnly": true``), to
``vertex_tuner/sandbox/contract/``. The sandbox
validates requests against these files; tests/test_contract.py checks they are current.

    .venv/bin/python scripts/extract_vertex_schema.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

VERSIONS = {"v1beta1": "GoogleCloudAiplatformV1beta1", "v1": "GoogleCloudAiplatformV1"}
ROOTS = (
    "TuningJob",
    "GenerateContentRequest",
    "CountTokensRequest",
    "CountTokensResponse",
    "BatchPredictionJob",
)
#: Roots of methods only v1beta1 has (v1 publishes no reinforcement tuning).
BETA_ROOTS = (
    "ValidateReinforcementTuningRewardRequest",
    "ValidateReinforcementTuningRewardResponse",
)
OUT = Path(__file__).resolve().parent.parent / "vertex_tuner" / "sandbox" / "contract"
COMMAND = ".venv/bin/python scripts/extract_vertex_schema.py"
_KEEP = ("type", "format", "$ref", "enum")


def discovery_document(version: str) -> dict[str, Any]:
    import googleapiclient  # type: ignore[import-untyped]

    folder = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"
    doc: dict[str, Any] = json.loads((folder / f"aiplatform.{version}.json").read_text("utf-8"))
    return doc


def _strip(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: node[k] for k in _KEEP if k in node}
    if node.get("readOnly") or str(node.get("description", "")).startswith("Output only."):
        out["readOnly"] = True
    if "items" in node:
        out["items"] = _strip(node["items"])
    if "additionalProperties" in node:
        out["additionalProperties"] = _strip(node["additionalProperties"])
    if "properties" in node:
        out["properties"] = {k: _strip(v) for k, v in node["properties"].items()}
    return out


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        for value in node.values():
            found += _refs(value)
        return found
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def extract(version: str, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract for one API version: revision, root schema names, and the closure."""
    doc = doc if doc is not None else discovery_document(version)
    names = ROOTS + (BETA_ROOTS if version == "v1beta1" else ())
    roots = [VERSIONS[version] + name for name in names]
    schemas: dict[str, Any] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in schemas:
            continue
        schemas[name] = _strip(doc["schemas"][name])
        pending += _refs(schemas[name])
    return {
        "source": f"googleapiclient/discovery_cache/documents/aiplatform.{version}.json",
        "revision": doc["revision"],
        "roots": roots,
        "schemas": schemas,
    }


def render(version: str, doc: dict[str, Any] | None = None) -> str:
    """The file's exact text: sorted keys, no indentation, one key per line (diffable)."""
    return json.dumps(extract(version, doc), sort_keys=True, indent=0, separators=(",", ":")) + "\n"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for version in VERSIONS:
        path = OUT / f"aiplatform.{version}.json"
        path.write_text(render(version), encoding="utf-8")
        print(f"wrote {path.relative_to(OUT.parent.parent.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
