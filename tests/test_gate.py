"""The gate language: precedence, normal form, evaluation semantics, and every rejected input."""

from __future__ import annotations

import builtins
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vertex_tuner.evaluation.gate import (
    COMPARISONS,
    MAX_DEPTH,
    ONE_SIDED,
    TARGETS,
    BinOp,
    Compare,
    Cond,
    Gate,
    GateSyntaxError,
    GateVerdict,
    Logic,
    Neg,
    Not,
    Num,
    Ref,
    Significant,
    Value,
    parse_gate,
)
from vertex_tuner.evaluation.metrics import known_metric_names
from vertex_tuner.evaluation.statistics import RESAMPLES, Comparison, compare_all

VALUES = {
    "tuned": {"rouge_l": 0.5, "exact_match": 0.3, "json_valid": 1.0},
    "base": {"rouge_l": 0.4, "exact_match": 0.3, "json_valid": 0.75},
    "production": {"rouge_l": 0.45, "exact_match": 0.35, "json_valid": 1.0},
}
NO_PRODUCTION = {k: v for k, v in VALUES.items() if k != "production"}


def passes(text: str, values: dict[str, dict[str, float]] = VALUES) -> bool:
    return parse_gate(text).evaluate(values).passed


# --- syntax and precedence -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3 == 7", True),  # * before +
        ("(1 + 2) * 3 == 9", True),
        ("10 - 4 - 3 == 3", True),  # left-associative
        ("8 / 4 / 2 == 1", True),
        ("-2 * -3 == 6", True),
        ("2 - -1 == 3", True),
        ("- 1 + 2 == 1", True),  # unary minus binds tighter than +
        ("1 > 0 or 0 > 1 and 0 > 1", True),  # and before or: True or (False and False)
        ("(1 > 0 or 0 > 1) and 0 > 1", False),
        ("not 0 > 1 and 1 > 0", True),  # not before and: (not False) and True
        ("not (1 > 0 and 0 > 1)", True),
        ("not 1 > 0 or 1 > 0", True),
        ("not not 1 > 0", True),
        ("1 >= 1 and 1 <= 1 and 2 > 1 and 1 < 2 and 1 == 1.0 and 1 != 2", True),
        (".5 == 0.5 and 5. == 5 and 1e-3 == 0.001 and 2E2 == 200", True),
        ("tuned.rouge_l >= base.rouge_l + 0.05", True),  # 0.5 >= 0.45
        ("tuned.rouge_l >= base.rouge_l + 0.2", False),
        ("tuned.rouge_l - base.rouge_l >= 0.09 * 1", True),
        ("(tuned.rouge_l + base.rouge_l) / 2 == 0.45", True),
        ("tuned.exact_match >= production.exact_match", False),
        ("tuned.rouge_l>=base.rouge_l+0.1and tuned.json_valid==1", True),  # spacing is free
        ("tuned.rouge_l > 0 and\n  tuned.exact_match > 0", True),  # a YAML block scalar
    ],
)
def test_semantics(text: str, expected: bool) -> None:
    assert passes(text) is expected


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("tuned.rouge_l>=base.rouge_l+0.05", "tuned.rouge_l >= base.rouge_l + 0.05"),
        ("((1 + 2)) * 3 == 9", "(1 + 2) * 3 == 9"),
        ("1 + (2 * 3) == 7", "1 + 2 * 3 == 7"),
        ("10 - (4 - 3) == 9", "10 - (4 - 3) == 9"),
        ("(10 - 4) - 3 == 3", "10 - 4 - 3 == 3"),
        ("-(1 + 2) < 0", "-(1 + 2) < 0"),
        ("(1 > 0) and (2 > 1)", "1 > 0 and 2 > 1"),
        ("1 > 0 and (2 > 1 and 3 > 2)", "1 > 0 and 2 > 1 and 3 > 2"),
        ("1 > 0 and (2 > 1 or 3 > 2)", "1 > 0 and (2 > 1 or 3 > 2)"),
        ("(1 > 0 and 2 > 1) or 3 > 2", "1 > 0 and 2 > 1 or 3 > 2"),
        ("not (1 > 0)", "not 1 > 0"),
        ("not (1 > 0 or 2 > 1)", "not (1 > 0 or 2 > 1)"),
        ("0.050 < 1.0e1", "0.05 < 10"),
        ("0.00001 < 1e20", "1e-05 < 1e+20"),
    ],
)
def test_normalised_form(text: str, normalised: str) -> None:
    gate = parse_gate(text)
    assert str(gate) == normalised
    assert parse_gate(normalised) == gate
    assert gate.text == text


def test_references() -> None:
    gate = parse_gate(
        "tuned.rouge_l >= base.rouge_l + 0.05 and tuned.exact_match >= production.exact_match"
    )
    assert gate.references == {
        ("tuned", "rouge_l"),
        ("base", "rouge_l"),
        ("tuned", "exact_match"),
        ("production", "exact_match"),
    }
    assert gate.targets == {"tuned", "base", "production"}
    assert gate.metrics == {"rouge_l", "exact_match"}
    assert parse_gate("1 > 0").references == frozenset()


