"""Input formats: detection, conversion to Gemini, CSV/TSV, the line reader, and the fast path
held to the full path's verdict."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest
from dataset_support import codes
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vertex_tuner.dataset import Validator, fastpath, formats, keys, reader, scan, tokens
from vertex_tuner.dataset.gemini import SYSTEM_KEYS
from vertex_tuner.dataset.rules import check_example
from vertex_tuner.models import MODELS

FLASH = MODELS["gemini-2.5-flash"]


def u(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def m(text: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text}]}


@pytest.mark.parametrize(
    ("obj", "fmt"),
    [
        ({"contents": []}, "gemini"),
        ({"contents": [], "completions": []}, "preference"),
        ({"messages": []}, "messages"),
        ({"messages": [], "contents": []}, "gemini"),
        ({"input_text": "a", "output_text": "b"}, "text-pairs"),
        ({"prompt": "a", "completion": "b"}, "text-pairs"),
        ({"prompt": "a"}, None),
        ({"text": "a"}, None),
        ([1, 2], None),
        ("contents", None),
    ],
)
def test_detect(obj: Any, fmt: str | None) -> None:
    assert formats.detect(obj) == fmt


def test_messages_become_gemini_contents() -> None:
    obj = {
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
            {"role": "model", "content": "Take care"},
        ]
    }
    assert formats.convert(obj, "messages") == {
        "systemInstruction": {"role": "system", "parts": [{"text": "Be kind."}]},
        "contents": [u("Hi"), m("Hello"), u("Bye"), m("Take care")],
    }


@pytest.mark.parametrize(
    ("messages", "code", "field"),
    [
        ("hi", "bad-shape", "messages"),
        (["hi"], "bad-shape", "messages[0]"),
        ([{"role": "bot", "content": "x"}], "bad-role", "messages[0].role"),
        ([{"content": "x"}], "bad-role", "messages[0].role"),
        ([{"role": "user", "content": ["x"]}], "not-text", "messages[0].content"),
        ([{"role": "user"}], "not-text", "messages[0].content"),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            "misplaced-system",
            "messages[1].role",
        ),
        (
            [{"role": "system", "content": "a"}, {"role": "system", "content": "b"}],
            "misplaced-system",
            "messages[1].role",
        ),
    ],
)
def test_messages_that_cannot_be_converted(messages: Any, code: str, field: str) -> None:
    with pytest.raises(formats.ConversionError) as caught:
        formats.convert({"messages": messages}, "messages")
    assert (caught.value.code, caught.value.field) == (code, field)


def test_text_pairs_and_gemini_conversion() -> None:
    expected = {"contents": [u("Hi"), m("Hello")]}
    assert formats.convert({"input_text": "Hi", "output_text": "Hello"}, "text-pairs") == expected
    assert formats.convert({"prompt": "Hi", "completion": "Hello"}, "text-pairs") == expected
    with pytest.raises(formats.ConversionError) as caught:
        formats.convert({"prompt": "Hi", "completion": 3}, "text-pairs")
    assert (caught.value.code, caught.value.field) == ("not-text", "completion")
    snake = {"system_instruction": {"parts": [{"text": "Be kind"}]}, **expected}
    assert formats.convert(snake, "gemini") == {
        "systemInstruction": {"parts": [{"text": "Be kind"}]},
        **expected,
    }
    with pytest.raises(formats.ConversionError) as caught:
        formats.convert([1], "gemini")
    assert caught.value.code == "not-an-object"


def test_csv_columns_by_name_or_by_mapping() -> None:
    assert formats.csv_columns(["question", "answer", "system"], None) == {
        "prompt": "question",
        "response": "answer",
        "system": "system",
    }
    assert formats.csv_columns(["ticket", "triage"], {"prompt": "ticket", "response": "triage"})[
        "response"
    ] == ("triage")
    with pytest.raises(formats.ConversionError) as caught:
        formats.csv_columns(["a", "b"], None)
    assert caught.value.code == "missing-column"
    with pytest.raises(formats.ConversionError) as caught:
        formats.csv_columns(["a", "b"], {"prompt": "a", "response": "c"})
    assert "'c'" in caught.value.message and "a, b" in caught.value.message


def run(path: Path, **kwargs: Any) -> Any:
    validator = Validator(model="gemini-2.5-flash", method="supervised", **kwargs)
    return validator.run(path, display=path.name, workdir=path.parent / f"out-{path.stem}")


def _findings(path: Path) -> list[tuple[int | None, str, str | None, str]]:
    report = run(path).report
    return [(f.line, f.code, f.field, f.message) for f in report.errors]


def test_findings_name_the_fields_of_the_line_as_written(tmp_path: Path) -> None:
    """A chat file's problems are in messages[i].content, not in the Gemini form it becomes."""
    path = tmp_path / "chat.jsonl"
    lines = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
        {
            "messages": [
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "   "},
            ]
        },
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
    ]
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    assert _findings(path) == [
        (2, "empty-text", "messages[2].content", "empty or whitespace-only text"),
        (
            3,
            "consecutive-turns",
            "messages[1].role",
            "messages[1] is a second user turn in a row; user and assistant turns must alternate",
        ),
        (
            3,
            "must-end-on-model",
            "messages[1].role",
            "the conversation must end on an assistant turn (the answer to learn)",
        ),
    ]


