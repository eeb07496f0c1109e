"""Every metric against values computed by hand, normalisation edge cases, metric options."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vertex_tuner.errors import SpecError
from vertex_tuner.evaluation.metrics import (
    METRICS,
    NOT_JSON,
    PAIRWISE,
    REWARD,
    MetricError,
    MetricOptions,
    check_metric_options,
    compute_metrics,
    known_metric_names,
    label_of,
    macro_f1,
    normalise,
    pairwise_metrics,
    parse_json_output,
    rouge_tokens,
)


def score(name: str, reference: str, prediction: str, **options: Any) -> float | None:
    return METRICS[name].score(reference, prediction, options)


# --- the registry ------------------------------------------------------------------------------


def test_registry_names_and_directions() -> None:
    assert known_metric_names() == [
        "exact_match",
        "rouge_l",
        "json_valid",
        "json_schema",
        "label_accuracy",
        "macro_f1",
        "output_length",
        "judge",
        "reward",
    ]
    directions = {name: m.higher_is_better for name, m in METRICS.items()}
    assert directions == {
        "exact_match": True,
        "rouge_l": True,
        "json_valid": True,
        "json_schema": True,
        "label_accuracy": True,
        "macro_f1": True,
        "output_length": None,
        "judge": True,
        "reward": True,
    }
    assert [n for n, m in METRICS.items() if m.per_example is None] == [
        "macro_f1",
        "judge",
        "reward",
    ]
    assert frozenset({"reward"}) == REWARD and METRICS["reward"].unit == "reward"
    assert frozenset({"judge"}) == PAIRWISE
    assert METRICS["output_length"].unit == "words"


def test_unknown_metric_names_the_known_ones() -> None:
    with pytest.raises(MetricError) as info:
        compute_metrics(["rouge_l", "rougel"], ["a"], ["a"])
    assert str(info.value) == (
        "unknown metric 'rougel'; did you mean rouge_l? known metrics: exact_match, rouge_l, "
        "json_valid, json_schema, label_accuracy, macro_f1, output_length, judge, reward"
    )
    # The spec loader reports it against the field; the CLI shows it without a traceback.
    assert isinstance(info.value, SpecError) and isinstance(info.value, ValueError)
    with pytest.raises(MetricError, match=r"^unknown metric 'bleu'; known metrics: exact_match"):
        compute_metrics(["bleu"], ["a"], ["a"])


def test_corpus_metrics_have_no_per_example_score() -> None:
    with pytest.raises(MetricError, match="macro_f1 is computed over a whole set"):
        METRICS["macro_f1"].score("a", "a")


def test_the_pairwise_judge_is_left_to_the_evaluator() -> None:
    with pytest.raises(MetricError, match="judge compares two models' outputs side by side"):
        METRICS["judge"].score("a", "a")
    result = compute_metrics(["exact_match", "judge"], ["a", "b"], ["a", "c"])
    assert result.per_metric == {"exact_match": 0.5}
    assert result.per_example == [
        {"exact_match": 1.0, "judge": None},
        {"exact_match": 0.0, "judge": None},
    ]
    assert pairwise_metrics(["rouge_l", "judge", "exact_match", "judge"]) == ["judge"]
    assert pairwise_metrics(["rouge_l"]) == []


# --- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("  “Hello,   World!” ", "hello, world"),
        ("Billing.", "billing"),
        ("ＹＥＳ", "yes"),  # full-width letters (NFKC)
        ("Straße", "strasse"),  # casefold, not lower
        ("ﬁne", "fine"),  # ligature (NFKC)
        ("a \t\n b", "a b"),
        ("«\u00a0oui\u00a0»", "oui"),  # guillemets and no-break spaces
        ("「はい」。", "はい"),
        ("¿Sí?", "sí"),
        ("'quoted'", "quoted"),
        ("`code`", "code"),
        ("-5", "-5"),  # a sign is meaning, not punctuation
        ("50%", "50%"),
        ("C#", "c#"),
        ("(b)", "(b)"),
        ("...", ""),
        ("", ""),
    ],
)
def test_normalise(text: str, normalised: str) -> None:
    assert normalise(text) == normalised


@given(st.text())
def test_normalise_is_idempotent(text: str) -> None:
    assert normalise(normalise(text)) == normalise(text)


# --- exact match ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "prediction", "expected"),
    [
        ("Billing.", "billing", 1.0),
        ("yes", "no", 0.0),
        ("Ships on Thursday", "ships   on thursday!", 1.0),
        ("ships on thursday", "ships thursday", 0.0),
        ('"billing"', "billing", 1.0),  # a JSON string against plain text: compared as text
        ('{"a": 1, "b": [1, 2]}', '{"b":[1,2],"a":1}', 1.0),  # key order and spacing
        ('{"a": 1}', '{"a": 1.0}', 1.0),  # the same number
        ('{"a": true}', '{"a": 1}', 0.0),  # true is not 1
        ("[1, 2]", "[2, 1]", 0.0),  # array order matters
        ('{"a": "X"}', '{"a": "x"}', 0.0),  # strings inside JSON are exact
        ('{"a": 1}', '```json\n{"a": 1}\n```', 1.0),  # a code fence around the output
        ('{"a": 1}', '{"a": 1', 0.0),
        ("42", "42.0", 0.0),  # scalars compare as text
    ],
)
def test_exact_match(reference: str, prediction: str, expected: float) -> None:
    assert score("exact_match", reference, prediction) == expected


@given(st.text())
def test_exact_match_of_a_text_with_itself(text: str) -> None:
    assert score("exact_match", text, text) == 1.0


# --- ROUGE-L -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "prediction", "expected"),
    [
        # LCS "the cat on the mat" = 5 of 6 tokens each way: P = R = 5/6, F = 5/6.
        ("the cat sat on the mat", "the cat lay on the mat", 5 / 6),
        # LCS "police killed" (or "the gunman") = 2 of 4: P = R = 1/2, F = 1/2.
        ("police killed the gunman", "the gunman police killed", 1 / 2),
        # Reversed: LCS 1 of 5: P = R = 1/5.
        ("a b c d e", "e d c b a", 1 / 5),
        # LCS 2: P = 2/2, R = 2/4, F = 2PR/(P+R) = 2/3.
        ("ships on thursday morning", "thursday morning", 2 / 3),
        # LCS 3: P = 3/3, R = 3/7: F = 2 * 3/7 / (10/7) = 0.6.
        ("your order ships on thursday next week", "order ships thursday", 0.6),
        # Case and punctuation are not tokens.
        ("Hello, World!", "hello world", 1.0),
        # No stemming: "running dogs" and "run dog" share nothing.
        ("running dogs", "run dog", 0.0),
        ("the answer", "", 0.0),
        # Beyond ASCII, letters are kept: LCS "je suis allé à" = 4 of 5: F = 4/5.
        ("Je suis allé à Paris", "je suis allé à Lyon", 4 / 5),
        # One token per character in Japanese: LCS "に行きます" = 5 of 7: F = 5/7.
        ("東京に行きます", "大阪に行きます", 5 / 7),
    ],
)
def test_rouge_l_by_hand(reference: str, prediction: str, expected: float) -> None:
    assert score("rouge_l", reference, prediction) == pytest.approx(expected)


def test_rouge_l_matches_rouge_score_on_ascii_text() -> None:
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pairs = [
        ("The quick, brown fox jumped over the lazy dog!", "A quick brown dog jumps over the fox"),
        ("Order #1234 ships on 2026-01-05.", "order 1234 shipped on 2026 01 05"),
        ("don't panic", "do not panic"),
    ]
    for reference, prediction in pairs:
        expected = default.score(reference, prediction)["rougeL"].fmeasure
        assert score("rouge_l", reference, prediction) == pytest.approx(expected)


def test_rouge_tokens() -> None:
    assert rouge_tokens("Don't STOP-now, 42x!") == ["don", "t", "stop", "now", "42x"]
    assert rouge_tokens("Café au lait") == ["café", "au", "lait"]
    assert rouge_tokens("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]  # vowel signs stay in words
    assert rouge_tokens("注文は木曜日") == ["注", "文", "は", "木", "曜", "日"]
    assert rouge_tokens("ok東京ok") == ["ok", "東", "京", "ok"]


def test_a_reference_without_tokens_is_not_scored() -> None:
    result = compute_metrics(["rouge_l"], ["...", "a b"], ["anything", "a"])
    assert result.per_example == [{"rouge_l": None}, {"rouge_l": pytest.approx(2 / 3)}]
    assert result.per_metric == {"rouge_l": pytest.approx(2 / 3)}
    assert compute_metrics(["rouge_l"], ["!!"], ["x"]).per_metric == {}


# --- JSON ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "valid"),
    [
        ('{"a": 1}', True),
        ("[1, 2]", True),
        ("42", True),
        ('"text"', True),
        ("null", True),
        ("  {}  ", True),
        ('```json\n{"a": 1}\n```', True),
        ('```JSON\n{"a": 1}\n```', True),
        ("```\n[1]\n```", True),
        ("1e400", True),  # beyond a double, yet JSON
        ("{'a': 1}", False),
        ('{"a": 1,}', False),
        ("NaN", False),
        ("Infinity", False),
        ('Sure! {"a": 1}', False),
        ("", False),
    ],
)
def test_json_valid(prediction: str, valid: bool) -> None:
    assert score("json_valid", "", prediction) == float(valid)


def test_parse_json_output() -> None:
    assert parse_json_output('```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    assert parse_json_output("null") is None
    assert parse_json_output("nope") is NOT_JSON


SCHEMA = {
    "type": "object",
    "required": ["category", "priority"],
    "properties": {
        "category": {"enum": ["billing", "shipping"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 3},
        "due": {"type": "string", "format": "date"},
    },
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("prediction", "conforms"),
    [
        ('{"category": "billing", "priority": 1}', True),
        ('```json\n{"category": "shipping", "priority": 3, "due": "2026-02-01"}\n```', True),
        ('{"category": "refunds", "priority": 1}', False),  # not in the enum
        ('{"category": "billing"}', False),  # a required field missing
        ('{"category": "billing", "priority": 4}', False),  # out of range
        ('{"category": "billing", "priority": "1"}', False),  # wrong type
        ('{"category": "billing", "priority": 1, "x": 0}', False),  # no extra fields
        ('{"category": "billing", "priority": 1, "due": "2026-13-45"}', False),  # format
        ("[]", False),
        ("not json", False),
    ],
)
def test_json_schema(prediction: str, conforms: bool) -> None:
    assert score("json_schema", "", prediction, json_schema=SCHEMA) == float(conforms)


def test_json_schema_averages_over_examples() -> None:
    predictions = ['{"category": "billing", "priority": 2}', "{}", "oops", '{"category": "x"}']
    result = compute_metrics(
        ["json_valid", "json_schema"], [""] * 4, predictions, options={"json_schema": SCHEMA}
    )
    assert result.per_metric == {"json_valid": 0.75, "json_schema": 0.25}
    assert [r["json_schema"] for r in result.per_example] == [1.0, 0.0, 0.0, 0.0]


def test_json_schema_follows_its_draft() -> None:
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "array",
        "items": [{"type": "string"}],
        "additionalItems": False,
    }
    assert score("json_schema", "", '["a"]', json_schema=draft7) == 1.0
    assert score("json_schema", "", '["a", "b"]', json_schema=draft7) == 0.0


def test_json_schema_needs_a_schema() -> None:
    with pytest.raises(MetricError) as info:
        compute_metrics(["json_schema"], ["x"], ["{}"])
    assert str(info.value) == (
        "the json_schema metric needs evaluation.json_schema\n"
        "  hint: set evaluation.json_schema or remove json_schema from evaluation.metrics"
    )
    # Checked before anything is scored, so the evaluator can call it first.
    assert check_metric_options(["json_valid"]) == MetricOptions()


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            {"type": "objekt"},
            "evaluation.json_schema is not a valid JSON Schema: 'objekt' is not valid under "
            "any of the given schemas (at type)",
        ),
        (
            {"properties": {"a": {"minimum": "one"}}},
            "evaluation.json_schema is not a valid JSON Schema: 'one' is not of type 'number' "
            "(at properties/a/minimum)",
        ),
        ({"$schema": "https://example.com/my-draft", "type": "object"}, "unknown $schema"),
        (["not", "a", "schema"], "must hold a JSON object (a JSON Schema), not list"),
    ],
)
def test_invalid_schemas_are_refused_up_front(schema: Any, message: str) -> None:
    with pytest.raises(MetricError) as info:
        MetricOptions(json_schema=schema)
    assert message in str(info.value)


def test_remote_references_are_not_fetched() -> None:
    schema = {"$ref": "https://schemas.example.invalid/order.json"}
    with pytest.raises(MetricError, match="remote references are not fetched"):
        score("json_schema", "", "{}", json_schema=schema)


# --- labels --------------------------------------------------------------------------------------


def test_labels() -> None:
    assert label_of(" Billing. ") == "billing"
    assert label_of("") is None
    options = {"label_field": "result.category"}
    assert label_of('{"result": {"category": "Shipping"}}', options) == "shipping"
    assert label_of('{"result": {"category": 2}}', options) == "2"
    assert label_of('{"result": {"category": 2.0}}', options) == "2"
    assert label_of('{"result": {"category": null}}', options) is None
    assert label_of('{"result": {}}', options) is None
    assert label_of('{"result": "shipping"}', options) is None
    assert label_of("shipping", options) is None


def test_label_accuracy() -> None:
    assert score("label_accuracy", "Billing", "billing.") == 1.0
    assert score("label_accuracy", "billing", "shipping") == 0.0
    assert score("label_accuracy", "", "billing") is None  # no reference label: not scored
    field = {"label_field": "category"}
    fenced = '```json\n{"category": "A"}\n```'
    assert score("label_accuracy", '{"category": "a"}', fenced, **field) == 1.0
    assert score("label_accuracy", '{"category": "a"}', "a", **field) == 0.0
    assert score("label_accuracy", '{"other": "a"}', '{"category": "a"}', **field) is None


def test_accuracy_and_macro_f1_on_a_skewed_label_set() -> None:
    # 8 ham, 2 spam; the model says ham every time.
    gold = ["ham"] * 8 + ["spam"] * 2
    pred = ["ham"] * 10
    # ham: TP 8, FP 2, FN 0 → F1 = 16/18 = 8/9; spam: TP 0, FP 0, FN 2 → F1 = 0.
    # Accuracy 8/10 looks fine; macro-F1 (8/9 + 0) / 2 = 4/9 does not.
    result = compute_metrics(["label_accuracy", "macro_f1"], gold, pred)
    assert result.per_metric == {
        "label_accuracy": pytest.approx(0.8),
        "macro_f1": pytest.approx(4 / 9),
    }
    assert result.per_example[0] == {"label_accuracy": 1.0}  # macro-F1 is corpus-level only
    assert result.per_example[9] == {"label_accuracy": 0.0}


def test_macro_f1_three_labels() -> None:
    gold = ["a"] * 6 + ["b"] * 3 + ["c"]
    pred = ["a"] * 5 + ["b"] + ["b", "b", "a"] + ["c"]
    # a: TP 5, FP 1, FN 1 → 10/12; b: TP 2, FP 1, FN 1 → 4/6; c: TP 1 → 1.
    assert macro_f1(gold, pred) == pytest.approx((10 / 12 + 4 / 6 + 1) / 3)


def test_macro_f1_labels_come_from_the_references() -> None:
    # "x" is not a reference label: it costs "a" its recall and adds no label of its own.
    # a: TP 1, FP 0, FN 1 → 2/3; b: TP 1 → 1.
    assert macro_f1(["a", "a", "b"], ["a", "x", "b"]) == pytest.approx((2 / 3 + 1) / 2)
    # A prediction with no label is wrong; a reference with no label is left out.
    field = {"label_field": "k"}
    gold = ['{"k": "a"}', '{"k": "b"}', "{}"]
    pred = ['{"k": "a"}', "not json", '{"k": "b"}']
    # a: TP 1, FP 0, FN 0 → 1; b: TP 0, FP 0, FN 1 → 0.
    assert macro_f1(gold, pred, field) == pytest.approx(0.5)
    assert macro_f1(["", ""], ["a", "b"]) is None
    assert compute_metrics(["macro_f1"], [""], ["a"]).per_metric == {}


# --- output length -------------------------------------------------------------------------------


def test_output_length_is_mean_words() -> None:
    result = compute_metrics(
        ["output_length"], ["x", "y", "z"], ["one two  three\nfour", "", "五六七"]
    )
    assert [r["output_length"] for r in result.per_example] == [4.0, 0.0, 1.0]
    assert result.per_metric == {"output_length": pytest.approx(5 / 3)}


# --- compute_metrics -----------------------------------------------------------------------------


def test_compute_metrics_over_a_set() -> None:
    references = ["Ships Thursday.", '{"category": "billing"}', "refund issued"]
    predictions = ["ships thursday", '{"category": "shipping"}', "the refund was issued"]
    result = compute_metrics(
        ["exact_match", "rouge_l", "json_valid", "exact_match"],  # a repeat counts once
        references,
        predictions,
    )
    # rouge_l: 1; category/billing vs category/shipping: LCS 1 of 2 → 1/2;
    # "refund issued" in "the refund was issued": P = 2/4, R = 2/2 → F = 2/3.
    assert result.per_metric == {
        "exact_match": pytest.approx(1 / 3),
        "rouge_l": pytest.approx((1 + 1 / 2 + 2 / 3) / 3),
        "json_valid": pytest.approx(1 / 3),
    }
    assert list(result.per_metric) == ["exact_match", "rouge_l", "json_valid"]
    assert result.per_example[1] == {
        "exact_match": 0.0,
        "rouge_l": pytest.approx(0.5),
        "json_valid": 1.0,
    }


def test_compute_metrics_refuses_mismatched_inputs_and_options() -> None:
    with pytest.raises(ValueError, match="2 references but 1 predictions"):
        compute_metrics(["exact_match"], ["a", "b"], ["a"])
    with pytest.raises(MetricError, match="unknown metric option 'schema'"):
        compute_metrics(["exact_match"], ["a"], ["a"], options={"schema": {}})
    for bad in ("", "a..b", " "):
        with pytest.raises(MetricError, match="is not a field name or a dotted path"):
            MetricOptions(label_field=bad)


def test_no_examples() -> None:
    result = compute_metrics(known_metric_names(), [], [], options={"json_schema": SCHEMA})
    assert result.per_metric == {}
    assert result.per_example == []


def _naive_macro_f1(gold: list[str], pred: list[str]) -> float:
    scores = []
    for label in set(gold):
        tp = sum(g == label and p == label for g, p in zip(gold, pred, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, pred, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, pred, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from("abcde")), min_size=1, max_size=40)
)
def test_macro_f1_is_the_mean_of_per_label_f1(pairs: list[tuple[str, str]]) -> None:
    gold, pred = [g for g, _ in pairs], [p for _, p in pairs]
    assert macro_f1(gold, pred) == pytest.approx(_naive_macro_f1(gold, pred))
