"""Evaluation metrics, by stable name.

Each metric scores a model's outputs (*predictions*) against the held-out answers
(*references*). Per-example metrics score one pair at a time and are averaged over the pairs
they could score; corpus metrics (``macro_f1``) look at every pair at once. ``higher_is_better``
tells reports which way a change is a regression; ``None`` means neither way is better
(``output_length``).

========================  =====================================================================
``exact_match``           1 when the normalised texts are equal (see :func:`normalise`). When
                          both sides parse as a JSON object or array, their canonical forms
                          are compared instead: key order, whitespace and ``1`` vs ``1.0`` do
                          not matter; strings inside must match exactly.
``rouge_l``               ROUGE-L F-measure (longest common subsequence of tokens) computed by
                          Google's ``rouge-score``, **without stemming**: stemming is
                          English-only and would make scores depend on the language. Tokens are
                          those of ``rouge-score``'s default tokenizer (lowercased runs of
                          ``[a-z0-9]``) for ASCII text; other text is NFKC-normalised and
                          casefolded, letters and digits of every script make tokens (the
                          default tokenizer would drop them), and CJK, Thai, Lao, Khmer and
                          Myanmar characters, written without spaces between words, are tokens
                          of their own. A reference with no tokens is not scored.
``json_valid``            1 when the prediction parses as JSON (RFC 8259; ``NaN`` is not JSON).
``json_schema``           1 when it parses and conforms to the JSON Schema given as the
                          ``json_schema`` option (its ``$schema`` picks the draft, 2020-12 by
                          default; ``format`` is checked; remote ``$ref`` is never fetched).
``label_accuracy``        1 when the labels are equal. The label is the normalised output, or,
                          with the ``label_field`` option, that field of a JSON object output
                          (a dotted path such as ``result.category`` reaches into nested
                          objects). An example whose reference has no label is not scored; a
                          prediction with no label is wrong.
``macro_f1``              Corpus-level: the unweighted mean over the reference labels of each
                          label's F1 (2·TP / (2·TP + FP + FN)). Labels come from the
                          references only: a prediction outside that set counts against the
                          recall of the true label but does not add a label of its own.
``output_length``         The prediction's length in whitespace-separated words (a sentence in
                          a script without spaces, such as Chinese, counts as one word).
``judge``                 Pairwise: a Gemini model (``evaluation.judge``) compares two targets'
                          outputs for each prompt, in both orders; the winner scores 1, the
                          loser 0, a tie 0.5 each, and a target's value is its mean (its win
                          rate, ties counting half). It needs both outputs at once, so
                          :func:`compute_metrics` leaves it out (its per-example scores are
                          ``None`` there) and the evaluator scores it with
                          :func:`vertex_tuner.evaluation.judge.judge_pairs`.
``reward``                Reinforcement specs: the spec's own reward (``reward:``), scored by
                          Vertex's ``validateReinforcementTuningReward`` for each answer exactly
                          as the tuning job scores its samples, from -1 to 1; a target's value
                          is its mean. Its held-out prompts have references, not answers, so
                          the evaluator scores it (:func:`compute_metrics` leaves it ``None``).
========================  =====================================================================

Which part of a held-out example a metric reads is its :attr:`MetricDef.reads`: the reference
*answer* (supervised, preference and distillation sets have one), its *label* (with
``label_field``, a reinforcement prompt's label is that key of its ``references``), or
nothing of the reference.

The ``json_valid``, ``json_schema``, ``exact_match`` and ``label_field`` parsers accept one
Markdown code fence around the JSON (```` ```json ... ``` ````), which chat models often add.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any, TypeAlias

import orjson

from vertex_tuner.errors import SpecError

Score: TypeAlias = "float | None"
#: Options as the metric functions take them: parsed, or a plain mapping to parse.
OptionsLike: TypeAlias = "MetricOptions | Mapping[str, Any] | None"


class MetricError(SpecError, ValueError):
    """A metric name or metric option is wrong (unknown name, missing or invalid schema).

    A :class:`~vertex_tuner.errors.SpecError`, since metrics and their options come from the
    spec's ``evaluation`` section, and a :class:`ValueError`, so the spec's validators can
    report it against the field.
    """


# --- normalisation and parsing ----------------------------------------------------------------

_SPACE = re.compile(r"\s+")
# Stripped from both ends: quotes of every kind (after NFKC, which maps the full-width ones to
# ASCII) and sentence punctuation. Signs, brackets, %, # and the like are meaning-bearing
# ("-5", "50%", "C#") and stay.
_EDGES = (
    " \"'`"
    "\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u2039\u203a\u00ab\u00bb"
    "\u300c\u300d\u300e\u300f\u301d\u301e\u301f"
    ".,;:!?\u00bf\u00a1\u3002\u3001"
)


def normalise(text: str) -> str:
    """The form compared by ``exact_match`` and used as a label.

    Unicode NFKC (full-width and compatibility characters to their plain forms), casefold,
    whitespace runs to one space, then quotes and sentence punctuation (``. , ; : ! ?`` and
    their CJK and Spanish forms) stripped from both ends.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", text).strip(_EDGES)


