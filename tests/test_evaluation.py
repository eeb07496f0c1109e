"""Metrics against hand-computed values, the gate language, reports, and the evaluator."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from records_support import run_record

from vertex_tuner.backends.fake import FakeGenerator, FakeStorage
from vertex_tuner.errors import SpecError
from vertex_tuner.evaluation.gate import GateSyntaxError, parse_gate
from vertex_tuner.evaluation.metrics import compute_metrics, macro_f1, normalise
from vertex_tuner.evaluation.report import render_html, render_markdown, write_report
from vertex_tuner.evaluation.results import EvaluationResult
from vertex_tuner.evaluation.runner import Evaluator
from vertex_tuner.records import DatasetRef, RunRecord
from vertex_tuner.runstore import LocalBlobStore, RunStore
from vertex_tuner.spec import EvaluationSpec, load_spec

# --- metrics -------------------------------------------------------------------------------


def test_exact_match_normalises() -> None:
    assert normalise("  “Hello,   World!” ") == "hello, world"
    result = compute_metrics(
        ["exact_match"],
        ["Billing.", '{"a": 1, "b": 2}', "yes"],
        ["billing", '{"b": 2, "a": 1}', "no"],
    )
    assert result.per_metric["exact_match"] == pytest.approx(2 / 3)
    assert [r["exact_match"] for r in result.per_example] == [1.0, 1.0, 0.0]


def test_rouge_l_by_hand() -> None:
    # reference: the cat sat on the mat (6); prediction: the cat lay on the mat (6)
    # LCS = the cat on the mat = 5 → P = R = 5/6 → F = 5/6.
    result = compute_metrics(["rouge_l"], ["the cat sat on the mat"], ["the cat lay on the mat"])
    assert result.per_metric["rouge_l"] == pytest.approx(5 / 6)
    # reference 4 tokens, prediction 2 tokens sharing 2 in order: P = 1, R = 1/2, F = 2/3.
    result = compute_metrics(["rouge_l"], ["ships on thursday morning"], ["thursday morning"])
    assert result.per_metric["rouge_l"] == pytest.approx(2 / 3)


def test_json_validity_and_schema() -> None:
    schema = {
        "type": "object",
        "required": ["category"],
        "properties": {"category": {"enum": ["billing", "shipping"]}},
    }
    preds = [
        '{"category": "billing"}',
        '{"category": "refunds"}',
        "not json",
        '```json\n{"category": "shipping"}\n```',
    ]
    result = compute_metrics(
        ["json_valid", "json_schema"], ["{}"] * 4, preds, options={"json_schema": schema}
    )
    assert [r["json_valid"] for r in result.per_example] == [1.0, 1.0, 0.0, 1.0]
    assert [r["json_schema"] for r in result.per_example] == [1.0, 0.0, 0.0, 1.0]


def test_label_accuracy_and_macro_f1_on_skewed_labels() -> None:
    gold = ["a"] * 8 + ["b", "c"]
    pred = ["a"] * 8 + ["a", "c"]
    # a: tp 8, fp 1, fn 0 → F1 16/17; b: tp 0 → 0; c: tp 1 → 1. Macro = (16/17 + 0 + 1) / 3.
    assert macro_f1(gold, pred, {}) == pytest.approx((16 / 17 + 0 + 1) / 3)
    result = compute_metrics(["label_accuracy", "macro_f1"], gold, pred)
    assert result.per_metric["label_accuracy"] == pytest.approx(0.9)


def test_labels_from_a_json_field() -> None:
    gold = ['{"category": "billing", "x": 1}', '{"category": "shipping"}']
    pred = ['{"category": "Billing", "x": 2}', "garbage"]
    result = compute_metrics(["label_accuracy"], gold, pred, options={"label_field": "category"})
    assert result.per_metric["label_accuracy"] == 0.5


def test_output_length_and_unknown_metric() -> None:
    assert compute_metrics(["output_length"], ["x", "y"], ["one two", "three"]).per_metric == {
        "output_length": 1.5
    }
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(["bleu"], ["a"], ["a"])


# --- the gate ------------------------------------------------------------------------------


VALUES = {
    "tuned": {"rouge_l": 0.5, "exact_match": 0.3},
    "base": {"rouge_l": 0.4, "exact_match": 0.3},
}


@pytest.mark.parametrize(
    ("text", "passed"),
    [
        ("tuned.rouge_l >= base.rouge_l + 0.05", True),
        ("tuned.rouge_l >= base.rouge_l + 0.2", False),
        ("tuned.rouge_l > base.rouge_l and tuned.exact_match > base.exact_match", False),
        ("tuned.rouge_l > base.rouge_l or tuned.exact_match > base.exact_match", True),
        ("not (tuned.rouge_l < base.rouge_l)", True),
        ("tuned.rouge_l - base.rouge_l >= 0.09 * 1", True),
        ("(tuned.rouge_l + base.rouge_l) / 2 == 0.45", True),
        ("-tuned.rouge_l < 0", True),
        ("1 + 2 * 3 == 7", True),
    ],
)
def test_gate_semantics(text: str, passed: bool) -> None:
    assert parse_gate(text).evaluate(VALUES).passed is passed


def test_missing_production_is_skipped_and_said() -> None:
    verdict = parse_gate("tuned.rouge_l >= production.rouge_l and tuned.rouge_l > 0").evaluate(
        VALUES
    )
    assert verdict.passed
    assert verdict.clauses[0].passed is None
    assert "skipped" in verdict.explanation


def test_failure_explains_with_numbers() -> None:
    verdict = parse_gate("tuned.rouge_l >= base.rouge_l + 0.2").evaluate(VALUES)
    assert not verdict.passed
    assert "0.5 vs 0.6" in verdict.explanation


def test_division_by_zero_fails_the_clause() -> None:
    verdict = parse_gate("tuned.rouge_l / (base.exact_match - 0.3) > 1").evaluate(VALUES)
    assert not verdict.passed and "division by zero" in verdict.explanation


def test_references() -> None:
    gate = parse_gate("tuned.rouge_l >= base.rouge_l and tuned.exact_match > 0")
    assert gate.references == {("tuned", "rouge_l"), ("base", "rouge_l"), ("tuned", "exact_match")}


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("", 1),
        ("tuned.rouge_l >=", 17),
        ("tuned.rouge_l", 14),
        ("staging.rouge_l > 0", 1),
        ("tuned.bleu > 0", 7),
        ("__import__('os') > 0", 12),
        ("tuned.rouge_l.real > 0", 14),
        ("'a' == 'a'", 1),
        ("abs(tuned.rouge_l) > 0", 1),
        ("0 < tuned.rouge_l < 1", 19),
        ("tuned.rouge_l > 0 and", 22),
        ("tuned.rouge_l > 0)", 18),
    ],
)
def test_rejected_gates(text: str, column: int) -> None:
    with pytest.raises(GateSyntaxError) as info:
        parse_gate(text)
    assert info.value.column == column
    assert "^" in str(info.value)


def spec_error(tmp_path: Path, evaluation: str) -> SpecError:
    """The error of loading a spec whose ``evaluation:`` section (from line 4) is given."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: a\ndataset: {train: d.jsonl}\nevaluation:\n" + evaluation)
    with pytest.raises(SpecError) as info:
        load_spec(spec, environ={})
    return info.value


