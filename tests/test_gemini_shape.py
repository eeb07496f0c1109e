"""The shape of a Gemini example read one way: the system instruction in either spelling, media
parts and the last user turn, and every reader of them agreeing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from vertex_tuner.dataset import Validator, fastpath, formats, gemini, keys, tokens
from vertex_tuner.dataset.rules import check_example
from vertex_tuner.evaluation.holdout import parse_holdout
from vertex_tuner.models import MODELS

FLASH = MODELS["gemini-2.5-flash"]
CAMEL = {"parts": [{"text": "Be brief."}]}
SNAKE = {"parts": [{"text": "Answer in French, please."}]}


def u(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def m(text: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text}]}


@pytest.mark.parametrize(
    ("example", "key", "system"),
    [
        ({}, None, None),
        ({"systemInstruction": CAMEL}, "systemInstruction", CAMEL),
        ({"system_instruction": SNAKE}, "system_instruction", SNAKE),
        ({"systemInstruction": None, "system_instruction": SNAKE}, "system_instruction", SNAKE),
        ({"system_instruction": SNAKE, "systemInstruction": None}, "system_instruction", SNAKE),
        ({"systemInstruction": CAMEL, "system_instruction": SNAKE}, "systemInstruction", CAMEL),
        ({"systemInstruction": CAMEL, "system_instruction": None}, "systemInstruction", CAMEL),
        ({"systemInstruction": None, "system_instruction": None}, None, None),
        # Only null means "not set": an empty or malformed value is kept, for the rules to judge.
        ({"systemInstruction": {}, "system_instruction": SNAKE}, "systemInstruction", {}),
        ({"systemInstruction": "Be brief."}, "systemInstruction", "Be brief."),
    ],
)
def test_system_of_reads_camel_case_unless_it_is_absent_or_null(
    example: dict[str, Any], key: str | None, system: Any
) -> None:
    assert gemini.system_of(example) == system
    assert gemini.system_key(example) == key
    assert gemini.system_of(example) == (example[key] if key else None)


def test_media_parts_in_either_spelling() -> None:
    media = gemini.MEDIA_PART_KEYS
    assert media == {"fileData", "file_data", "inlineData", "inline_data"}
    assert media.issubset(gemini.PART_KINDS)
    assert gemini.is_media({"file_data": {"mimeType": "image/png", "fileUri": "gs://b/o"}})
    assert gemini.is_media({"inlineData": {}})
    assert not gemini.is_media({"text": "Hi"})
    assert not gemini.is_media({"functionCall": {"name": "f"}})
    assert not gemini.is_media("fileData")


@pytest.mark.parametrize(
    ("contents", "text"),
    [
        ([u("Hi"), m("Hello"), u("And then?"), m("Done.")], "And then?"),
        ([u("Hi"), m("Hello")], "Hi"),
        # A turn without a role is a user turn (a functionResponse may leave it out).
        ([u("Hi"), {"parts": [{"text": "no role"}]}], "no role"),
        ([{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}], "ab"),
        (
            [{"role": "user", "parts": [{"fileData": {}}, {"text": "what is this?"}, {"text": 3}]}],
            "what is this?",
        ),
        ((u("a tuple"),), "a tuple"),
        ([m("only the model")], ""),
        ([], ""),
        (None, ""),
        (["text", None, {"role": "user", "parts": None}], ""),
        ([u("earlier"), {"role": "user", "parts": "not a list"}], ""),
    ],
)
def test_last_user_text(contents: Any, text: str) -> None:
    assert gemini.last_user_text(contents) == text


def test_content_text_skips_what_is_not_text() -> None:
    assert (
        gemini.content_text({"parts": [{"text": "a"}, "b", {"text": None}, {"text": "c"}]}) == "ac"
    )
    assert gemini.content_text({"role": "user"}) == ""
    assert gemini.content_text("text") == ""


# -- every reader takes the same system instruction ------------------------------------------

SHAPES = [
    pytest.param({"systemInstruction": None, "system_instruction": SNAKE}, SNAKE, id="null-camel"),
    pytest.param({"system_instruction": SNAKE, "systemInstruction": None}, SNAKE, id="null-first"),
    pytest.param({"systemInstruction": CAMEL, "system_instruction": SNAKE}, CAMEL, id="both"),
    pytest.param({"system_instruction": SNAKE}, SNAKE, id="snake"),
    pytest.param({"systemInstruction": CAMEL}, CAMEL, id="camel"),
]


@pytest.mark.parametrize(("system", "in_force"), SHAPES)
def test_tokens_keys_and_the_fast_path_count_the_same_system(
    system: dict[str, Any], in_force: dict[str, Any]
) -> None:
    obj = {**system, "contents": [u("Where is HH-1?"), m("En route.")]}
    alone = {"systemInstruction": in_force, "contents": obj["contents"]}
    example = formats.convert(obj, "gemini")
    assert gemini.system_of(example) == in_force
    assert tokens.measure(obj) == tokens.measure(example) == tokens.measure(alone)
    assert keys.prompt_key(example, "supervised") == keys.prompt_key(alone, "supervised")
    fast = fastpath.gemini(obj, FLASH.max_tokens_per_example)
    assert fast is not None
    key, _texts, *figures, media = fast
    assert not media
    assert orjson.dumps(key) == keys.prompt_key(alone, "supervised")
    assert tuple(figures) == tokens.measure(alone)


@pytest.mark.parametrize(("system", "in_force"), SHAPES)
def test_the_rules_check_the_system_in_force(
    system: dict[str, Any], in_force: dict[str, Any]
) -> None:
    blank = {"parts": [{"text": " "}]}
    spoilt = {k: (blank if v is in_force else v) for k, v in system.items()}
    obj = {**spoilt, "contents": [u("Hi"), m("Yo")]}
    found = check_example(obj, method="supervised", model=FLASH, line=1)
    # Named as in the converted example: the validator names the line's own spelling.
    assert [(f.code, f.field) for f in found] == [("empty-text", "systemInstruction.parts[0].text")]
    converted = formats.convert(obj, "gemini")
    found = check_example(converted, method="supervised", model=FLASH, line=1)
    assert [(f.code, f.field) for f in found] == [("empty-text", "systemInstruction.parts[0].text")]
    # A spoilt instruction that is shadowed is not the one Vertex reads: nothing to report.
    shadowed = {k: (blank if v is not in_force and v is not None else v) for k, v in system.items()}
    obj = {**shadowed, "contents": [u("Hi"), m("Yo")]}
    assert (
        check_example(formats.convert(obj, "gemini"), method="supervised", model=FLASH, line=1)
        == []
    )


@pytest.mark.parametrize(
    ("system", "field"),
    [
        (
            {"systemInstruction": None, "system_instruction": {"parts": [{"text": " "}]}},
            "system_instruction",
        ),
        ({"system_instruction": {"parts": [{"text": " "}]}}, "system_instruction"),
        (
            {"systemInstruction": {"parts": [{"text": " "}]}, "system_instruction": SNAKE},
            "systemInstruction",
        ),
    ],
)
def test_a_file_names_the_spelling_it_read(
    tmp_path: Path, system: dict[str, Any], field: str
) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(orjson.dumps({**system, "contents": [u("Hi"), m("Yo")]}))
    report = Validator(model="gemini-2.5-flash", method="supervised").run(path, display="d").report
    assert [(f.code, f.field) for f in report.errors] == [("empty-text", f"{field}.parts[0].text")]


def test_a_null_camel_case_system_is_billed_the_same_with_and_without_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "d.jsonl"
    line = {"systemInstruction": None, "system_instruction": SNAKE, "contents": [u("Q"), m("A")]}
    path.write_bytes(orjson.dumps({"contents": [u("Q"), m("A")]}) + b"\n" + orjson.dumps(line))
    validator = Validator(model="gemini-2.5-flash", method="supervised")
    fast = validator.run(path, display="d", workdir=tmp_path / "fast").report
    monkeypatch.setattr(fastpath, "CHECKS", {})  # every line takes the full path
    slow = validator.run(path, display="d", workdir=tmp_path / "slow").report
    assert fast.stats["billable_tokens"] == slow.stats["billable_tokens"]
    assert fast.to_json() == slow.to_json()


@pytest.mark.parametrize(("system", "in_force"), SHAPES)
def test_evaluation_prompts_with_the_system_in_force(
    system: dict[str, Any], in_force: dict[str, Any]
) -> None:
    line = {**system, "contents": [u("Hi"), m("Hello"), u("Where is HH-1?"), m("En route.")]}
    (held,) = parse_holdout([orjson.dumps(line)], source="h.jsonl")
    assert held.system_instruction == gemini.content_text(in_force)
    assert held.prompt_text == "Where is HH-1?"
    assert held.reference == "En route."