def test_findings_in_pairs_csv_and_snake_case_gemini_name_their_own_fields(
    tmp_path: Path,
) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(orjson.dumps({"prompt": "Hi", "completion": "\t"}))
    assert [f[:3] for f in _findings(pairs)] == [(1, "empty-text", "completion")]

    table = tmp_path / "tickets.csv"
    table.write_text("ticket,label,system\nWhere is it?, ,Be brief\n  ,refund,\n")
    assert [f[:3] for f in _findings(table)] == [
        (2, "empty-text", "column 'label'"),
        (3, "empty-text", "column 'ticket'"),
    ]

    snake = tmp_path / "snake.jsonl"
    snake.write_bytes(
        orjson.dumps(
            {"system_instruction": {"parts": [{"text": " "}]}, "contents": [u("Hi"), m("Yo")]}
        )
    )
    assert [f[:3] for f in _findings(snake)] == [
        (1, "empty-text", "system_instruction.parts[0].text")
    ]


def test_source_paths_leave_what_they_cannot_place() -> None:
    translate = formats.source_paths("messages", {"messages": [{"role": "user", "content": "a"}]})
    assert translate is not None
    assert translate("contents[0].parts[0].text") == "messages[0].content"
    assert translate("contents[3].role") == "contents[3].role"
    assert formats.source_paths("gemini", {"contents": []}) is None
    assert formats.source_paths("messages", {"messages": "x"}) is None


def test_csv_file_converted_with_its_system_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "response", "system"])
        writer.writerow(["line one\nline two", "billing", "Triage it."])
        writer.writerow(["third", "other", ""])
    prepared = run(path)
    assert prepared.report.ok and prepared.report.stats["format"] == "csv"
    first, second = (orjson.loads(x) for x in prepared.train.path.read_bytes().splitlines())
    assert first == {
        "contents": [u("line one\nline two"), m("billing")],
        "systemInstruction": {"role": "system", "parts": [{"text": "Triage it."}]},
    }
    assert second == {"contents": [u("third"), m("other")]}


