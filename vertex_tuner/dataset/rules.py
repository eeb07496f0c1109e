"""Vertex's rules for one converted example, as findings.

The sandbox's Vertex emulator applies the same function, so the validator and the emulator can
never disagree about what the service rejects. Findings whose code is in
:data:`TRUNCATION_CODES` are what Vertex truncates or drops rather than rejects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vertex_tuner.dataset import tokens
from vertex_tuner.dataset.findings import Finding
from vertex_tuner.dataset.gemini import (
    FILE_DATA_KEYS,
    FUNCTION_CALL_KEYS,
    FUNCTION_RESPONSE_KEYS,
    INLINE_DATA_KEYS,
    PART_KINDS,
    system_of,
)
from vertex_tuner.models import MAX_IMAGES_PER_EXAMPLE, PREFERENCE_MAX_TOKENS

if TYPE_CHECKING:
    from vertex_tuner.models import ModelInfo

#: Codes for problems Vertex truncates or drops silently instead of failing the job.
TRUNCATION_CODES = frozenset({"too-many-tokens", "too-many-images"})

#: What a ``fileData`` part's mimeType may start with, or be; and where its fileUri may point.
MEDIA_PREFIXES = ("image/", "video/", "audio/")
MEDIA_TYPES = frozenset({"application/pdf", "text/plain"})
FILE_URI_PREFIXES = ("gs://", "https://", "http://")


def check_example(
    example: Mapping[str, Any],
    *,
    method: str,
    model: ModelInfo,
    line: int,
    measured: tuple[int, int] | None = None,
) -> list[Finding]:
    """Every rule the example breaks (empty when Vertex would take it as it is).

    ``measured`` is the example's (input, output) token estimate when the caller already has it.
    """
    out: list[Finding] = []

    def err(code: str, message: str, field: str | None = None) -> None:
        out.append(Finding("error", code, message, line=line, field=field))

    contents = example.get("contents")
    if not isinstance(contents, list) or not contents:
        err("missing-contents", "contents must be a non-empty list of turns", "contents")
        return out
    system = system_of(example)
    if system is not None:
        _check_system(system, err)
    images = 0
    previous: str | None = None
    for i, content in enumerate(contents):
        field = f"contents[{i}]"
        if not isinstance(content, dict):
            err("bad-shape", f"{field} must be an object with role and parts", field)
            return out
        parts = content.get("parts")
        role = content.get("role")
        is_response = isinstance(parts, list) and any(
            isinstance(p, dict) and any(k in p for k in FUNCTION_RESPONSE_KEYS) for p in parts
        )
        if role is None and is_response:
            role = "user"  # a functionResponse turn may have no role
        if role not in ("user", "model"):
            problem = "has no role" if role is None else f"has role {role!r}"
            err(
                "bad-role",
                f"{field} {problem}; use user or model (only a functionResponse turn may omit "
                "it; a system prompt goes in systemInstruction)",
                f"{field}.role",
            )
            return out
        if role == previous:
            err(
                "consecutive-turns",
                f"{field} is a second {role} turn in a row; user and model turns must alternate",
                f"{field}.role",
            )
        previous = role
        if not isinstance(parts, list) or not parts:
            err("empty-parts", f"{field}.parts must be a non-empty list", f"{field}.parts")
            continue
        for j, part in enumerate(parts):
            images += _check_part(
                part,
                f"{field}.parts[{j}]",
                role,
                err,
                text_only=method == "preference",
                no_functions=method == "reinforcement",
            )
    if method == "preference":
        _check_preference(example, contents, err)
    elif method == "reinforcement":
        if previous != "user":
            err(
                "must-end-on-user",
                "a reinforcement prompt must end on a user turn (the model writes the answers "
                "the reward scores)",
                f"contents[{len(contents) - 1}].role",
            )
        _check_references(example.get("references"), err)
    elif method == "distillation":
        if previous != "user":
            err(
                "must-end-on-user",
                "a distillation prompt must end on a user turn (the teacher writes the answer)",
                f"contents[{len(contents) - 1}].role",
            )
    elif previous != "model":
        err(
            "must-end-on-model",
            "the conversation must end on a model turn (the answer to learn)",
            f"contents[{len(contents) - 1}].role",
        )
    if images > MAX_IMAGES_PER_EXAMPLE:
        out.append(
            Finding(
                "error",
                "too-many-images",
                f"{images} images; Vertex allows {MAX_IMAGES_PER_EXAMPLE} per example "
                "and drops the rest",
                line=line,
            )
        )
    if not any(f.severity == "error" and f.code not in TRUNCATION_CODES for f in out):
        if method == "preference":
            prompt, completion = tokens.preference_tokens(example)
            if prompt + completion > PREFERENCE_MAX_TOKENS:
                out.append(
                    Finding(
                        "error",
                        "too-many-tokens",
                        f"~{prompt + completion:,} tokens (estimated) is over the "
                        f"{PREFERENCE_MAX_TOKENS:,} limit for input plus completion",
                        line=line,
                    )
                )
        else:
            n_in, n_out = measured or tokens.example_tokens(example)
            if n_in + n_out > model.max_tokens_per_example:
                out.append(
                    Finding(
                        "error",
                        "too-many-tokens",
                        f"~{n_in + n_out:,} tokens (estimated) is over {model.id}'s limit of "
                        f"{model.max_tokens_per_example:,} per example; Vertex truncates it",
                        line=line,
                    )
                )
    return out


def _check_system(system: Any, err: Any) -> None:
    # Named as in the converted example, whichever spelling it came in: formats.source_paths
    # turns the name back into the line's own.
    field = "systemInstruction"
    if not isinstance(system, dict) or not isinstance(system.get("parts"), list):
        err("bad-system", 'systemInstruction must be {"parts": [{"text": ...}]}', field)
        return
    for j, part in enumerate(system["parts"]):
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str):
            err("bad-system", "systemInstruction may hold only text parts", f"{field}.parts[{j}]")
        elif not text.strip():
            err("empty-text", "the system instruction is empty", f"{field}.parts[{j}].text")


def _check_references(references: Any, err: Any) -> None:
    """Reinforcement tuning's ``references``: a map of strings to strings, which the reward's
    ``{{references.KEY}}`` placeholders read (absent: the reward reads none)."""
    if references is None:
        return
    if not isinstance(references, dict):
        err("bad-references", "references must be an object of strings", "references")
        return
    for key, value in references.items():
        if not isinstance(value, str):
            err(
                "bad-references",
                f"references.{key} is {type(value).__name__}; Vertex takes strings only "
                "(write numbers as text)",
                f"references.{key}",
            )


def _check_part(
    part: Any,
    field: str,
    role: str,
    err: Any,
    *,
    text_only: bool = False,
    no_functions: bool = False,
) -> int:
    """Check one part; returns 1 for an image, else 0."""
    if not isinstance(part, dict):
        err("bad-part", f"{field} must be an object", field)
        return 0
    kinds = [k for k in PART_KINDS if k in part]
    if len(kinds) != 1:
        err(
            "bad-part",
            f"{field} must hold exactly one of text, fileData, functionCall or functionResponse",
            field,
        )
        return 0
    kind = kinds[0]
    value = part[kind]
    if kind == "text":
        if not isinstance(value, str):
            err("bad-part", f"{field}.text must be a string", f"{field}.text")
        elif not value.strip():
            err("empty-text", "empty or whitespace-only text", f"{field}.text")
        return 0
    if text_only:
        err("bad-part", "preference examples take text parts only", field)
        return 0
    if kind in FILE_DATA_KEYS:
        return _check_file_data(value, f"{field}.{kind}", err)
    if kind in INLINE_DATA_KEYS:
        err(
            "bad-part",
            "tuning data cannot inline files; upload it to Cloud Storage and use fileData",
            field,
        )
        return 0
    if no_functions and kind in FUNCTION_CALL_KEYS + FUNCTION_RESPONSE_KEYS:
        err("bad-part", "reinforcement prompts take text and fileData parts only", field)
        return 0
    if kind in FUNCTION_CALL_KEYS:
        if role != "model":
            err("bad-part", "a functionCall belongs in a model turn", field)
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            err("bad-part", "functionCall needs a name", f"{field}.{kind}.name")
    if kind in FUNCTION_RESPONSE_KEYS:
        if role != "user":
            err("bad-part", "a functionResponse belongs in a turn with no role (or user)", field)
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            err("bad-part", "functionResponse needs a name", f"{field}.{kind}.name")
    return 0


def _check_file_data(value: Any, field: str, err: Any) -> int:
    if not isinstance(value, dict):
        err("bad-file-data", "fileData must be {mimeType, fileUri}", field)
        return 0
    uri = value.get("fileUri", value.get("file_uri"))
    mime = value.get("mimeType", value.get("mime_type"))
    if not isinstance(uri, str) or not uri.startswith(FILE_URI_PREFIXES):
        err(
            "bad-file-uri",
            f"fileUri {uri!r} must be a gs:// object or an http(s) URL",
            f"{field}.fileUri",
        )
    elif uri.startswith("gs://") and "/" not in uri[5:].strip("/"):
        err("bad-file-uri", f"fileUri {uri!r} names a bucket, not an object", f"{field}.fileUri")
    if not isinstance(mime, str) or not (mime.startswith(MEDIA_PREFIXES) or mime in MEDIA_TYPES):
        err(
            "bad-mime-type",
            f"mimeType {mime!r} is not a media type Gemini tuning accepts",
            f"{field}.mimeType",
        )
        return 0
    return 1 if mime.startswith("image/") else 0


def _check_preference(example: Mapping[str, Any], contents: list[Any], err: Any) -> None:
    last = contents[-1]
    if isinstance(last, dict) and last.get("role") != "user":
        err(
            "must-end-on-user",
            "preference contents must end on a user turn",
            f"contents[{len(contents) - 1}].role",
        )
    completions = example.get("completions")
    if not isinstance(completions, list):
        err("bad-completions", "completions must be a list of {score, completion}", "completions")
        return
    scores = []
    for i, item in enumerate(completions):
        field = f"completions[{i}]"
        if not isinstance(item, dict):
            err("bad-completions", f"{field} must be an object", field)
            continue
        scores.append(item.get("score"))
        completion = item.get("completion")
        if not isinstance(completion, dict) or completion.get("role") != "model":
            err(
                "bad-completions", f"{field}.completion must be a model turn", f"{field}.completion"
            )
            continue
        parts = completion.get("parts")
        if (
            not isinstance(parts, list)
            or not parts
            or not all(
                isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"].strip()
                for p in parts
            )
        ):
            err(
                "empty-text",
                f"{field}.completion needs non-empty text parts",
                f"{field}.completion.parts",
            )
    if sorted(str(s) for s in scores) != ["0", "1"]:
        err(
            "bad-scores",
            "preference examples need exactly one completion scored 1 and one scored 0",
            "completions",
        )
