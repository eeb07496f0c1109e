"""What a value that reaches a host, a URL path or a resource name may look like.

A spec from a pull request is untrusted: ``gcp.location`` becomes the API host
(``{location}-aiplatform.googleapis.com``) and ``gcp.project`` part of every path, so a value such
as ``localhost:8999/steal?`` would send the bearer token elsewhere. Every such value is checked
against the form Google documents (an allowlist, never a blocklist) when the spec loads and when
it comes from a flag. Each function returns the value or raises ``ValueError`` saying what is
allowed.

Forms (Google Cloud documentation: "Creating and managing projects", "Locations", "Bucket
naming", "Service accounts", "Cloud KMS resource names"):

- project id: 6-30 characters, lowercase letters, digits and hyphens, starting with a letter and
  not ending with a hyphen (an optional legacy ``domain.com:`` prefix); or a project number;
- location: ``global``, the ``us``/``eu`` multi-regions, or ``area-directionN``;
- service account: an e-mail address of a ``gserviceaccount.com`` domain;
- resource ids in model and endpoint names: digits (or a model id's letters, digits and ``-``).
"""

from __future__ import annotations

import re

_PROJECT = re.compile(
    r"(?:[a-z][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20}"
)
_LOCATION = re.compile(r"global|us|eu|[a-z]{2,20}-[a-z]{2,20}[0-9]{1,2}")
_SERVICE_ACCOUNT = re.compile(
    r"[a-z0-9][a-z0-9._+-]{0,62}@[a-z0-9][a-z0-9.-]{0,252}\.gserviceaccount\.com"
)
_PREFIX = re.compile(r"(?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_.-]+")
_MODEL_ID = re.compile(r"[a-z0-9][a-z0-9.-]{0,127}")
#: In resource names the project is usually its number; any id or number is one path segment.
_TUNED_MODEL = re.compile(
    r"projects/[a-z0-9][a-z0-9.:-]{0,62}/locations/(?P<location>[^/]+)/models/[0-9]{1,20}"
    r"(?:@[0-9]{1,10})?"
)
_ALIAS_REF = re.compile(r"[a-z][a-z0-9-]{0,47}@[a-z][a-z0-9-]{0,62}")
_SPEC_NAME = re.compile(r"[a-z][a-z0-9-]{0,47}")


def spec_name(value: str) -> str:
    """A job spec's ``name``: it becomes the tuned model's display name, a label value and a
    run-store key."""
    if not _SPEC_NAME.fullmatch(value):
        raise ValueError(
            "must start with a lowercase letter and use only lowercase letters, digits "
            "and '-' (at most 48 characters), e.g. support-tone"
        )
    return value


def project(value: str) -> str:
    if not _PROJECT.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Google Cloud project id (6-30 lowercase letters, digits and "
            "'-', starting with a letter) or number"
        )
    return value


def location(value: str) -> str:
    if not _LOCATION.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Google Cloud location (e.g. us-central1, europe-west4, us, global)"
        )
    return value


def service_account(value: str) -> str:
    if not _SERVICE_ACCOUNT.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a service account e-mail (NAME@PROJECT.iam.gserviceaccount.com)"
        )
    return value


def prefix(value: str) -> str:
    """An object-name prefix: path segments of letters, digits, ``_ . -``; no ``..``."""
    if value and (not _PREFIX.fullmatch(value) or ".." in value.split("/")):
        raise ValueError(
            f"{value!r} is not an object prefix (segments of letters, digits, '_', '.', '-' "
            "separated by '/', no '..')"
        )
    return value


def model(value: str) -> str:
    """A Gemini model id, a tuned model's resource name, or ``name@alias``."""
    if value.startswith("projects/"):
        match = _TUNED_MODEL.fullmatch(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a tuned model name (projects/P/locations/L/models/ID[@V])"
            )
        location(match["location"])
        return value
    if "@" in value:
        if not _ALIAS_REF.fullmatch(value):
            raise ValueError(f"{value!r} is not NAME@ALIAS (lowercase letters, digits, '-')")
        return value
    if not _MODEL_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a model id (e.g. gemini-2.5-flash)")
    return value


def registry(value: str) -> str:
    """A run store: a local path, or ``gs://bucket[/prefix]`` with a valid bucket and prefix."""
    if value.startswith("gs://"):
        bucket, _, rest = value.removeprefix("gs://").partition("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", bucket):
            raise ValueError(f"{value!r}: {bucket!r} is not a bucket name")
        prefix(rest.strip("/"))
    return value