def test_csv_problems_name_the_line_the_row_starts_on(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(
        b"\xef\xbb\xbfticket,triage\r\n"  # 1: header, with a BOM and CRLF
        b'"two\r\nlines",ok\r\n'  # 2-3
        b",empty prompt\r\n"  # 4
        b"too,many,fields\r\n"  # 5
        b"few\r\n"  # 6
        b"caf\xe9,latin-1\r\n"  # 7
        b"fine,again\r\n"  # 8
        b'"never closed,x\r\n'  # 9
    )
    report = run(path, columns={"prompt": "ticket", "response": "triage"}).report
    assert codes(report) == {
        "empty-text": [4],
        "bad-csv": [5, 6, 7, 9],
        "few-examples": [None],
    }
    assert report.stats["examples"] == 2
    messages = [f.message for f in report.errors if f.code == "bad-csv"]
    assert messages[2] == "not UTF-8; save the file as UTF-8"
    assert "the rest was not read" in messages[3]


def test_tsv_and_a_missing_mapped_column(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("input\toutput\nHi\tHello\n", encoding="utf-8")
    assert run(path).report.stats["examples"] == 1
    report = run(path, columns={"prompt": "ticket", "response": "output"}).report
    assert [(f.code, f.line, f.field) for f in report.errors] == [
        ("missing-column", 1, "dataset.columns")
    ]


def test_a_csv_with_only_a_header_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("prompt,response\n", encoding="utf-8")
    assert codes(run(path).report) == {"empty-file": [None]}


def blocks(path: Path, **kwargs: Any) -> list[tuple[int, bytes]]:
    return [
        (first + i, line)
        for first, lines in reader.iter_blocks(path, **kwargs)
        for i, line in enumerate(lines)
    ]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64, 128 * 1024])
def test_the_reader_numbers_every_line_whatever_the_chunk(
    tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "CHUNK", chunk)
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a":1}\r\n\n  \n' + b"x" * 300 + b'\n{"b":2}')
    assert blocks(path) == [
        (1, b'{"a":1}\r'),
        (2, b""),
        (3, b"  "),
        (4, b"x" * 300),
        (5, b'{"b":2}'),
    ]
    assert next(iter(reader.iter_lines(path))) == (1, b'{"a":1}')


