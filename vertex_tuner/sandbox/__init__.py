"""The sandbox: local emulators of Cloud Storage and Vertex AI for the real Google clients.

A clearly labelled test double, chosen with ``--sandbox`` and never used silently in place of
Google Cloud. See docs/sandbox.md.
"""

from __future__ import annotations

from vertex_tuner.sandbox.clients import genai_client, storage_client
from vertex_tuner.sandbox.faults import FaultSpec, parse_faults
from vertex_tuner.sandbox.info import SandboxInfo
from vertex_tuner.sandbox.runtime import Sandbox, open_sandbox

__all__ = [
    "FaultSpec",
    "Sandbox",
    "SandboxInfo",
    "genai_client",
    "open_sandbox",
    "parse_faults",
    "storage_client",
]
