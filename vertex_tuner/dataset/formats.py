"""The dataset shapes vertex-tuner reads, how ``auto`` tells them apart, and converters to Gemini.

Everything becomes what Vertex accepts for Gemini tuning: one JSON object per line with
``contents`` (``role`` user/model, ``parts``), an optional ``systemInstruction`` and ``tools``;
the preference format keeps its ``completions``.

=============  ====================================================================
gemini         ``{"contents": [...], "systemInstruction"|"system_instruction": ...}``
messages       ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}]}``
text-pairs     ``{"input_text", "output_text"}`` or ``{"prompt", "completion"}``
csv            CSV/TSV with a header; ``dataset.columns`` names the prompt/response/system
preference     ``{"contents": [...ending on user], "completions": [{"score", "completion"}]}``
=============  ====================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from vertex_tuner.dataset.gemini import system_key

_PAIR_KEYS = (("input_text", "output_text"), ("prompt", "completion"))
#: Column names tried, in order, when a CSV has no ``dataset.columns`` mapping.
CSV_PROMPT_COLUMNS = ("prompt", "input", "input_text", "question", "ticket", "text")
CSV_RESPONSE_COLUMNS = ("response", "completion", "output", "output_text", "answer", "label")
CSV_SYSTEM_COLUMNS = ("system", "system_instruction")


class ConversionError(Exception):
    """A row that cannot be converted; ``code`` and ``field`` go into the finding."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def detect(obj: Any) -> str | None:
    """The format of one parsed JSONL object, or None when it is none of them."""
    if not isinstance(obj, dict):
        return None
    if "completions" in obj and "contents" in obj:
        return "preference"
    if "contents" in obj:
        return "gemini"
    if "messages" in obj:
        return "messages"
    if any(a in obj and b in obj for a, b in _PAIR_KEYS):
        return "text-pairs"
    return None