_FENCE = re.compile(r"\A```[ \t]*(?:json)?[ \t]*\r?\n(.*?)\r?\n?[ \t]*```\Z", re.S | re.I)


class _NotJson:
    """The type of :data:`NOT_JSON`."""

    def __repr__(self) -> str:
        return "NOT_JSON"


#: What :func:`parse_json_output` returns for text that is not JSON (``None`` is JSON's null).
NOT_JSON: Any = _NotJson()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_output(text: str) -> Any:
    """The JSON value in a model output, or :data:`NOT_JSON`.

    Surrounding whitespace and one Markdown code fence are ignored.
    """
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced is not None:
        stripped = fenced.group(1).strip()
    try:
        return orjson.loads(stripped)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses numbers beyond a double's range, which RFC 8259 allows; the standard
    # library takes them (and is told to refuse NaN and Infinity, which RFC 8259 does not).
    try:
        return json.loads(stripped, parse_constant=_reject_constant)
    except ValueError:
        return NOT_JSON


def _canonical(value: Any) -> Any:
    """A JSON value with integral floats as ints, so that ``1`` and ``1.0`` compare equal."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def canonical_json(value: Any) -> bytes:
    """Sorted-key compact JSON of a parsed value, for comparing structured outputs."""
    return orjson.dumps(_canonical(value), option=orjson.OPT_SORT_KEYS)


# --- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricOptions:
    """Settings some metrics need, from the spec's ``evaluation`` section.

    ``json_schema`` (a JSON Schema as a dict) is required by the ``json_schema`` metric;
    ``label_field`` makes labels a field of JSON object outputs.
    """

    json_schema: Mapping[str, Any] | None = None
    label_field: str | None = None

    def __post_init__(self) -> None:
        if self.json_schema is not None:
            if not isinstance(self.json_schema, Mapping):
                raise MetricError(
                    "evaluation.json_schema must hold a JSON object (a JSON Schema), "
                    f"not {type(self.json_schema).__name__}"
                )
            _check_schema(self.json_schema)
        if self.label_field is not None and (
            not isinstance(self.label_field, str)
            or not all(part.strip() for part in self.label_field.split("."))
        ):
            raise MetricError(
                f"evaluation.label_field {self.label_field!r} is not a field name or a dotted "
                "path such as result.category"
            )

    @classmethod
    def from_mapping(cls, options: OptionsLike) -> MetricOptions:
        """Options from a plain mapping with the keys ``json_schema`` and ``label_field``."""
        if isinstance(options, MetricOptions):
            return options
        if not options:
            return cls()
        unknown = sorted(set(options) - {"json_schema", "label_field"})
        if unknown:
            raise MetricError(
                f"unknown metric option {unknown[0]!r}; the options are json_schema and label_field"
            )
        return cls(json_schema=options.get("json_schema"), label_field=options.get("label_field"))

    @cached_property
    def validator(self) -> Any:
        """A jsonschema validator for :attr:`json_schema` that never fetches remote ``$ref``."""
        if self.json_schema is None:
            raise MetricError(
                "the json_schema metric needs a JSON Schema",
                hint="set evaluation.json_schema to the path of a JSON Schema file",
            )
        from referencing import Registry

        cls = _validator_class(self.json_schema)
        # With a registry of its own (jsonschema adds the meta-schemas to it), jsonschema does
        # not fetch remote references over the network.
        return cls(self.json_schema, registry=Registry(), format_checker=cls.FORMAT_CHECKER)


def _validator_class(schema: Mapping[str, Any]) -> Any:
    from jsonschema import validators

    if "$schema" in schema and validators.validator_for(schema, default=None) is None:
        raise MetricError(
            f"evaluation.json_schema: unknown $schema {schema['$schema']!r}",
            hint="use a draft jsonschema knows, e.g. https://json-schema.org/draft/2020-12/schema",
        )
    return validators.validator_for(schema, default=validators.Draft202012Validator)


def _check_schema(schema: Mapping[str, Any]) -> None:
    from jsonschema import exceptions

    try:
        _validator_class(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
        raise MetricError(
            f"evaluation.json_schema is not a valid JSON Schema: {exc.message} (at {where})"
        ) from None


# --- the metrics --------------------------------------------------------------------------------


def exact_match(reference: str, prediction: str, options: OptionsLike = None) -> Score:
    ref = parse_json_output(reference)
    if isinstance(ref, (dict, list)):
        pred = parse_json_output(prediction)
        if isinstance(pred, (dict, list)):
            return float(canonical_json(ref) == canonical_json(pred))
    return float(normalise(reference) == normalise(prediction))


# Scripts written without spaces between words: each character is a token.
_CHARACTER_TOKENS = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x3FFFF),  # CJK Extensions B and later
)
_ASCII_TOKEN = re.compile(r"[a-z0-9]+")


def _character_token(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CHARACTER_TOKENS)


def rouge_tokens(text: str) -> list[str]:
    """The tokens ``rouge_l`` compares (see the module docstring)."""
    if text.isascii():
        # Exactly rouge-score's default tokenizer without a stemmer.
        return _ASCII_TOKEN.findall(text.lower())
    tokens: list[str] = []
    current: list[str] = []
    for char in unicodedata.normalize("NFKC", text).casefold():
        kind = unicodedata.category(char)[0]
        if _character_token(char):
            if current:
                tokens.append("".join(current))
                current = []
            tokens.append(char)
        elif kind in "LN" or (kind == "M" and current):
            current.append(char)
        elif current:
            tokens.append("".join(current))
            current = []
    if current:
        tokens.append("".join(current))
    return tokens


class _Tokenizer:
    """The ``tokenize`` interface rouge-score's scorer calls."""

    def tokenize(self, text: str) -> list[str]:
        return rouge_tokens(text)


@cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_Tokenizer())


def rouge_l(reference: str, prediction: str, options: OptionsLike = None) -> Score:
    if not rouge_tokens(reference):
        return None
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def json_valid(reference: str, prediction: str, options: OptionsLike = None) -> Score:
    return float(parse_json_output(prediction) is not NOT_JSON)


def json_schema(reference: str, prediction: str, options: OptionsLike = None) -> Score:
    validator = MetricOptions.from_mapping(options).validator
    value = parse_json_output(prediction)
    if value is NOT_JSON:
        return 0.0
    from referencing.exceptions import Unresolvable

    try:
        return float(validator.is_valid(value))
    except Unresolvable as exc:
        raise MetricError(
            f"evaluation.json_schema refers to {exc}, which is not in the schema",
            hint="inline the referenced schema under $defs; remote references are not fetched",
        ) from None


def label_of(text: str, options: OptionsLike = None) -> str | None:
    """The label of a reference or prediction; ``None`` when it has none."""
    field_path = MetricOptions.from_mapping(options).label_field
    if not field_path:
        label = normalise(text)
        return label or None
    value = parse_json_output(text)
    for part in field_path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if value is None:
        return None
    if isinstance(value, str):
        return normalise(value) or None
    return canonical_json(value).decode()


def label_accuracy(reference: str, prediction: str, options: OptionsLike = None) -> Score:
    parsed = MetricOptions.from_mapping(options)
    gold = label_of(reference, parsed)
    if gold is None:
        return None
    return float(label_of(prediction, parsed) == gold)


def word_count(reference: str, prediction: str, options: OptionsLike = None) -> Score:
    return float(len(prediction.split()))


