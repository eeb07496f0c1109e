"""What the validator cannot hold, reported as findings: JSON nested too deep for orjson, and
lines too long to read (memory stays bounded by the line limit, not by the line)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from dataset_support import codes, write_lines

from vertex_tuner.cli import cli
from vertex_tuner.dataset import Validator, reader, scan, validate_file

#: orjson writes at most this many objects and arrays inside each other.
DEPTH = 254


def nested(depth: int) -> Any:
    """Objects ``depth`` deep: ``{"a": {"a": ... 1}}``."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_bytes(depth: int) -> bytes:
    """``nested(depth)`` as JSON, written by hand: orjson cannot write it past 254 levels."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def u(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def m(text: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text}]}


def good(i: int) -> bytes:
    return orjson.dumps({"contents": [u(f"Question {i}?"), m(f"Answer {i}.")]})


def function_call(args: bytes) -> bytes:
    """A Gemini example whose model turn calls a function with ``args``."""
    return (
        b'{"contents":[{"role":"user","parts":[{"text":"Weather?"}]},'
        b'{"role":"model","parts":[{"functionCall":{"name":"weather","args":' + args + b"}}]}]}"
    )


def with_tools(tool: bytes) -> bytes:
    return b'{"tools":[' + tool + b'],"contents":' + orjson.dumps([u("Hi"), m("Yo")]) + b"}"


def with_extra(fmt: str, value: bytes) -> bytes:
    """A well-formed example of ``fmt`` (one the fast path takes) with one more field."""
    rows = {
        "gemini": {"contents": [u("Hi"), m("Yo")]},
        "messages": {
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
        },
        "text-pairs": {"input_text": "Hi", "output_text": "Yo"},
    }
    return orjson.dumps(rows[fmt])[:-1] + b',"extra":' + value + b"}"


def turn_with_extra(value: bytes) -> bytes:
    """A Gemini example whose first turn has one more field."""
    return (
        b'{"contents":[{"role":"user","extra":'
        + value
        + b',"parts":[{"text":"Hi"}]},'
        + (orjson.dumps(m("Yo")) + b"]}")
    )


def system_with_extra(value: bytes) -> bytes:
    """A Gemini example whose system instruction has one more field."""
    return (
        b'{"systemInstruction":{"parts":[{"text":"Be kind."}],"extra":'
        + value
        + b'},"contents":'
        + orjson.dumps([u("Hi"), m("Yo")])
        + b"}"
    )


DEEP_LINES = {
    "function args, 300 deep": function_call(nested_bytes(300)),
    "function args, 1,000 deep": function_call(nested_bytes(1000)),
    "tools, 600 deep": with_tools(nested_bytes(600)),
    "another field of a gemini line": with_extra("gemini", nested_bytes(400)),
    "another field of a turn": turn_with_extra(nested_bytes(400)),
    "another field of the system instruction": system_with_extra(nested_bytes(400)),
    "deeper than orjson parses": function_call(nested_bytes(5000)),
    "a chat line deeper than orjson parses": with_extra("messages", nested_bytes(5000)),
    "a text pair deeper than orjson parses": with_extra("text-pairs", nested_bytes(5000)),
}


@pytest.mark.parametrize("line", DEEP_LINES.values(), ids=DEEP_LINES.keys())
@pytest.mark.parametrize("write", [False, True], ids=["validate", "convert"])
def test_json_nested_too_deep_is_a_finding_on_its_line(
    tmp_path: Path, line: bytes, write: bool
) -> None:
    first = line.startswith(b'{"messages"') or line.startswith(b'{"input_text"')
    lines = [line, good(1)] if first else [good(0), line, good(1)]
    path = write_lines(tmp_path, lines)
    validator = Validator(model="gemini-2.5-flash", method="supervised")
    prepared = validator.run(path, display="d.jsonl", workdir=tmp_path / "out" if write else None)
    report = prepared.report
    where = 1 if first else 2
    assert codes(report) == {"json-too-deep": [where], "few-examples": [None]}
    (finding,) = report.errors
    assert f"deeper than {DEPTH} levels" in finding.message
    assert "flatten" in finding.message
    assert report.stats["examples"] == len(lines) - 1
    if write:
        assert prepared.train.examples == len(lines) - 1


@pytest.mark.parametrize("fmt", ["messages", "text-pairs"])
def test_a_deep_field_that_conversion_drops_is_no_problem(tmp_path: Path, fmt: str) -> None:
    """A chat or text-pair line is written back as its texts only: its other fields may nest as
    deep as orjson parses."""
    path = write_lines(tmp_path, [with_extra(fmt, nested_bytes(1000))])
    prepared = Validator(model="gemini-2.5-flash", method="supervised").run(
        path, display="d", workdir=tmp_path / "out"
    )
    assert codes(prepared.report) == {"few-examples": [None]}
    assert prepared.train.examples == 1


@pytest.mark.parametrize("method", ["supervised", "preference", "distillation"])
def test_every_method_reports_a_deep_line(tmp_path: Path, method: str) -> None:
    path = write_lines(tmp_path, [function_call(nested_bytes(700))])
    report = Validator(model="gemini-2.5-flash", method=method).run(path, display="d").report
    assert "json-too-deep" in codes(report)


def test_json_as_deep_as_orjson_writes_is_read_and_written(tmp_path: Path) -> None:
    """The limit is where orjson stops, not lower: a line exactly 254 levels deep converts."""
    # The example, contents, the turn, parts, the part and the call hold the arguments: 6 levels.
    line = function_call(nested_bytes(DEPTH - 6))
    orjson.dumps(orjson.loads(line))
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(orjson.loads(function_call(nested_bytes(DEPTH - 5))))
    path = write_lines(tmp_path, [good(0), line, line])
    prepared = Validator(model="gemini-2.5-flash", method="supervised").run(
        path, display="d", workdir=tmp_path / "out"
    )
    assert "json-too-deep" not in codes(prepared.report)
    assert codes(prepared.report)["duplicate"] == [3]
    written = prepared.train.path.read_bytes().splitlines()
    assert orjson.loads(written[1]) == orjson.loads(line)


def test_the_cli_reports_a_deep_line_instead_of_a_traceback(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [good(0), function_call(nested_bytes(400))])
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "json-too-deep" in result.output and "Traceback" not in result.output


# --- lines too long to hold ------------------------------------------------------------------

#: A small limit and chunk, so that a line 50 times over the limit is only a few megabytes.
LIMIT = 256 * 1024
CHUNK = 16 * 1024


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", LIMIT, raising=False)
    monkeypatch.setattr(reader, "CHUNK", CHUNK)


def write_huge(path: Path, size: int, before: bytes = b"", after: bytes = b"") -> Path:
    """``before``, a line of ``size`` bytes (written in pieces), then ``after``."""
    with path.open("wb") as f:
        f.write(before)
        piece = b"x" * (1024 * 1024)
        for start in range(0, size, len(piece)):
            f.write(piece[: size - start])
        f.write(after)
    return path


def peak_bytes(work: Callable[[], Any]) -> tuple[int, Any]:
    """The most memory Python held at once while ``work`` ran, and what it returned."""
    tracemalloc.start()
    try:
        result = work()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def lines_of(blocks: Iterator[tuple[int, list[bytes]]]) -> list[tuple[int, bytes]]:
    """(number, line) of every line, a too-long one as (number, b"<N bytes>")."""
    out = []
    for first, block in blocks:
        for i, line in enumerate(block):
            size = getattr(line, "size", None)
            out.append((first + i, b"<%d bytes>" % size if size is not None else bytes(line)))
    return out


@pytest.mark.usefixtures("small_limit")
def test_a_line_50_times_the_limit_is_skipped_without_holding_it(tmp_path: Path) -> None:
    size = 50 * LIMIT
    path = write_huge(tmp_path / "d.jsonl", size, b'{"a":1}\n', b'\n{"b":2}\n')
    peak, lines = peak_bytes(lambda: lines_of(reader.iter_blocks(path)))
    assert peak < 3 * LIMIT, f"{peak:,} bytes held for a {size:,}-byte line"
    assert lines == [(1, b'{"a":1}'), (2, b"<%d bytes>" % size), (3, b'{"b":2}')]


@pytest.mark.usefixtures("small_limit")
@pytest.mark.parametrize(
    "size", [LIMIT - 1, LIMIT, LIMIT + 1, LIMIT + CHUNK - 1, 3 * LIMIT, 3 * LIMIT + 5]
)
@pytest.mark.parametrize("newline", [True, False], ids=["newline", "last-line"])
def test_lines_around_the_limit(tmp_path: Path, size: int, newline: bool) -> None:
    """Up to the limit a line is read whole; past it, it is skipped, wherever the chunks fall."""
    after = b'\n{"b":2}' if newline else b""
    path = write_huge(tmp_path / "d.jsonl", size, b"\xef\xbb\xbf[]\n", after)
    lines = lines_of(reader.iter_blocks(path))
    middle = b"x" * size if size <= LIMIT else b"<%d bytes>" % size
    assert lines == [(1, b"[]"), (2, middle), *([(3, b'{"b":2}')] if newline else [])]
    assert [n for n, _ in reader.iter_lines(path)] == [n for n, _ in lines]


@pytest.mark.usefixtures("small_limit")
def test_validate_reports_a_line_too_long_and_reads_on(tmp_path: Path) -> None:
    path = write_huge(tmp_path / "d.jsonl", 50 * LIMIT, good(0) + b"\n", b"\n" + good(1) + b"\n")
    peak, report = peak_bytes(lambda: validate_file(path))
    assert codes(report) == {"line-too-long": [2], "few-examples": [None]}
    assert report.stats["examples"] == 2
    (finding,) = report.errors
    assert f"{50 * LIMIT:,} bytes" in finding.message and "one example per line" in finding.message
    assert peak < 3 * LIMIT + 2 * 1024 * 1024  # the limit, and the validator's own few MB


@pytest.mark.usefixtures("small_limit")
def test_splitting_a_file_with_a_huge_line_does_not_read_it(tmp_path: Path) -> None:
    """Cutting a large file into ranges, and finding its format, step over a huge line."""
    path = write_huge(tmp_path / "d.jsonl", 50 * LIMIT, b"\n", b"\n" + good(0) + b"\n")
    peak, ranges = peak_bytes(lambda: reader.split_ranges(path, [1.0, 1.0]))
    assert peak < 3 * LIMIT
    assert ranges == [(0, 50 * LIMIT + 2), (50 * LIMIT + 2, path.stat().st_size)]
    peak, found = peak_bytes(lambda: scan.detect_first(path))
    assert peak < 3 * LIMIT
    assert found == ("gemini", 50 * LIMIT + 2)


@pytest.mark.usefixtures("small_limit")
def test_a_csv_line_too_long_is_reported_without_holding_it(tmp_path: Path) -> None:
    path = write_huge(
        tmp_path / "d.csv", 50 * LIMIT, b"prompt,response\nHi,Hello\n", b",x\nMore,Yes\n"
    )
    peak, report = peak_bytes(lambda: validate_file(path))
    assert peak < 3 * LIMIT + 2 * 1024 * 1024
    assert codes(report)["line-too-long"] == [3]
    assert report.stats["examples"] == 1
