"""A code reward for ticket triage: the answer must be JSON naming the reference priority.

Vertex calls evaluate(example, response) with the dataset line (camelCase ProtoJSON) and the
sampled answer (a Content). The reward is 1 for the right priority, 0.25 for a neighbouring
one (urgent/high, high/normal, normal/low), -1 for an answer that is not JSON with a priority.
"""

import json
import re

ORDER = ["low", "normal", "high", "urgent"]


def evaluate(example, response):
    text = "".join(part.get("text", "") for part in response.get("parts", []))
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match is None:
        return -1.0
    try:
        answer = json.loads(match.group(0))
    except ValueError:
        return -1.0
    given = str(answer.get("priority", "")).lower() if isinstance(answer, dict) else ""
    wanted = example["references"]["priority"]
    if given == wanted:
        return 1.0
    if given in ORDER and abs(ORDER.index(given) - ORDER.index(wanted)) == 1:
        return 0.25
    return -1.0