def mean(scores: Sequence[Score]) -> float | None:
    """The mean of the scores that are not ``None``; ``None`` when there are none."""
    present = [s for s in scores if s is not None]
    return math.fsum(present) / len(present) if present else None


def macro_f1(
    references: Sequence[str], predictions: Sequence[str], options: OptionsLike = None
) -> float | None:
    """Unweighted mean of per-label F1 over the labels in the references."""
    parsed = MetricOptions.from_mapping(options)
    gold: list[str] = []
    pred: list[str | None] = []
    for reference, prediction in zip(references, predictions, strict=True):
        label = label_of(reference, parsed)
        if label is not None:
            gold.append(label)
            pred.append(label_of(prediction, parsed))
    if not gold:
        return None
    tp: Counter[str] = Counter()
    fp: Counter[str | None] = Counter()
    fn: Counter[str] = Counter()
    for g, p in zip(gold, pred, strict=True):
        if g == p:
            tp[g] += 1
        else:
            fn[g] += 1
            fp[p] += 1
    # Never 0/0: every label comes from gold, so TP + FN > 0.
    scores = [2 * tp[label] / (2 * tp[label] + fp[label] + fn[label]) for label in set(gold)]
    return math.fsum(scores) / len(scores)


# --- the registry -------------------------------------------------------------------------------

PerExample: TypeAlias = Callable[[str, str, MetricOptions], Score]
Aggregate: TypeAlias = Callable[
    [Sequence[str], Sequence[str], Sequence[Score], MetricOptions], "float | None"
]


def _mean_of_scores(
    references: Sequence[str],
    predictions: Sequence[str],
    scores: Sequence[Score],
    options: MetricOptions,
) -> float | None:
    return mean(scores)


def _corpus(
    function: Callable[[Sequence[str], Sequence[str], MetricOptions], float | None],
) -> Aggregate:
    def aggregate(
        references: Sequence[str],
        predictions: Sequence[str],
        scores: Sequence[Score],
        options: MetricOptions,
    ) -> float | None:
        return function(references, predictions, options)

    return aggregate


@dataclass(frozen=True)
class MetricDef:
    """A metric: its stable name, what it means, and how to compute it."""

    name: str
    description: str
    #: True or False: which way is better, so reports can tell a regression; None: neither.
    higher_is_better: bool | None
    #: What one value counts, for display: "share" (0 to 1) or "words".
    unit: str
    #: Scores one (reference, prediction) pair; None for corpus-only metrics.
    per_example: PerExample | None
    #: The metric over a whole set: (references, predictions, per-example scores, options).
    aggregate: Aggregate = field(default=_mean_of_scores)
    #: The option this metric cannot do without.
    requires: str | None = None
    #: Compares two targets' outputs side by side (the LLM judge): not computable from one
    #: (reference, prediction) pair, so :func:`compute_metrics` leaves it to the evaluator.
    pairwise: bool = False
    #: Scored by the spec's reinforcement reward, through Vertex (the evaluator does it).
    reward: bool = False
    #: What of the reference it reads: "answer" (a written answer), "label", or None.
    reads: str | None = None

    def score(
        self,
        reference: str,
        prediction: str,
        options: OptionsLike = None,
    ) -> Score:
        """Score one pair; ``None`` when the pair cannot be scored (e.g. no reference label)."""
        if self.pairwise:
            raise MetricError(
                f"{self.name} compares two models' outputs side by side; it has no score for "
                "one (reference, prediction) pair"
            )
        if self.reward:
            raise MetricError(
                f"{self.name} is scored by the spec's reward through Vertex, not by a local "
                "function"
            )
        if self.per_example is None:
            raise MetricError(f"{self.name} is computed over a whole set, not per example")
        return self.per_example(reference, prediction, MetricOptions.from_mapping(options))


METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef(
            "exact_match", "normalised exact match", True, "share", exact_match, reads="answer"
        ),
        MetricDef(
            "rouge_l", "ROUGE-L F-measure (no stemming)", True, "share", rouge_l, reads="answer"
        ),
        MetricDef("json_valid", "outputs that parse as JSON", True, "share", json_valid),
        MetricDef(
            "json_schema",
            "outputs that conform to the JSON Schema",
            True,
            "share",
            json_schema,
            requires="json_schema",
        ),
        MetricDef("label_accuracy", "label accuracy", True, "share", label_accuracy, reads="label"),
        MetricDef(
            "macro_f1", "label macro-F1", True, "share", None, _corpus(macro_f1), reads="label"
        ),
        MetricDef("output_length", "mean output length in words", None, "words", word_count),
        MetricDef(
            "judge",
            "pairwise LLM judge: win rate, ties counting half",
            True,
            "share",
            None,
            pairwise=True,
            reads="answer",
        ),
        MetricDef(
            "reward",
            "mean reward of the spec's reward, scored by Vertex (-1 to 1)",
            True,
            "reward",
            None,
            reward=True,
        ),
    )
}

#: The metrics that compare two targets' outputs (scored by the evaluator, not compute_metrics).
PAIRWISE: frozenset[str] = frozenset(name for name, m in METRICS.items() if m.pairwise)
#: The metrics scored by a reinforcement spec's reward (by the evaluator, through Vertex).
REWARD: frozenset[str] = frozenset(name for name, m in METRICS.items() if m.reward)


def pairwise_metrics(names: Iterable[str]) -> list[str]:
    """The pairwise metrics among ``names``, in their order (the evaluator must run these)."""
    return [name for name in dict.fromkeys(names) if name in PAIRWISE]


def known_metric_names() -> list[str]:
    """Every metric name, in the registry's order."""
    return list(METRICS)


def resolve_metrics(names: Iterable[str]) -> list[MetricDef]:
    """The metrics with these names (duplicates dropped), or a MetricError naming the known."""
    found: dict[str, MetricDef] = {}
    for name in names:
        metric = METRICS.get(name)
        if metric is None:
            close = difflib.get_close_matches(str(name), METRICS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise MetricError(f"unknown metric {name!r}; {hint}known metrics: {', '.join(METRICS)}")
        found[name] = metric
    return list(found.values())


def check_metric_options(names: Collection[str], options: OptionsLike = None) -> MetricOptions:
    """Check that the named metrics exist and have the options they need; the parsed options."""
    parsed = MetricOptions.from_mapping(options)
    for metric in resolve_metrics(names):
        if metric.requires is not None and getattr(parsed, metric.requires) is None:
            raise MetricError(
                f"the {metric.name} metric needs evaluation.{metric.requires}",
                hint=f"set evaluation.{metric.requires} or remove {metric.name} from "
                "evaluation.metrics",
            )
    return parsed


@dataclass(frozen=True)
class MetricResults:
    """Scores of one set of predictions."""

    #: The metric over the whole set; a metric that could score nothing is absent.
    per_metric: dict[str, float]
    #: Per example, in order: each per-example metric's score (None: not scored).
    per_example: list[dict[str, Score]]


def compute_metrics(
    names: Sequence[str],
    references: Sequence[str],
    predictions: Sequence[str],
    *,
    options: OptionsLike = None,
) -> MetricResults:
    """Score predictions against references for each named metric.

    A pairwise metric (:data:`PAIRWISE`) or a reward (:data:`REWARD`) is not computed here: each
    row gets ``None`` for it and :attr:`MetricResults.per_metric` lacks it until the evaluator
    fills both in.
    """
    if len(references) != len(predictions):
        raise ValueError(
            f"{len(references)} references but {len(predictions)} predictions; they pair up"
        )
    parsed = check_metric_options(names, options)
    per_example: list[dict[str, Score]] = [{} for _ in references]
    per_metric: dict[str, float] = {}
    for metric in resolve_metrics(names):
        if metric.pairwise or metric.reward:
            # Scored by the evaluator (from two targets' outputs, or by the spec's reward
            # through Vertex); the rows keep its place.
            for row in per_example:
                row[metric.name] = None
            continue
        scores: list[Score] = []
        if metric.per_example is not None:
            score = metric.per_example
            scores = [score(r, p, parsed) for r, p in zip(references, predictions, strict=True)]
            for row, value in zip(per_example, scores, strict=True):
                row[metric.name] = value
        total = metric.aggregate(references, predictions, scores, parsed)
        if total is not None:
            per_metric[metric.name] = total
    return MetricResults(per_metric, per_example)
