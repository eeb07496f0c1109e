"""Vertex's rules for one converted example: every code, with its field and line."""

from __future__ import annotations

from typing import Any

import pytest

from vertex_tuner.dataset.rules import TRUNCATION_CODES, check_example
from vertex_tuner.models import MODELS, PREFERENCE_MAX_TOKENS

FLASH = MODELS["gemini-2.5-flash"]


def turn(role: str | None, *parts: dict[str, Any]) -> dict[str, Any]:
    content: dict[str, Any] = {"parts": list(parts)}
    if role is not None:
        content["role"] = role
    return content


def text(value: str) -> dict[str, Any]:
    return {"text": value}


def image(uri: str = "gs://bucket/cat.png", mime: str = "image/png") -> dict[str, Any]:
    return {"fileData": {"mimeType": mime, "fileUri": uri}}


OK_USER = turn("user", text("Where is HH-000001?"))
OK_MODEL = turn("model", text("It ships Thursday."))


def found(example: dict[str, Any], method: str = "supervised") -> list[tuple[str, str | None]]:
    return [(f.code, f.field) for f in check_example(example, method=method, model=FLASH, line=12)]


def test_a_good_example_has_no_findings() -> None:
    example = {"systemInstruction": {"role": "system", "parts": [text("Be kind.")]}}
    example["contents"] = [OK_USER, OK_MODEL, OK_USER, OK_MODEL]
    assert found(example) == []


def test_both_spellings_of_the_system_instruction() -> None:
    for key in ("systemInstruction", "system_instruction"):
        example = {key: {"parts": [text("   ")]}, "contents": [OK_USER, OK_MODEL]}
        assert found(example) == [("empty-text", "systemInstruction.parts[0].text")]


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ({}, [("missing-contents", "contents")]),
        ({"contents": []}, [("missing-contents", "contents")]),
        ({"contents": "hi"}, [("missing-contents", "contents")]),
        ({"contents": ["hi"]}, [("bad-shape", "contents[0]")]),
        ({"contents": [turn("system", text("x")), OK_MODEL]}, [("bad-role", "contents[0].role")]),
        ({"contents": [turn(None, text("x")), OK_MODEL]}, [("bad-role", "contents[0].role")]),
        (
            {"contents": [OK_USER, OK_USER, OK_MODEL]},
            [("consecutive-turns", "contents[1].role")],
        ),
        (
            {"contents": [OK_USER, OK_MODEL, OK_MODEL]},
            [("consecutive-turns", "contents[2].role")],
        ),
        ({"contents": [OK_USER]}, [("must-end-on-model", "contents[0].role")]),
        ({"contents": [OK_MODEL, OK_USER]}, [("must-end-on-model", "contents[1].role")]),
        (
            {"contents": [turn("user", text(" \n\t")), OK_MODEL]},
            [("empty-text", "contents[0].parts[0].text")],
        ),
        (
            {"contents": [OK_USER, turn("model", text(""))]},
            [("empty-text", "contents[1].parts[0].text")],
        ),
        ({"contents": [turn("user"), OK_MODEL]}, [("empty-parts", "contents[0].parts")]),
        (
            {"contents": [{"role": "user", "parts": "x"}, OK_MODEL]},
            [("empty-parts", "contents[0].parts")],
        ),
        (
            {"contents": [turn("user", "plain"), OK_MODEL]},  # type: ignore[arg-type]
            [("bad-part", "contents[0].parts[0]")],
        ),
        (
            {"contents": [turn("user", {"text": "a", "fileData": {}}), OK_MODEL]},
            [("bad-part", "contents[0].parts[0]")],
        ),
        (
            {"contents": [turn("user", {"textual": "a"}), OK_MODEL]},
            [("bad-part", "contents[0].parts[0]")],
        ),
        (
            {"contents": [turn("user", {"text": 3}), OK_MODEL]},
            [("bad-part", "contents[0].parts[0].text")],
        ),
        (
            {"contents": [turn("user", {"inlineData": {"data": "AA=="}}), OK_MODEL]},
            [("bad-part", "contents[0].parts[0]")],
        ),
        (
            {"contents": [turn("user", {"functionCall": {"name": "f"}}), OK_MODEL]},
            [("bad-part", "contents[0].parts[0]")],
        ),
        (
            {"contents": [OK_USER, turn("model", {"functionCall": {"args": {}}})]},
            [("bad-part", "contents[1].parts[0].functionCall.name")],
        ),
        (
            {
                "contents": [
                    OK_USER,
                    turn("model", {"functionResponse": {"name": "f", "response": {}}}),
                ]
            },
            [("bad-part", "contents[1].parts[0]")],
        ),
        (
            {"contents": [turn("user", image(uri="s3://b/cat.png")), OK_MODEL]},
            [("bad-file-uri", "contents[0].parts[0].fileData.fileUri")],
        ),
        (
            {"contents": [turn("user", image(uri="gs://just-a-bucket")), OK_MODEL]},
            [("bad-file-uri", "contents[0].parts[0].fileData.fileUri")],
        ),
        (
            {"contents": [turn("user", image(mime="application/zip")), OK_MODEL]},
            [("bad-mime-type", "contents[0].parts[0].fileData.mimeType")],
        ),
        (
            {"contents": [turn("user", {"fileData": "gs://b/o.png"}), OK_MODEL]},
            [("bad-file-data", "contents[0].parts[0].fileData")],
        ),
        (
            {"systemInstruction": "Be kind", "contents": [OK_USER, OK_MODEL]},
            [("bad-system", "systemInstruction")],
        ),
        (
            {"systemInstruction": {"parts": [image()]}, "contents": [OK_USER, OK_MODEL]},
            [("bad-system", "systemInstruction.parts[0]")],
        ),
    ],
)
def test_each_rule(example: dict[str, Any], expected: list[tuple[str, str | None]]) -> None:
    assert found(example) == expected