def test_the_tree() -> None:
    gate = parse_gate("not tuned.rouge_l >= -base.rouge_l * 2 or 1 < 2")
    assert gate.tree == Logic(
        "or",
        (
            Not(
                Compare(
                    ">=",
                    Ref("tuned", "rouge_l"),
                    BinOp("*", Neg(Ref("base", "rouge_l")), Num(2.0)),
                )
            ),
            Compare("<", Num(1.0), Num(2.0)),
        ),
    )


# --- rejected input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "reason"),
    [
        ("", 1, "the gate is empty"),
        ("   ", 1, "the gate is empty"),
        ("tuned.rouge_l >=", 17, "the gate ends too early"),
        ("tuned.rouge_l > 0 and", 22, "the gate ends too early"),
        ("tuned.rouge_l +", 16, "the gate ends too early"),
        ("tuned.rouge_l", 14, "expected a comparison (<, <=, >, >=, ==, !=) after tuned.rouge_l"),
        ("tuned.rouge_l and base.rouge_l > 0", 15, "expected a comparison"),
        ("not tuned.rouge_l", 18, "expected a comparison"),
        ("staging.rouge_l > 0", 1, "unknown target 'staging'"),
        ("Tuned.rouge_l > 0", 1, "unknown target 'Tuned'; did you mean tuned?"),
        ("tuned.bleu > 0", 7, "unknown metric 'bleu'; known metrics: exact_match, rouge_l"),
        ("tuned.rougel > 0", 7, "unknown metric 'rougel'; did you mean rouge_l?"),
        ("tuned > 0", 7, "expected '.' and a metric after 'tuned'"),
        ("tuned. > 0", 8, "expected a metric name after 'tuned.'"),
        ("__import__('os') > 0", 12, "strings are not allowed"),
        ("__import__ > 0", 1, "unknown target '__import__'"),
        ("tuned.rouge_l.real > 0", 14, "attribute chains are not allowed"),
        ("tuned.rouge_l.__class__ > 0", 14, "attribute chains are not allowed"),
        ("'a' == 'a'", 1, "strings are not allowed"),
        ('tuned.rouge_l > "0.5"', 17, "strings are not allowed"),
        ("abs(tuned.rouge_l) > 0", 1, "function calls such as abs(...) are not allowed"),
        ("tuned.rouge_l() > 0", 14, "calls are not allowed"),
        ("tuned[0] > 1", 6, "indexing is not allowed"),
        # Characters no token starts with are refused first, wherever they are.
        ("max(1, 2) > 0", 6, "',' is not allowed"),
        ("lambda: 1", 7, "unexpected character ':'"),
        ("0 < tuned.rouge_l < 1", 19, "chained comparisons are not supported"),
        ("tuned.rouge_l > 0)", 18, "unmatched ')'"),
        ("(tuned.rouge_l > 0", 19, "expected ')' to close the '(' at column 1"),
        ("tuned.rouge_l = 1", 15, "'=' is not a comparison; write '=='"),
        ("tuned.rouge_l > 0 && 1 > 0", 19, "write 'and' instead of '&&'"),
        ("tuned.rouge_l > 0 || 1 > 0", 19, "write 'or' instead of '||'"),
        ("!(tuned.rouge_l > 0)", 1, "write 'not' instead of '!'"),
        ("tuned.rouge_l ** 2 > 0", 16, "unexpected '*'"),
        ("1 > 0 or or 1 > 0", 10, "expected a number or target.metric before 'or'"),
        ("1 > 0 1 > 0", 7, "unexpected '1'; join conditions with and/or"),
        ("(tuned.rouge_l > 0) + 1 > 0", 1, "a condition cannot be used as a number"),
        ("(1 > 0) == (2 > 1)", 1, "a condition cannot be used as a number"),
        ("1 > 1e999", 5, "the number 1e999 is out of range"),
        ("tuned.rouge_l > 0,5", 18, "',' is not allowed"),
        ("tuned.rouge_l ≥ 0", 15, "unexpected character '≥'"),
        ("tuned.rouge_l > ٣", 17, "unexpected character '٣'"),  # digits are ASCII only
        ("True", 1, "unknown target 'True'"),
    ],
)
def test_rejected(text: str, column: int, reason: str) -> None:
    with pytest.raises(GateSyntaxError) as info:
        parse_gate(text)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.column == column
    assert error.reason.startswith(reason)
    shown = "".join(" " if c.isspace() else c for c in text)
    assert str(error) == f"{error.reason} at column {column}\n  {shown}\n  {' ' * (column - 1)}^"


def test_error_message_points_at_the_problem() -> None:
    with pytest.raises(GateSyntaxError) as info:
        parse_gate("tuned.rouge_l >= staging.rouge_l")
    assert str(info.value) == (
        "unknown target 'staging'; targets are tuned, base and production at column 18\n"
        "  tuned.rouge_l >= staging.rouge_l\n"
        "                   ^"
    )


