"""A fast, local estimate of how many tokens Vertex will count for an example.

Gemini's tokenizer is not available offline, so this is an estimate, and every figure built on
it says so. It follows the method of Google's token-count notebook for tuning: each ``model`` turn
is one training record whose tokens are the system instruction, the whole history before it and
the turn itself, plus a few tokens of padding per record. Text is counted at one token per
:data:`CHARS_PER_TOKEN` characters (rounded up), which is close to Gemini's SentencePiece
tokenizer on English prose and errs high on code and non-Latin scripts. Images count
:data:`TOKENS_PER_IMAGE` each (Gemini's fixed cost for an image up to 384 px on a side).

Where the estimate is not good enough (a single example near a model's limit, where it can be
off by a third), a :class:`TokenCounter` counts exactly: Vertex's ``countTokens``, or the
sandbox's stand-in. :func:`counted_request` says what is counted for an example, and
:func:`calibrate` turns a sample of exact counts into a ratio, with its uncertainty, to scale the
dataset's estimate by.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from vertex_tuner.dataset.gemini import MEDIA_PART_KEYS, system_of

CHARS_PER_TOKEN = 4
TOKENS_PER_IMAGE = 258
TOKENS_PER_MEDIA_PART = 258
PADDING_PER_RECORD = 8


def text_tokens(text: str | bytes) -> int:
    """Estimated tokens for a piece of text (or of JSON, by its size in bytes)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def _part_tokens(part: Any) -> int:
    if not isinstance(part, dict):
        return 0
    text = part.get("text")
    if isinstance(text, str):
        return text_tokens(text)
    if not MEDIA_PART_KEYS.isdisjoint(part):
        return TOKENS_PER_MEDIA_PART
    # functionCall / functionResponse and anything else: count their JSON's size in bytes.
    try:
        return text_tokens(orjson.dumps(part))
    except orjson.JSONEncodeError:  # nested deeper than JSON is written: its printed size
        try:
            return text_tokens(repr(part))
        except RecursionError:
            return 0


def content_tokens(content: Any) -> int:
    """Estimated tokens for one Gemini ``Content`` object (``{"role", "parts"}``)."""
    if not isinstance(content, dict):
        return 0
    parts = content.get("parts")
    if not isinstance(parts, list):
        return 0
    return sum(_part_tokens(p) for p in parts)


def _system_tokens(example: Mapping[str, Any]) -> int:
    system = system_of(example)
    return content_tokens(system) if isinstance(system, dict) else 0


def measure(example: Mapping[str, Any]) -> tuple[int, int, int]:
    """(input, output, billable) tokens of a supervised example, in one pass.

    Input and output are those of the longest training record (the last model turn, which sees
    the whole history): the per-example limit applies to them. Billable counts every model turn
    as a record whose input is the system instruction and all turns before it, once (one epoch).
    """
    contents = example.get("contents")
    if not isinstance(contents, list):
        return 0, 0, 0
    system = _system_tokens(example)
    seen = 0
    last_in = system
    last_out = 0
    billable = 0
    answered = False
    for content in contents:
        n = content_tokens(content)
        if isinstance(content, dict) and content.get("role") == "model":
            last_in, last_out = system + seen, n
            billable += system + seen + n + PADDING_PER_RECORD
            answered = True
        seen += n
    if not answered:
        # A prompt with no answer yet (distillation, reinforcement): all of it is input.
        last_in = system + seen
    return last_in, last_out, billable


def example_tokens(example: Mapping[str, Any]) -> tuple[int, int]:
    """(input, output) tokens of the longest training record of a supervised example."""
    n_in, n_out, _ = measure(example)
    return n_in, n_out


def billable_tokens(example: Mapping[str, Any]) -> int:
    """Estimated billable tokens of one supervised example, once through (one epoch)."""
    return measure(example)[2]


def preference_tokens(example: Mapping[str, Any]) -> tuple[int, int]:
    """(input, longest completion) tokens of a preference example."""
    contents = example.get("contents")
    prompt = _system_tokens(example)
    if isinstance(contents, list):
        prompt += sum(content_tokens(c) for c in contents)
    completions = example.get("completions")
    longest = 0
    if isinstance(completions, list):
        for c in completions:
            if isinstance(c, dict):
                longest = max(longest, content_tokens(c.get("completion")))
    return prompt, longest


