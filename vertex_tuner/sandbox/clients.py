"""The real google-genai and google-cloud-storage clients, pointed at a sandbox.

Only the endpoint and the credentials differ from the cloud: a static token that never needs
refreshing for Vertex, anonymous credentials for Cloud Storage (as with STORAGE_EMULATOR_HOST,
without changing the process environment).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vertex_tuner.vocabulary import VERTEX_API_VERSION

if TYPE_CHECKING:
    from vertex_tuner.sandbox.info import SandboxInfo


def genai_client(
    info: SandboxInfo, *, project: str | None = None, location: str | None = None
) -> Any:
    """A google-genai client for the emulator (``project``/``location``: another one's paths,
    as a service calling a model served elsewhere builds its client)."""
    from google import genai
    from google.genai import types
    from google.oauth2.credentials import Credentials

    return genai.Client(
        vertexai=True,
        project=project or info.project,
        location=location or info.location,
        credentials=Credentials(token="sandbox-token"),  # type: ignore[no-untyped-call]
        # Pinned to v1beta1 whatever GOOGLE_GENAI_API_VERSION says, as for the cloud.
        http_options=types.HttpOptions(
            base_url=info.vertex_base_url, api_version=VERTEX_API_VERSION
        ),
    )


def storage_client(info: SandboxInfo) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project=info.project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": info.storage_emulator_host},
    )