def _text_content(role: str, text: Any, field: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ConversionError("not-text", f"{field} must be a string", field)
    return {"role": role, "parts": [{"text": text}]}


def from_gemini(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    # A null systemInstruction sets nothing (gemini.system_of), so the snake_case spelling takes
    # its place: the converted example then says what was read, under one spelling.
    if out.get("systemInstruction") is None and "system_instruction" in out:
        out["systemInstruction"] = out.pop("system_instruction")
    return out


_ROLES = {"user": "user", "assistant": "model", "model": "model"}


def from_messages(obj: Mapping[str, Any]) -> dict[str, Any]:
    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise ConversionError("bad-shape", "messages must be a list", "messages")
    out: dict[str, Any] = {}
    contents: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        field = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ConversionError("bad-shape", f"{field} must be an object", field)
        role = message.get("role")
        if role == "system":
            if contents or "systemInstruction" in out:
                raise ConversionError(
                    "misplaced-system",
                    f"{field}: a system message may only be the first message",
                    f"{field}.role",
                )
            out["systemInstruction"] = _text_content(
                "system", message.get("content"), f"{field}.content"
            )
            continue
        mapped = _ROLES.get(role) if isinstance(role, str) else None
        if mapped is None:
            raise ConversionError(
                "bad-role",
                f"{field}.role is {role!r}; use system, user or assistant",
                f"{field}.role",
            )
        contents.append(_text_content(mapped, message.get("content"), f"{field}.content"))
    out["contents"] = contents
    return out


def from_pairs(obj: Mapping[str, Any]) -> dict[str, Any]:
    for prompt_key, answer_key in _PAIR_KEYS:
        if prompt_key in obj and answer_key in obj:
            return {
                "contents": [
                    _text_content("user", obj[prompt_key], prompt_key),
                    _text_content("model", obj[answer_key], answer_key),
                ]
            }
    raise ConversionError("bad-shape", "expected input_text/output_text or prompt/completion", None)


def csv_columns(header: list[str], mapping: Mapping[str, str] | None) -> dict[str, str | None]:
    """Which columns hold the prompt, the response and (optionally) the system instruction."""
    if mapping:
        missing = [c for c in mapping.values() if c not in header]
        if missing:
            raise ConversionError(
                "missing-column",
                f"column {missing[0]!r} (from dataset.columns) is not in the header "
                f"({', '.join(header)})",
            )
        return {
            "prompt": mapping.get("prompt"),
            "response": mapping.get("response"),
            "system": mapping.get("system"),
        }

    def first(options: tuple[str, ...]) -> str | None:
        return next((c for c in options if c in header), None)

    found = {
        "prompt": first(CSV_PROMPT_COLUMNS),
        "response": first(CSV_RESPONSE_COLUMNS),
        "system": first(CSV_SYSTEM_COLUMNS),
    }
    if found["prompt"] is None or found["response"] is None:
        raise ConversionError(
            "missing-column",
            f"cannot tell which columns hold the prompt and the response ({', '.join(header)})",
            None,
        )
    return found


def from_csv_row(row: Mapping[str, str], columns: Mapping[str, str | None]) -> dict[str, Any]:
    prompt, response, system = columns["prompt"], columns["response"], columns.get("system")
    assert prompt is not None and response is not None
    out: dict[str, Any] = {
        "contents": [
            _text_content("user", row.get(prompt, ""), prompt),
            _text_content("model", row.get(response, ""), response),
        ]
    }
    if system and row.get(system):
        out["systemInstruction"] = _text_content("system", row[system], system)
    return out


def convert(obj: Any, fmt: str) -> dict[str, Any]:
    """One parsed JSONL object in ``fmt`` → a Gemini example (raises ConversionError)."""
    if not isinstance(obj, dict):
        raise ConversionError("not-an-object", "each line must be a JSON object")
    if fmt in ("gemini", "preference"):
        if "contents" not in obj:
            raise ConversionError("bad-shape", "missing contents", "contents")
        return from_gemini(obj)
    if fmt == "messages":
        return from_messages(obj)
    if fmt == "text-pairs":
        return from_pairs(obj)
    raise ValueError(f"unknown format {fmt!r}")  # the Validator checks formats up front


#: A field path of a converted example: ``contents[1]``, ``contents[1].role``,
#: ``contents[0].parts[0].text``, ``systemInstruction.parts[0].text``...
_CONVERTED_PATH = re.compile(
    r"\b(?:contents\[(\d+)\]|(systemInstruction))(\.role|\.parts(?:\[0\](?:\.text)?)?)?"
)


def source_paths(
    fmt: str, obj: Any, columns: Mapping[str, str | None] | None = None
) -> Callable[[str], str] | None:
    """A function that rewrites the converted example's field paths, in a finding's field or
    message, into the paths of the line as written (``contents[1].parts[0].text`` of a chat line
    is its ``messages[2].content``); None when the line is already in Gemini's shape.

    ``obj`` is the parsed line (a CSV row for ``csv``, with ``columns`` from
    :func:`csv_columns`).
    """
    names: list[str] = []
    system: str | None = None
    text_suffix = ""
    if fmt == "messages":
        messages = obj.get("messages") if isinstance(obj, dict) else None
        if not isinstance(messages, list):
            return None
        for i, message in enumerate(messages):
            if isinstance(message, dict) and message.get("role") == "system":
                system = f"messages[{i}]"
            else:
                names.append(f"messages[{i}]")
        text_suffix = ".content"
    elif fmt == "text-pairs" and isinstance(obj, dict):
        pair = next(((a, b) for a, b in _PAIR_KEYS if a in obj and b in obj), None)
        if pair is None:
            return None
        names = list(pair)
    elif fmt == "csv" and columns is not None:
        names = [f"column {columns['prompt']!r}", f"column {columns['response']!r}"]
        if columns.get("system"):
            system = f"column {columns['system']!r}"
    elif fmt in ("gemini", "preference") and isinstance(obj, dict):
        if system_key(obj) == "system_instruction":
            return lambda text: text.replace("systemInstruction", "system_instruction")
        return None
    else:
        return None
    chat = fmt == "messages"

    def rewrite(match: re.Match[str]) -> str:
        index, is_system, rest = match.group(1), match.group(2), match.group(3) or ""
        base = system if is_system else (names[int(index)] if int(index) < len(names) else None)
        if base is None:
            return match.group(0)
        if rest == ".role":
            return base + rest if chat else base
        return base + (text_suffix if rest else "")

    def translate(text: str) -> str:
        text = _CONVERTED_PATH.sub(rewrite, text)
        if chat:
            text = text.replace("a model turn", "an assistant turn")
            text = text.replace("model turn", "assistant turn")
        return text

    return translate
