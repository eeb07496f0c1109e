"""Reading whatever is in a dataset file: malformed input by line, fuzzing, large files split
across processes, and ``prepare`` from a job spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from dataset_support import codes, write_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vertex_tuner.dataset import PreparedDataset, Validator, validate_file
from vertex_tuner.dataset import scan as scanning
from vertex_tuner.dataset import validate as engine
from vertex_tuner.spec import load_spec
from vertex_tuner.tuning import prepare


def chat(i: int, answer: str | None = None) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": f"Question {i}: where is HH-{i:06d}?"},
            {"role": "assistant", "content": answer or f"Answer {i}: Thursday."},
        ]
    }


def test_malformed_lines_are_reported_by_line(tmp_path: Path) -> None:
    rows: list[Any] = [chat(i) for i in range(5)]
    rows.insert(1, b"{not json")  # 2
    rows.insert(3, b'{"messages": "\xff\xfe"}')  # 4
    rows.insert(4, b"")  # 5: a blank line is skipped, but counted
    rows.insert(5, b"   \t")  # 6: so is a whitespace-only one
    rows.insert(7, b"[1, 2]")  # 8
    rows.insert(8, b'"just a string"')  # 9
    rows.insert(9, b'{"messages": [{"role": "user", "content": "a"}]')  # 10: cut short
    report = validate_file(write_lines(tmp_path, rows))
    assert codes(report) == {
        "bad-json": [2, 10],
        "not-utf8": [4],
        "not-an-object": [8, 9],
        "few-examples": [None],
    }
    assert report.stats["examples"] == 5
    assert not report.ok
    assert report.errors[0].message.startswith("not valid JSON: ")
    assert report.errors[0].file == str(tmp_path / "d.jsonl")


def test_bom_crlf_and_no_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(orjson.dumps(chat(i)) for i in range(3)))
    report = validate_file(path)
    assert report.ok and report.stats["examples"] == 3
    prepared = Validator(model="gemini-2.5-flash", method="supervised").run(
        path, display="bom.jsonl", workdir=tmp_path / "out"
    )
    assert b"\r" not in prepared.train.path.read_bytes()
    assert prepared.train.examples == 3


@pytest.mark.parametrize("content", [b"", b"\n\n", b"  \r\n\t\n", b"\xef\xbb\xbf"])
def test_an_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    report = validate_file(path)
    assert codes(report) == {"empty-file": [None]}
    assert report.stats["examples"] == 0


def test_a_50_mb_line_does_not_break_the_reader(tmp_path: Path) -> None:
    huge = orjson.dumps(
        {
            "messages": [
                {"role": "user", "content": "x" * (50 * 1024 * 1024)},
                {"role": "assistant", "content": "ok"},
            ]
        }
    )
    report = validate_file(write_lines(tmp_path, [chat(0), huge, b"{bad", chat(1)]))
    assert codes(report) == {
        "too-many-tokens": [2],
        "bad-json": [3],
        "few-examples": [None],
    }
    assert report.stats["examples"] == 3
    assert report.stats["input_tokens"]["max"] == 13_107_200


def test_unknown_format_until_a_line_settles_it_then_mixed(tmp_path: Path) -> None:
    rows: list[Any] = [
        {"foo": 1},
        chat(0),
        {"input_text": "a", "output_text": "b"},
        {"foo": 2},
    ]
    report = validate_file(write_lines(tmp_path, rows))
    assert codes(report) == {
        "unknown-format": [1],
        "mixed-formats": [3],
        "bad-shape": [4],
        "few-examples": [None],
    }
    assert report.stats["format"] == "messages"
    explicit = validate_file(write_lines(tmp_path, rows, "e.jsonl"), fmt="text-pairs")
    assert codes(explicit)["bad-shape"] == [1, 2, 4]
    assert explicit.stats["examples"] == 1


def test_findings_are_capped_per_code(tmp_path: Path) -> None:
    report = validate_file(write_lines(tmp_path, [b"{bad"] * 120 + [b"[1]"] * 3))
    bad = [f for f in report.errors if f.code == "bad-json"]
    assert [f.line for f in bad] == [*range(1, 51), None]
    assert bad[-1].message == "and 70 more like this"
    assert report.stats["counts_by_code"] == {"bad-json": 120, "not-an-object": 3}
    assert report.stats["error_count"] == 123


def test_the_json_report_shape(tmp_path: Path) -> None:
    report = validate_file(write_lines(tmp_path, [chat(0), b"{bad"]))
    document = report.to_json()
    assert set(document) == {"ok", "errors", "warnings", "stats"}
    assert document["errors"][0] == {
        "line": 2,
        "code": "bad-json",
        "message": document["errors"][0]["message"],
        "file": str(tmp_path / "d.jsonl"),
    }
    assert document["warnings"][0] == {
        "line": None,
        "code": "few-examples",
        "message": "only 1 training example; start with at least 100",
        "file": str(tmp_path / "d.jsonl"),
    }
    for key in (
        "format",
        "examples",
        "train_examples",
        "validation_examples",
        "holdout_examples",
        "bytes",
        "input_tokens",
        "output_tokens",
        "billable_tokens_per_epoch",
        "epochs",
        "billable_tokens",
        "estimated_cost_usd",
        "price_per_million",
        "prices_as_of",
        "price_source",
        "token_estimate",
        "truncated_examples_expected",
    ):
        assert key in document["stats"], key
    orjson.dumps(document)  # serialisable as it is


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=3000))
def test_arbitrary_bytes_never_crash(tmp_path: Path, data: bytes) -> None:
    for name in ("fuzz.jsonl", "fuzz.csv"):
        path = tmp_path / name
        path.write_bytes(data)
        report = validate_file(path)
        assert report.ok == (not report.errors)


_keys = st.sampled_from(
    [
        "contents",
        "role",
        "parts",
        "text",
        "messages",
        "content",
        "systemInstruction",
        "system_instruction",
        "fileData",
        "fileUri",
        "mimeType",
        "functionCall",
        "functionResponse",
        "name",
        "completions",
        "score",
        "completion",
        "input_text",
        "output_text",
        "tools",
        "x",
    ]
)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.sampled_from(["user", "model", "assistant", "system", "", " ", "gs://b/o", "image/png"])
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=25,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(_values, min_size=1, max_size=4))
def test_arbitrary_json_never_crashes(tmp_path: Path, lines: list[Any]) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"".join(orjson.dumps(v) + b"\n" for v in lines))
    for method in ("supervised", "preference", "distillation"):
        prepared = Validator(model="gemini-2.5-flash", method=method).run(
            path, display="f", workdir=tmp_path / method, validation=0.3, holdout=0.3
        )
        assert prepared.report.ok == (not prepared.report.errors)


def run_both_ways(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kwargs: Any
) -> tuple[PreparedDataset, PreparedDataset]:
    validator = Validator(model="gemini-2.5-flash", method="supervised", fmt="auto")
    monkeypatch.setattr(engine, "PARALLEL_MIN_BYTES", 1 << 40)
    one = validator.run(path, display="d", workdir=tmp_path / "one", **kwargs)
    monkeypatch.setattr(engine, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setenv("VERTEX_TUNER_WORKERS", "3")
    many = validator.run(path, display="d", workdir=tmp_path / "many", **kwargs)
    assert one.report.to_json() == many.report.to_json()
    for side in ("train", "validation", "holdout"):
        a, b = getattr(one, side), getattr(many, side)
        assert (a is None) == (b is None)
        if a is not None:
            assert (a.sha256, a.size, a.examples) == (b.sha256, b.size, b.examples)
    assert not list((tmp_path / "many").glob(".part*"))
    return one, many


def test_a_file_split_across_processes_reads_as_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows: list[Any] = [chat(i) for i in range(400)]
    rows[10] = b"{bad"
    rows[350] = b""
    rows.append(chat(3))  # a duplicate of line 4, in the last part
    rows.append(chat(7, "Another answer."))  # a conflicting answer, in the last part
    rows += [b"{bad"] * 60  # over the cap, in the last part only
    path = write_lines(tmp_path, rows)
    _, many = run_both_ways(path, tmp_path, monkeypatch, validation=0.1, holdout=0.1, epochs=2)
    found = codes(many.report)
    assert found["bad-json"] == [11, *range(403, 452), None]
    assert found["duplicate"] == [401] and found["conflicting-answers"] == [402]


def test_the_format_settles_the_same_way_in_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows: list[Any] = [{"foo": i} for i in range(30)]
    rows += [{"input_text": f"q{i}", "output_text": f"a{i}"} for i in range(300)]
    rows += [chat(i) for i in range(5)]
    _, many = run_both_ways(write_lines(tmp_path, rows), tmp_path, monkeypatch)
    found = codes(many.report)
    assert found["unknown-format"] == list(range(1, 31))[:50]
    assert found["mixed-formats"] == list(range(331, 336))


def csv_rows(n: int) -> list[str]:
    """Rows of prompt,response with quoting of every kind: quoted fields holding newlines,
    commas and doubled quotes, so a cut on a plain newline would fall inside a field."""
    out = []
    for i in range(n):
        prompt = (
            f'"Line one of {i}\nline two, with a comma\n""quoted"" three"'
            if i % 3
            else f"Question {i}?"
        )
        out.append(f"{prompt},Answer {i % 40}.\n")
    return out


@pytest.mark.parametrize("fork", [True, False])
def test_a_csv_split_across_processes_reads_as_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: bool
) -> None:
    rows = ["prompt,response\n", *csv_rows(400)]
    rows[20] = "Question x?,a,b\n"  # more fields than the header
    rows.append(rows[5])  # a duplicate, in the last part
    path = tmp_path / "train.csv"
    path.write_text("".join(rows), encoding="utf-8")
    monkeypatch.setattr(scanning, "_can_fork", lambda: fork)
    _, many = run_both_ways(path, tmp_path, monkeypatch, validation=0.1, holdout=0.1)
    found = codes(many.report)
    # Line numbers count physical lines: two of every three rows span three lines.
    assert found["bad-csv"] == [2 + sum(3 if j % 3 else 1 for j in range(19))]
    assert found["duplicate"] == ["".join(rows[:-1]).count("\n") + 1]
    assert many.report.stats["examples"] == 400


@pytest.mark.parametrize(
    "broken",
    [
        'Question "odd,Answer.\n',  # a quote inside an unquoted field: the cut may fall in a field
        '"never closed,Answer.\n',  # broken quoting: nothing after it is read
    ],
)
def test_a_csv_that_quotes_oddly_is_read_in_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    rows = ["prompt,response\n", *csv_rows(300)]
    rows[30] = broken
    path = tmp_path / "train.csv"
    path.write_text("".join(rows), encoding="utf-8")
    run_both_ways(path, tmp_path, monkeypatch)


def test_a_worker_that_cannot_start_leaves_the_work_to_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_lines(tmp_path, [chat(i) for i in range(300)])
    monkeypatch.setattr(engine, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(scanning, "_can_fork", lambda: False)
    monkeypatch.setattr(scanning.sys, "executable", "")
    report = validate_file(path)
    assert report.ok and report.stats["examples"] == 300


@pytest.mark.parametrize("fork", [True, False])
def test_forked_and_new_interpreter_workers_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: bool
) -> None:
    rows: list[Any] = [chat(i) for i in range(300)]
    rows[200] = b"{bad"
    rows.append(chat(250))
    path = write_lines(tmp_path, rows)
    monkeypatch.setattr(scanning, "_can_fork", lambda: fork)
    _, many = run_both_ways(path, tmp_path, monkeypatch, validation=0.2)
    found = codes(many.report)
    assert found["bad-json"] == [201] and found["duplicate"] == [301]


def test_prepare_from_a_spec(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_lines(data, [chat(i) for i in range(300)], "train.jsonl")
    write_lines(data, [chat(900), *[chat(i) for i in range(10)]], "held.jsonl")
    spec_path = tmp_path / "job.yaml"
    spec_path.write_text(
        "name: demo\nbase_model: gemini-2.5-flash-lite\nmethod: supervised\n"
        "dataset:\n  train: data/train.jsonl\n  validation: 0.1\n"
        "hyperparameters:\n  epochs: 2\n"
        "gcp:\n  project: acme-project\n  location: us-central1\n  bucket: acme-tuning\n"
        "budget:\n  max_cost_usd: 5\n"
        "evaluation:\n  holdout: data/held.jsonl\n"
    )
    spec = load_spec(spec_path)
    prepared = prepare(spec, tmp_path / "work")
    stats = prepared.report.stats
    assert stats["model"] == "gemini-2.5-flash-lite" and stats["epochs"] == 2
    assert stats["budget_usd"] == 5
    assert prepared.validation is not None
    assert prepared.train.examples + prepared.validation.examples == 300
    # Held-out prompts that stayed in training leak; those split off for validation do not.
    trained = {
        orjson.loads(line)["contents"][0]["parts"][0]["text"]
        for line in prepared.train.path.read_bytes().splitlines()
    }
    leaked = [2 + i for i in range(10) if chat(i)["messages"][1]["content"] in trained]
    assert 0 < len(leaked) < 10
    assert [(f.code, f.line) for f in prepared.report.errors] == [
        ("holdout-leakage", line) for line in leaked
    ]
    assert prepared.holdout is not None and prepared.holdout.examples == 11
    assert prepared.train.path == tmp_path / "work" / "train.jsonl"
    assert stats["billable_tokens"] == 2 * stats["billable_tokens_per_epoch"]


def test_prepare_needs_a_local_copy_of_gs_data(tmp_path: Path) -> None:
    from vertex_tuner.errors import DatasetError

    spec_path = tmp_path / "job.yaml"
    spec_path.write_text(
        "name: demo\nbase_model: gemini-2.5-flash\nmethod: supervised\n"
        "dataset:\n  train: gs://bucket/train.jsonl\n"
        "gcp:\n  project: acme-project\n  location: us-central1\n  bucket: acme-tuning\n"
    )
    with pytest.raises(DatasetError, match="local copy"):
        prepare(load_spec(spec_path), tmp_path / "work")


def test_bad_json_says_which_column(tmp_path: Path) -> None:
    report = validate_file(write_lines(tmp_path, [b'{"messages": [1,]}', b'"\\ud800"']))
    assert [f.message for f in report.errors] == [
        "not valid JSON: trailing comma is not allowed at column 16",
        "not valid JSON: no low surrogate in string at column 2",
    ]


def test_splits_that_leave_nothing_to_train_on(tmp_path: Path) -> None:
    from vertex_tuner.errors import DatasetError

    path = write_lines(tmp_path, [chat(i) for i in range(10)])
    validator = Validator(model="gemini-2.5-flash", method="supervised")
    with pytest.raises(DatasetError, match="set aside all of the training data"):
        validator.run(path, display="d", validation=0.5, holdout=0.5)