def test_findings_carry_the_line_and_say_what_to_do() -> None:
    [finding] = check_example(
        {"contents": [OK_USER, OK_USER, OK_MODEL]}, method="supervised", model=FLASH, line=41
    )
    assert (finding.severity, finding.line) == ("error", 41)
    assert "must alternate" in finding.message


def test_function_calling_with_a_roleless_response_turn() -> None:
    example = {
        "tools": [{"functionDeclarations": [{"name": "track", "parameters": {"type": "OBJECT"}}]}],
        "contents": [
            OK_USER,
            turn("model", {"functionCall": {"name": "track", "args": {"order": "HH-000001"}}}),
            turn(None, {"functionResponse": {"name": "track", "response": {"output": "ok"}}}),
            OK_MODEL,
        ],
    }
    assert found(example) == []
    snake = {
        "contents": [
            OK_USER,
            turn("model", {"function_call": {"name": "track"}}),
            turn("user", {"function_response": {"name": "track", "response": {}}}),
            OK_MODEL,
        ]
    }
    assert found(snake) == []


def test_media_parts_and_the_image_limit() -> None:
    mixed = {
        "contents": [
            turn(
                "user",
                text("Which of these?"),
                image(),
                image("https://example.com/a.jpg", "image/jpeg"),
                image("gs://b/a.pdf", "application/pdf"),
                image("gs://b/a.mp4", "video/mp4"),
                image("gs://b/a.mp3", "audio/mpeg"),
                {"file_data": {"mime_type": "text/plain", "file_uri": "gs://b/a.txt"}},
            ),
            OK_MODEL,
        ]
    }
    assert found(mixed) == []
    many = {"contents": [turn("user", *[image(f"gs://b/{i}.png") for i in range(31)]), OK_MODEL]}
    assert found(many) == [("too-many-images", None)]
    assert "30" in check_example(many, method="supervised", model=FLASH, line=1)[0].message


def test_token_limit_is_an_estimated_truncation() -> None:
    limit = FLASH.max_tokens_per_example
    at_limit = {"contents": [turn("user", text("a" * (limit * 4 - 4))), turn("model", text("b"))]}
    assert found(at_limit) == []
    over = {"contents": [turn("user", text("a" * (limit * 4))), turn("model", text("b"))]}
    [finding] = check_example(over, method="supervised", model=FLASH, line=3)
    assert finding.code == "too-many-tokens" and finding.code in TRUNCATION_CODES
    assert "estimated" in finding.message and "131,072" in finding.message
    assert {"too-many-tokens", "too-many-images"} == TRUNCATION_CODES


def test_the_token_limit_counts_the_system_instruction_and_history() -> None:
    quarter = "a" * FLASH.max_tokens_per_example  # a quarter of the limit, in tokens
    example = {
        "systemInstruction": {"parts": [text(quarter)]},
        "contents": [
            turn("user", text(quarter)),
            turn("model", text(quarter)),
            turn("user", text(quarter)),
            turn("model", text("one more")),
        ],
    }
    assert found(example) == [("too-many-tokens", None)]


def preference(*scores: Any, last_role: str = "user") -> dict[str, Any]:
    contents = [OK_USER] if last_role == "user" else [OK_USER, OK_MODEL]
    return {
        "contents": contents,
        "completions": [
            {"score": s, "completion": turn("model", text(f"answer {i}"))}
            for i, s in enumerate(scores)
        ],
    }


def test_preference_rules() -> None:
    assert found(preference(1, 0), "preference") == []
    assert found(preference(0, 1), "preference") == []
    assert found(preference(1, 1), "preference") == [("bad-scores", "completions")]
    assert found(preference(1), "preference") == [("bad-scores", "completions")]
    assert found(preference(1, 0, 0), "preference") == [("bad-scores", "completions")]
    assert found(preference(1, 0, last_role="model"), "preference") == [
        ("must-end-on-user", "contents[1].role")
    ]
    no_list = {"contents": [OK_USER], "completions": {"score": 1}}
    assert found(no_list, "preference") == [("bad-completions", "completions")]
    not_model = preference(1, 0)
    not_model["completions"][1]["completion"]["role"] = "user"
    assert found(not_model, "preference") == [
        ("bad-completions", "completions[1].completion"),
    ]
    blank = preference(1, 0)
    blank["completions"][0]["completion"]["parts"] = [text(" ")]
    assert found(blank, "preference") == [("empty-text", "completions[0].completion.parts")]
    with_image = preference(1, 0)
    with_image["contents"] = [turn("user", image())]
    assert found(with_image, "preference") == [("bad-part", "contents[0].parts[0]")]


def test_preference_token_limit() -> None:
    long = preference(1, 0)
    long["contents"] = [turn("user", text("a" * (PREFERENCE_MAX_TOKENS * 4)))]
    assert found(long, "preference") == [("too-many-tokens", None)]


def test_distillation_prompts_end_on_a_user_turn() -> None:
    assert found({"contents": [OK_USER]}, "distillation") == []
    assert found({"contents": [OK_USER, OK_MODEL]}, "distillation") == [
        ("must-end-on-user", "contents[1].role")
    ]
