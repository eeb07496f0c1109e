"""The fast path holds to the full path on every shape it accepts, or declines.

For each shape users write (chat with and without a system message and over many exchanges,
Gemini with either spelling of the system instruction, function calls and responses, fileData
parts, text pairs, CSV rows, preference and distillation prompts) rows are generated with the
edge cases that once split the two paths: a null ``systemInstruction`` beside
``system_instruction``, empty parts, unknown keys, numbers where strings belong, unicode, long
texts. Whatever the fast path accepts must give the prompt key, the answer key, the token
figures and the media flag the full path gives for the converted example, and the full path must
have nothing to report about it; a whole file must read the same with and without it.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vertex_tuner.dataset import Validator, fastpath, formats, keys, scan, tokens
from vertex_tuner.dataset.rules import check_example
from vertex_tuner.models import MODELS

FLASH = MODELS["gemini-2.5-flash"]
SORT = orjson.OPT_SORT_KEYS

_texts = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(["Where is HH-1?", "En route.", "Grüße, 日本語 🙂", " ", "", "\u2003"]),
    st.text(alphabet="ab ", min_size=2000, max_size=3000),
)
_odd = st.one_of(
    st.none(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False), st.booleans(), st.just([])
)
_text_value = st.one_of(_texts, _odd)


def _text_part(draw: st.DrawFn) -> dict[str, Any]:
    part: dict[str, Any] = {"text": draw(_text_value)}
    if draw(st.integers(0, 20)) == 0:
        part["thought"] = True
    return part


@st.composite
def _part(draw: st.DrawFn, role: str | None) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "text", "text", "file", "call", "response", "inline"]))
    if kind == "text":
        return _text_part(draw)
    if kind == "file":
        key = draw(st.sampled_from(["fileData", "file_data"]))
        uri = draw(
            st.sampled_from(["gs://b/o.jpg", "gs://b", "https://x/y.png", "ftp://x", 3, None])
        )
        mime = draw(
            st.sampled_from(["image/jpeg", "application/pdf", "video/mp4", "text/html", None])
        )
        value: dict[str, Any] = {"mimeType": mime, "fileUri": uri}
        if draw(st.booleans()):
            value = {"mime_type": mime, "file_uri": uri}
        if draw(st.integers(0, 5)) == 0:
            value["displayName"] = {"nested": [1, 2]}
        return {key: value}
    if kind == "inline":
        return {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}
    name: Any = draw(st.sampled_from(["lookup", "track", 7]))
    body: dict[str, Any] = {"name": name}
    if kind == "call":
        body["args"] = draw(st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2))
        return {draw(st.sampled_from(["functionCall", "function_call"])): body}
    body["response"] = {"output": draw(_texts)}
    return {draw(st.sampled_from(["functionResponse", "function_response"])): body}


@st.composite
def _turn(draw: st.DrawFn, role: str, *, text_only: bool = False) -> dict[str, Any]:
    if text_only or draw(st.integers(0, 3)) > 0:
        parts = [_text_part(draw) for _ in range(draw(st.integers(0, 3)))]
    else:
        parts = draw(st.lists(_part(role), min_size=0, max_size=3))
    turn: dict[str, Any] = {"role": role, "parts": parts}
    shape = draw(st.integers(0, 12))
    if shape == 0:
        del turn["role"]  # a function response turn may omit it
    elif shape == 1:
        turn["role"] = draw(st.sampled_from(["system", "assistant", None, 1]))
    elif shape == 2:
        turn["extra"] = {"kept": [1, {"a": None}]}
    elif shape == 3:
        turn["parts"] = draw(st.sampled_from([None, "text", {"text": "x"}]))
    return turn


def _exchanges(draw: st.DrawFn, *, text_only: bool = False) -> list[dict[str, Any]]:
    roles = draw(
        st.one_of(
            st.integers(1, 10).map(lambda n: ["user", "model"] * n),
            st.lists(st.sampled_from(["user", "model"]), min_size=0, max_size=6),
        )
    )
    return [draw(_turn(role, text_only=text_only)) for role in roles]


@st.composite
def _system(draw: st.DrawFn) -> dict[str, Any]:
    """The system-instruction keys of a Gemini line, in either spelling (or both)."""
    value: Any = {"parts": [_text_part(draw) for _ in range(draw(st.integers(0, 2)))]}
    if draw(st.booleans()):
        value["role"] = "system"
    if draw(st.integers(0, 8)) == 0:
        value = draw(st.sampled_from([None, "Be kind.", [], {"text": "x"}]))
    shape = draw(st.sampled_from(["none", "camel", "snake", "null-camel", "both"]))
    if shape == "none":
        return {}
    if shape == "camel":
        return {"systemInstruction": value}
    if shape == "snake":
        return {"system_instruction": value}
    if shape == "null-camel":
        return {"systemInstruction": None, "system_instruction": value}
    return {"systemInstruction": value, "system_instruction": {"parts": [{"text": "shadowed"}]}}


@st.composite
def gemini_lines(draw: st.DrawFn, *, ending: str = "model") -> dict[str, Any]:
    line: dict[str, Any] = {**draw(_system()), "contents": _exchanges(draw)}
    if ending == "user" and draw(st.booleans()):
        line["contents"].append(draw(_turn("user")))
    if draw(st.integers(0, 4)) == 0:
        line["tools"] = [{"functionDeclarations": [{"name": "lookup", "parameters": {}}]}]
    if draw(st.integers(0, 6)) == 0:
        line["metadata"] = {"source": draw(_text_value)}
    return line


@st.composite
def chat_lines(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[Any] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(_text_value)})
    for turn in _exchanges(draw):
        role = turn.get("role")
        if role == "model":
            role = draw(st.sampled_from(["assistant", "model"]))
        message: dict[str, Any] = {"role": role, "content": draw(_text_value)}
        if draw(st.integers(0, 8)) == 0:
            message["name"] = "sam"
        messages.append(message)
    if draw(st.integers(0, 10)) == 0:
        messages.append({"role": "system", "content": "late"})
    return {"messages": messages}


@st.composite
def pair_lines(draw: st.DrawFn) -> dict[str, Any]:
    a, b = draw(st.sampled_from([("input_text", "output_text"), ("prompt", "completion")]))
    line = {a: draw(_text_value), b: draw(_text_value)}
    if draw(st.integers(0, 5)) == 0:
        line["id"] = 3
    return line


@st.composite
def preference_lines(draw: st.DrawFn) -> dict[str, Any]:
    contents = _exchanges(draw, text_only=True)
    if draw(st.booleans()):
        contents.append(draw(_turn("user", text_only=True)))
    scores = draw(st.sampled_from([[1, 0], [0, 1], [1, 1], [1.0, 0], [True, 0], ["1", "0"]]))
    completions: list[Any] = [
        {"score": s, "completion": draw(_turn("model", text_only=True))} for s in scores
    ]
    if draw(st.integers(0, 6)) == 0:
        completions.append({"score": 0, "completion": draw(_turn("model", text_only=True))})
    return {**draw(_system()), "contents": contents, "completions": completions}


def _full(obj: dict[str, Any], fmt: str, method: str, limit: int) -> Any:
    """What the full path keeps of a line: None when it has anything to say about it."""
    try:
        example = formats.convert(obj, fmt)
    except formats.ConversionError:
        return None
    model = (
        FLASH
        if limit == FLASH.max_tokens_per_example
        else replace(FLASH, max_tokens_per_example=limit)
    )
    if method == "preference":
        n_in, n_out = tokens.preference_tokens(example)
        billable = n_in + n_out
    else:
        n_in, n_out, billable = tokens.measure(example)
    if check_example(example, method=method, model=model, line=1, measured=(n_in, n_out)):
        return None
    return (
        keys.prompt_key(example, method),
        keys.answer_key(example, method),
        n_in,
        n_out,
        billable,
        scan._has_media(example),
    )


def _fast(obj: dict[str, Any], fmt: str, method: str, limit: int) -> Any:
    check = fastpath.check_for(method, fmt)
    assert check is not None
    found = check(obj, limit)
    if found is None:
        return None
    key, answer, n_in, n_out, billable, media = found
    return (
        orjson.dumps(key, option=SORT),
        b"" if answer is None else orjson.dumps(answer, option=SORT),
        n_in,
        n_out,
        billable,
        media,
    )


_NULL_CAMEL = {
    "systemInstruction": None,
    "system_instruction": {"parts": [{"text": "Answer in French."}]},
    "contents": [
        {"role": "user", "parts": [{"text": "Where is HH-1?"}]},
        {"role": "model", "parts": [{"text": "En route."}]},
    ],
}
_CASES = st.one_of(
    st.tuples(st.just(("gemini", "supervised")), gemini_lines()),
    st.tuples(st.just(("gemini", "distillation")), gemini_lines(ending="user")),
    st.tuples(st.just(("messages", "supervised")), chat_lines()),
    st.tuples(st.just(("text-pairs", "supervised")), pair_lines()),
    st.tuples(st.just(("preference", "preference")), preference_lines()),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(case=(("gemini", "supervised"), _NULL_CAMEL), limit=FLASH.max_tokens_per_example)
@example(case=(("gemini", "distillation"), _NULL_CAMEL), limit=FLASH.max_tokens_per_example)
@given(case=_CASES, limit=st.sampled_from([FLASH.max_tokens_per_example, 40]))
def test_the_fast_path_accepts_only_what_the_full_path_accepts_and_keeps_the_same(
    case: tuple[tuple[str, str], dict[str, Any]], limit: int
) -> None:
    (fmt, method), obj = case
    if formats.detect(obj) != fmt:
        return  # another format's line is the full path's (mixed-formats)
    fast = _fast(obj, fmt, method, limit)
    if fast is None:
        return  # the fast path may always decline
    full = _full(obj, fmt, method, limit)
    assert full is not None, obj
    assert fast == full


@given(
    prompt=_texts,
    response=_texts,
    system=st.one_of(st.just(""), _texts),
    limit=st.sampled_from([FLASH.max_tokens_per_example, 40]),
)
@settings(max_examples=500, deadline=None)
def test_a_csv_row_is_read_the_same_on_both_paths(
    prompt: str, response: str, system: str, limit: int
) -> None:
    row = {"q": prompt, "a": response, "s": system}
    columns: dict[str, str | None] = {"prompt": "q", "response": "a", "system": "s"}
    found = fastpath.csv_row(row, columns, limit)
    positions = fastpath.csv_positions(["s", "q", "a", "q"], columns)
    assert positions is not None
    assert fastpath.csv_fields([system, "", response, prompt], *positions, limit) == found
    if found is None:
        return
    example = formats.from_csv_row(row, columns)
    model = replace(FLASH, max_tokens_per_example=limit)
    assert check_example(example, method="supervised", model=model, line=1) == []
    key, answer, *figures, media = found
    assert not media
    assert orjson.dumps(key) == keys.prompt_key(example, "supervised")
    assert orjson.dumps(answer) == keys.answer_key(example, "supervised")
    assert tuple(figures) == tokens.measure(example)


def _u(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def _m(text: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text}]}


_CALL = {"functionCall": {"name": "lookup", "args": {"order": "HH-1"}}}
_RESPONSE = {"functionResponse": {"name": "lookup", "response": {"output": "shipped"}}}
_TOOLS = [{"functionDeclarations": [{"name": "lookup", "parameters": {"type": "OBJECT"}}]}]
_IMAGE = {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://b/scan.jpg"}}


@pytest.mark.parametrize(
    ("fmt", "method", "obj"),
    [
        pytest.param(
            "messages",
            "supervised",
            {
                "messages": [
                    {"role": "system", "content": "Be kind."},
                    *(
                        {"role": r, "content": f"{r} {i}"}
                        for i in range(10)
                        for r in ("user", "assistant")
                    ),
                ]
            },
            id="chat-10-exchanges",
        ),
        pytest.param("gemini", "supervised", _NULL_CAMEL, id="null-camel"),
        pytest.param(
            "gemini",
            "supervised",
            {
                "system_instruction": {"role": "system", "parts": [{"text": "Be kind."}]},
                "contents": [_u("a"), _m("b"), _u("c"), _m("d")],
            },
            id="snake-multi-turn",
        ),
        pytest.param(
            "gemini",
            "supervised",
            {
                "systemInstruction": {"parts": [{"text": "Use the tools."}]},
                "contents": [
                    _u("Where is HH-1?"),
                    {"role": "model", "parts": [_CALL]},
                    {"parts": [_RESPONSE]},
                    _m("It has shipped."),
                ],
                "tools": _TOOLS,
            },
            id="function-call",
        ),
        pytest.param(
            "gemini",
            "supervised",
            {"contents": [_u("Hi"), {"role": "model", "parts": [{"text": "Checking."}, _CALL]}]},
            id="answer-is-a-call",
        ),
        pytest.param(
            "gemini",
            "supervised",
            {
                "contents": [
                    {"role": "user", "parts": [_IMAGE, {"text": "What is it?"}]},
                    _m("A cat."),
                ]
            },
            id="file-data",
        ),
        pytest.param(
            "gemini",
            "distillation",
            {"systemInstruction": {"parts": [{"text": "Be brief."}]}, "contents": [_u("Why?")]},
            id="distillation-prompt",
        ),
        pytest.param(
            "preference",
            "preference",
            {
                "system_instruction": {"parts": [{"text": "Be kind."}]},
                "contents": [_u("Hi")],
                "completions": [
                    {"score": 1, "completion": _m("Hello!")},
                    {"score": 0, "completion": _m("What.")},
                ],
            },
            id="preference",
        ),
    ],
)
def test_each_shape_takes_the_fast_path(fmt: str, method: str, obj: dict[str, Any]) -> None:
    limit = FLASH.max_tokens_per_example
    assert formats.detect(obj) == fmt
    fast = _fast(obj, fmt, method, limit)
    assert fast is not None
    assert fast == _full(obj, fmt, method, limit)


def test_a_file_with_images_counts_as_multimodal_on_the_fast_path(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    line = {"contents": [{"role": "user", "parts": [_IMAGE, {"text": "What?"}]}, _m("A cat.")]}
    path.write_bytes(orjson.dumps(line) + b"\n")
    part = scan.scan(Validator(model="gemini-2.5-flash", method="supervised")._job(path, "d"))
    assert (part.count, part.multimodal) == (1, 1)


def _without_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "CHECKS", {})
    monkeypatch.setattr(fastpath, "METHOD_CHECKS", {})
    monkeypatch.setattr(fastpath, "csv_row", lambda row, columns, limit: None)
    monkeypatch.setattr(fastpath, "csv_positions", lambda header, columns: None)


def _both_ways(path: Path, method: str, split: float | None) -> tuple[Any, Any]:
    validator = Validator(model="gemini-2.5-flash", method=method)
    with tempfile.TemporaryDirectory() as tmp:
        fast = validator.run(path, display="d", workdir=Path(tmp) / "fast", validation=split)
        with pytest.MonkeyPatch.context() as patch:
            _without_fast_path(patch)
            slow = validator.run(path, display="d", workdir=Path(tmp) / "slow", validation=split)
        outputs = [
            (f.train.sha256, f.validation.sha256 if f.validation else None) for f in (fast, slow)
        ]
    assert fast.report.to_json() == slow.report.to_json()
    assert outputs[0] == outputs[1]
    return fast, slow


_FILES = st.one_of(
    st.tuples(st.just("supervised"), st.lists(gemini_lines(), min_size=1, max_size=6)),
    st.tuples(
        st.just("distillation"), st.lists(gemini_lines(ending="user"), min_size=1, max_size=6)
    ),
    st.tuples(st.just("supervised"), st.lists(chat_lines(), min_size=1, max_size=6)),
    st.tuples(st.just("supervised"), st.lists(pair_lines(), min_size=1, max_size=6)),
    st.tuples(st.just("preference"), st.lists(preference_lines(), min_size=1, max_size=6)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(case=("supervised", [_NULL_CAMEL, _NULL_CAMEL]), split=None)
@given(case=_FILES, split=st.sampled_from([None, 0.3]))
def test_a_file_reads_the_same_with_and_without_the_fast_path(
    case: tuple[str, list[dict[str, Any]]], split: float | None
) -> None:
    method, lines = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        _both_ways(path, method, split)


def test_a_csv_file_reads_the_same_with_and_without_the_fast_path(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        "system,prompt,response\n"
        ",Where is HH-1?,En route.\n"
        "Be kind.,Refund?,Done — 日本語.\n"
        "  ,Blank system?,Still an answer.\n"
        ",Where is HH-1?,Another answer.\n"
        ", ,empty prompt\n",
        encoding="utf-8",
    )
    fast, _ = _both_ways(path, "supervised", None)
    assert fast.report.stats["examples"] == 3


def _nested(depth: int) -> Any:
    """Objects ``depth`` deep: ``{"a": {"a": ... 1}}``."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _call(args: Any) -> dict[str, Any]:
    return {"functionCall": {"name": "lookup", "args": args}}