def test_byte_ranges_cover_the_file_at_line_starts(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [b"%d" % i * (i % 7 + 1) for i in range(1000)]
    path.write_bytes(b"\n".join(rows) + b"\n")
    for weights in ([1.0, 1.0], [1.15, 1.0], [1.0, 1.0, 1.0, 1.0]):
        ranges = reader.split_ranges(path, weights)
        assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        seen = [line for s, e in ranges for _, line in blocks(path, start=s, end=e)]
        assert seen == rows
    assert reader.split_ranges(tmp_path.joinpath("d.jsonl"), [1.0]) == [(0, path.stat().st_size)]
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_bytes(b"{}\n")
    assert reader.split_ranges(tiny, [1.0, 1.0, 1.0]) == [(0, 3)]


# -- the fast path: whenever it says "valid", the full path must agree, figure for figure ------

_good_texts = st.sampled_from(["Hi", "Where is HH-1?", "x" * 41, "é" * 9, " ok ", "a\nb"])
_bad_texts = st.sampled_from(["", "  ", "\n", 3, None, ["Hi"]])
_any_role = st.sampled_from(["system", "user", "assistant", "model", "bot", None, 7])


@st.composite
def _messages(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid chats, and about half with one thing wrong."""
    turns: list[dict[str, Any]] = []
    if draw(st.booleans()):
        turns.append({"role": "system", "content": draw(_good_texts)})
    for _ in range(draw(st.integers(1, 3))):
        turns.append({"role": "user", "content": draw(_good_texts)})
        turns.append(
            {"role": draw(st.sampled_from(["assistant", "model"])), "content": draw(_good_texts)}
        )
    if draw(st.booleans()):
        i = draw(st.integers(0, len(turns) - 1))
        mutation = draw(st.integers(0, 6))
        if mutation == 0:
            turns[i]["content"] = draw(_bad_texts)
        elif mutation == 1:
            turns[i]["role"] = draw(_any_role)
        elif mutation == 2:
            del turns[i]
        elif mutation == 3:
            turns[i] = draw(st.sampled_from(["text", 1, None, []]))  # type: ignore[call-overload]
        elif mutation == 4:
            turns.insert(i, {"role": "system", "content": draw(_good_texts)})
        elif mutation == 5:
            turns[i]["name"] = "extra keys are ignored"
        else:
            del turns[i]["role"]
    obj: dict[str, Any] = {"messages": turns}
    if draw(st.integers(0, 9)) == 0:
        obj["contents"] = []
    return obj


def _content(role: Any, texts: list[Any]) -> dict[str, Any]:
    return {"role": role, "parts": [{"text": t} for t in texts]}


@st.composite
def _gemini(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid Gemini examples, and about half with one thing wrong."""
    texts = st.lists(_good_texts, min_size=1, max_size=3)
    contents: list[Any] = []
    for _ in range(draw(st.integers(1, 3))):
        contents.append(_content("user", draw(texts)))
        contents.append(_content("model", draw(texts)))
    obj: dict[str, Any] = {"contents": contents}

    def instruction() -> dict[str, Any]:
        value: dict[str, Any] = {"parts": [{"text": t} for t in draw(texts)]}
        if draw(st.booleans()):
            value["role"] = "system"
        return value

    # Both spellings, alone and together: a null systemInstruction leaves the snake_case one in
    # force, and when both hold one the camelCase one wins (gemini.system_of). ``system`` ends
    # up naming the spelling mutation 7 spoils: with both, the one in force or the shadowed one.
    shape = draw(st.sampled_from([None, *SYSTEM_KEYS, "null-camel", "both", "null"]))
    system: str | None = None
    if shape in SYSTEM_KEYS:
        system = shape
        obj[system] = instruction()
    elif shape == "null-camel":
        system = "system_instruction"
        pair = [("systemInstruction", None), (system, instruction())]
        obj.update(reversed(pair) if draw(st.booleans()) else pair)
    elif shape == "both":
        obj["systemInstruction"], obj["system_instruction"] = instruction(), instruction()
        system = draw(st.sampled_from(SYSTEM_KEYS))
    elif shape == "null":
        obj[draw(st.sampled_from(SYSTEM_KEYS))] = None
    if draw(st.booleans()):
        i = draw(st.integers(0, len(contents) - 1))
        part = contents[i]["parts"][0]
        mutation = draw(st.integers(0, 8))
        if mutation == 0:
            part["text"] = draw(_bad_texts)
        elif mutation == 1:
            contents[i]["role"] = draw(_any_role)
        elif mutation == 2:
            del contents[i]
        elif mutation == 3:
            part["thought"] = True
        elif mutation == 4:
            contents[i]["parts"][0] = {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/o"}}
        elif mutation == 5:
            contents[i]["parts"] = []
        elif mutation == 6:
            obj["tools"] = [{"functionDeclarations": []}]
        elif mutation == 7 and system:
            obj[system]["parts"][0]["text"] = draw(_bad_texts)
        else:
            contents[i] = draw(st.sampled_from(["text", None, []]))
    return obj


@st.composite
def _pairs(draw: st.DrawFn) -> dict[str, Any]:
    a, b = draw(st.sampled_from([("input_text", "output_text"), ("prompt", "completion")]))
    return {a: draw(_good_texts | _bad_texts), b: draw(_good_texts | _bad_texts)}


def _full_path(obj: dict[str, Any], fmt: str, limit: int) -> Any:
    """What the full path says: None when it rejects or truncates the example."""
    try:
        example = formats.convert(obj, fmt)
    except formats.ConversionError:
        return None
    model = FLASH if limit == FLASH.max_tokens_per_example else _with_limit(limit)
    if check_example(example, method="supervised", model=model, line=1):
        return None
    n_in, n_out, billable = tokens.measure(example)
    return (
        keys.prompt_key(example, "supervised"),
        keys.answer_key(example, "supervised"),
        n_in,
        n_out,
        billable,
    )


def _with_limit(limit: int) -> Any:
    from dataclasses import replace

    return replace(FLASH, max_tokens_per_example=limit)


#: The line that once read differently on the two paths: a null camelCase system instruction
#: beside a snake_case one (the full path's tokens and rules ignored it, the fast path did not).
_NULL_CAMEL_SYSTEM = {
    "systemInstruction": None,
    "system_instruction": {"parts": [{"text": "Answer in French."}]},
    "contents": [u("Where is HH-1?"), m("En route.")],
}


@settings(max_examples=1500, deadline=None)
@example(case=("gemini", _NULL_CAMEL_SYSTEM), limit=FLASH.max_tokens_per_example)
@given(
    case=st.one_of(
        st.tuples(st.just("messages"), _messages()),
        st.tuples(st.just("gemini"), _gemini()),
        st.tuples(st.just("text-pairs"), _pairs()),
    ),
    limit=st.sampled_from([FLASH.max_tokens_per_example, 12]),
)
def test_the_fast_path_never_disagrees_with_the_full_path(
    case: tuple[str, dict[str, Any]], limit: int
) -> None:
    fmt, obj = case
    if formats.detect(obj) != fmt:
        return  # a line of another format takes the full path (mixed-formats)
    fast = fastpath.CHECKS[fmt](obj, limit)
    full = _full_path(obj, fmt, limit)
    if fast is None:
        return  # the fast path may always decline
    assert full is not None, obj
    key, texts, n_in, n_out, billable, media = fast
    assert media == scan._has_media(formats.convert(obj, fmt))
    assert (orjson.dumps(key), orjson.dumps(texts), n_in, n_out, billable) == full


@pytest.mark.parametrize(
    "obj",
    [
        {
            "messages": [
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
            ]
        },
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "model", "content": "Yo"}]},
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "More?"},
                {"role": "assistant", "content": "Sure."},
            ]
        },
        {"systemInstruction": {"parts": [{"text": "Be kind"}]}, "contents": [u("Hi"), m("Yo")]},
        {"contents": [u("Hi"), m("Yo"), u("And?"), m("Done.")]},
        {"contents": [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}, m("Yo")]},
        {"input_text": "Hi", "output_text": "Hello"},
    ],
)
def test_the_common_shapes_take_the_fast_path(obj: dict[str, Any]) -> None:
    fmt = formats.detect(obj)
    assert fmt is not None
    fast = fastpath.CHECKS[fmt](obj, FLASH.max_tokens_per_example)
    assert fast is not None
    key, texts, *figures, media = fast
    assert not media
    assert (orjson.dumps(key), orjson.dumps(texts), *figures) == _full_path(
        obj, fmt, FLASH.max_tokens_per_example
    )


