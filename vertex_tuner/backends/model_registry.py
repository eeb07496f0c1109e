"""Mirroring an alias onto the tuned model's version in the Vertex AI Model Registry.

google-genai has no call for Model Registry version aliases, so this one adapter uses
google-cloud-aiplatform (``ModelRegistry.add_version_aliases``), imported only here and only when
asked for: importing it costs seconds and it pins google-genai below 3, so it is the optional
``registry`` extra (``pip install 'vertex-tuner[registry]'``). The run store stays the source of
truth; the mirror lets people browsing the Vertex console see which version is ``production``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vertex_tuner.errors import BackendError, ConfigurationError

if TYPE_CHECKING:
    from vertex_tuner.records import RunRecord


def split_model_version(tuned_model: str) -> tuple[str, str]:
    """``projects/…/models/ID@V`` → (``projects/…/models/ID``, ``V``)."""
    name, sep, version = tuned_model.partition("@")
    if not sep or not version or "/models/" not in name:
        raise BackendError(f"{tuned_model!r} is not a versioned model name (…/models/ID@V)")
    return name, version


def ensure_available(*, sandbox: bool) -> None:
    """ConfigurationError unless a mirror can be attempted: checked before an alias moves, so a
    promotion that cannot be mirrored changes nothing."""
    if sandbox:
        raise ConfigurationError(
            "the sandbox does not emulate the Vertex Model Registry; nothing was changed",
            hint="drop --mirror-vertex for sandbox runs",
        )
    import importlib.util

    if importlib.util.find_spec("google.cloud.aiplatform") is None:
        raise ConfigurationError(
            "mirroring aliases to Vertex needs google-cloud-aiplatform; nothing was changed",
            hint="pip install 'vertex-tuner[registry]'",
        )


def mirror_alias(record: RunRecord, alias: str) -> None:
    """Set ``alias`` on the record's tuned model version in the Vertex Model Registry."""
    if record.sandbox:
        raise ConfigurationError(
            "the sandbox does not emulate the Vertex Model Registry",
            hint="drop --mirror-vertex for sandbox runs",
        )
    if not record.tuned_model:
        raise BackendError(f"run {record.run_id} has no tuned model to tag")
    model, version = split_model_version(record.tuned_model)
    try:
        from google.cloud.aiplatform.models import ModelRegistry
    except ImportError:
        raise ConfigurationError(
            "mirroring aliases to Vertex needs google-cloud-aiplatform",
            hint="pip install 'vertex-tuner[registry]'",
        ) from None
    from google.api_core import exceptions as gexc

    try:
        ModelRegistry(model, location=record.location, project=record.project).add_version_aliases(
            [alias], version
        )
    except gexc.GoogleAPICallError as exc:
        raise BackendError(f"Vertex Model Registry: {exc.message}", status=exc.code) from exc
