"""The data as a whole: duplicates, conflicts, leakage, labels, outliers, splits, limits, cost."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from dataset_support import codes, write_lines

from vertex_tuner import models
from vertex_tuner.dataset import Validator, validate_file
from vertex_tuner.dataset import validate as engine


def chat(prompt: str, answer: str, system: str | None = "Be kind.") -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def numbered(i: int, answer: str | None = None) -> dict[str, Any]:
    return chat(f"Question {i:04d}: where is my order?", answer or f"Answer {i:04d}.")


def messages(report: Any, code: str) -> list[str]:
    return [f.message for f in [*report.errors, *report.warnings] if f.code == code]


def validator(method: str = "supervised", model: str = "gemini-2.5-flash") -> Validator:
    return Validator(model=model, method=method)


def test_duplicates_and_conflicting_answers(tmp_path: Path) -> None:
    rows = [numbered(i) for i in range(120)]
    rows.append(numbered(3))  # line 121: line 4 again
    rows.append(numbered(5, "Something else."))  # line 122: line 6's prompt, another answer
    rows.append(numbered(3))  # line 123: line 4 a third time
    rows.append(chat("Question 0007: where is my order?", "Answer 0007.", system="Be brief."))
    report = validate_file(write_lines(tmp_path, rows))
    assert codes(report) == {"duplicate": [121, 123], "conflicting-answers": [122]}
    assert messages(report, "duplicate") == [
        "the same example as line 4",
        "the same example as line 4",
    ]
    assert messages(report, "conflicting-answers") == [
        "the same prompt as line 6 with a different answer"
    ]
    assert report.ok  # warnings only


def test_duplicates_in_a_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    body = "".join(f"ticket {i},label {i % 30}\n" for i in range(100))
    path.write_text("prompt,response\n" + body + "ticket 1,label 1\nticket 2,label 0\n")
    report = validate_file(path)
    assert codes(report) == {"duplicate": [102], "conflicting-answers": [103]}
    assert messages(report, "conflicting-answers") == [
        "the same prompt as line 4 with a different answer"
    ]


def test_the_same_prompt_in_another_format_spelling_is_a_duplicate(tmp_path: Path) -> None:
    """A Gemini row and a chat row with the same texts are the same example."""
    rows: list[Any] = [numbered(i) for i in range(30)]
    gemini = {
        "systemInstruction": {"parts": [{"text": "Be kind."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Question 0002: where is my order?"}]},
            {"role": "model", "parts": [{"text": "Answer 0002."}]},
        ],
    }
    path = write_lines(tmp_path, [*rows, gemini], "g.jsonl")
    # One format per file: the Gemini line is reported, not compared.
    assert codes(validate_file(path))["mixed-formats"] == [31]
    path = write_lines(tmp_path, [gemini, *[formats_gemini(r) for r in rows]], "all.jsonl")
    assert codes(validate_file(path))["duplicate"] == [4]


def formats_gemini(row: dict[str, Any]) -> dict[str, Any]:
    from vertex_tuner.dataset.formats import convert

    return convert(row, "messages")


def test_leakage_into_a_separate_holdout_is_an_error_and_into_validation_a_warning(
    tmp_path: Path,
) -> None:
    train = write_lines(tmp_path, [numbered(i) for i in range(200)])
    held = write_lines(
        tmp_path, [numbered(500), numbered(7, "Other."), numbered(501)], "held.jsonl"
    )
    report = validator().run(train, display="d", workdir=tmp_path / "a", holdout=held).report
    assert codes(report) == {"holdout-leakage": [2]}
    assert not report.ok
    [finding] = report.errors
    assert finding.file == str(held) and "(d)" in finding.message
    report = validator().run(train, display="d", workdir=tmp_path / "b", validation=held).report
    assert codes(report) == {"validation-leakage": [2]}
    assert report.ok
    assert report.stats["validation_examples"] == 3


def test_splits_are_deterministic_stable_and_keep_prompts_on_one_side(tmp_path: Path) -> None:
    rows = [numbered(i) for i in range(1000)]
    rows += [numbered(i, "A second answer.") for i in range(0, 1000, 10)]  # repeated prompts
    path = write_lines(tmp_path, rows)
    a = validator().run(path, display="d", workdir=tmp_path / "a", validation=0.1, holdout=0.2)
    b = validator().run(path, display="d", workdir=tmp_path / "b", validation=0.1, holdout=0.2)
    assert a.validation is not None and a.holdout is not None
    assert b.validation is not None and b.holdout is not None
    assert (a.train.sha256, a.validation.sha256, a.holdout.sha256) == (
        b.train.sha256,
        b.validation.sha256,
        b.holdout.sha256,
    )
    assert a.train.examples + a.validation.examples + a.holdout.examples == 1100
    assert 60 < a.validation.examples < 140 and 160 < a.holdout.examples < 240
    stats = a.report.stats
    assert (stats["train_examples"], stats["validation_examples"], stats["holdout_examples"]) == (
        a.train.examples,
        a.validation.examples,
        a.holdout.examples,
    )

    def prompts(path: Path) -> set[str]:
        return {
            orjson.loads(line)["contents"][0]["parts"][0]["text"]
            for line in path.read_bytes().splitlines()
        }

    sides = [prompts(a.train.path), prompts(a.validation.path), prompts(a.holdout.path)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    # Appending rows keeps every earlier row on its side.
    more = write_lines(tmp_path, [*rows, *[numbered(i) for i in range(1000, 1300)]], "more.jsonl")
    c = validator().run(more, display="d", workdir=tmp_path / "c", validation=0.1, holdout=0.2)
    assert c.holdout is not None and c.validation is not None
    assert prompts(a.holdout.path) <= prompts(c.holdout.path)
    assert prompts(a.validation.path) <= prompts(c.validation.path)
    assert not prompts(c.holdout.path) & prompts(a.train.path)


def test_converted_bytes_are_canonical(tmp_path: Path) -> None:
    row = numbered(1)
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{ "messages" : [ {"role":"system","content":"Be kind."}, '
        '{"content": "Question 0001: where is my order?", "role": "user"},'
        '{"role":"assistant","content":"Answer 0001."} ] }\r\n'
    )
    prepared = validator().run(path, display="d", workdir=tmp_path / "o")
    expected = orjson.dumps(formats_gemini(row)) + b"\n"
    assert prepared.train.path.read_bytes() == expected
    import hashlib

    assert prepared.train.sha256 == hashlib.sha256(expected).hexdigest()
    assert (prepared.train.size, prepared.train.examples) == (len(expected), 1)


def test_few_examples_labels_and_skew(tmp_path: Path) -> None:
    rows = [chat(f"Ticket {i}: refund please", "billing" if i % 10 else "other") for i in range(50)]
    report = validate_file(write_lines(tmp_path, rows))
    assert codes(report) == {
        "few-examples": [None],
        "few-distinct-outputs": [None],
        "skewed-labels": [None],
    }
    assert messages(report, "few-examples") == [
        "only 50 training examples; start with at least 100"
    ]
    assert messages(report, "few-distinct-outputs")[0].startswith(
        "only 2 distinct answers across 50 examples ('billing' (45), 'other' (5))"
    )
    assert messages(report, "skewed-labels")[0].startswith(
        "90% of examples have the answer 'billing'"
    )
    balanced = [chat(f"Ticket {i}", ["a", "b", "c"][i % 3]) for i in range(120)]
    assert codes(validate_file(write_lines(tmp_path, balanced, "b.jsonl"))) == {
        "few-distinct-outputs": [None]
    }
    varied = [chat(f"Ticket {i}", f"Answer {i}") for i in range(120)]
    assert codes(validate_file(write_lines(tmp_path, varied, "v.jsonl"))) == {}


def test_length_outliers(tmp_path: Path) -> None:
    rows = [chat(f"Ticket {i:03d} " + "x" * 200, f"ok {i}") for i in range(100)]
    rows.insert(41, chat("long " * 2000, "ok"))  # line 42: ~2,500 tokens against a median ~55
    report = validate_file(write_lines(tmp_path, rows))
    assert codes(report) == {"length-outlier": [42]}
    assert messages(report, "length-outlier") == [
        "~2,503 tokens, more than 8× the median (57); check it is not a paste error"
    ]


def test_token_figures_and_cost_are_exact(tmp_path: Path) -> None:
    # system 8 chars = 2 tokens, prompt 40 = 10, answer 20 = 5: in 12, out 5, billable 25.
    rows = [chat(f"{i:040d}", f"{i:020d}", system="12345678") for i in range(200)]
    rows.append(chat("x" * 400, "y" * 100, system="12345678"))  # in 102, out 25, billable 135
    report = (
        validator(model="gemini-2.5-pro")
        .run(write_lines(tmp_path, rows), display="d", epochs=3, budget_usd=0.01)
        .report
    )
    stats = report.stats
    assert stats["input_tokens"] == {"min": 12, "median": 12, "p95": 12, "max": 102}
    assert stats["output_tokens"] == {"min": 5, "median": 5, "p95": 5, "max": 25}
    assert stats["billable_tokens_per_epoch"] == 200 * 25 + 135
    assert stats["billable_tokens"] == 3 * (200 * 25 + 135)
    assert stats["estimated_cost_usd"] == round(3 * 5135 / 1e6 * 25.0, 4)
    assert stats["price_per_million"] == 25.0
    assert stats["prices_as_of"] == models.PRICES_AS_OF
    assert stats["price_source"] == models.PRICE_SOURCE
    assert stats["token_estimate"] == "estimated: ~4 characters per token; Vertex counts exactly"
    assert stats["budget_usd"] == 0.01
    assert codes(report) == {"over-budget": [None]}
    assert messages(report, "over-budget") == [
        "estimated $0.39 is over budget.max_cost_usd $0.01; submit will refuse it"
    ]
    assert stats["truncated_examples_expected"] == 0
    assert (stats["error_count"], stats["warning_count"]) == (0, 1)


def test_truncated_examples_are_counted(tmp_path: Path) -> None:
    rows = [numbered(i) for i in range(150)]
    rows[9] = chat("x" * (4 * 140_000), "ok")
    report = validate_file(write_lines(tmp_path, rows))
    assert codes(report) == {"too-many-tokens": [10], "length-outlier": [10]}
    assert report.stats["truncated_examples_expected"] == 1
    assert report.stats["examples"] == 150  # Vertex trains on it, cut short


def test_validation_set_limits(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [numbered(i) for i in range(4000)])
    report = validator().run(path, display="d", validation=0.5).report
    assert codes(report) == {"too-many-validation-examples": [None]}  # ~2,000: over 30%
    report = validator().run(path, display="d", validation=0.2).report
    assert "too-many-validation-examples" not in codes(report)  # ~800: under 1,000


def test_example_count_and_file_size_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = replace(models.MODELS["gemini-2.5-flash"], max_train_examples_text=100)
    monkeypatch.setitem(models.MODELS, "gemini-2.5-flash", small)
    path = write_lines(tmp_path, [numbered(i) for i in range(101)])
    report = validate_file(path)
    assert codes(report) == {"too-many-examples": [None]}
    assert messages(report, "too-many-examples") == [
        "101 examples; gemini-2.5-flash takes at most 100 text examples"
    ]
    monkeypatch.setattr(models, "MAX_TRAIN_FILE_BYTES", 100)
    assert "file-too-large" in codes(validate_file(path))


def test_multimodal_examples_have_their_own_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = replace(models.MODELS["gemini-2.5-flash"], max_train_examples_multimodal=2)
    monkeypatch.setitem(models.MODELS, "gemini-2.5-flash", small)
    row = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "What is this?"},
                    {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/cat.png"}},
                ],
            },
            {"role": "model", "parts": [{"text": "A cat."}]},
        ]
    }
    other = {**row, "contents": [row["contents"][0], {"role": "model", "parts": [{"text": "Hm"}]}]}
    report = validate_file(write_lines(tmp_path, [row, other, row]))
    assert messages(report, "too-many-examples") == [
        "3 examples; gemini-2.5-flash takes at most 2 multimodal examples"
    ]


def test_preference_and_distillation_files(tmp_path: Path) -> None:
    pref = {
        "contents": [{"role": "user", "parts": [{"text": "Say hi"}]}],
        "completions": [
            {"score": 1, "completion": {"role": "model", "parts": [{"text": "Hi!"}]}},
            {"score": 0, "completion": {"role": "model", "parts": [{"text": "No."}]}},
        ],
    }
    report = validator("preference").run(write_lines(tmp_path, [pref] * 2), display="p").report
    assert report.stats["format"] == "preference"
    assert codes(report) == {"duplicate": [2], "few-examples": [None]}
    prompts = [{"contents": [{"role": "user", "parts": [{"text": f"Q{i}"}]}]} for i in range(3)]
    report = (
        validator("distillation").run(write_lines(tmp_path, prompts, "q.jsonl"), display="q").report
    )
    assert report.ok and report.stats["examples"] == 3
    chat_prompts = [{"messages": [{"role": "user", "content": "Q"}]}]
    report = validate_file(write_lines(tmp_path, chat_prompts, "c.jsonl"), method="distillation")
    assert report.ok


def test_unknown_model_method_or_format_is_a_dataset_error(tmp_path: Path) -> None:
    from vertex_tuner.errors import DatasetError

    for kwargs in ({"model": "gemini-9"}, {"method": "rlhf"}, {"fmt": "parquet"}):
        with pytest.raises(DatasetError):
            validate_file(write_lines(tmp_path, [numbered(1)]), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="no such dataset file"):
        validator().run(tmp_path / "missing.jsonl", display="missing.jsonl")
    with pytest.raises(DatasetError, match="no such holdout file"):
        validator().run(
            write_lines(tmp_path, [numbered(1)]), display="d", holdout=tmp_path / "nope.jsonl"
        )


def test_engine_constants_are_exported() -> None:
    assert engine.MAX_PER_CODE == 50 and engine.MIN_RECOMMENDED_EXAMPLES == 100


def test_leakage_counts_only_what_is_left_for_training(tmp_path: Path) -> None:
    train = write_lines(tmp_path, [numbered(i) for i in range(300)])
    first = validator().run(train, display="d", workdir=tmp_path / "a", validation=0.2)
    assert first.validation is not None

    def first_row(path: Path) -> dict[str, Any]:
        row = orjson.loads(path.read_bytes().splitlines()[0])
        return chat(row["contents"][0]["parts"][0]["text"], "Held out.")

    held = write_lines(
        tmp_path, [first_row(first.validation.path), first_row(first.train.path)], "held.jsonl"
    )
    report = (
        validator()
        .run(train, display="d", workdir=tmp_path / "b", validation=0.2, holdout=held)
        .report
    )
    assert codes(report) == {"holdout-leakage": [2]}


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_answers_are_read_again_from_a_row_start_near_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Reading from the starts a scan kept gives each line's answer as reading from the top."""
    from vertex_tuner.dataset import quality, reader, scan

    monkeypatch.setattr(reader, "CHUNK", 256)
    if kind == "csv":
        path = tmp_path / "d.csv"
        rows = [f'"Question {i}\nspans two lines",Answer {i}.\n' for i in range(200)]
        path.write_text("\ufeffprompt,response\n" + "".join(rows), encoding="utf-8")
        fmt = "csv"
    else:
        path = write_lines(tmp_path, [numbered(i) for i in range(200)])
        fmt = "messages"
    part = scan.scan(validator()._job(path, "d"))
    assert part.count == 200 and len(part.starts) > 5
    lines = {line for bucket in part.prompt_lines for line in bucket}
    read = quality.answers_at(path, lines, fmt=fmt, method="supervised", columns=None)
    near = quality.answers_at(
        path, lines, fmt=fmt, method="supervised", columns=None, starts=part.starts
    )
    assert near == read and len(read) == 200