def test_nesting_is_bounded() -> None:
    deep = "(" * MAX_DEPTH + "1 > 0" + ")" * MAX_DEPTH
    assert passes(deep)
    assert passes("-" * MAX_DEPTH + "1 < 0" if MAX_DEPTH % 2 else "-" * MAX_DEPTH + "1 > 0")
    assert passes("not " * MAX_DEPTH + "1 > 0") is (MAX_DEPTH % 2 == 0)
    too_deep = "(" * (MAX_DEPTH + 1) + "1 > 0" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(GateSyntaxError, match="nests deeper than") as info:
        parse_gate(too_deep)
    assert info.value.column == MAX_DEPTH + 1


def test_metrics_can_be_limited_to_those_evaluated() -> None:
    parse_gate("tuned.rouge_l > 0", metrics=["rouge_l"])
    with pytest.raises(GateSyntaxError) as info:
        parse_gate("tuned.rouge_l > 0 and tuned.exact_match > 0", metrics=["rouge_l"])
    assert info.value.column == 29
    assert info.value.reason == (
        "metric 'exact_match' is not evaluated; add it to evaluation.metrics (now: rouge_l)"
    )


def test_parsing_and_judging_never_evaluate_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("code was evaluated")

    for name in ("eval", "exec", "compile", "__import__"):
        monkeypatch.setattr(builtins, name, refuse)
    gate = parse_gate("not (tuned.rouge_l < base.rouge_l * 1.1) or -tuned.exact_match / 2 < 0")
    assert gate.evaluate(VALUES).passed


# --- evaluation ----------------------------------------------------------------------------------


def test_a_failure_explains_itself_with_numbers() -> None:
    verdict = parse_gate("tuned.rouge_l >= base.rouge_l + 0.2 and tuned.json_valid == 1").evaluate(
        VALUES
    )
    assert not verdict.passed
    assert verdict.explanation == (
        "failed: tuned.rouge_l >= base.rouge_l + 0.2 is false "
        "(0.5 vs 0.6; tuned.rouge_l = 0.5, base.rouge_l = 0.4)"
    )
    assert [(c.text, c.passed, c.left, c.right) for c in verdict.clauses] == [
        ("tuned.rouge_l >= base.rouge_l + 0.2", False, 0.5, 0.6),  # 0.6000000000000001 tidied
        ("tuned.json_valid == 1", True, 1.0, 1.0),
    ]


def test_a_pass_says_why() -> None:
    verdict = parse_gate("tuned.rouge_l > base.rouge_l or tuned.exact_match > 0.9").evaluate(VALUES)
    assert verdict.passed
    assert verdict.explanation == (
        "passed: tuned.rouge_l > base.rouge_l holds (0.5 vs 0.4; tuned.rouge_l = 0.5, "
        "base.rouge_l = 0.4)"
    )
    assert [c.passed for c in verdict.clauses] == [True, False]  # no short-circuit


def test_not_explains_the_condition_that_held() -> None:
    verdict = parse_gate("not tuned.rouge_l > base.rouge_l").evaluate(VALUES)
    assert not verdict.passed
    assert verdict.explanation.startswith("failed: tuned.rouge_l > base.rouge_l holds (0.5 vs")


def test_missing_production_is_skipped_and_said() -> None:
    gate = parse_gate(
        "tuned.rouge_l >= base.rouge_l + 0.05 and tuned.exact_match >= production.exact_match"
    )
    verdict = gate.evaluate(NO_PRODUCTION)
    assert verdict.passed
    assert verdict.clauses[1].passed is None
    assert verdict.clauses[1].note == "skipped: no production model"
    assert (verdict.clauses[1].left, verdict.clauses[1].right) == (None, None)
    assert verdict.skipped == [verdict.clauses[1]]
    assert verdict.explanation.endswith(
        "; skipped: tuned.exact_match >= production.exact_match (no production model)"
    )
    # With a production model, the same gate judges it (0.3 < 0.35).
    assert not gate.evaluate(VALUES).passed


@pytest.mark.parametrize(
    ("text", "passed"),
    [
        # A skipped comparison drops out of its "and" ...
        ("tuned.rouge_l > production.rouge_l and tuned.rouge_l < base.rouge_l", False),
        # ... and out of its "or": the gate does not pass on the skipped half.
        ("tuned.rouge_l > production.rouge_l or tuned.rouge_l < base.rouge_l", False),
        ("tuned.rouge_l > production.rouge_l or tuned.rouge_l > base.rouge_l", True),
        # "not" of a skipped condition is skipped, not passed-then-negated.
        ("not tuned.rouge_l > production.rouge_l and tuned.rouge_l < base.rouge_l", False),
        ("not tuned.rouge_l > production.rouge_l and tuned.rouge_l > base.rouge_l", True),
        # When everything is skipped the gate fails closed: nothing was compared.
        ("not tuned.rouge_l > production.rouge_l", False),
        ("tuned.exact_match >= production.exact_match", False),
        (
            "tuned.rouge_l - production.rouge_l > 0 or tuned.json_valid > production.json_valid",
            False,
        ),
        # A comparison with base lets the first model through.
        ("tuned.exact_match >= production.exact_match and tuned.rouge_l > base.rouge_l", True),
    ],
)
def test_skipped_comparisons_are_neutral(text: str, passed: bool) -> None:
    assert parse_gate(text).evaluate(NO_PRODUCTION).passed is passed


