"""Checks for well-formed, text-only supervised examples straight from the parsed line.

Nearly every line of a real dataset is fine, so the validator first tries these: each reads the
parsed object once and either proves the example passes every rule that
:func:`vertex_tuner.dataset.rules.check_example` would apply to its converted form, or returns
``None`` and leaves the line to the full path (convert, check, explain). They never decide that
something is wrong; they only skip work when nothing is.

A result is ``(prompt key, answer texts, input tokens, output tokens, billable tokens)``, equal to
what :mod:`vertex_tuner.dataset.keys` and :func:`vertex_tuner.dataset.tokens.measure` give for the
converted example (the tests hold them to that). Tokens are counted as
:func:`vertex_tuner.dataset.tokens.text_tokens` does: ``ceil(len / 4)``, written out inline
because this is the validator's hot loop.

A Gemini line is written back as it is, so a field the check does not read (another key of the
line, of a turn, of the system instruction) could nest deeper than orjson writes
(:mod:`vertex_tuner.dataset.nesting`); such fields are walked, and a line too deep is left to the
full path. Chat and text-pair lines keep only their texts: their other fields never matter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vertex_tuner.dataset.nesting import MAX_DEPTH, nests_deeper
from vertex_tuner.dataset.tokens import CHARS_PER_TOKEN, PADDING_PER_RECORD

FastResult = tuple[list[Any], list[str], int, int, int]
FastCheck = Callable[[dict[str, Any], int], "FastResult | None"]

_ROUND = CHARS_PER_TOKEN - 1
_MESSAGE_ROLES = {"user": "user", "assistant": "model", "model": "model"}
#: The keys :func:`gemini` reads, of the line, of a turn and of the system instruction.
_LINE_KEYS = frozenset(("contents", "systemInstruction", "system_instruction", "tools"))
_TURN_KEYS = frozenset(("role", "parts"))
_SYSTEM_KEYS = _TURN_KEYS


def _deep_beside(obj: dict[str, Any], known: frozenset[str], level: int) -> bool:
    """Whether a field of ``obj`` (a dict ``level`` deep in the line) other than ``known`` nests
    past :data:`MAX_DEPTH`. Only called when ``obj`` has more keys than the check read."""
    return any(
        key not in known and nests_deeper(value, MAX_DEPTH - level) for key, value in obj.items()
    )


def messages(obj: dict[str, Any], limit: int) -> FastResult | None:
    """``{"messages": [system?, user, assistant, ...]}`` ending on the assistant."""
    if len(obj) != 1 and "contents" in obj:
        return None  # auto-detection calls it Gemini: the full path says so
    turns = obj.get("messages")
    if type(turns) is not list:
        return None
    if len(turns) == 3 and type(turns[0]) is dict:
        found = _exchange(turns[0], turns[1], turns[2], limit)
        if found is not None:
            return found
    elif len(turns) == 2:
        found = _exchange(None, turns[0], turns[1], limit)
        if found is not None:
            return found
    key: list[Any] = [0]
    system = seen = billable = n_in = n_out = 0
    previous = None
    mark = 0
    text = ""
    for message in turns:
        if type(message) is not dict:
            return None
        text = message.get("content")  # type: ignore[assignment]
        if type(text) is not str or not text or text.isspace():
            return None
        n = (len(text) + _ROUND) // CHARS_PER_TOKEN
        given = message.get("role")
        role = _MESSAGE_ROLES.get(given) if type(given) is str else None
        if role is None:
            if given != "system" or previous is not None or key[0]:
                return None
            key = [1, text]
            system = n
            continue
        if role == previous:
            return None
        previous = role
        if role == "model":
            n_in = system + seen
            n_out = n
            billable += n_in + n + PADDING_PER_RECORD
            mark = len(key)
        key += (role, 1, text)
        seen += n
    if previous != "model" or n_in + n_out > limit:
        return None
    del key[mark:]
    return key, [text], n_in, n_out, billable


def _exchange(s: Any, u: Any, a: Any, limit: int) -> FastResult | None:
    """The commonest shapes by far, ``[system, user, assistant]`` and ``[user, assistant]``,
    unrolled: two thirds of the time of the general loop. ``s`` is the system message, or None
    when there is none (the caller passes only a dict there)."""
    if type(u) is not dict or type(a) is not dict:
        return None
    prompt, answer = u.get("content"), a.get("content")
    if not (
        type(prompt) is str
        and type(answer) is str
        and prompt
        and answer
        and u.get("role") == "user"
        and a.get("role") in ("assistant", "model")
        and not prompt.isspace()
        and not answer.isspace()
    ):
        return None
    if s is None:
        return _one_exchange(None, prompt, answer, limit)
    if type(s) is not dict or s.get("role") != "system":
        return None
    system = s.get("content")
    if type(system) is not str or not system or system.isspace():
        return None
    return _one_exchange(system, prompt, answer, limit)


def _one_exchange(system: str | None, prompt: str, answer: str, limit: int) -> FastResult | None:
    """The result for one exchange whose texts are known to be non-blank: prompt key, answer,
    and token figures (None when it is over ``limit``)."""
    n_in = (len(prompt) + _ROUND) // CHARS_PER_TOKEN
    n_out = (len(answer) + _ROUND) // CHARS_PER_TOKEN
    key: list[Any]
    if system is None:
        key = [0, "user", 1, prompt]
    else:
        n_in += (len(system) + _ROUND) // CHARS_PER_TOKEN
        key = [1, system, "user", 1, prompt]
    if n_in + n_out > limit:
        return None
    return key, [answer], n_in, n_out, n_in + n_out + PADDING_PER_RECORD


def _text_parts(parts: Any) -> tuple[list[str], int] | None:
    """(texts, tokens) of parts that are all ``{"text": non-blank str}``."""
    if type(parts) is not list or not parts:
        return None
    texts = []
    n = 0
    for part in parts:
        if type(part) is not dict or len(part) != 1:
            return None
        text = part.get("text")
        if type(text) is not str or not text or text.isspace():
            return None
        texts.append(text)
        n += (len(text) + _ROUND) // CHARS_PER_TOKEN
    return texts, n


def _single_text(content: Any, role: str) -> str | None:
    """The text of ``{"role": role, "parts": [{"text": non-blank}]}``, else None."""
    if type(content) is not dict or content.get("role") != role:
        return None
    if len(content) != 2 and _deep_beside(content, _TURN_KEYS, 3):
        return None
    return _only_text(content.get("parts"))


def _only_text(parts: Any) -> str | None:
    """The text of ``[{"text": non-blank}]``, else None."""
    if type(parts) is not list or len(parts) != 1:
        return None
    part = parts[0]
    if type(part) is not dict or len(part) != 1:
        return None
    text = part.get("text")
    if type(text) is not str or not text or text.isspace():
        return None
    return text


def _gemini_exchange(system_value: Any, u: Any, m: Any, limit: int) -> FastResult | None:
    """``[user, model]`` with one text part each, and at most a one-text system instruction,
    unrolled: half the time of the general loop."""
    prompt = _single_text(u, "user")
    answer = _single_text(m, "model") if prompt is not None else None
    if prompt is None or answer is None:
        return None
    if system_value is None:
        return _one_exchange(None, prompt, answer, limit)
    if type(system_value) is not dict:
        return None
    if len(system_value) != 1 and _deep_beside(system_value, _SYSTEM_KEYS, 2):
        return None
    system = _only_text(system_value.get("parts"))
    if system is None:
        return None
    return _one_exchange(system, prompt, answer, limit)


def gemini(obj: dict[str, Any], limit: int) -> FastResult | None:
    """``{"contents": [...], "systemInstruction"?: ...}`` with text parts, ending on model.

    The system instruction is read inline, as :func:`vertex_tuner.dataset.gemini.system_of` reads
    it (``systemInstruction`` unless absent or null, else ``system_instruction``): a call costs
    more than the two lookups here. The oracle test (``tests/test_formats.py``, the fast path
    never disagrees with the full path) holds the two together, both spellings included.
    """
    if obj.get("tools") is not None or "completions" in obj:
        return None
    contents = obj.get("contents")
    if type(contents) is not list:
        return None
    system_value = obj.get("systemInstruction")
    if system_value is None:
        system_value = obj.get("system_instruction")
    # Nearly every line holds contents and at most a system instruction: one comparison.
    if len(obj) > 1 + (system_value is not None) and _deep_beside(obj, _LINE_KEYS, 1):
        return None
    if len(contents) == 2:
        quick = _gemini_exchange(system_value, contents[0], contents[1], limit)
        if quick is not None:
            return quick
    system = 0
    key: list[Any]
    if system_value is None:
        key = [0]
    else:
        if type(system_value) is not dict:
            return None
        if len(system_value) != 1 and _deep_beside(system_value, _SYSTEM_KEYS, 2):
            return None
        found = _text_parts(system_value.get("parts"))
        if found is None:
            return None
        key = [len(found[0]), *found[0]]
        system = found[1]
    seen = billable = n_in = n_out = 0
    previous = None
    mark = 0
    texts: list[str] = []
    for content in contents:
        if type(content) is not dict:
            return None
        role = content.get("role")
        if role == previous or (role != "user" and role != "model"):
            return None
        if len(content) != 2 and _deep_beside(content, _TURN_KEYS, 3):
            return None
        previous = role
        found = _text_parts(content.get("parts"))
        if found is None:
            return None
        texts, n = found
        if role == "model":
            n_in = system + seen
            n_out = n
            billable += n_in + n + PADDING_PER_RECORD
            mark = len(key)
        key += (role, len(texts), *texts)
        seen += n
    if previous != "model" or n_in + n_out > limit:
        return None
    del key[mark:]
    return key, texts, n_in, n_out, billable


def pairs(obj: dict[str, Any], limit: int) -> FastResult | None:
    """``{"input_text", "output_text"}`` or ``{"prompt", "completion"}``."""
    if "contents" in obj or "messages" in obj:
        return None
    if "input_text" in obj and "output_text" in obj:
        prompt, answer = obj["input_text"], obj["output_text"]
    elif "prompt" in obj and "completion" in obj:
        prompt, answer = obj["prompt"], obj["completion"]
    else:
        return None
    if (
        type(prompt) is not str
        or type(answer) is not str
        or not prompt
        or not answer
        or prompt.isspace()
        or answer.isspace()
    ):
        return None
    return _one_exchange(None, prompt, answer, limit)


#: The fast check for each input format (supervised tuning only).
CHECKS: dict[str, FastCheck] = {"messages": messages, "gemini": gemini, "text-pairs": pairs}
