"""What makes two examples "the same prompt" or "the same answer": byte keys and their digests.

A prompt is the system instruction, the tools and every turn before the answer (supervised: the
last model turn; preference and distillation: all of ``contents``). Its key is bytes that are
equal exactly when the prompts are. Text-only examples, nearly all of them, get a flat key that
the fast path (:mod:`vertex_tuner.dataset.fastpath`) builds straight from the input without
converting it; anything else gets a structured key. The two shapes never collide: one is a JSON
array, the other a JSON object.

Flat key: ``[n, *system texts, role, n, *texts, role, n, *texts, ...]`` where each ``n`` counts
the texts that follow, so no choice of text can imitate another example's structure.

A prompt is remembered as 8 bytes of its key's SHA-1 (for the duplicate, conflict and leakage
checks, and the deterministic split: read big-endian, the value is uniform). An answer key is
kept only for the first few distinct answers (to tell a classification), and read again from the
file for an example whose prompt repeats.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from vertex_tuner.dataset.gemini import system_of

PROMPT_DIGEST_SIZE = 8


def prompt_digest(key: bytes) -> bytes:
    """8 bytes that stand for a prompt key (big-endian, uniform: the split compares them)."""
    return hashlib.sha1(key).digest()[:PROMPT_DIGEST_SIZE]


def _texts(parts: Any) -> list[str] | None:
    """The texts of parts that are all exactly ``{"text": str}``, else None."""
    if type(parts) is not list:
        return None
    out = []
    for part in parts:
        if type(part) is not dict or len(part) != 1:
            return None
        text = part.get("text")
        if type(text) is not str:
            return None
        out.append(text)
    return out


def _flat(system: Any, contents: list[Any]) -> list[Any] | None:
    if system is None:
        key: list[Any] = [0]
    else:
        texts = _texts(system.get("parts")) if type(system) is dict else None
        if texts is None:
            return None
        key = [len(texts), *texts]
    for content in contents:
        if type(content) is not dict:
            return None
        texts = _texts(content.get("parts"))
        role = content.get("role")
        if texts is None or type(role) is not str:
            return None
        key += (role, len(texts), *texts)
    return key


def _prompt_contents(example: Mapping[str, Any], method: str) -> Any:
    contents = example.get("contents")
    if type(contents) is list and method == "supervised":
        last = len(contents)
        for i in range(len(contents) - 1, -1, -1):
            content = contents[i]
            if type(content) is dict and content.get("role") == "model":
                last = i
                break
        contents = contents[:last]
    return contents


def prompt_key(example: Mapping[str, Any], method: str) -> bytes:
    """The key of a converted example's prompt (see the module docstring)."""
    contents = _prompt_contents(example, method)
    system = system_of(example)
    tools = example.get("tools")
    if tools is None and type(contents) is list:
        flat = _flat(system, contents)
        if flat is not None:
            return orjson.dumps(flat)
    return orjson.dumps(
        {"system": system, "tools": tools, "contents": contents}, option=orjson.OPT_SORT_KEYS
    )


def answer_key(example: Mapping[str, Any], method: str) -> bytes:
    """The key of a converted example's answer: its last turn, or its completions."""
    if method == "preference":
        return orjson.dumps(example.get("completions"), option=orjson.OPT_SORT_KEYS)
    if method == "distillation":
        return b""  # prompts only: the teacher writes the answers
    if method == "reinforcement":
        # Prompts and what the reward checks them against: the references are the "answer".
        return orjson.dumps(example.get("references"), option=orjson.OPT_SORT_KEYS)
    contents = example.get("contents")
    if type(contents) is not list or not contents:
        return b""
    last = contents[-1]
    texts = _texts(last.get("parts")) if type(last) is dict else None
    if texts is not None:
        return orjson.dumps(texts)
    return orjson.dumps(last, option=orjson.OPT_SORT_KEYS)
