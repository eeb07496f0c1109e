"""Vertex's published request schema, and the errors Google's front end sends for a bad body.

The schemas are extracted from the discovery documents shipped with google-api-python-client by
``scripts/extract_vertex_schema.py`` into ``contract/aiplatform.{v1,v1beta1}.json``. Validation
follows protobuf's JSON mapping, as the front end does: each field may be sent by its
lowerCamelCase JSON name or by its original snake_case name; ``null`` means "not set"; int64 and
uint64 come as strings or integers; enums as their names. The first problem becomes the 400
``INVALID_ARGUMENT`` the front end answers, with paths in snake_case rooted at the request's
body field (``tuning_job``).

Output-only fields a client sends are checked like any other, then dropped (Google ignores them).

Pure and stdlib only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

_CAMEL = re.compile(r"(?<!^)([A-Z])")
_INT = re.compile(r"-?[0-9]+")
_UINT = re.compile(r"[0-9]+")
_FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})
_INTEGER_TYPES = {"int32": "TYPE_INT32", "uint32": "TYPE_UINT32"}
_STRING_INTS = {"int64": ("TYPE_INT64", _INT), "uint64": ("TYPE_UINT64", _UINT)}
VERSIONS = ("v1beta1", "v1")


def snake(name: str) -> str:
    """The proto field name of a JSON (lowerCamelCase) field name."""
    return _CAMEL.sub(r"_\1", name).lower()


class ContractError(Exception):
    """A request body the front end would refuse; :meth:`body` is its JSON answer."""

    http = 400
    status = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.http,
                "message": self.message,
                "status": self.status,
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": self.field, "description": self.message}],
                    }
                ],
            }
        }


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _unknown(name: str, parent: str, why: str = "Cannot find field.") -> ContractError:
    return ContractError(
        parent, f"Invalid JSON payload received. Unknown name \"{name}\" at '{parent}': {why}"
    )


def _invalid(path: str, kind: str, value: Any) -> ContractError:
    return ContractError(path, f"Invalid value at '{path}' ({kind}), {_show(value)}")


@dataclass(frozen=True)
class Contract:
    """One API version's schemas (``schemas`` maps a schema name to its discovery schema)."""

    version: str
    revision: str
    roots: tuple[str, ...]
    schemas: dict[str, Any]

    def root(self, suffix: str) -> str:
        """The full schema name ending in ``suffix`` (``TuningJob`` → ``GoogleCloud…TuningJob``)."""
        for name in self.roots:
            if name.endswith(suffix):
                return name
        raise KeyError(suffix)

    def validate(self, body: Any, schema: str, *, path: str) -> dict[str, Any]:
        """``body`` checked against ``schema``: the set, writable fields with JSON names.

        Raises :class:`ContractError` at the first problem.
        """
        if not isinstance(body, dict):
            raise _invalid(path, "TYPE_MESSAGE", body)
        clean = self._value(body, {"$ref": schema}, path, path, "", keep_output=False)
        assert isinstance(clean, dict)
        return clean

    def conform(self, value: Any, schema: str) -> Any:
        """``value`` (trusted, e.g. our own answer) without the fields ``schema`` does not have."""
        node = self.schemas[schema]
        if not isinstance(value, dict):
            return value
        props = node.get("properties", {})
        out: dict[str, Any] = {}
        for key, item in value.items():
            prop = props.get(key)
            if prop is None:
                continue
            out[key] = self._conform_node(item, prop)
        return out

    def _conform_node(self, value: Any, node: dict[str, Any]) -> Any:
        if "$ref" in node:
            return self.conform(value, node["$ref"])
        if node.get("type") == "array" and isinstance(value, list):
            return [self._conform_node(v, node.get("items", {})) for v in value]
        if "additionalProperties" in node and isinstance(value, dict):
            return {
                k: self._conform_node(v, node["additionalProperties"]) for k, v in value.items()
            }
        return value

    def _message(
        self, body: dict[str, Any], schema: str, path: str, *, keep_output: bool
    ) -> dict[str, Any]:
        props: dict[str, Any] = self.schemas[schema].get("properties", {})
        by_name = {k: k for k in props} | {snake(k): k for k in props}
        out: dict[str, Any] = {}
        for key, value in body.items():
            field = by_name.get(key)
            if field is None:
                raise _unknown(key, path)
            node = props[field]
            checked = self._value(value, node, f"{path}.{snake(field)}", path, key, keep_output)
            if checked is None or (node.get("readOnly") and not keep_output):
                continue
            out[field] = checked
        return out

    def _value(
        self, value: Any, node: dict[str, Any], path: str, parent: str, key: str, keep_output: bool
    ) -> Any:
        if value is None:
            return None
        kind = node.get("type")
        if "$ref" in node:
            if isinstance(value, list):
                raise _unknown(key, parent, "Proto field is not repeating, cannot start list.")
            if not isinstance(value, dict):
                raise _invalid(path, "TYPE_MESSAGE", value)
            # Nested fields of an output-only message are output-only too: keep them once kept.
            keep = keep_output or bool(node.get("readOnly"))
            return self._message(value, node["$ref"], path, keep_output=keep)
        if kind == "array":
            if not isinstance(value, list):
                raise _invalid(path, _kind(node.get("items", {})), value)
            items = node.get("items", {})
            return [
                self._value(v, items, f"{path}[{i}]", parent, key, keep_output)
                for i, v in enumerate(value)
            ]
        if kind == "object" and "additionalProperties" in node:
            if isinstance(value, list):
                raise _unknown(key, parent, "Proto field is not repeating, cannot start list.")
            if not isinstance(value, dict):
                raise _invalid(path, "TYPE_MESSAGE", value)
            inner = node["additionalProperties"]
            return {
                k: self._value(v, inner, f"{path}[{k}]", path, k, keep_output)
                for k, v in value.items()
            }
        if kind in ("any", "object"):
            return value
        if isinstance(value, list):
            raise _unknown(key, parent, "Proto field is not repeating, cannot start list.")
        if isinstance(value, dict):
            raise _unknown(key, parent, "Starting an object on a scalar field")
        return _scalar(value, node, path)