def test_gates_are_checked_when_the_spec_loads(tmp_path: Path) -> None:
    error = spec_error(tmp_path, '  promote_if: "tuned.rouge_l >> 1"\n')
    assert error.location.line == 4
    assert error.location.field == "evaluation.promote_if"


def test_a_gate_may_only_read_the_metrics_the_spec_evaluates(tmp_path: Path) -> None:
    error = spec_error(
        tmp_path, '  metrics: [exact_match]\n  promote_if: "tuned.rouge_l >= base.rouge_l"\n'
    )
    assert error.location.line == 5
    assert error.location.field == "evaluation.promote_if"
    assert "add it to evaluation.metrics" in str(error)


def test_a_metric_without_its_option_is_a_spec_error(tmp_path: Path) -> None:
    error = spec_error(tmp_path, "  metrics: [json_valid, json_schema]\n")
    assert error.location.field == "evaluation"
    assert "needs evaluation.json_schema" in str(error)


# --- the evaluator and reports --------------------------------------------------------------


def holdout_line(i: int) -> bytes:
    return orjson.dumps(
        {
            "systemInstruction": {"parts": [{"text": "Be kind."}]},
            "contents": [
                {"role": "user", "parts": [{"text": f"Where is order {i}?"}]},
                {"role": "model", "parts": [{"text": f"Order {i} ships Thursday."}]},
            ],
        }
    )


def record(run_id: str, endpoint: str) -> RunRecord:
    return run_record(
        run_id,
        job_name=f"projects/p/locations/l/tuningJobs/{run_id}",
        state="SUCCEEDED",
        endpoint=endpoint,
        holdout=DatasetRef(uri="gs://b/holdout/h.jsonl", sha256="b" * 64, size=1, examples=4),
    )


def held_out_store(tmp_path: Path) -> tuple[FakeStorage, RunStore]:
    """Storage holding the four-example held-out set the records point at, and a run store."""
    storage = FakeStorage()
    storage.write(
        "gs://b/holdout/h.jsonl",
        b"\n".join(holdout_line(i) for i in range(4)),
        if_generation_match=0,
    )
    return storage, RunStore(LocalBlobStore(tmp_path / "runs"))


