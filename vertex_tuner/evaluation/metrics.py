"""Evaluation metrics, by stable name.

Per-example metrics score one (reference, prediction) pair and average over the set; corpus
metrics (macro-F1) look at all pairs at once. ``higher_is_better`` tells reports which way a
change is a regression; ``None`` means neither (output length).

- ``exact_match``: 1 when the normalised texts are equal (NFKC, casefold, whitespace collapsed,
  surrounding quotes and punctuation stripped); when both sides parse as JSON, their canonical
  forms are compared instead.
- ``rouge_l``: ROUGE-L F-measure from Google's ``rouge-score`` package, without stemming.
- ``json_valid``: 1 when the prediction parses as JSON.
- ``json_schema``: 1 when it parses and conforms to the spec's JSON Schema (``jsonschema``).
- ``label_accuracy`` and ``macro_f1``: the label is the normalised output, or the JSON field
  named by ``label_field``.
- ``output_length``: the prediction's length in words.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

_SPACE = re.compile(r"\s+")
_STRIP = string.punctuation + "\u201c\u201d\u2018\u2019 "


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", text).strip().strip(_STRIP)


def _json(text: str) -> Any:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        return orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return _MISSING


_MISSING: Any = object()


def exact_match(reference: str, prediction: str, options: Mapping[str, Any]) -> float:
    ref, pred = _json(reference), _json(prediction)
    if ref is not _MISSING and pred is not _MISSING and isinstance(ref, (dict, list)):
        dump = orjson.OPT_SORT_KEYS
        return float(orjson.dumps(ref, option=dump) == orjson.dumps(pred, option=dump))
    return float(normalise(reference) == normalise(prediction))


_SCORER: Any = None


def rouge_l(reference: str, prediction: str, options: Mapping[str, Any]) -> float:
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(_SCORER.score(reference, prediction)["rougeL"].fmeasure)


def json_valid(reference: str, prediction: str, options: Mapping[str, Any]) -> float:
    return float(_json(prediction) is not _MISSING)


def json_schema(reference: str, prediction: str, options: Mapping[str, Any]) -> float | None:
    schema = options.get("json_schema")
    if schema is None:
        return None
    value = _json(prediction)
    if value is _MISSING:
        return 0.0
    import jsonschema

    return float(jsonschema.Draft202012Validator(schema).is_valid(value))


def label_of(text: str, options: Mapping[str, Any]) -> str:
    field = options.get("label_field")
    if field:
        value = _json(text)
        if isinstance(value, dict):
            return normalise(str(value.get(field, "")))
        return ""
    return normalise(text)


def label_accuracy(reference: str, prediction: str, options: Mapping[str, Any]) -> float:
    return float(label_of(reference, options) == label_of(prediction, options))


def output_length(reference: str, prediction: str, options: Mapping[str, Any]) -> float:
    return float(len(prediction.split()))


def macro_f1(
    references: Sequence[str], predictions: Sequence[str], options: Mapping[str, Any]
) -> float:
    """Unweighted mean of per-label F1 over the labels in the references."""
    gold = [label_of(r, options) for r in references]
    pred = [label_of(p, options) for p in predictions]
    labels = sorted(set(gold))
    if not labels:
        return 0.0
    scores = []
    for label in labels:
        tp = sum(1 for g, p in zip(gold, pred, strict=True) if g == label and p == label)
        fp = sum(1 for g, p in zip(gold, pred, strict=True) if g != label and p == label)
        fn = sum(1 for g, p in zip(gold, pred, strict=True) if g == label and p != label)
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)
    return sum(scores) / len(scores)


PerExample = Callable[[str, str, Mapping[str, Any]], "float | None"]
Corpus = Callable[[Sequence[str], Sequence[str], Mapping[str, Any]], float]


@dataclass(frozen=True)
class MetricDef:
    name: str
    description: str
    higher_is_better: bool | None
    per_example: PerExample | None = None
    corpus: Corpus | None = None


METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef("exact_match", "normalised exact match", True, exact_match),
        MetricDef("rouge_l", "ROUGE-L F-measure", True, rouge_l),
        MetricDef("json_valid", "share of outputs that parse as JSON", True, json_valid),
        MetricDef(
            "json_schema", "share of outputs that conform to the JSON Schema", True, json_schema
        ),
        MetricDef("label_accuracy", "label accuracy", True, label_accuracy),
        MetricDef("macro_f1", "label macro-F1", True, corpus=macro_f1),
        MetricDef("output_length", "mean output length in words", None, output_length),
    )
}


def known_metric_names() -> list[str]:
    return list(METRICS)


@dataclass(frozen=True)
class MetricResults:
    per_metric: dict[str, float]
    per_example: list[dict[str, float | None]]


def compute_metrics(
    names: Sequence[str],
    references: Sequence[str],
    predictions: Sequence[str],
    *,
    options: Mapping[str, Any] | None = None,
) -> MetricResults:
    """Score predictions against references for each named metric."""
    opts = options or {}
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
    per_example: list[dict[str, float | None]] = [{} for _ in references]
    per_metric: dict[str, float] = {}
    for name in names:
        metric = METRICS[name]
        if metric.per_example is not None:
            values = [
                metric.per_example(r, p, opts) for r, p in zip(references, predictions, strict=True)
            ]
            for row, value in zip(per_example, values, strict=True):
                row[name] = value
            present = [v for v in values if v is not None]
            if present:
                per_metric[name] = sum(present) / len(present)
        elif metric.corpus is not None:
            per_metric[name] = metric.corpus(references, predictions, opts)
    return MetricResults(per_metric, per_example)
