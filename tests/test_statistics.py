"""Paired statistics: bootstrap intervals, counts, McNemar's test, Holm, examples needed."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vertex_tuner.evaluation.results import ExampleResult
from vertex_tuner.evaluation.statistics import (
    RESAMPLES,
    Comparison,
    compare,
    compare_all,
    examples_needed,
    holm,
    pair_key,
)


def scored(tuned: list[float | None], base: list[float | None], metric: str = "m") -> list[dict]:
    return [{"tuned": {metric: t}, "base": {metric: b}} for t, b in zip(tuned, base, strict=True)]


def noisy(n: int, effect: float, seed: int = 1) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    base = [rng.uniform(0.2, 0.7) for _ in range(n)]
    return [b + effect + rng.gauss(0, 0.1) for b in base], base


# --- one comparison ------------------------------------------------------------------------------


def test_counts_delta_and_spread() -> None:
    result = compare([0.5, 0.7, 0.2, 0.4, 0.9], [0.5, 0.1, 0.3, 0.4, 0.6])
    assert result is not None
    assert (result.wins, result.ties, result.losses, result.n) == (2, 2, 1, 5)
    differences = [0.0, 0.6, -0.1, 0.0, 0.3]
    assert result.delta == pytest.approx(sum(differences) / 5)
    assert result.std == pytest.approx(float(np.std(differences, ddof=1)))
    assert result.p_value is None  # not a 0/1 metric
    assert result.ci_low <= result.delta <= result.ci_high


def test_mcnemar_matches_the_exact_binomial_test_by_hand() -> None:
    # 10 discordant pairs, 9 for tuned and 1 for base, and 5 ties that do not count.
    tuned = [1.0] * 9 + [0.0] + [1.0, 1.0, 0.0, 0.0, 1.0]
    base = [0.0] * 9 + [1.0] + [1.0, 1.0, 0.0, 0.0, 1.0]
    result = compare(tuned, base)
    assert result is not None
    assert (result.wins, result.ties, result.losses) == (9, 5, 1)
    by_hand = 2 * sum(math.comb(10, k) for k in range(2)) / 2**10
    assert by_hand == 0.021484375
    assert result.p_value == pytest.approx(by_hand, rel=1e-12)
    same = compare([1.0, 0.0, 1.0], [1.0, 0.0, 1.0])
    assert same is not None and same.p_value == 1.0  # no discordant pair


def test_none_and_nan_scores_are_left_out_pairwise() -> None:
    result = compare([1.0, None, 0.5, float("nan"), 0.25], [0.5, 0.2, None, 0.1, 0.5])
    assert result is not None
    assert result.n == 2
    assert result.delta == pytest.approx((0.5 - 0.25) / 2)
    assert compare([None, 1.0], [0.0, None]) is None  # no example has both


def test_all_equal_differences_give_a_zero_width_interval() -> None:
    result = compare([0.3] * 20, [0.1] * 20)
    assert result is not None
    assert (result.ci_low, result.ci_high) == (result.delta, result.delta)
    assert result.delta == pytest.approx(0.2)
    assert result.std == 0.0
    one = compare([0.75], [0.25])
    assert one is not None
    assert (one.n, one.ci_low, one.ci_high, one.std) == (1, 0.5, 0.5, None)


def test_the_seed_makes_it_reproducible() -> None:
    tuned, base = noisy(60, 0.03)
    first = compare(tuned, base, seed=7)
    again = compare(tuned, base, seed=7)
    other = compare(tuned, base, seed=8)
    assert first is not None and again is not None and other is not None
    assert first.to_json() == again.to_json()
    assert np.array_equal(first.distribution, again.distribution)  # type: ignore[arg-type]
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    assert first.delta == other.delta


def test_agrees_with_scipy_paired_percentile_bootstrap() -> None:
    from scipy.stats import bootstrap

    tuned, base = noisy(80, 0.02, seed=3)
    ours = compare(tuned, base)
    theirs = bootstrap(
        (np.array(tuned), np.array(base)),
        lambda a, b, axis: np.mean(a - b, axis=axis),
        paired=True,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert ours is not None
    width = ours.ci_high - ours.ci_low
    # Different draws: the bounds agree to Monte Carlo error, a small share of the width.
    assert abs(ours.ci_low - theirs.low) < 0.05 * width
    assert abs(ours.ci_high - theirs.high) < 0.05 * width


def test_the_interval_narrows_with_more_examples_and_widens_with_confidence() -> None:
    small = compare(*noisy(20, 0.05))
    large = compare(*noisy(500, 0.05))
    assert small is not None and large is not None
    assert large.ci_high - large.ci_low < (small.ci_high - small.ci_low) / 3
    low95, high95 = large.interval(0.95)
    low99, high99 = large.interval(0.99)
    assert (low95, high95) == (large.ci_low, large.ci_high)
    assert low99 < low95 and high99 > high95


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=1, allow_nan=False),
            st.floats(min_value=0, max_value=1, allow_nan=False),
        ),
        min_size=1,
        max_size=40,
    ),
    st.floats(min_value=0.5, max_value=0.99),
)
def test_the_interval_contains_the_mean_difference(
    pairs: list[tuple[float, float]], confidence: float
) -> None:
    result = compare(
        [a for a, _ in pairs], [b for _, b in pairs], confidence=confidence, resamples=999
    )
    assert result is not None
    assert result.ci_low <= result.delta + 1e-12
    assert result.delta <= result.ci_high + 1e-12
    assert result.wins + result.ties + result.losses == result.n == len(pairs)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(min_value=-1, max_value=1, allow_nan=False), min_size=8, max_size=40),
    st.floats(min_value=-1, max_value=1, allow_nan=False),
)
def test_the_one_sided_p_value_agrees_with_the_interval(
    differences: list[float], margin: float
) -> None:
    result = compare(differences, [0.0] * len(differences), resamples=999)
    assert result is not None
    alpha = (1 - result.confidence) / 2
    floor = 2.0**-result.n
    # p <= alpha exactly when the interval lies beyond the margin (and n is not too small).
    for op, clears in (
        (">", result.ci_low > margin),
        (">=", result.ci_low >= margin),
        ("<", result.ci_high < margin),
        ("<=", result.ci_high <= margin),
    ):
        p = result.p_value_against(op, margin)
        assert (p <= alpha) is (clears and floor <= alpha), op


def test_the_p_value_never_goes_below_the_sign_flip_bound() -> None:
    five = compare([0.9] * 5, [0.1] * 5)
    assert five is not None
    assert five.p_value_against(">", 0.0) == 2.0**-5
    many = compare([0.9] * 30, [0.1] * 30)
    assert many is not None
    assert many.p_value_against(">", 0.0) == 1 / (RESAMPLES + 1)
    assert many.p_value_against(">", 0.8) == 1.0  # the wrong side entirely
    with pytest.raises(ValueError, match="one-sided"):
        many.p_value_against("==", 0.0)


def test_reversed_is_the_other_way_round() -> None:
    result = compare(*noisy(40, 0.05))
    assert result is not None
    flipped = result.reversed()
    assert flipped.delta == -result.delta
    assert (flipped.ci_low, flipped.ci_high) == (-result.ci_high, -result.ci_low)
    assert (flipped.wins, flipped.losses) == (result.losses, result.wins)
    assert flipped.interval(0.9) == tuple(-x for x in reversed(result.interval(0.9)))
    assert flipped.p_value_against("<", -0.01) == result.p_value_against(">", 0.01)


def test_json_round_trip_and_older_documents() -> None:
    result = compare([1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0])
    assert result is not None
    doc = result.to_json()
    assert list(doc)[:8] == ["delta", "ci_low", "ci_high", "p_value", "wins", "ties", "losses", "n"]
    read = Comparison.from_json(doc)
    assert read == result
    assert read.distribution is None
    assert read.interval(0.95) == (result.ci_low, result.ci_high)
    with pytest.raises(ValueError, match="no bootstrap distribution"):
        read.interval(0.99)
    older = {k: doc[k] for k in list(doc)[:8]}
    assert Comparison.from_json(older).n == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0}, "confidence"),
        ({"resamples": 0}, "resamples"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare([1.0], [0.0], **kwargs)


# --- every comparison of an evaluation -----------------------------------------------------------


def test_compare_all_keys_pairs_and_metrics() -> None:
    tuned, base = noisy(30, 0.05)
    examples = [
        {
            "tuned": {"rouge_l": t, "exact_match": float(i % 2), "json_schema": None},
            "base": {"rouge_l": b, "exact_match": 0.0, "json_schema": None},
        }
        for i, (t, b) in enumerate(zip(tuned, base, strict=True))
    ]
    result = compare_all(examples, ["rouge_l", "exact_match", "json_schema"])
    # No production scores: no tuned-production; json_schema scored nothing: left out.
    assert list(result) == [pair_key("tuned", "base")] == ["tuned-base"]
    assert set(result["tuned-base"]) == {"rouge_l", "exact_match"}
    assert result["tuned-base"]["exact_match"].p_value is not None
    assert result["tuned-base"]["rouge_l"].p_value is None
    for example, p in zip(examples, [0.4] * 30, strict=True):
        example["production"] = {"rouge_l": p, "exact_match": 1.0}
    result = compare_all(examples, ["rouge_l", "exact_match"])
    assert list(result) == ["tuned-base", "tuned-production"]
    both = compare_all(examples, ["rouge_l"], pairs=[("base", "production")])
    assert list(both) == ["base-production"]
    with pytest.raises(ValueError, match="two different targets"):
        compare_all(examples, ["rouge_l"], pairs=[("base", "base")])


def test_compare_all_reads_example_results_and_skips_missing_scores_per_metric() -> None:
    examples = [
        ExampleResult(i, "p", "r", {}, {"tuned": {"a": 1.0, "b": None}, "base": {"a": 0.0}})
        for i in range(4)
    ] + [ExampleResult(4, "p", "r", {}, {"tuned": {"a": 0.0, "b": 1.0}, "base": {"b": 0.5}})]
    result = compare_all(examples, ["a", "b"])["tuned-base"]
    assert (result["a"].n, result["a"].wins) == (4, 4)
    assert (result["b"].n, result["b"].delta) == (1, 0.5)
    assert compare_all([], ["a"]) == {}
    with pytest.raises(TypeError, match="ExampleResult or a mapping"):
        compare_all([3], ["a"])


def test_a_comparison_does_not_depend_on_the_other_metrics() -> None:
    tuned, base = noisy(50, 0.02)
    rows = scored(tuned, base, "x")
    for row, (t, b) in zip(rows, zip(*noisy(50, 0.1, seed=9), strict=True), strict=True):
        row["tuned"]["y"], row["base"]["y"] = t, b
    alone = compare_all(rows, ["x"])["tuned-base"]["x"]
    together = compare_all(rows, ["y", "x"])["tuned-base"]["x"]
    single = compare(tuned, base)
    assert single is not None
    for other in (together, single):
        # The same draws; one matrix product over more columns may round the last digit.
        assert (other.delta, other.ci_low, other.ci_high) == pytest.approx(
            (alone.delta, alone.ci_low, alone.ci_high), rel=1e-12
        )
        assert (other.n, other.wins, other.losses) == (alone.n, alone.wins, alone.losses)


def test_holm_adjusted_p_values() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []


def test_examples_needed_by_hand() -> None:
    # ((z(0.975) + z(0.8)) * 0.1 / 0.05) ** 2 = (2 * 2.8016) ** 2 = 31.4: 32 examples.
    assert examples_needed(0.1, 0.05, 0.025) == 32
    assert examples_needed(0.1, 0.1, 0.025) == 8
    # No spread: the sign-flip bound 2 ** -n <= 0.025 needs 6 examples.
    assert examples_needed(0.0, 0.05, 0.025) == 6
    with pytest.raises(ValueError, match="positive"):
        examples_needed(0.1, 0.0, 0.025)