class TokenCounter(Protocol):
    """Counts the tokens of a request exactly, as a model's tokenizer does.

    The validator depends only on this; :class:`vertex_tuner.backends.interface.TokenCounter`
    is the backends' side of it (Vertex's ``countTokens`` through google-genai, and a fake).
    """

    @property
    def source(self) -> str:
        """Who counts, for messages: ``Vertex``, ``the sandbox emulator``."""
        ...

    def count(
        self,
        model: str,
        contents: Sequence[Mapping[str, Any]],
        *,
        system_instruction: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Total tokens of ``contents`` (Gemini ``Content`` JSON) with a system instruction and
        tools, for base model ``model``."""
        ...


@dataclass(frozen=True)
class CountedRequest:
    """What is counted exactly for one example, and the local figures it is compared with."""

    contents: Sequence[Mapping[str, Any]]
    system_instruction: Mapping[str, Any] | None
    tools: Sequence[Mapping[str, Any]] | None
    #: The estimate of the same request (the figure the per-example limit was checked on).
    estimate: int
    #: The example's estimated billable tokens, one epoch: its weight in a calibration.
    billable: int


def counted_request(example: Mapping[str, Any], method: str) -> CountedRequest:
    """The request whose tokens the per-example limit applies to.

    Supervised: the longest training record, the system instruction and every turn up to the
    last model turn. Preference: the prompt and its longest completion (as a model turn).
    Distillation: the prompt.
    """
    contents = example.get("contents")
    turns = [c for c in contents if isinstance(c, dict)] if isinstance(contents, list) else []
    system = system_of(example)
    system = system if isinstance(system, dict) else None
    tools = example.get("tools")
    tools = [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else None
    if method == "preference":
        longest: Mapping[str, Any] | None = None
        completions = example.get("completions")
        for c in completions if isinstance(completions, list) else ():
            completion = c.get("completion") if isinstance(c, dict) else None
            if isinstance(completion, dict) and (
                longest is None or content_tokens(completion) > content_tokens(longest)
            ):
                longest = completion
        prompt, longest_tokens = preference_tokens(example)
        counted = turns + ([{**longest, "role": "model"}] if longest is not None else [])
        return CountedRequest(
            counted, system, tools, prompt + longest_tokens, prompt + longest_tokens
        )
    n_in, n_out, billable = measure(example)
    last = max((i for i, c in enumerate(turns) if c.get("role") == "model"), default=None)
    if last is None:
        estimate = _system_tokens(example) + sum(content_tokens(c) for c in turns)
        return CountedRequest(turns, system, tools, estimate, billable)
    return CountedRequest(turns[: last + 1], system, tools, n_in + n_out, billable)


#: Resamples behind a calibration's interval.
BOOTSTRAP_RESAMPLES = 2000
#: The interval's coverage: the central 95% of the resampled ratios.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Calibration:
    """How many exact tokens there are per estimated token, from a sample of examples.

    ``ratio`` is the billable-weighted mean of the sample's exact/estimated ratios; ``low`` and
    ``high`` bound its :data:`CONFIDENCE` interval (a percentile bootstrap over the sample).
    """

    ratio: float
    low: float
    high: float
    examples: int
    seed: int

    def scale(self, tokens: int) -> tuple[int, int, int]:
        """(central, low, high) exact tokens for an estimate of ``tokens``."""
        return (
            round(tokens * self.ratio),
            math.floor(tokens * self.low),
            math.ceil(tokens * self.high),
        )


def calibrate(
    samples: Sequence[tuple[int, int, int]], *, seed: int, resamples: int = BOOTSTRAP_RESAMPLES
) -> Calibration | None:
    """The calibration from (estimate, exact count, billable weight) per sampled example.

    Examples with no estimate or no weight say nothing about billing and are left out; None
    when none is left. The same samples and seed give the same interval.
    """
    kept = [(e, x, w) for e, x, w in samples if e > 0 and w > 0]
    if not kept:
        return None
    import numpy as np

    ratios = np.array([x / e for e, x, _ in kept], dtype=float)
    weights = np.array([w for _, _, w in kept], dtype=float)
    ratio = float((ratios * weights).sum() / weights.sum())
    if len(kept) == 1:
        return Calibration(ratio, ratio, ratio, 1, seed)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(kept), size=(resamples, len(kept)))
    picked = weights[picks]
    resampled = (ratios[picks] * picked).sum(axis=1) / picked.sum(axis=1)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail])
    return Calibration(ratio, min(ratio, float(low)), max(ratio, float(high)), len(kept), seed)