def test_everything_skipped_fails_closed() -> None:
    verdict = parse_gate("tuned.exact_match >= production.exact_match").evaluate(NO_PRODUCTION)
    assert not verdict.passed
    assert verdict.explanation == (
        "failed: no comparison was evaluated: tuned.exact_match >= production.exact_match "
        "skipped (no production model); add a comparison with base"
    )
    assert [c.passed for c in verdict.clauses] == [None]


@pytest.mark.parametrize("absent", ["base", "tuned"])
def test_a_missing_base_or_tuned_fails_the_gate(absent: str) -> None:
    values = {k: v for k, v in VALUES.items() if k != absent}
    gate = parse_gate("tuned.rouge_l >= base.rouge_l or 1 > 0")
    verdict = gate.evaluate(values)
    assert not verdict.passed
    clause = verdict.clauses[0]
    assert (clause.passed, clause.left, clause.right) == (False, None, None)
    assert clause.note == f"no {absent} model (only comparisons with production may be skipped)"
    assert verdict.explanation == (
        f"failed: tuned.rouge_l >= base.rouge_l cannot be judged: {clause.note}"
    )
    # Whatever surrounds it, as for a missing value; and it is not skipped with production.
    assert not parse_gate("not tuned.rouge_l >= base.rouge_l").evaluate(values).passed
    both = parse_gate("production.rouge_l > base.rouge_l and tuned.rouge_l > 0").evaluate({})
    assert not both.passed and both.clauses[0].note.startswith("no base model")


def test_a_metric_without_a_value_fails() -> None:
    verdict = parse_gate("tuned.json_schema >= 0.9 or 1 < 0").evaluate(VALUES)
    assert not verdict.passed
    assert verdict.clauses[0].note == "tuned.json_schema has no value"
    assert verdict.explanation == (
        "failed: tuned.json_schema >= 0.9 cannot be judged: tuned.json_schema has no value"
    )
    # Whatever surrounds it: a gate never passes on a number that does not exist.
    assert not parse_gate("tuned.json_schema >= 0.9 or 1 > 0").evaluate(VALUES).passed
    assert not parse_gate("not tuned.json_schema >= 0.9").evaluate(VALUES).passed
    nan = {"tuned": {"rouge_l": float("nan")}, "base": {"rouge_l": 0.1}}
    assert not parse_gate("tuned.rouge_l > base.rouge_l").evaluate(nan).passed
    assert not parse_gate("not tuned.rouge_l > base.rouge_l").evaluate(nan).passed


def test_division_by_zero_fails_the_comparison_without_a_crash() -> None:
    verdict = parse_gate("tuned.rouge_l / (base.exact_match - 0.3) > 1").evaluate(VALUES)
    assert not verdict.passed
    clause = verdict.clauses[0]
    assert (clause.passed, clause.left, clause.right) == (False, None, None)
    assert clause.note == "division by zero in tuned.rouge_l / (base.exact_match - 0.3)"
    big = parse_gate("1e300 * 1e300 > 0").evaluate({})
    assert not big.passed and big.clauses[0].note == "1e+300 * 1e+300 is not a finite number"


def test_verdict_json_round_trip() -> None:
    verdict = parse_gate(
        "tuned.rouge_l >= base.rouge_l and tuned.exact_match >= production.exact_match"
    ).evaluate(NO_PRODUCTION)
    doc = verdict.to_json()
    assert doc == {
        "passed": True,
        "explanation": verdict.explanation,
        "clauses": [
            {
                "text": "tuned.rouge_l >= base.rouge_l",
                "passed": True,
                "left": 0.5,
                "right": 0.4,
                "note": "",
            },
            {
                "text": "tuned.exact_match >= production.exact_match",
                "passed": None,
                "left": None,
                "right": None,
                "note": "skipped: no production model",
            },
        ],
    }
    assert GateVerdict.from_json(doc) == verdict