#: Lines whose one deep value (``depth`` levels) leaves the line ``depth + levels`` deep, where
#: the fast path proves the depth by writing the value rather than walking it.
_DEEP_LINES = {
    "tools": (lambda v: {"contents": [_u("Hi"), _m("Yo")], "tools": [v]}, 2),
    "call in a prompt turn": (
        lambda v: {
            "contents": [_u("Hi"), {"role": "model", "parts": [_call(v)]}, _u("And?"), _m("Ok")]
        },
        6,
    ),
    "call in the answer": (
        lambda v: {"contents": [_u("Hi"), {"role": "model", "parts": [_call(v)]}]},
        6,
    ),
    "file data": (
        lambda v: {
            "contents": [
                {
                    "role": "user",
                    "parts": [{"fileData": {**_IMAGE["fileData"], "displayName": v}}],
                },
                _m("A cat."),
            ]
        },
        6,
    ),
    "system instruction": (
        lambda v: {
            "systemInstruction": {"parts": [{"text": "Hi"}], "x": v},
            "contents": [_u("a"), _m("b")],
        },
        2,
    ),
}


@pytest.mark.parametrize("where", list(_DEEP_LINES))
@pytest.mark.parametrize("over", [0, 1])
def test_the_fast_path_declines_a_line_deeper_than_orjson_writes(where: str, over: int) -> None:
    """At the limit a line takes the fast path as the full path reads it; one level deeper it
    is left to the full path, which reports it."""
    build, levels = _DEEP_LINES[where]
    obj = build(_nested(254 - levels + over))
    assert scan.nests_deeper(obj) == bool(over)
    limit = FLASH.max_tokens_per_example
    fast = _fast(obj, "gemini", "supervised", limit)
    if over:
        assert fast is None
    else:
        assert fast is not None
        assert fast == _full(obj, "gemini", "supervised", limit)