def test_evaluator_runs_targets_caches_and_stores(tmp_path: Path) -> None:
    from vertex_tuner.evaluation.cache import GenerationCache

    storage, runs = held_out_store(tmp_path)
    runs.save(record("r0", "projects/p/locations/l/endpoints/prod"))
    runs.set_alias("support-tone", "production", "r0")
    current = record("r1", "projects/p/locations/l/endpoints/new")
    runs.save(current)

    def respond(model: str, contents: object) -> str:
        text = str(contents)
        number = next(c for c in text if c.isdigit())
        if model.endswith("/new"):
            return f"Order {number} ships Thursday."
        if model.endswith("/prod"):
            return f"Order {number} ships soon."
        return "We will get back to you."

    generator = FakeGenerator(respond)
    generator.fail_next(
        __import__("vertex_tuner.errors", fromlist=["x"]).TransientBackendError(
            "429", status=429, retry_after=0.0
        )
    )
    cache = GenerationCache(tmp_path / "cache", "test")
    evaluator = Evaluator(
        generator=generator, runs=runs, storage=storage, cache=cache, sleep=lambda s: None
    )
    settings = EvaluationSpec(
        metrics=["exact_match", "rouge_l"],
        concurrency=3,
        promote_if="tuned.rouge_l >= base.rouge_l + 0.05 and "
        "tuned.exact_match >= production.exact_match",
    )
    result = evaluator.evaluate(current, settings)
    assert set(result.targets) == {"tuned", "base", "production"}
    assert result.targets["tuned"].metrics["exact_match"] == 1.0
    assert result.targets["production"].metrics["exact_match"] == 0.0
    assert result.verdict is not None and result.verdict.passed
    stored = runs.get("r1").evaluation
    assert stored is not None and stored["gate"]["passed"] is True and "examples" not in stored
    calls = len(generator.history)
    assert calls == 13  # 12 generations plus one rate-limited attempt
    evaluator.evaluate(current, settings)
    assert len(generator.history) == calls  # the re-run is served from the cache
    assert cache.hits == 12


def test_a_missing_metric_option_fails_before_any_prompt_is_sent(tmp_path: Path) -> None:
    from vertex_tuner.evaluation.metrics import MetricError

    storage = FakeStorage()
    storage.write("gs://b/holdout/h.jsonl", holdout_line(0), if_generation_match=0)
    runs = RunStore(LocalBlobStore(tmp_path / "runs"))
    current = record("r1", "projects/p/locations/l/endpoints/new")
    runs.save(current)
    generator = FakeGenerator(lambda model, contents: "{}")
    evaluator = Evaluator(generator=generator, runs=runs, storage=storage, sleep=lambda s: None)
    # Built without the spec's checks, as a program calling the evaluator directly might.
    settings = EvaluationSpec.model_construct(
        metrics=["json_schema"],
        concurrency=1,
        max_examples=None,
        promote_if=None,
        label_field=None,
        json_schema=None,
    )
    with pytest.raises(MetricError, match=r"needs evaluation\.json_schema"):
        evaluator.evaluate(current, settings)
    assert generator.history == []


def test_reports(tmp_path: Path) -> None:
    from vertex_tuner.evaluation.results import ExampleResult, TargetResult

    result = EvaluationResult(
        spec="support-tone",
        run="r1",
        created_at="2026-01-01T00:00:00Z",
        metrics=["exact_match", "rouge_l"],
        targets={
            "tuned": TargetResult("e/1", {"exact_match": 0.5, "rouge_l": 0.6}),
            "base": TargetResult("gemini", {"exact_match": 0.5, "rouge_l": 0.4}),
        },
        examples=[
            ExampleResult(
                0,
                "a | b\nc",
                "ref",
                {"tuned": "bad", "base": "ref"},
                {
                    "tuned": {"exact_match": 0.0, "rouge_l": 0.0},
                    "base": {"exact_match": 1.0, "rouge_l": 1.0},
                },
            )
        ],
        verdict=parse_gate("tuned.rouge_l >= base.rouge_l").evaluate(
            {"tuned": {"rouge_l": 0.6}, "base": {"rouge_l": 0.4}}
        ),
    )
    markdown = render_markdown(result)
    assert "| rouge_l | 0.600 | 0.400 | +0.200 |" in markdown
    assert "a \\| b c" in markdown  # pipes escaped, newlines folded
    assert "Gate ✅ passed" in markdown
    page = render_html(result)
    assert page.count("<svg") == 2
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    written = write_report(result, tmp_path / "report")
    assert [p.name for p in written] == ["report.md", "report.html", "results.json"]
    again = EvaluationResult.from_json(
        orjson.loads((tmp_path / "report" / "results.json").read_bytes())
    )
    assert again == result


def test_a_target_that_is_down_stops_the_evaluation_instead_of_scoring_empty_answers(
    tmp_path: Path,
) -> None:
    from vertex_tuner.errors import BackendError, NotFoundError

    storage, runs = held_out_store(tmp_path)
    runs.save(record("r0", "projects/p/locations/l/endpoints/gone"))
    runs.set_alias("support-tone", "production", "r0")
    current = record("r1", "projects/p/locations/l/endpoints/new")
    runs.save(current)

    def respond(model: str, contents: object) -> str:
        if model.endswith("/gone"):
            raise NotFoundError("Endpoint gone not found.")
        return "anything"

    evaluator = Evaluator(
        generator=FakeGenerator(respond), runs=runs, storage=storage, sleep=lambda s: None
    )
    settings = EvaluationSpec(
        metrics=["exact_match"], promote_if="tuned.exact_match >= production.exact_match"
    )
    with pytest.raises(BackendError, match=r"production: 4 of 4 held-out prompts got no answer"):
        evaluator.evaluate(current, settings)
    assert runs.get("r1").evaluation is None  # no verdict that could let promote --if-gate ship
