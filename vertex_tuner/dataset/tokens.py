"""A fast, local estimate of how many tokens Vertex will count for an example.

Gemini's tokenizer is not available offline, so this is an estimate, and every figure built on
it says so. It follows the method of Google's token-count notebook for tuning: each ``model`` turn
is one training record whose tokens are the system instruction, the whole history before it and
the turn itself, plus a few tokens of padding per record. Text is counted at one token per
:data:`CHARS_PER_TOKEN` characters (rounded up), which is close to Gemini's SentencePiece
tokenizer on English prose and errs high on code and non-Latin scripts. Images count
:data:`TOKENS_PER_IMAGE` each (Gemini's fixed cost for an image up to 384 px on a side).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vertex_tuner.dataset.gemini import MEDIA_PART_KEYS, system_of

CHARS_PER_TOKEN = 4
TOKENS_PER_IMAGE = 258
TOKENS_PER_MEDIA_PART = 258
PADDING_PER_RECORD = 8


def text_tokens(text: str) -> int:
    """Estimated tokens for a piece of text."""
    return -(-len(text) // CHARS_PER_TOKEN)


def _part_tokens(part: Any) -> int:
    if not isinstance(part, dict):
        return 0
    text = part.get("text")
    if isinstance(text, str):
        return text_tokens(text)
    if not MEDIA_PART_KEYS.isdisjoint(part):
        return TOKENS_PER_MEDIA_PART
    # functionCall / functionResponse and anything else: count their JSON size.
    return text_tokens(repr(part))


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
    for content in contents:
        n = content_tokens(content)
        if isinstance(content, dict) and content.get("role") == "model":
            last_in, last_out = system + seen, n
            billable += system + seen + n + PADDING_PER_RECORD
        seen += n
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
