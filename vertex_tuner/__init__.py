"""vertex-tuner: from a reviewed job spec and a dataset to a tuned, evaluated Gemini model.

The public API is imported lazily so that ``import vertex_tuner`` (and ``vertex-tuner --help``)
stays fast and never imports a Google client library.
"""

from __future__ import annotations

from typing import Any

from vertex_tuner._version import __version__

__all__ = ["__version__"]

_LAZY: dict[str, str] = {}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vertex_tuner' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
