"""Every finding code the validator can emit: a stable contract, one line each.

Scripts match on these codes (``--json``), so a code is never renamed or reused for another
meaning. The README's "Finding codes" lists the same table; the tests hold the two, and the
codes used in the source, to each other.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["error", "truncation", "warning"]

#: code -> (kind, what the finding means). Errors fail validation and submit; truncations are
#: errors too, but Vertex would still run the job and truncate or drop what is over; warnings
#: never fail it.
CODES: dict[str, tuple[Kind, str]] = {
    # The line or the file cannot be read as examples.
    "bad-json": ("error", "the line is not valid JSON"),
    "json-too-deep": (
        "error",
        "objects and arrays nested more than 254 levels deep in the example (orjson writes no "
        "deeper)",
    ),
    "line-too-long": (
        "error",
        "a line over 64 MiB (no example comes near it): skipped unread; in a CSV file, the rest "
        "of the file too",
    ),
    "not-utf8": ("error", "the line (or CSV row) is not valid UTF-8"),
    "not-an-object": ("error", "the line is JSON but not an object"),
    "unknown-format": (
        "error",
        "`auto` cannot tell the format (no `contents`, `messages`, `input_text`/`output_text` "
        "or `prompt`/`completion`) and no earlier line settled it",
    ),
    "mixed-formats": ("error", "the line is in another format than the file's first line"),
    "bad-csv": (
        "error",
        "a CSV row has more or fewer fields than the header, or broken quoting",
    ),
    "missing-column": (
        "error",
        "a CSV column named in `dataset.columns` (or any prompt/response column) is missing",
    ),
    "empty-file": ("error", "the file has no examples at all"),
    # Conversion to Gemini examples.
    "bad-shape": (
        "error",
        "a required list or object has the wrong type (`messages`, `contents`, a message)",
    ),
    "not-text": ("error", "a chat message's `content` or a text-pair value is not a string"),
    "misplaced-system": ("error", "a `system` message that is not the first message"),
    "bad-role": (
        "error",
        "a role other than user/model (system/user/assistant in chat form), or none",
    ),
    # Vertex's rules for one example.
    "missing-contents": ("error", "`contents` is missing, empty or not a list"),
    "consecutive-turns": ("error", "two user (or two model) turns in a row"),
    "empty-parts": ("error", "a turn with no parts"),
    "empty-text": ("error", "empty or whitespace-only text"),
    "bad-part": (
        "error",
        "a part that is not exactly one of text, fileData, functionCall, functionResponse; "
        "inline data; a functionCall outside a model turn or a functionResponse in one; "
        "a non-text part in a preference prompt",
    ),
    "bad-system": ("error", '`systemInstruction` is not `{"parts": [{"text": …}]}`'),
    "bad-file-data": ("error", "`fileData` is not `{mimeType, fileUri}`"),
    "bad-file-uri": ("error", "`fileUri` is not a `gs://` object or an http(s) URL"),
    "bad-mime-type": ("error", "a MIME type Gemini tuning does not take"),
    "must-end-on-model": ("error", "a supervised example must end on the model's answer"),
    "must-end-on-user": (
        "error",
        "a preference, distillation or reinforcement prompt must end on a user turn",
    ),
    "bad-references": (
        "error",
        "a reinforcement example's `references` is not an object of strings",
    ),
    "missing-reference": (
        "error",
        "the reward reads `{{references.KEY}}` and this example's references have no KEY",
    ),
    "media-step-limit": (
        "error",
        "a reinforcement prompt has `fileData`, and `batch_size × samples_per_prompt` is over "
        "1,024, Vertex's limit with media",
    ),
    "bad-completions": (
        "error",
        "preference `completions` are not `[{score, completion: model turn}]`",
    ),
    "bad-scores": (
        "error",
        "a preference example needs exactly one completion scored 1 and one scored 0",
    ),
    # The file as a whole.
    "file-too-large": ("error", "the training file is over 1 GB"),
    "too-many-examples": ("error", "more training examples than the base model takes"),
    "too-many-validation-examples": (
        "error",
        "over 5,000 validation examples, or over 1,000 and more than 30% of training",
    ),
    "holdout-leakage": ("error", "a held-out prompt is also in the training data"),
    # Vertex takes these examples but truncates them or drops what is over.
    "too-many-tokens": (
        "truncation",
        "over the model's per-example token limit (estimated, or counted by Vertex when it is "
        "near); Vertex truncates it",
    ),
    "too-many-images": ("truncation", "over 30 images in one example; Vertex drops the rest"),
    # Quality: the job runs, but the model may learn the wrong thing.
    "duplicate": ("warning", "the same example as an earlier line"),
    "conflicting-answers": ("warning", "the same prompt as an earlier line, another answer"),
    "validation-leakage": ("warning", "a validation prompt is also in the training data"),
    "few-examples": ("warning", "fewer than 100 training examples"),
    "few-distinct-outputs": (
        "warning",
        "20 or fewer distinct answers: a classification task? check the balance",
    ),
    "skewed-labels": ("warning", "one answer is 60% or more of a classification's examples"),
    "length-outlier": ("warning", "an example more than 8× the median length, in tokens"),
    "over-budget": (
        "warning",
        "the cost estimate is over `budget.max_cost_usd`; submit will refuse it",
    ),
    "base-retiring": (
        "warning",
        "the spec's base model retires within 90 days (or is announced for discontinuation)",
    ),
}
