"""How deep a dataset line's JSON may nest: as deep as orjson can write back, no deeper.

orjson parses objects and arrays up to 1,024 levels inside each other but writes only 254, and
every accepted example is written again (its prompt and answer keys, the converted file). A line
that parses but cannot be written would crash the validator halfway through a file, so a line
deeper than :data:`MAX_DEPTH` is a finding instead, found before anything is written.
"""

from __future__ import annotations

from typing import Any

#: Objects and arrays inside each other that orjson writes (the outermost counts as one).
MAX_DEPTH = 254


def nests_deeper(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels deep in ``value``.

    Walked level by level, without recursion: Python's own recursion limit (1,000) is no deeper
    than what orjson parses, so a recursive walk would fail on the very lines it is for.
    """
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        inner = []
        for container in level:
            for child in container.values() if isinstance(container, dict) else container:
                if isinstance(child, (dict, list)):
                    inner.append(child)
        level = inner
    return False


#: What a line deeper than :data:`MAX_DEPTH` is told, with what to do about it.
TOO_DEEP_MESSAGE = (
    f"the JSON nests objects and arrays deeper than {MAX_DEPTH} levels, more than "
    "vertex-tuner can write back; flatten the nested value (or hold it as a JSON string)"
)
