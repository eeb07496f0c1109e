"""Paired statistics of two evaluated targets: how sure is a difference?

Every metric with a per-example score is compared example by example. For a pair of targets
``(a, b)`` (``tuned`` and ``base``, say) and a metric, over the examples where both have a score
(an example either target could not score is left out of that comparison only):

- ``delta`` is the mean of the per-example differences ``a - b``; ``n`` is how many there are;
  ``std`` is their sample standard deviation (``None`` below two examples).
- ``ci_low`` / ``ci_high`` are a **paired percentile bootstrap** interval for ``delta``:
  ``resamples`` (9999) times, ``n`` examples are drawn with replacement from those ``n``
  examples and the mean difference of the draw is kept. Drawing the differences is drawing the
  pairs, so this is the interval ``scipy.stats.bootstrap((a, b), lambda a, b: mean(a - b),
  paired=True, method="percentile")`` gives. With the ``B`` bootstrap means sorted,
  ``T(1) <= ... <= T(B)``, the interval at confidence ``1 - 2α`` is ``[T(j), T(B + 1 - j)]``
  with ``j = floor(α (B + 1))``: for 95 % and 9999 resamples, the 250th and the 9750th. The
  draws come from a generator seeded with ``seed``, so a result is reproducible; every
  comparison with the same ``n`` uses the same draws, which is why it is computed here in
  numpy and not by one ``scipy.stats.bootstrap`` call per metric and pair: one resampling
  serves every metric and pair, a fraction of a second for 1,000 examples, 5 metrics and two
  pairs, where a call per comparison takes about a second. When every difference is the same
  (one example, or two models that agree everywhere) the bootstrap has no spread to measure
  and the interval is ``[delta, delta]``.
- ``wins`` / ``ties`` / ``losses`` count the examples where ``a`` scored higher, the same, lower.
- ``p_value``, for a metric whose scores are all 0 or 1 on those examples (``exact_match``,
  ``json_valid``, ...), is McNemar's exact test: the two-sided binomial test of the discordant
  examples (``wins`` of ``wins + losses``, probability 1/2); 1 when there are none. ``None``
  for other metrics.

The gate's ``significant(...)`` (see :mod:`vertex_tuner.evaluation.gate`) judges a margin with
:meth:`Comparison.p_value_against` and :meth:`Comparison.interval`, which read the sorted
bootstrap means a comparison keeps in memory. They are not part of :meth:`Comparison.to_json`:
a comparison read back from JSON shows its interval but cannot judge a new margin.

numpy and scipy are imported inside the functions that use them: importing this module is free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vertex_tuner.vocabulary import TARGETS

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

#: Bootstrap resamples per comparison.
RESAMPLES = 9999
#: The default seed of the bootstrap's generator: the same input gives the same intervals.
SEED = 20240611
CONFIDENCE = 0.95
METHOD = "percentile"
#: Resampled cells (resamples x examples) drawn at once: bounds the memory a comparison takes.
_CELLS = 1_000_000

#: The one-sided tests of :meth:`Comparison.p_value_against`.
_ABOVE = (">", ">=")
_BELOW = ("<", "<=")


def pair_key(a: str, b: str) -> str:
    """The key of the comparison of ``a`` against ``b`` (``a - b``): ``"tuned-base"``."""
    return f"{a}-{b}"


def _level_index(alpha: float, resamples: int) -> int:
    """``j`` of the interval ``[T(j), T(B + 1 - j)]`` for a one-sided level ``alpha``."""
    # The small addend keeps 0.025 * 10000 at 250 despite binary rounding.
    return max(1, math.floor(alpha * (resamples + 1) + 1e-9))


def _check_confidence(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), not {confidence!r}")
    return float(confidence)


@dataclass(frozen=True)
class Comparison:
    """One metric of one pair of targets, example by example (see the module docstring)."""

    delta: float
    ci_low: float
    ci_high: float
    #: McNemar's exact two-sided p-value for a 0/1 metric; None for other metrics.
    p_value: float | None
    wins: int
    ties: int
    losses: int
    n: int
    #: The sample standard deviation of the per-example differences; None below two examples.
    std: float | None = None
    confidence: float = CONFIDENCE
    method: str = METHOD
    resamples: int = RESAMPLES
    seed: int | None = SEED
    #: The sorted bootstrap means; kept in memory only (None when read from JSON).
    distribution: NDArray[np.float64] | None = field(
        default=None, compare=False, repr=False, hash=False
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "p_value": self.p_value,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "n": self.n,
            "std": self.std,
            "confidence": self.confidence,
            "method": self.method,
            "resamples": self.resamples,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Comparison:
        """Read back :meth:`to_json`; keys after ``n`` may be missing (older documents)."""
        p_value, std, seed = doc.get("p_value"), doc.get("std"), doc.get("seed", SEED)
        return cls(
            delta=float(doc["delta"]),
            ci_low=float(doc["ci_low"]),
            ci_high=float(doc["ci_high"]),
            p_value=None if p_value is None else float(p_value),
            wins=int(doc["wins"]),
            ties=int(doc["ties"]),
            losses=int(doc["losses"]),
            n=int(doc["n"]),
            std=None if std is None else float(std),
            confidence=float(doc.get("confidence", CONFIDENCE)),
            method=str(doc.get("method", METHOD)),
            resamples=int(doc.get("resamples", RESAMPLES)),
            seed=None if seed is None else int(seed),
        )

    def reversed(self) -> Comparison:
        """The same comparison the other way round: ``b - a``."""
        flipped = None if self.distribution is None else -self.distribution[::-1]
        return Comparison(
            delta=-self.delta,
            ci_low=-self.ci_high,
            ci_high=-self.ci_low,
            p_value=self.p_value,
            wins=self.losses,
            ties=self.ties,
            losses=self.wins,
            n=self.n,
            std=self.std,
            confidence=self.confidence,
            method=self.method,
            resamples=self.resamples,
            seed=self.seed,
            distribution=flipped,
        )

    def _sorted(self) -> NDArray[np.float64]:
        if self.distribution is None:
            raise ValueError(
                "this comparison has no bootstrap distribution (it was read from JSON); "
                "compute it again with compare_all"
            )
        return self.distribution

    def interval(self, confidence: float) -> tuple[float, float]:
        """The two-sided percentile interval of ``delta`` at another confidence."""
        confidence = _check_confidence(confidence)
        if self.distribution is None and math.isclose(confidence, self.confidence):
            return self.ci_low, self.ci_high
        means = self._sorted()
        j = _level_index((1 - confidence) / 2, len(means))
        return float(means[j - 1]), float(means[len(means) - j])

    def p_value_against(self, op: str, margin: float) -> float:
        """The one-sided bootstrap p-value of ``delta OP margin`` (``OP`` in < <= > >=).

        With ``k`` the bootstrap means that contradict it (at or below the margin for ``>``,
        below it for ``>=``, at or above it for ``<``, above it for ``<=``), ``p = (k + 1) /
        (B + 1)``, so ``p <= α`` exactly when the two-sided ``1 - 2α`` interval lies beyond
        the margin on that side. ``p`` is never below ``2 ** -n``, the smallest p-value an
        exact sign-flip test on ``n`` examples can reach: a bootstrap of a few examples is
        not allowed to be surer than that (with all differences equal it would say p = 1/(B+1)
        from a single example).
        """
        import numpy as np

        means = self._sorted()
        total = len(means)
        if op == ">":
            against = int(np.searchsorted(means, margin, side="right"))
        elif op == ">=":
            against = int(np.searchsorted(means, margin, side="left"))
        elif op == "<":
            against = total - int(np.searchsorted(means, margin, side="left"))
        elif op == "<=":
            against = total - int(np.searchsorted(means, margin, side="right"))
        else:
            raise ValueError(f"a one-sided test is <, <=, > or >=, not {op!r}")
        return max((against + 1) / (total + 1), 2.0**-self.n)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _resampled_means(columns: NDArray[np.float64], resamples: int, seed: int | None) -> Any:
    """Bootstrap means of each column of an (n, k) array: a (k, resamples) array.

    Every column is resampled with the same draws of example positions; a draw is turned into
    per-position counts, so that one matrix product gives the means of every column.
    """
    import numpy as np

    n, k = columns.shape
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, k))
    rows = max(1, _CELLS // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        picks = rng.integers(0, n, size=(stop - start, n))
        picks += (np.arange(stop - start) * n)[:, None]
        counts = np.bincount(picks.ravel(), minlength=(stop - start) * n)
        # As floats, the product is a BLAS matrix product (integer matrices have none).
        means[start:stop] = counts.reshape(stop - start, n).astype(np.float64) @ columns
    return (means / n).T


def _mcnemar(wins: int, losses: int) -> float:
    if wins + losses == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue)


def _compare_columns(
    pairs: Sequence[tuple[Sequence[float], Sequence[float]]],
    *,
    confidence: float,
    resamples: int,
    seed: int | None,
) -> list[Comparison]:
    """Comparisons of paired score lists (no None inside, each pair at least one long)."""
    import numpy as np

    results: list[Comparison | None] = [None] * len(pairs)
    by_size: dict[int, list[int]] = {}
    for i, (a, _) in enumerate(pairs):
        by_size.setdefault(len(a), []).append(i)
    j = _level_index((1 - confidence) / 2, resamples)
    for n, members in by_size.items():
        diffs = np.array(
            [np.subtract(pairs[i][0], pairs[i][1], dtype=np.float64) for i in members]
        ).T
        means = _resampled_means(diffs, resamples, seed)
        for column, i in enumerate(members):
            first, second = (np.asarray(side, dtype=np.float64) for side in pairs[i])
            d = diffs[:, column]
            delta = math.fsum(d.tolist()) / n
            if bool(np.all(d == d[0])):
                # No spread: every resample has the same mean (bar rounding noise).
                distribution = np.full(resamples, delta)
                std: float | None = 0.0 if n > 1 else None
            else:
                distribution = np.sort(means[column])
                std = float(np.std(d, ddof=1))
            wins, losses = int(np.sum(d > 0)), int(np.sum(d < 0))
            binary = bool(
                np.all((first == 0) | (first == 1)) and np.all((second == 0) | (second == 1))
            )
            results[i] = Comparison(
                delta=delta,
                ci_low=float(distribution[j - 1]),
                ci_high=float(distribution[resamples - j]),
                p_value=_mcnemar(wins, losses) if binary else None,
                wins=wins,
                ties=n - wins - losses,
                losses=losses,
                n=n,
                std=std,
                confidence=confidence,
                resamples=resamples,
                seed=seed,
                distribution=distribution,
            )
    return [r for r in results if r is not None]


def _check(confidence: float, resamples: int) -> None:
    _check_confidence(confidence)
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples!r}")


def compare(
    a: Iterable[float | None],
    b: Iterable[float | None],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int | None = SEED,
) -> Comparison | None:
    """``a - b`` over the positions where both have a finite score; None when there are none."""
    _check(confidence, resamples)
    left: list[float] = []
    right: list[float] = []
    for x, y in zip(a, b, strict=True):
        fx, fy = _finite(x), _finite(y)
        if fx is not None and fy is not None:
            left.append(fx)
            right.append(fy)
    if not left:
        return None
    [result] = _compare_columns(
        [(left, right)], confidence=confidence, resamples=resamples, seed=seed
    )
    return result


def _scores_of(example: Any) -> Mapping[str, Mapping[str, Any]]:
    scores = getattr(example, "scores", example)
    if not isinstance(scores, Mapping):
        raise TypeError(
            "an example is an ExampleResult or a mapping of target to metric scores, "
            f"not {type(example).__name__}"
        )
    return scores


def compare_all(
    examples: Iterable[Any],
    metrics: Iterable[str],
    targets: Sequence[str] = TARGETS,
    *,
    pairs: Iterable[tuple[str, str]] | None = None,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int | None = SEED,
) -> dict[str, dict[str, Comparison]]:
    """Every comparison of an evaluation: ``{"tuned-base": {"rouge_l": Comparison}, ...}``.

    ``examples`` are :class:`~vertex_tuner.evaluation.results.ExampleResult` objects, or their
    ``scores`` mappings (target to metric to score or None). ``pairs`` defaults to the first
    target against each other one (``tuned-base``, ``tuned-production``). A pair is left out
    when a target has no score for any example, and a metric when no example has both scores.
    A comparison depends only on its own scores, the confidence, the resamples and the seed:
    adding a metric or a target does not change the others (beyond rounding in the last digit).
    """
    _check(confidence, resamples)
    rows = [_scores_of(example) for example in examples]
    names = list(dict.fromkeys(metrics))
    if pairs is None:
        wanted = [(targets[0], other) for other in targets[1:]] if targets else []
    else:
        wanted = [(str(a), str(b)) for a, b in pairs]
    columns: list[tuple[str, str, list[float], list[float]]] = []
    for a, b in dict.fromkeys(wanted):
        if a == b:
            raise ValueError(f"a pair compares two different targets, not {a} with itself")
        for metric in names:
            left: list[float] = []
            right: list[float] = []
            for row in rows:
                x = _finite(row.get(a, {}).get(metric))
                y = _finite(row.get(b, {}).get(metric))
                if x is not None and y is not None:
                    left.append(x)
                    right.append(y)
            if left:
                columns.append((pair_key(a, b), metric, left, right))
    found = _compare_columns(
        [(left, right) for _, _, left, right in columns],
        confidence=confidence,
        resamples=resamples,
        seed=seed,
    )
    result: dict[str, dict[str, Comparison]] = {}
    for (key, metric, _, _), comparison in zip(columns, found, strict=True):
        result.setdefault(key, {})[metric] = comparison
    return result


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    Sorted ascending, ``p(1) <= ... <= p(m)``, the adjusted ``p~(r)`` is the largest of
    ``min(1, (m - s + 1) p(s))`` for ``s <= r``; rejecting where ``p~ <= α`` is Holm's test at
    family-wise level α.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def examples_needed(std: float, gap: float, alpha: float, power: float = 0.8) -> int:
    """Examples a one-sided test at level ``alpha`` needs to show a mean difference that
    clears its margin by ``gap`` with probability ``power``, when the differences spread with
    standard deviation ``std`` (normal approximation: ``((z(1-alpha) + z(power)) std / gap)²``),
    and never fewer than the sign-flip bound ``2 ** -n <= alpha`` allows.
    """
    from statistics import NormalDist

    if gap <= 0:
        raise ValueError("the gap between the difference and the margin must be positive")
    floor = math.ceil(-math.log2(alpha) - 1e-9)
    if std <= 0:
        return floor
    z = NormalDist()
    needed = ((z.inv_cdf(1 - alpha) + z.inv_cdf(power)) * std / gap) ** 2
    return max(floor, math.ceil(needed))
