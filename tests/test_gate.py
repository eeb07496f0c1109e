"""The gate language: precedence, normal form, evaluation semantics, and every rejected input."""

from __future__ import annotations

import builtins
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vertex_tuner.evaluation.gate import (
    COMPARISONS,
    MAX_DEPTH,
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
    Value,
    parse_gate,
)
from vertex_tuner.evaluation.metrics import known_metric_names

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
        ("not tuned.rouge_l > production.rouge_l", True),
        # When everything is skipped the gate passes: the first model can be promoted.
        ("tuned.exact_match >= production.exact_match", True),
        (
            "tuned.rouge_l - production.rouge_l > 0 or tuned.json_valid > production.json_valid",
            True,
        ),
    ],
)
def test_skipped_comparisons_are_neutral(text: str, passed: bool) -> None:
    assert parse_gate(text).evaluate(NO_PRODUCTION).passed is passed


def test_everything_skipped() -> None:
    verdict = parse_gate("tuned.exact_match >= production.exact_match").evaluate(NO_PRODUCTION)
    assert verdict.passed
    assert verdict.explanation == "passed: every condition was skipped (no production model)"


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


# --- properties ----------------------------------------------------------------------------------

numbers = st.floats(min_value=0, max_value=1e20, allow_nan=False).map(Num)
refs = st.builds(Ref, st.sampled_from(TARGETS), st.sampled_from(known_metric_names()))
value_trees: st.SearchStrategy[Value] = st.recursive(
    numbers | refs,
    lambda inner: st.builds(Neg, inner) | st.builds(BinOp, st.sampled_from("+-*/"), inner, inner),
    max_leaves=6,
)
comparisons = st.builds(Compare, st.sampled_from(COMPARISONS), value_trees, value_trees)
conditions: st.SearchStrategy[Cond] = st.recursive(
    comparisons,
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
    *("0.5", "1", "'x'", ",", "abs", "__import__", "[", "]", "\n"),
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
