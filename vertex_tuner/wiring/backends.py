"""The real Google clients wired to the backends: for Google Cloud, or for the sandbox.

The two constructors differ only in endpoints and credentials; everything above them runs the
same code either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vertex_tuner.backends.interface import (
    BatchPredictor,
    Generator,
    RewardValidator,
    Storage,
    TokenCounter,
    Tuner,
)
from vertex_tuner.errors import ConfigurationError

if TYPE_CHECKING:
    from vertex_tuner.sandbox import SandboxInfo

LOGIN_HINT = (
    "run `gcloud auth application-default login` and set GOOGLE_CLOUD_PROJECT, or add "
    "--sandbox to try vertex-tuner against local emulators"
)


@dataclass(frozen=True)
class Backends:
    storage: Storage
    tuner: Tuner
    generator: Generator
    project: str
    location: str
    is_sandbox: bool
    #: Where the calls go, for the one line announcing it.
    description: str
    #: countTokens, for exact counts near the limits and the calibrated estimate.
    counter: TokenCounter | None = None
    #: ``service_generator(project, location)``: generateContent through a client built the
    #: way a service builds one (:func:`vertex_tuner.genai_client_for`), for smoke tests.
    service_generator: Callable[[str | None, str | None], Generator] | None = None
    #: Vertex batch prediction, for evaluations in batch mode.
    batch: BatchPredictor | None = None
    #: validateReinforcementTuningReward, for ``reward test`` and the check before a submit.
    rewards: RewardValidator | None = None


def cloud_backends(project: str | None, location: str) -> Backends:
    """Vertex AI and Cloud Storage with Application Default Credentials (never an API key)."""
    import google.auth
    from google.auth import exceptions as auth_exceptions

    try:
        credentials, adc_project = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
    except auth_exceptions.DefaultCredentialsError:
        raise ConfigurationError("no Google Cloud credentials found", hint=LOGIN_HINT) from None
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or adc_project
    if not project:
        raise ConfigurationError(
            "no Google Cloud project: set gcp.project in the spec or GOOGLE_CLOUD_PROJECT",
            hint=LOGIN_HINT,
        )
    from google import genai
    from google.cloud import storage

    from vertex_tuner.backends.gcs import GcsStorage
    from vertex_tuner.backends.genai import (
        GenaiBatchPredictor,
        GenaiGenerator,
        GenaiRewardValidator,
        GenaiTokenCounter,
        GenaiTuner,
        http_options,
        service_client,
    )

    def client_for(where: str) -> Any:
        return genai.Client(
            vertexai=True,
            project=project,
            location=where,
            credentials=credentials,
            # Pinned: GOOGLE_GENAI_API_VERSION=v1 would otherwise move every call to v1.
            http_options=http_options(),
        )

    client = client_for(location)
    return Backends(
        storage=GcsStorage(storage.Client(project=project, credentials=credentials)),
        tuner=GenaiTuner(client),
        generator=GenaiGenerator(client, location=location, client_for=client_for),
        project=project,
        location=location,
        is_sandbox=False,
        description=f"Google Cloud project {project}, {location}",
        counter=GenaiTokenCounter(client),
        service_generator=lambda p, where: GenaiGenerator(service_client(p, where)),
        batch=GenaiBatchPredictor(client),
        rewards=GenaiRewardValidator(client, project=project, location=location),
    )


def sandbox_backends(info: SandboxInfo) -> Backends:
    """The same adapters and the same clients, pointed at the sandbox's emulators."""
    from vertex_tuner.backends.gcs import GcsStorage
    from vertex_tuner.backends.genai import (
        GenaiBatchPredictor,
        GenaiGenerator,
        GenaiRewardValidator,
        GenaiTokenCounter,
        GenaiTuner,
    )
    from vertex_tuner.sandbox.clients import genai_client, storage_client

    client = genai_client(info)
    return Backends(
        storage=GcsStorage(storage_client(info), create_missing_buckets=True),
        tuner=GenaiTuner(client),
        generator=GenaiGenerator(client),
        project=info.project,
        location=info.location,
        is_sandbox=True,
        description=f"sandbox at {info.vertex_base_url} (local emulators, not Google Cloud)",
        # The emulator counts with its own tokenizer, and has no quota to pace.
        counter=GenaiTokenCounter(client, source="the sandbox emulator", per_minute=None),
        service_generator=lambda p, where: GenaiGenerator(
            genai_client(info, project=p, location=where)
        ),
        batch=GenaiBatchPredictor(client),
        rewards=GenaiRewardValidator(client, project=info.project, location=info.location),
    )