# --- significant(...): syntax ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        (
            "significant(tuned.rouge_l>=base.rouge_l+0.02)",
            "significant(tuned.rouge_l >= base.rouge_l + 0.02)",
        ),
        ("significant(tuned.rouge_l > base.rouge_l)", "significant(tuned.rouge_l > base.rouge_l)"),
        (
            "significant(tuned.rouge_l > base.rouge_l + 0)",
            "significant(tuned.rouge_l > base.rouge_l)",
        ),
        # Non-inferiority: at most 0.01 worse.
        (
            "significant(tuned.rouge_l >= base.rouge_l - 0.01)",
            "significant(tuned.rouge_l >= base.rouge_l - 0.01)",
        ),
        # The constant on the left, and the difference forms, read as the same comparison.
        (
            "significant(tuned.rouge_l - 0.02 >= base.rouge_l)",
            "significant(tuned.rouge_l >= base.rouge_l + 0.02)",
        ),
        (
            "significant(tuned.rouge_l + 0.01 > base.rouge_l)",
            "significant(tuned.rouge_l > base.rouge_l - 0.01)",
        ),
        (
            "significant(tuned.rouge_l - base.rouge_l >= 0.02)",
            "significant(tuned.rouge_l >= base.rouge_l + 0.02)",
        ),
        (
            "significant(tuned.rouge_l - base.rouge_l > -0.01)",
            "significant(tuned.rouge_l > base.rouge_l - 0.01)",
        ),
        (
            "significant(0.02 <= tuned.rouge_l - base.rouge_l)",
            "significant(tuned.rouge_l >= base.rouge_l + 0.02)",
        ),
        (
            "significant(base.rouge_l + 0.02 < tuned.rouge_l)",
            "significant(base.rouge_l < tuned.rouge_l - 0.02)",
        ),
        (
            "significant(tuned.output_length <= production.output_length)",
            "significant(tuned.output_length <= production.output_length)",
        ),
        # A condition like any other.
        (
            "not (significant(tuned.rouge_l < base.rouge_l))",
            "not significant(tuned.rouge_l < base.rouge_l)",
        ),
        (
            "(significant(tuned.rouge_l > base.rouge_l)) and tuned.rouge_l > 0.5 or 1 > 0",
            "significant(tuned.rouge_l > base.rouge_l) and tuned.rouge_l > 0.5 or 1 > 0",
        ),
    ],
)
def test_significant_normal_form(text: str, normalised: str) -> None:
    gate = parse_gate(text)
    assert str(gate) == normalised
    assert parse_gate(normalised) == gate


def test_significant_tree_and_needs() -> None:
    gate = parse_gate(
        "significant(base.rouge_l < tuned.rouge_l - 0.02) and "
        "significant(tuned.exact_match > production.exact_match)"
    )
    assert gate.tree == Logic(
        "and",
        (
            Significant("<", Ref("base", "rouge_l"), Ref("tuned", "rouge_l"), -0.02),
            Significant(">", Ref("tuned", "exact_match"), Ref("production", "exact_match")),
        ),
    )
    assert gate.significant_comparisons == {
        ("tuned", "base", "rouge_l"),
        ("tuned", "production", "exact_match"),
    }
    assert gate.targets == {"tuned", "base", "production"}
    assert parse_gate("tuned.rouge_l > base.rouge_l").significant_comparisons == frozenset()


@pytest.mark.parametrize(
    ("text", "column", "reason"),
    [
        (
            "significant(tuned.rouge_l == base.rouge_l)",
            27,
            "significant(...) tests a difference one way: use <, <=, > or >=, not ==",
        ),
        (
            "significant(tuned.rouge_l != base.rouge_l)",
            27,
            "significant(...) tests a difference one way",
        ),
        (
            "significant(tuned.rouge_l > base.exact_match)",
            29,
            "significant(...) compares the same metric of two targets, not rouge_l with "
            "exact_match",
        ),
        (
            "significant(tuned.rouge_l > tuned.rouge_l + 0.1)",
            29,
            "significant(...) compares two different targets; both sides read tuned",
        ),
        (
            "significant(tuned.rouge_l > 0.5)",
            1,
            "significant(...) compares one metric of two targets",
        ),
        (
            "significant(0.5 < base.rouge_l)",
            1,
            "significant(...) compares one metric of two targets",
        ),
        (
            "significant(tuned.rouge_l > base.rouge_l * 1.1)",
            29,
            "inside significant(...) a margin is added or subtracted",
        ),
        (
            "significant(tuned.rouge_l > base.rouge_l + base.exact_match)",
            29,
            "inside significant(...) each side is target.metric",
        ),
        (
            "significant(tuned.rouge_l > -base.rouge_l)",
            29,
            "inside significant(...) each side is target.metric",
        ),
        (
            "significant(tuned.rouge_l + 0.1 > base.rouge_l + 0.2)",
            35,
            "write the margin of significant(...) on one side only",
        ),
        (
            "significant(tuned.rouge_l - base.rouge_l > production.rouge_l)",
            44,
            "significant(...) compares two targets: a difference on one side",
        ),
        (
            "significant(tuned.rouge_l > base.rouge_l and 1 > 0)",
            42,
            "significant(...) takes one comparison; write significant(...) and significant(...)",
        ),
        (
            "significant(tuned.rouge_l > base.rouge_l > 0)",
            42,
            "chained comparisons are not supported",
        ),
        (
            "significant(tuned.rouge_l > base.rouge_l",
            41,
            "expected ')' to close the 'significant(' at column 12",
        ),
        ("significant()", 13, "significant(...) needs a comparison of two targets"),
        (
            "significant(tuned.rouge_l)",
            26,
            "expected <, <=, > or >= inside significant(...), found ')'",
        ),
        (
            "significant(not tuned.rouge_l > base.rouge_l)",
            13,
            "significant(...) takes one comparison, not a negation",
        ),
        (
            "significant((tuned.rouge_l > base.rouge_l))",
            13,
            "significant(...) takes one comparison, without parentheses",
        ),
        # It is a condition: not a number, and not a call anywhere else.
        (
            "significant(tuned.rouge_l > base.rouge_l) >= 1",
            43,
            "significant(...) is a condition, not a number",
        ),
        (
            "significant(tuned.rouge_l > base.rouge_l) + 1 > 0",
            43,
            "significant(...) is a condition, not a number",
        ),
        (
            "1 < significant(tuned.rouge_l > base.rouge_l)",
            5,
            "significant(...) is a condition, not a number",
        ),
        (
            "significant(significant(tuned.rouge_l > base.rouge_l))",
            13,
            "significant(...) is a condition, not a number",
        ),
        # Only followed by "(" is it a word of the language.
        ("significant > 0", 1, "unknown target 'significant'"),
        ("significant.rouge_l > 0", 1, "unknown target 'significant'"),
        ("significant(tuned.bleu > base.bleu)", 19, "unknown metric 'bleu'"),
    ],
)
def test_significant_rejected(text: str, column: int, reason: str) -> None:
    with pytest.raises(GateSyntaxError) as info:
        parse_gate(text)
    assert (info.value.column, info.value.reason[: len(reason)]) == (column, reason)