def _kind(node: dict[str, Any]) -> str:
    if "$ref" in node:
        return "TYPE_MESSAGE"
    if "enum" in node:
        return "TYPE_ENUM"
    fmt = node.get("format")
    if fmt in _STRING_INTS:
        return _STRING_INTS[fmt][0]
    if fmt in _INTEGER_TYPES:
        return _INTEGER_TYPES[fmt]
    kind = node.get("type")
    if kind == "number":
        return "TYPE_FLOAT" if fmt == "float" else "TYPE_DOUBLE"
    if kind == "boolean":
        return "TYPE_BOOL"
    if fmt == "byte":
        return "TYPE_BYTES"
    return "TYPE_STRING"


def _scalar(value: Any, node: dict[str, Any], path: str) -> Any:
    kind = _kind(node)
    ok = False
    if kind == "TYPE_ENUM":
        ok = isinstance(value, str) and value in node["enum"]
    elif kind in ("TYPE_INT64", "TYPE_UINT64"):
        pattern = _STRING_INTS[str(node.get("format"))][1]
        ok = _integral(value, unsigned=kind == "TYPE_UINT64") or (
            isinstance(value, str) and pattern.fullmatch(value) is not None
        )
    elif kind in ("TYPE_INT32", "TYPE_UINT32"):
        limit = 2**32 if kind == "TYPE_UINT32" else 2**31
        low = 0 if kind == "TYPE_UINT32" else -(2**31)
        number = value
        if isinstance(value, str) and _INT.fullmatch(value):
            number = int(value)
        ok = _integral(number, unsigned=kind == "TYPE_UINT32") and low <= number < limit
    elif kind in ("TYPE_DOUBLE", "TYPE_FLOAT"):
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
            isinstance(value, str) and (value in _FLOAT_WORDS or _is_float(value))
        )
    elif kind == "TYPE_BOOL":
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise _invalid(path, kind, value)
    return value


def _integral(value: Any, *, unsigned: bool) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return False
    elif not isinstance(value, int):
        return False
    return not unsigned or value >= 0


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text and text.lower() not in ("nan", "inf", "-inf", "infinity")


@cache
def load(version: str) -> Contract:
    """The committed contract of ``version`` (``v1beta1`` or ``v1``)."""
    if version not in VERSIONS:
        raise KeyError(version)
    text = (
        resources.files("vertex_tuner.sandbox")
        .joinpath("contract")
        .joinpath(f"aiplatform.{version}.json")
        .read_text(encoding="utf-8")
    )
    doc = json.loads(text)
    return Contract(version, str(doc["revision"]), tuple(doc["roots"]), doc["schemas"])
