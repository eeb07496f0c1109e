"""The words vertex-tuner uses in more than one layer, each defined once.

Tuning methods, dataset formats, evaluation targets and vertex-tuner's own job labels are read by
the spec, the validator, the service, the evaluator and the CLI; keeping them here (below all of
those) means a new method or format is one edit, and no two modules can disagree on the list.
"""

from __future__ import annotations

from typing import Literal, get_args

Method = Literal["supervised", "preference", "distillation", "reinforcement"]
#: The tuning methods, in the order the docs list them.
METHODS: tuple[str, ...] = get_args(Method)

DatasetFormat = Literal["auto", "gemini", "messages", "text-pairs", "csv", "preference"]
#: Every ``dataset.format`` value, ``auto`` first.
DATASET_FORMATS: tuple[str, ...] = get_args(DatasetFormat)

Target = Literal["tuned", "base", "production"]
#: The models an evaluation compares, in the order reports show them.
TARGETS: tuple[str, ...] = get_args(Target)

#: The Vertex API version every request goes to. google-genai reads GOOGLE_GENAI_API_VERSION from
#: the environment, and v1 has no distillationSpec, outputUri, tuningJobState or
#: tuningJobMetadata, so every client vertex-tuner builds (the sandbox's too) names it.
VERTEX_API_VERSION = "v1beta1"

#: Labels vertex-tuner sets on every tuning job; a spec may not use these keys.
LABEL_SPEC = "vertex-tuner-spec"
LABEL_FINGERPRINT = "vertex-tuner-fingerprint"
LABEL_VERSION = "vertex-tuner-version"
RESERVED_LABELS = frozenset({LABEL_SPEC, LABEL_FINGERPRINT, LABEL_VERSION})
#: Label values are at most 63 characters; 40 hex digits (160 bits) of the sha256 are plenty.
FINGERPRINT_LABEL_LENGTH = 40