# --- significant(...): judging -------------------------------------------------------------------


def paired(n: int, effect: float = 0.05, spread: float = 0.1) -> list[dict[str, Any]]:
    """Examples whose tuned - base rouge_l differences are effect + spread, effect - spread, ..."""
    rows = []
    for i in range(n):
        base = 0.3 + 0.4 * (i % 7) / 7
        tuned = base + effect + (spread if i % 2 == 0 else -spread)
        rows.append({"tuned": {"rouge_l": tuned}, "base": {"rouge_l": base}})
    return rows


SIGNIFICANT_GAIN = "significant(tuned.rouge_l >= base.rouge_l + 0.02)"


def needed(note: str) -> int:
    found = re.search(r"(?:about|at least) (\d+) examples", note)
    assert found is not None, note
    return int(found.group(1))


def test_a_clear_improvement_is_significant_on_200_examples() -> None:
    verdict = parse_gate(SIGNIFICANT_GAIN).evaluate(VALUES, compare_all(paired(200), ["rouge_l"]))
    assert verdict.passed
    [clause] = verdict.clauses
    assert clause.significant and clause.passed
    assert clause.n == 200 and clause.margin == 0.02 and clause.confidence == 0.95
    assert clause.left == pytest.approx(0.05)
    assert clause.ci_low is not None and clause.ci_high is not None
    assert 0.02 < clause.ci_low < 0.05 < clause.ci_high
    assert clause.note.startswith("the 95% interval of tuned.rouge_l - base.rouge_l is [")
    assert verdict.explanation.startswith(f"passed: {SIGNIFICANT_GAIN} holds (the 95% interval")


def test_the_same_effect_on_5_examples_is_not_significant_and_says_how_many_are_needed() -> None:
    verdict = parse_gate(SIGNIFICANT_GAIN).evaluate(VALUES, compare_all(paired(5), ["rouge_l"]))
    assert not verdict.passed
    [clause] = verdict.clauses
    assert clause.passed is False and clause.n == 5
    assert clause.note.startswith("5 examples are too few")
    assert needed(clause.note) > 5
    # With enough examples for the sign-flip bound, the interval itself is too wide.
    twelve = parse_gate(SIGNIFICANT_GAIN).evaluate(VALUES, compare_all(paired(12), ["rouge_l"]))
    note = twelve.clauses[0].note
    assert not twelve.passed
    assert note.startswith("not significant: the 95% interval of tuned.rouge_l - base.rouge_l")
    assert "80% power" in note
    # ((z(0.975) + z(0.8)) * 0.104 / 0.03) ** 2, the spread being that of the 12 differences.
    assert 80 < needed(note) < 110


def test_a_difference_that_does_not_clear_the_margin_says_so() -> None:
    comparisons = compare_all(paired(200, effect=0.01), ["rouge_l"])
    verdict = parse_gate(SIGNIFICANT_GAIN).evaluate(VALUES, comparisons)
    assert not verdict.passed
    note = verdict.clauses[0].note
    assert note.startswith("the observed tuned.rouge_l - base.rouge_l = 0.01 is not above 0.02")
    assert "more examples would not show it" in note


def test_either_direction_and_either_order() -> None:
    comparisons = compare_all(paired(200), ["rouge_l"])
    forward = parse_gate("significant(tuned.rouge_l > base.rouge_l)").evaluate(VALUES, comparisons)
    backward = parse_gate("significant(base.rouge_l < tuned.rouge_l)").evaluate(VALUES, comparisons)
    assert forward.passed and backward.passed
    f, b = forward.clauses[0], backward.clauses[0]
    assert (b.ci_low, b.ci_high, b.left) == (-f.ci_high, -f.ci_low, -f.left)  # type: ignore[operator]
    regression = parse_gate("significant(tuned.rouge_l < base.rouge_l)").evaluate(
        VALUES, comparisons
    )
    assert not regression.passed
    assert "is not below 0" in regression.clauses[0].note
    # "No significant regression" is a condition like any other.
    assert (
        parse_gate("not significant(tuned.rouge_l < base.rouge_l)")
        .evaluate(VALUES, comparisons)
        .passed
    )


