"""Reading, converting and validating datasets: every rule, with exact line numbers."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vertex_tuner.cli import cli
from vertex_tuner.dataset import Validator, validate_file
from vertex_tuner.dataset.report import github_annotations
from vertex_tuner.dataset.rules import check_example
from vertex_tuner.models import MODELS


def chat(i: int, answer: str | None = None) -> dict[str, object]:
    return {
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": f"Question {i}: where is HH-{i:06d}?"},
            {"role": "assistant", "content": answer or f"Answer {i}: Thursday."},
        ]
    }


def gemini(user: str, model: str) -> dict[str, object]:
    return {
        "contents": [
            {"role": "user", "parts": [{"text": user}]},
            {"role": "model", "parts": [{"text": model}]},
        ]
    }


def write_lines(tmp_path: Path, rows: list[object], name: str = "d.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(
        b"\n".join(r if isinstance(r, bytes) else orjson.dumps(r) for r in rows) + b"\n"
    )
    return path


def codes(report: object) -> dict[str, list[int | None]]:
    out: dict[str, list[int | None]] = {}
    for f in [*report.errors, *report.warnings]:  # type: ignore[attr-defined]
        out.setdefault(f.code, []).append(f.line)
    return out


FLASH = MODELS["gemini-2.5-flash"]


@pytest.mark.parametrize(
    ("example", "code", "field"),
    [
        ({}, "missing-contents", "contents"),
        ({"contents": []}, "missing-contents", "contents"),
        (
            {"contents": [{"role": "system", "parts": [{"text": "x"}]}]},
            "bad-role",
            "contents[0].role",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "a"}]},
                    {"role": "user", "parts": [{"text": "b"}]},
                    {"role": "model", "parts": [{"text": "c"}]},
                ]
            },
            "consecutive-turns",
            "contents[1].role",
        ),
        (
            {"contents": [{"role": "user", "parts": [{"text": "a"}]}]},
            "must-end-on-model",
            "contents[0].role",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "  "}]},
                    {"role": "model", "parts": [{"text": "b"}]},
                ]
            },
            "empty-text",
            "contents[0].parts[0].text",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": []},
                    {"role": "model", "parts": [{"text": "b"}]},
                ]
            },
            "empty-parts",
            "contents[0].parts",
        ),
        (
            {
                "contents": [
                    {
                        "role": "user",
                        "parts": [{"fileData": {"mimeType": "image/png", "fileUri": "s3://x/y"}}],
                    },
                    {"role": "model", "parts": [{"text": "b"}]},
                ]
            },
            "bad-file-uri",
            "contents[0].parts[0].fileData.fileUri",
        ),
        (
            {
                "contents": [
                    {
                        "role": "user",
                        "parts": [{"fileData": {"mimeType": "app/zip", "fileUri": "gs://b/o"}}],
                    },
                    {"role": "model", "parts": [{"text": "b"}]},
                ]
            },
            "bad-mime-type",
            "contents[0].parts[0].fileData.mimeType",
        ),
        (
            {
                "systemInstruction": {"parts": [{"fileData": {}}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "a"}]},
                    {"role": "model", "parts": [{"text": "b"}]},
                ],
            },
            "bad-system",
            "systemInstruction.parts[0]",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "a", "fileData": {}}]},
                    {"role": "model", "parts": [{"text": "b"}]},
                ]
            },
            "bad-part",
            "contents[0].parts[0]",
        ),
    ],
)
def test_vertex_rules(example: dict[str, object], code: str, field: str) -> None:
    found = check_example(example, method="supervised", model=FLASH, line=7)
    assert [(f.code, f.field, f.line) for f in found][:1] == [(code, field, 7)]


def test_function_calling_example_is_valid() -> None:
    example = {
        "tools": [{"functionDeclarations": [{"name": "track", "parameters": {"type": "OBJECT"}}]}],
        "contents": [
            {"role": "user", "parts": [{"text": "Where is HH-000001?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "track", "args": {"id": 1}}}]},
            {"parts": [{"functionResponse": {"name": "track", "response": {"output": "ok"}}}]},
            {"role": "model", "parts": [{"text": "It ships Thursday."}]},
        ],
    }
    assert check_example(example, method="supervised", model=FLASH, line=1) == []


def test_too_many_tokens_is_a_truncation() -> None:
    found = check_example(gemini("word " * 140_000, "ok"), method="supervised", model=FLASH, line=3)
    assert [f.code for f in found] == ["too-many-tokens"]
    assert "estimated" in found[0].message


def test_preference_rules() -> None:
    good = {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "completions": [
            {"score": 1, "completion": {"role": "model", "parts": [{"text": "Hello!"}]}},
            {"score": 0, "completion": {"role": "model", "parts": [{"text": "What."}]}},
        ],
    }
    assert check_example(good, method="preference", model=FLASH, line=1) == []
    two_good = {**good, "completions": [good["completions"][0]] * 2}  # type: ignore[index]
    assert [f.code for f in check_example(two_good, method="preference", model=FLASH, line=1)] == [
        "bad-scores"
    ]
    ends_on_model = {
        **good,
        "contents": [
            {"role": "user", "parts": [{"text": "a"}]},
            {"role": "model", "parts": [{"text": "b"}]},
        ],
    }
    assert "must-end-on-user" in [
        f.code for f in check_example(ends_on_model, method="preference", model=FLASH, line=1)
    ]


def test_malformed_input_is_reported_by_line(tmp_path: Path) -> None:
    rows: list[object] = [chat(i) for i in range(5)]
    rows.insert(1, b"{not json")
    rows.insert(3, b"\xff\xfe not utf-8")
    rows.insert(4, b"")  # a blank line is skipped, but counted
    rows.insert(6, b"[1, 2]")
    report = validate_file(write_lines(tmp_path, rows))
    found = codes(report)
    assert found["bad-json"] == [2]
    assert found["not-utf8"] == [4]
    assert found["not-an-object"] == [7]
    assert report.stats["examples"] == 5
    assert not report.ok


def test_bom_crlf_and_no_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(orjson.dumps(chat(i)) for i in range(3)))
    report = validate_file(path)
    assert report.ok and report.stats["examples"] == 3


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    report = validate_file(path)
    assert codes(report) == {"empty-file": [None]}


def test_a_huge_line_does_not_break_the_reader(tmp_path: Path) -> None:
    huge = orjson.dumps(
        {
            "messages": [
                {"role": "user", "content": "x" * (50 * 1024 * 1024)},
                {"role": "assistant", "content": "ok"},
            ]
        }
    )
    report = validate_file(write_lines(tmp_path, [chat(0), huge, chat(1)]))
    assert codes(report)["too-many-tokens"] == [2]
    assert report.stats["examples"] == 3


def test_quality_warnings(tmp_path: Path) -> None:
    rows: list[object] = [chat(i) for i in range(30)]
    rows.append(chat(3))  # line 31: exact duplicate of line 4
    rows.append(chat(5, "A different answer."))  # line 32: same prompt, new answer
    report = validate_file(write_lines(tmp_path, rows))
    found = codes(report)
    assert found["duplicate"] == [31]
    assert found["conflicting-answers"] == [32]
    assert found["few-examples"] == [None]
    assert report.ok  # warnings only


def test_skewed_labels_and_length_outliers(tmp_path: Path) -> None:
    rows: list[object] = [
        gemini(f"Ticket {i} about billing", "billing" if i % 10 else "other") for i in range(100)
    ]
    rows.append(gemini("word " * 9000, "billing"))
    found = codes(validate_file(write_lines(tmp_path, rows)))
    assert "few-distinct-outputs" in found and "skewed-labels" in found
    assert found["length-outlier"] == [101]


def test_mixed_formats_and_unknown_format(tmp_path: Path) -> None:
    rows: list[object] = [chat(0), {"input_text": "a", "output_text": "b"}, {"foo": 1}]
    found = codes(validate_file(write_lines(tmp_path, rows)))
    assert found["mixed-formats"] == [2]


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"input_text": "Hi", "output_text": "Hello"}, "text-pairs"),
        ({"prompt": "Hi", "completion": "Hello"}, "text-pairs"),
        (gemini("Hi", "Hello"), "gemini"),
        (
            {"system_instruction": {"parts": [{"text": "Be kind"}]}, **gemini("Hi", "Hello")},
            "gemini",
        ),
    ],
)
def test_formats_are_detected_and_converted(
    tmp_path: Path, row: dict[str, object], fmt: str
) -> None:
    validator = Validator(model="gemini-2.5-flash", method="supervised")
    prepared = validator.run(
        write_lines(tmp_path, [row] * 3), display="d.jsonl", workdir=tmp_path / "out"
    )
    assert prepared.report.stats["format"] == fmt
    first = orjson.loads(prepared.train.path.read_bytes().splitlines()[0])
    assert first["contents"][0] == {"role": "user", "parts": [{"text": "Hi"}]}
    assert first["contents"][1] == {"role": "model", "parts": [{"text": "Hello"}]}
    assert "system_instruction" not in first


def test_messages_conversion_and_misplaced_system(tmp_path: Path) -> None:
    bad = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "system", "content": "b"},
            {"role": "assistant", "content": "c"},
        ]
    }
    found = codes(validate_file(write_lines(tmp_path, [chat(0), bad])))
    assert found["misplaced-system"] == [2]


def test_csv_with_columns_and_multiline_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ticket", "triage"])
        writer.writerow(["line one\nline two", '{"category": "billing"}'])
        writer.writerow(["", '{"category": "other"}'])
    validator = Validator(
        model="gemini-2.5-flash",
        method="supervised",
        columns={"prompt": "ticket", "response": "triage"},
    )
    report = validator.run(path, display="t.csv").report
    assert report.stats["format"] == "csv"
    assert codes(report)["empty-text"] == [4]  # the row starting on line 4


def test_splits_are_deterministic_and_keep_prompts_together(tmp_path: Path) -> None:
    rows: list[object] = [chat(i) for i in range(400)]
    validator = Validator(model="gemini-2.5-flash", method="supervised")
    path = write_lines(tmp_path, rows)
    a = validator.run(path, display="d", workdir=tmp_path / "a", validation=0.1, holdout=0.1)
    b = validator.run(path, display="d", workdir=tmp_path / "b", validation=0.1, holdout=0.1)
    assert a.train.sha256 == b.train.sha256
    assert a.validation and a.holdout
    assert 20 < a.validation.examples < 60 and 20 < a.holdout.examples < 60
    # Appending rows keeps every earlier row on its side.
    more = write_lines(tmp_path, [*rows, *[chat(i) for i in range(400, 500)]], "more.jsonl")
    c = validator.run(more, display="d", workdir=tmp_path / "c", validation=0.1, holdout=0.1)
    assert c.holdout is not None
    old = set(a.holdout.path.read_bytes().splitlines())
    assert old <= set(c.holdout.path.read_bytes().splitlines())


def test_holdout_leakage_from_a_separate_file_is_an_error(tmp_path: Path) -> None:
    train = write_lines(tmp_path, [chat(i) for i in range(50)])
    holdout = write_lines(tmp_path, [chat(7), chat(100)], "holdout.jsonl")
    validator = Validator(model="gemini-2.5-flash", method="supervised")
    report = validator.run(train, display="d", workdir=tmp_path / "o", holdout=holdout).report
    assert codes(report)["holdout-leakage"] == [1]
    assert not report.ok


def test_cost_estimate_and_budget(tmp_path: Path) -> None:
    validator = Validator(model="gemini-2.5-pro", method="supervised")
    report = validator.run(
        write_lines(tmp_path, [chat(i) for i in range(200)]),
        display="d",
        epochs=4,
        budget_usd=0.0001,
    ).report
    stats = report.stats
    assert stats["billable_tokens"] == stats["billable_tokens_per_epoch"] * 4
    assert stats["estimated_cost_usd"] == pytest.approx(stats["billable_tokens"] / 1e6 * 25, 1e-3)
    assert "over-budget" in codes(report)
    assert stats["token_estimate"].startswith("estimated")


def test_findings_are_capped_per_code(tmp_path: Path) -> None:
    report = validate_file(write_lines(tmp_path, [b"{bad"] * 120))
    bad = [f for f in report.errors if f.code == "bad-json"]
    assert len(bad) == 51 and bad[-1].message == "and 70 more like this"


def test_github_annotations(tmp_path: Path) -> None:
    report = validate_file(write_lines(tmp_path, [chat(0), b"{bad"]))
    lines = github_annotations(report, "d.jsonl")
    assert any(line.startswith("::error file=") and ",line=2," in line for line in lines)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    report = validate_file(path)
    assert isinstance(report.ok, bool)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "contents",
                    "role",
                    "parts",
                    "text",
                    "messages",
                    "content",
                    "systemInstruction",
                    "fileData",
                    "completions",
                    "score",
                    "completion",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_json)
def test_arbitrary_json_never_crashes(tmp_path: Path, value: object) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(orjson.dumps(value) + b"\n")
    for method in ("supervised", "preference", "distillation"):
        Validator(model="gemini-2.5-flash", method=method).run(path, display="f")


def test_validate_cli_json_and_exit_codes(tmp_path: Path) -> None:
    good = write_lines(tmp_path, [chat(i) for i in range(3)], "good.jsonl")
    bad = write_lines(tmp_path, [chat(0), b"{bad"], "bad.jsonl")
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(good), "--json"])
    assert result.exit_code == 0
    doc = orjson.loads(result.stdout)
    assert set(doc) == {"ok", "errors", "warnings", "stats"} and doc["ok"] is True
    result = runner.invoke(cli, ["validate", str(bad), "--json"])
    assert result.exit_code == 1
    assert orjson.loads(result.stdout)["errors"][0] == {
        "line": 2,
        "code": "bad-json",
        "message": orjson.loads(result.stdout)["errors"][0]["message"],
        "file": str(bad),
    }
    assert runner.invoke(cli, ["validate"]).exit_code == 2
    assert runner.invoke(cli, ["validate", str(good), "--model", "nope"]).exit_code == 2


def test_validate_cli_github_annotations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    bad = write_lines(tmp_path, [chat(0), b"{bad"], "bad.jsonl")
    result = CliRunner().invoke(cli, ["validate", str(bad)])
    assert f"::error file={bad},line=2,title=bad-json::" in result.stderr


def test_validate_imports_no_google_module(tmp_path: Path) -> None:
    import subprocess
    import sys

    good = write_lines(tmp_path, [chat(i) for i in range(3)])
    code = (
        "import sys\nfrom vertex_tuner.cli import cli\n"
        f"try:\n    cli(['validate', {str(good)!r}])\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in sys.modules if m.startswith(('google.genai', 'google.cloud'))]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_parallel_parts_match_one_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large files are split across processes; the result must equal a single pass."""
    import vertex_tuner.dataset.validate as engine

    rows: list[object] = [chat(i) for i in range(400)]
    rows[10] = b"{bad"
    rows.append(chat(3))  # a duplicate of line 4, in the second half
    rows.append(chat(7, "Another answer."))  # a conflicting answer, in the second half
    path = write_lines(tmp_path, rows)
    validator = Validator(model="gemini-2.5-flash", method="supervised")

    def run(folder: str) -> object:
        return validator.run(
            path, display="d", workdir=tmp_path / folder, validation=0.1, holdout=0.1, epochs=2
        )

    monkeypatch.setattr(engine, "PARALLEL_MIN_BYTES", 1 << 40)
    one = run("one")
    monkeypatch.setattr(engine, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setenv("VERTEX_TUNER_WORKERS", "2")
    two = run("two")
    assert one.report.to_json() == two.report.to_json()  # type: ignore[attr-defined]
    for side in ("train", "validation", "holdout"):
        a, b = getattr(one, side), getattr(two, side)
        assert (a.sha256, a.size, a.examples) == (b.sha256, b.size, b.examples)
    found = codes(two.report)  # type: ignore[attr-defined]
    assert found["bad-json"] == [11]
    assert found["duplicate"] == [401] and found["conflicting-answers"] == [402]
    assert not list((tmp_path / "two").glob(".part*"))
