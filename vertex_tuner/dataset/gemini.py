"""How a Gemini example is read: the few lookups every part of vertex-tuner must agree on.

Vertex parses tuning data as protobuf JSON, which takes a field in either spelling (lowerCamelCase
or the proto's snake_case) and treats ``null`` as "not set". So the system instruction is
``systemInstruction`` unless that is absent or null, and then ``system_instruction``. The
validator's token counts, its rules, prompt keys, the conversion, the fast path and evaluation
all read it through :func:`system_of` (the fast path inlines the same two lookups), so a line
can never be measured with its system instruction and checked without it.

Pure functions over parsed JSON, no imports beyond the standard library: anything in the
package, the sandbox and evaluation may use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The spellings of the system instruction, in the order they are tried.
SYSTEM_KEYS = ("systemInstruction", "system_instruction")

FILE_DATA_KEYS = ("fileData", "file_data")
INLINE_DATA_KEYS = ("inlineData", "inline_data")
FUNCTION_CALL_KEYS = ("functionCall", "function_call")
FUNCTION_RESPONSE_KEYS = ("functionResponse", "function_response")
#: Part keys that hold a file rather than text: such a part is media (a fixed token cost, and it
#: makes the example multimodal).
MEDIA_PART_KEYS = frozenset((*FILE_DATA_KEYS, *INLINE_DATA_KEYS))
#: Every key that says what a part is; a valid part holds exactly one of them.
PART_KINDS = (
    "text",
    *FILE_DATA_KEYS,
    *INLINE_DATA_KEYS,
    *FUNCTION_CALL_KEYS,
    *FUNCTION_RESPONSE_KEYS,
)


def system_key(example: Mapping[str, Any]) -> str | None:
    """The key :func:`system_of` reads (for field paths), or None when there is no system
    instruction."""
    for key in SYSTEM_KEYS:
        if example.get(key) is not None:
            return key
    return None


def system_of(example: Mapping[str, Any]) -> Any:
    """The system instruction as written: ``systemInstruction`` unless it is absent or null,
    else ``system_instruction`` (None when neither holds one). Not checked: it may be any JSON
    value."""
    system = example.get("systemInstruction")
    return example.get("system_instruction") if system is None else system


def is_media(part: Any) -> bool:
    """Whether a part holds a file (``fileData`` or ``inlineData``, either spelling)."""
    return isinstance(part, Mapping) and not MEDIA_PART_KEYS.isdisjoint(part)


def content_text(content: Any) -> str:
    """The text of a ``Content``'s text parts, joined with nothing between them (as Gemini's
    clients join a response's parts); other parts and anything malformed add nothing."""
    parts = content.get("parts") if isinstance(content, Mapping) else None
    if not isinstance(parts, list):
        return ""
    texts = []
    for part in parts:
        text = part.get("text") if isinstance(part, Mapping) else None
        if isinstance(text, str):
            texts.append(text)
    return "".join(texts)


def last_user_text(contents: Any) -> str:
    """The text of the last user turn: what a prompt is asking, for reports and the emulator's
    nearest-example lookup. A turn without a role is a user turn (a ``functionResponse`` may
    omit it); "" when there is none."""
    if not isinstance(contents, (list, tuple)):
        return ""
    for content in reversed(contents):
        if isinstance(content, Mapping) and content.get("role", "user") == "user":
            return content_text(content)
    return ""