def comparison_with_p(p: float, n: int = 200) -> Comparison:
    """tuned - base whose bootstrap puts a share p of its means (p = (k + 1) / (B + 1)) at or
    below 0, and the rest well above."""
    k = round(p * (RESAMPLES + 1)) - 1
    means = np.sort(np.concatenate([np.full(k, -0.01), np.full(RESAMPLES - k, 0.05)]))
    return Comparison(0.04, -0.01, 0.05, None, 150, 0, 50, n, std=0.1, distribution=means)


TWO_CLAUSES = (
    "significant(tuned.rouge_l > base.rouge_l) and "
    "significant(tuned.exact_match > base.exact_match)"
)


def test_holm_correction_bites_on_two_clauses_each_significant_alone() -> None:
    # One-sided level 0.025: 0.02 and 0.024 both under it, 0.02 above 0.025 / 2.
    comparisons = {
        "tuned-base": {"rouge_l": comparison_with_p(0.02), "exact_match": comparison_with_p(0.024)}
    }
    for metric in ("rouge_l", "exact_match"):
        alone = parse_gate(f"significant(tuned.{metric} > base.{metric})").evaluate(
            VALUES, comparisons
        )
        assert alone.passed, alone.explanation
        assert alone.clauses[0].confidence == 0.95
    verdict = parse_gate(TWO_CLAUSES).evaluate(VALUES, comparisons)
    assert not verdict.passed
    first, second = verdict.clauses
    assert (first.passed, second.passed) == (False, False)
    # Holm: the smaller p is tested at 0.025 / 2 (a 97.5% interval), the other at 0.025.
    assert (first.confidence, second.confidence) == (0.975, 0.95)
    assert (first.p_value, second.p_value) == (pytest.approx(0.04), pytest.approx(0.04))
    assert "Holm-adjusted for 2 significant clauses" in first.note
    assert second.note.endswith(
        "but Holm's correction stops at significant(tuned.rouge_l > base.rouge_l), which does "
        "not hold"
    )
    # With the smaller p under 0.025 / 2, both hold.
    comparisons["tuned-base"]["rouge_l"] = comparison_with_p(0.01)
    verdict = parse_gate(TWO_CLAUSES).evaluate(VALUES, comparisons)
    assert verdict.passed
    assert [c.p_value for c in verdict.clauses] == [pytest.approx(0.02), pytest.approx(0.024)]


def test_confidence_is_a_parameter() -> None:
    comparisons = {"tuned-base": {"rouge_l": comparison_with_p(0.02)}}
    gate = parse_gate("significant(tuned.rouge_l > base.rouge_l)")
    assert gate.evaluate(VALUES, comparisons).passed
    strict = gate.evaluate(VALUES, comparisons, confidence=0.99)
    assert not strict.passed and strict.clauses[0].confidence == 0.99
    with pytest.raises(ValueError, match="confidence"):
        gate.evaluate(VALUES, comparisons, confidence=1.5)


def test_significant_without_production_is_skipped_and_not_counted_by_holm() -> None:
    gate = parse_gate(
        "significant(tuned.rouge_l > production.rouge_l) and "
        "significant(tuned.rouge_l >= base.rouge_l + 0.02)"
    )
    verdict = gate.evaluate(NO_PRODUCTION, compare_all(paired(200), ["rouge_l"]))
    assert verdict.passed
    skipped, judged = verdict.clauses
    assert (skipped.passed, skipped.note, skipped.significant) == (
        None,
        "skipped: no production model",
        True,
    )
    assert judged.passed and judged.confidence == 0.95
    assert "Holm" not in judged.note
    alone = parse_gate("significant(tuned.rouge_l > production.rouge_l)")
    assert not alone.evaluate(NO_PRODUCTION, {}).passed  # nothing evaluated


@pytest.mark.parametrize(
    ("text", "values", "comparisons", "note"),
    [
        (
            SIGNIFICANT_GAIN,
            VALUES,
            None,
            "significant() needs the paired per-example comparisons of the evaluation "
            "(compare_all); none were given",
        ),
        (
            "significant(tuned.rouge_l > production.rouge_l)",
            VALUES,
            {"tuned-base": {}},
            "no paired comparison of tuned and production was given",
        ),
        (
            "significant(tuned.exact_match > base.exact_match)",
            VALUES,
            {"tuned-base": {}},
            "no example has both a tuned and a base score for exact_match",
        ),
        (
            SIGNIFICANT_GAIN,
            {"tuned": VALUES["tuned"]},
            {},
            "no base model (only comparisons with production may be skipped)",
        ),
    ],
)
def test_significant_fails_closed_without_its_numbers(
    text: str, values: dict, comparisons: dict | None, note: str
) -> None:
    verdict = parse_gate(f"{text} or 1 > 0").evaluate(values, comparisons)
    assert not verdict.passed
    clause = verdict.clauses[0]
    assert (clause.passed, clause.note, clause.significant) == (False, note, True)
    assert verdict.explanation == f"failed: {text} cannot be judged: {note}"