_GOOD_CHAT = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
_GOOD_GEMINI = {"contents": [u("Q"), m("A")]}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(case=(_GOOD_GEMINI, _NULL_CAMEL_SYSTEM))
@given(
    # Each line after a good one of its own format, so that it is read, not refused as mixed.
    case=st.one_of(
        st.tuples(st.just(_GOOD_CHAT), _messages()),
        st.tuples(st.just(_GOOD_GEMINI), _gemini()),
    )
)
def test_a_file_reads_the_same_with_and_without_the_fast_path(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """End to end: the report and the converted bytes do not depend on which path a line took."""
    import tempfile

    from vertex_tuner.dataset import scan

    good, obj = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        path.write_bytes(orjson.dumps(good) + b"\n" + orjson.dumps(obj) + b"\n")
        validator = Validator(model="gemini-2.5-flash", method="supervised")
        fast = validator.run(path, display="d", workdir=Path(tmp) / "a")
        original = dict(scan.fastpath.CHECKS)
        scan.fastpath.CHECKS.clear()
        try:
            slow = validator.run(path, display="d", workdir=Path(tmp) / "b")
        finally:
            scan.fastpath.CHECKS.update(original)
        assert fast.report.to_json() == slow.report.to_json()
        assert fast.train.sha256 == slow.train.sha256
