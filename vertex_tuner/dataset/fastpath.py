"""Checks for well-formed, text-only supervised examples straight from the parsed line.

Nearly every line of a real dataset is fine, so the validator first tries these: each reads the
parsed object once and either proves the example passes every rule that
:func:`vertex_tuner.dataset.rules.check_example` would apply to its converted form, or returns
``None`` and leaves the line to the full path (convert, check, explain). They never decide that
something is wrong; they only skip work when nothing is.

A result is ``(prompt key, answer texts, input tokens, output tokens, billable tokens, media)``,
equal to what :mod:`vertex_tuner.dataset.keys` and :func:`vertex_tuner.dataset.tokens.measure`
give for the converted example, and whether it holds a file (the tests hold them to that).
Tokens are counted as :func:`vertex_tuner.dataset.tokens.text_tokens` does: ``ceil(len / 4)``,
written out inline because this is the validator's hot loop.

A Gemini line is written back as it is, so a field the check does not read (another key of the
line, of a turn, of the system instruction) could nest deeper than orjson writes
(:mod:`vertex_tuner.dataset.nesting`); such fields are walked, and a line too deep is left to the
full path. Tools and the parts that are not text are not walked: they are only ever in a line
whose prompt key (or answer) is their JSON, written at the depth they have in the line, and
orjson refusing to write it leaves the line to the full path. Chat and text-pair lines keep only
their texts: their other fields never matter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from orjson import OPT_SORT_KEYS as SORT_KEYS
from orjson import Fragment, JSONEncodeError, dumps

from vertex_tuner.dataset.gemini import FILE_DATA_KEYS, FUNCTION_CALL_KEYS, FUNCTION_RESPONSE_KEYS
from vertex_tuner.dataset.nesting import MAX_DEPTH, nests_deeper
from vertex_tuner.dataset.rules import FILE_URI_PREFIXES, MEDIA_PREFIXES, MEDIA_TYPES
from vertex_tuner.dataset.tokens import CHARS_PER_TOKEN, PADDING_PER_RECORD, TOKENS_PER_MEDIA_PART
from vertex_tuner.models import MAX_IMAGES_PER_EXAMPLE, PREFERENCE_MAX_TOKENS

#: (prompt key, answer, input tokens, output tokens, billable tokens, media). The keys are JSON
#: values whose JSON (sorted, for preference completions) is what :mod:`vertex_tuner.dataset.keys`
#: gives; an answer of None is the empty key. A prompt key that is not a flat list of texts is an
#: ``orjson.Fragment`` of its sorted JSON, so it needs no sorting. ``media``: a part holds a file.
FastResult = tuple["list[Any] | Fragment", Any, int, int, int, bool]
FastCheck = Callable[[dict[str, Any], int], "FastResult | None"]

_ROUND = CHARS_PER_TOKEN - 1
_MESSAGE_ROLES = {"user": "user", "assistant": "model", "model": "model"}
#: The keys the Gemini checks read, of the line (by the system instruction's spelling in force),
#: of a turn, of the system instruction and of a completion; any other is walked for its depth.
_CAMEL_LINE_KEYS = frozenset(("contents", "systemInstruction", "tools"))
_SNAKE_LINE_KEYS = frozenset(("contents", "system_instruction", "tools"))
_BARE_LINE_KEYS = frozenset(("contents", "tools"))
_CAMEL_PREFERENCE_KEYS = frozenset(("contents", "completions", "systemInstruction"))
_SNAKE_PREFERENCE_KEYS = frozenset(("contents", "completions", "system_instruction"))
_BARE_PREFERENCE_KEYS = frozenset(("contents", "completions"))
_TURN_KEYS = frozenset(("role", "parts"))
_SYSTEM_KEYS = _TURN_KEYS
_COMPLETION_ITEM_KEYS = frozenset(("score", "completion"))


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
    return key, [text], n_in, n_out, billable, False


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
    return key, [answer], n_in, n_out, n_in + n_out + PADDING_PER_RECORD, False


def _text_parts(parts: Any) -> tuple[list[str], int] | None:
    """(texts, tokens) of parts that are all ``{"text": non-blank str}``."""
    if type(parts) is not list or not parts:
        return None
    if len(parts) == 1:  # the commonest, without the loop
        text = _only_text(parts)
        return None if text is None else ([text], (len(text) + _ROUND) // CHARS_PER_TOKEN)
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


def _system_key(system_value: Any) -> tuple[list[Any], int] | None:
    """A present system instruction of text parts: the prompt key's first items (the part
    count, then the texts) and its tokens; None when the full path must look at it."""
    if type(system_value) is not dict:
        return None
    if len(system_value) != 1 and _deep_beside(system_value, _SYSTEM_KEYS, 2):
        return None
    found = _text_parts(system_value.get("parts"))
    if found is None:
        return None
    return [len(found[0]), *found[0]], found[1]


def _gemini_exchange(system_value: Any, u: Any, m: Any, limit: int) -> FastResult | None:
    """``[user, model]`` with one text part each, and at most a system instruction of text
    parts, unrolled: half the time of the general loop."""
    prompt = _single_text(u, "user")
    answer = _single_text(m, "model") if prompt is not None else None
    if prompt is None or answer is None:
        return None
    if system_value is None:
        return _one_exchange(None, prompt, answer, limit)
    read = _system_key(system_value)
    if read is None:
        return None
    key, n_in = read
    n_in += (len(prompt) + _ROUND) // CHARS_PER_TOKEN
    n_out = (len(answer) + _ROUND) // CHARS_PER_TOKEN
    if n_in + n_out > limit:
        return None
    key += ("user", 1, prompt)
    return key, [answer], n_in, n_out, n_in + n_out + PADDING_PER_RECORD, False


def _file_data(value: Any) -> int | None:
    """1 for a valid ``fileData`` value holding an image, 0 for other valid media, None when
    :func:`vertex_tuner.dataset.rules.check_example` would find anything to say about it."""
    if type(value) is not dict:
        return None
    uri = value.get("fileUri", value.get("file_uri"))
    mime = value.get("mimeType", value.get("mime_type"))
    if type(uri) is not str or not uri.startswith(FILE_URI_PREFIXES):
        return None
    if uri.startswith("gs://") and "/" not in uri[5:].strip("/"):
        return None
    if type(mime) is not str or not (mime.startswith(MEDIA_PREFIXES) or mime in MEDIA_TYPES):
        return None
    return 1 if mime.startswith("image/") else 0


def _turn_parts(parts: Any, role: Any) -> tuple[list[str] | None, int, str, int, int] | None:
    """(texts, tokens, role, images, files) of a turn's parts: text, ``fileData``,
    ``functionCall`` and ``functionResponse`` (either spelling), each valid in a turn of
    ``role`` (a turn of function responses may omit it: it is a user turn); ``texts`` is None
    unless every part is text. None for anything else, or anything the rules would report.
    How deep the values nest is left to the caller, which writes them."""
    if type(parts) is not list or not parts:
        return None
    texts: list[str] | None = []
    n = images = files = 0
    calls = responses = False
    for part in parts:
        if type(part) is not dict or len(part) != 1:
            return None
        text = part.get("text")
        if type(text) is str:
            if not text or text.isspace():
                return None
            if texts is not None:
                texts.append(text)
            n += (len(text) + _ROUND) // CHARS_PER_TOKEN
            continue
        texts = None
        ((kind, value),) = part.items()
        if kind in FILE_DATA_KEYS:
            image = _file_data(value)
            if image is None:
                return None
            images += image
            files += 1
            n += TOKENS_PER_MEDIA_PART
        elif kind in FUNCTION_CALL_KEYS or kind in FUNCTION_RESPONSE_KEYS:
            if type(value) is not dict or type(value.get("name")) is not str:
                return None
            if kind in FUNCTION_CALL_KEYS:
                calls = True
            else:
                responses = True
            try:
                # As tokens.measure counts them: the size of the part's JSON.
                n += (len(dumps(part)) + _ROUND) // CHARS_PER_TOKEN
            except JSONEncodeError:
                return None  # deeper than orjson writes: the full path says so
        else:
            return None  # not text, inline data (an error) or no kind Vertex knows
    if role is None and responses:
        role = "user"
    if role == "model":
        if responses:
            return None
    elif role == "user":
        if calls:
            return None
    else:
        return None
    return texts, n, role, images, files


def _gemini_turns(
    obj: dict[str, Any],
    limit: int,
    *,
    supervised: bool,
    read: tuple[Any, frozenset[str]] | None = None,
) -> FastResult | None:
    """Any valid Gemini line: a system instruction of text parts in either spelling, turns of
    text, ``fileData``, ``functionCall`` and ``functionResponse`` parts, ``tools``. Supervised,
    it ends on a model turn, the answer; for distillation it is a prompt ending on a user turn,
    with no answer (None).

    The system instruction is read by :func:`_system_value`, as
    :func:`vertex_tuner.dataset.gemini.system_of` reads it (``read``: what it gave, when the
    caller has asked already); the tests hold the two together, both spellings included.
    """
    contents = obj.get("contents")
    if type(contents) is not list or not contents:
        return None
    system_value, known = _system_value(obj) if read is None else read
    tools = obj.get("tools")
    # Nearly every line holds contents and at most a system instruction: one comparison. A
    # shadowed spelling is written back too, so it is walked like any other key.
    if len(obj) > 1 + (system_value is not None) + (tools is not None) and _deep_beside(
        obj, known, 1
    ):
        return None
    system = 0
    key: list[Any]
    if system_value is None:
        key = [0]
    else:
        found_system = _system_key(system_value)
        if found_system is None:
            return None
        key, system = found_system
    flat = tools is None
    seen = billable = n_out = images = files = 0
    n_in = system
    previous = None
    last = len(contents) - 1
    answer: Any = None
    texts: list[str] | None = None
    for i, content in enumerate(contents):
        if type(content) is not dict:
            return None
        if len(content) != 2 and _deep_beside(content, _TURN_KEYS, 3):
            return None
        role = content.get("role")
        parts = content.get("parts")
        # The commonest turn, one text part of a user or model turn, is read here (what
        # _only_text reads, without the call: this runs for every turn); any other goes to
        # _turn_parts.
        part = parts[0] if type(parts) is list and len(parts) == 1 else None
        text = part.get("text") if type(part) is dict and len(part) == 1 else None
        if type(text) is str and (role == "user" or role == "model"):
            if not text or text.isspace():
                return None
            n = (len(text) + _ROUND) // CHARS_PER_TOKEN
        else:
            text = None
            found = _turn_parts(parts, role)
            if found is None:
                return None
            texts, n, role, here, held = found
            images += here
            files += held
        if role == previous:
            return None
        previous = role
        if role == "model":
            n_in = system + seen
            n_out = n
            billable += n_in + n + PADDING_PER_RECORD
        if supervised and i == last:
            # The answer key: a text-only turn's texts (else the turn, below).
            answer = texts if text is None else [text]
        elif text is not None:
            if flat:
                key += (role, 1, text)
        elif texts is None:
            flat = False
        elif flat:
            key += (role, len(texts), *texts)
        seen += n
    if previous != ("model" if supervised else "user"):
        return None
    if not billable:
        n_in = system + seen  # a prompt no model turn answers yet: all of it is input
    if n_in + n_out > limit or images > MAX_IMAGES_PER_EXAMPLE:
        return None
    try:
        if supervised and answer is None:
            # Inside two lists, the turn is as deep as in the line (line, contents).
            answer = Fragment(dumps([[contents[last]]], option=SORT_KEYS)[2:-2])
        if flat:
            return key, answer, n_in, n_out, billable, files > 0
        structured = {
            "system": system_value,
            "tools": tools,
            "contents": contents[:last] if supervised else contents,
        }
        prompt = Fragment(dumps(structured, option=SORT_KEYS))
    except JSONEncodeError:
        return None  # nested deeper than orjson writes: the full path says so
    return prompt, answer, n_in, n_out, billable, files > 0


def gemini(obj: dict[str, Any], limit: int) -> FastResult | None:
    """A supervised Gemini line (see :func:`_gemini_turns`); the commonest shape, one text
    exchange, unrolled."""
    if "completions" in obj:
        return None  # auto-detection calls it preference: the full path says so
    contents = obj.get("contents")
    if type(contents) is list and len(contents) == 2 and "tools" not in obj:
        # The system instruction as _gemini_turns reads it, and any other key walked.
        system_value, known = _system_value(obj)
        if len(obj) == 1 + (system_value is not None) or not _deep_beside(obj, known, 1):
            quick = _gemini_exchange(system_value, contents[0], contents[1], limit)
            if quick is not None:
                return quick
        return _gemini_turns(obj, limit, supervised=True, read=(system_value, known))
    return _gemini_turns(obj, limit, supervised=True)


def _system_value(obj: dict[str, Any]) -> tuple[Any, frozenset[str]]:
    """The system instruction as :func:`vertex_tuner.dataset.gemini.system_of` reads it
    (``systemInstruction`` unless absent or null, else ``system_instruction``), and the line
    keys that spelling makes known."""
    system_value = obj.get("systemInstruction")
    if system_value is not None:
        return system_value, _CAMEL_LINE_KEYS
    system_value = obj.get("system_instruction")
    return system_value, _BARE_LINE_KEYS if system_value is None else _SNAKE_LINE_KEYS


def prompts(obj: dict[str, Any], limit: int) -> FastResult | None:
    """A distillation prompt: a Gemini line ending on a user turn. Its answer is None: the
    teacher writes it, and every prompt has the same (empty) answer key."""
    if "completions" in obj:
        return None
    contents = obj.get("contents")
    if type(contents) is list and len(contents) == 1 and "tools" not in obj:
        # The commonest prompt, one user turn of one text part, unrolled.
        system_value, known = _system_value(obj)
        if len(obj) == 1 + (system_value is not None) or not _deep_beside(obj, known, 1):
            quick = _one_prompt(system_value, contents[0], limit)
            if quick is not None:
                return quick
        return _gemini_turns(obj, limit, supervised=False, read=(system_value, known))
    return _gemini_turns(obj, limit, supervised=False)


def _one_prompt(system_value: Any, u: Any, limit: int) -> FastResult | None:
    """``[user]`` with one text part, and at most a system instruction of text parts: what
    :func:`_gemini_turns` returns for it, without its loop."""
    prompt = _single_text(u, "user")
    if prompt is None:
        return None
    key: list[Any] = [0]
    n_in = (len(prompt) + _ROUND) // CHARS_PER_TOKEN
    if system_value is not None:
        read = _system_key(system_value)
        if read is None:
            return None
        key, system = read
        n_in += system
    if n_in > limit:
        return None
    key += ("user", 1, prompt)
    return key, None, n_in, 0, 0, False


def preference(obj: dict[str, Any], limit: int) -> FastResult | None:
    """``{"contents": [text turns ending on user], "completions": [two scored model turns]}``.

    The answer is the completions (their key is their sorted JSON); ``limit`` is unused: a
    preference example's limit is :data:`~vertex_tuner.models.PREFERENCE_MAX_TOKENS` for its
    input and longest completion, whatever the model.
    """
    contents = obj.get("contents")
    completions = obj.get("completions")
    if type(contents) is not list or not contents:
        return None
    if type(completions) is not list or len(completions) != 2 or "tools" in obj:
        return None
    system_value = obj.get("systemInstruction")
    if system_value is not None:
        known = _CAMEL_PREFERENCE_KEYS
    else:
        system_value = obj.get("system_instruction")
        known = _BARE_PREFERENCE_KEYS if system_value is None else _SNAKE_PREFERENCE_KEYS
    if len(obj) > 2 + (system_value is not None) and _deep_beside(obj, known, 1):
        return None
    prompt = 0
    key: list[Any]
    if system_value is None:
        key = [0]
    else:
        read = _system_key(system_value)
        if read is None:
            return None
        key, prompt = read
    previous = None
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
        key += (role, len(texts), *texts)
        prompt += n
    if previous != "user":
        return None
    first, second = completions
    a = _completion(first)
    b = _completion(second) if a is not None else None
    if a is None or b is None or {a[0], b[0]} != {0, 1}:
        return None
    longest = max(a[1], b[1])
    if prompt + longest > PREFERENCE_MAX_TOKENS:
        return None
    return key, completions, prompt, longest, prompt + longest, False


def _completion(item: Any) -> tuple[int, int] | None:
    """(score, tokens) of ``{"score": 0 or 1, "completion": {"role": "model", "parts": [text
    parts]}}``, else None."""
    if type(item) is not dict:
        return None
    score = item.get("score")
    if type(score) is not int or (score != 0 and score != 1):
        return None
    completion = item.get("completion")
    if type(completion) is not dict or completion.get("role") != "model":
        return None
    if len(item) != 2 and _deep_beside(item, _COMPLETION_ITEM_KEYS, 3):
        return None
    if len(completion) != 2 and _deep_beside(completion, _TURN_KEYS, 4):
        return None
    found = _text_parts(completion.get("parts"))
    if found is None:
        return None
    return score, found[1]


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


def csv_row(
    row: Mapping[str, str], columns: Mapping[str, str | None], limit: int
) -> FastResult | None:
    """A CSV row, read as :func:`vertex_tuner.dataset.formats.from_csv_row` reads it: the
    prompt and response columns, and the system column when it is not empty."""
    prompt = row.get(columns["prompt"] or "", "")
    answer = row.get(columns["response"] or "", "")
    name = columns.get("system")
    return _csv_texts(prompt, answer, row.get(name) if name else None, limit)


def csv_positions(
    header: list[str], columns: Mapping[str, str | None]
) -> tuple[int, int, int | None] | None:
    """Where :func:`csv_fields` finds the prompt, the response and the system column in a
    row's fields: where :func:`csv_row` finds them in the row as a dict (the last column of a
    name). None when the prompt or the response is in none of them."""
    at = {name: i for i, name in enumerate(header)}
    prompt = at.get(columns["prompt"] or "")
    answer = at.get(columns["response"] or "")
    name = columns.get("system")
    if prompt is None or answer is None:
        return None
    return prompt, answer, at.get(name) if name else None


def csv_fields(
    fields: list[str], prompt: int, answer: int, system: int | None, limit: int
) -> FastResult | None:
    """:func:`csv_row` for a row given as its fields, and its columns as
    :func:`csv_positions` gives them: no dict per row."""
    return _csv_texts(
        fields[prompt], fields[answer], None if system is None else fields[system], limit
    )


def _csv_texts(prompt: str, answer: str, system: str | None, limit: int) -> FastResult | None:
    if not prompt or not answer or prompt.isspace() or answer.isspace():
        return None
    if system is not None and system.isspace():
        return None
    return _one_exchange(system or None, prompt, answer, limit)


#: The fast check for each input format, for supervised tuning ...
CHECKS: dict[str, FastCheck] = {"messages": messages, "gemini": gemini, "text-pairs": pairs}
#: ... and for the other methods, by (method, format).
METHOD_CHECKS: dict[tuple[str, str], FastCheck] = {
    ("preference", "preference"): preference,
    ("distillation", "gemini"): prompts,
}


def check_for(method: str, fmt: str | None) -> FastCheck | None:
    """The fast check for lines of ``fmt`` tuned by ``method``; None: every line takes the
    full path."""
    if fmt is None:
        return None
    if method == "supervised":
        return CHECKS.get(fmt)
    return METHOD_CHECKS.get((method, fmt))