def test_comparisons_read_back_from_json_cannot_judge_a_margin() -> None:
    comparisons = compare_all(paired(200), ["rouge_l"])
    read = {
        k: {m: Comparison.from_json(c.to_json()) for m, c in v.items()}
        for k, v in comparisons.items()
    }
    verdict = parse_gate(SIGNIFICANT_GAIN).evaluate(VALUES, read)
    assert not verdict.passed
    assert "no bootstrap distribution" in verdict.clauses[0].note


def test_significant_verdict_json_round_trip_and_older_documents() -> None:
    verdict = parse_gate(SIGNIFICANT_GAIN + " and tuned.rouge_l > base.rouge_l").evaluate(
        VALUES, compare_all(paired(200), ["rouge_l"])
    )
    doc = verdict.to_json()
    significant, plain = doc["clauses"]
    assert list(significant) == [
        *("text", "passed", "left", "right", "note"),
        *("significant", "ci_low", "ci_high", "n", "margin", "confidence", "p_value"),
    ]
    assert (significant["n"], significant["margin"]) == (200, 0.02)
    assert list(plain) == ["text", "passed", "left", "right", "note"]  # unchanged
    assert GateVerdict.from_json(doc) == verdict
    older = {
        "passed": True,
        "explanation": "passed: ...",
        "clauses": [{"text": "tuned.rouge_l > 0", "passed": True, "left": 0.5, "right": 0.0}],
    }
    [clause] = GateVerdict.from_json(older).clauses
    assert (clause.note, clause.significant, clause.ci_low, clause.n) == ("", False, None, None)


# --- properties ----------------------------------------------------------------------------------

numbers = st.floats(min_value=0, max_value=1e20, allow_nan=False).map(Num)
refs = st.builds(Ref, st.sampled_from(TARGETS), st.sampled_from(known_metric_names()))
value_trees: st.SearchStrategy[Value] = st.recursive(
    numbers | refs,
    lambda inner: st.builds(Neg, inner) | st.builds(BinOp, st.sampled_from("+-*/"), inner, inner),
    max_leaves=6,
)
comparisons = st.builds(Compare, st.sampled_from(COMPARISONS), value_trees, value_trees)
significants = st.builds(
    lambda op, targets, metric, margin: Significant(
        op, Ref(targets[0], metric), Ref(targets[1], metric), margin
    ),
    st.sampled_from(ONE_SIDED),
    st.permutations(TARGETS),
    st.sampled_from(known_metric_names()),
    st.just(0.0) | st.floats(min_value=-1e20, max_value=1e20, allow_nan=False),
)
conditions: st.SearchStrategy[Cond] = st.recursive(
    comparisons | significants,
    lambda inner: (
        st.builds(Not, inner)
        | st.builds(
            lambda op, items: Logic(op, tuple(items)),
            st.sampled_from(["and", "or"]),
            st.lists(inner, min_size=2, max_size=3),
        )
    ),
    max_leaves=6,
)


def _flat(node: Cond) -> Cond:
    """The tree the parser builds: nested and/and or or/or merged."""
    if isinstance(node, Not):
        return Not(_flat(node.operand))
    if isinstance(node, Logic):
        items: list[Cond] = []
        for item in map(_flat, node.items):
            if isinstance(item, Logic) and item.op == node.op:
                items.extend(item.items)
            else:
                items.append(item)
        return Logic(node.op, tuple(items))
    return node


@given(conditions)
def test_the_normal_form_parses_back_to_the_same_tree(tree: Cond) -> None:
    gate = parse_gate(str(Gate(tree)))
    assert gate.tree == _flat(tree)
    assert str(parse_gate(str(gate))) == str(gate)


@given(conditions, st.sets(st.sampled_from(TARGETS)))
def test_the_normal_form_judges_the_same(tree: Cond, absent: set[str]) -> None:
    values = {
        t: {m: 0.25 * (i + j) for j, m in enumerate(known_metric_names())}
        for i, t in enumerate(TARGETS)
        if t not in absent
    }
    original = Gate(tree).evaluate(values)
    again = parse_gate(str(Gate(tree))).evaluate(values)
    assert again.passed == original.passed
    assert [c.passed for c in again.clauses] == [c.passed for c in original.clauses]


# Gate words and symbols, and things a gate must refuse; joined with spaces at random.
_PIECES = [
    *("tuned", "base", "production", "staging", ".", "rouge_l", "exact_match", "bleu"),
    *("and", "or", "not", "(", ")", "<", "<=", ">", ">=", "==", "!=", "=", "+", "-", "*", "/"),
    *("0.5", "1", "'x'", ",", "abs", "__import__", "[", "]", "\n", "significant"),
]


@given(st.lists(st.sampled_from(_PIECES), max_size=25).map(" ".join) | st.text(max_size=40))
def test_any_text_parses_or_fails_with_a_column(text: str) -> None:
    try:
        gate = parse_gate(text)
    except GateSyntaxError as error:
        assert 1 <= error.column <= len(text) + 1
        return
    assert parse_gate(str(gate)) == gate
    gate.evaluate(VALUES)
