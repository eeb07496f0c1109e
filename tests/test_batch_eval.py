"""Evaluation through batch prediction: the same metrics as online, one job per target that a
retry attaches to, partial failures counted, a cost estimate and a budget before anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from records_support import run_record

from vertex_tuner.backends.fake import FakeBatchPredictor, FakeGenerator, FakeStorage
from vertex_tuner.errors import BackendError, BudgetExceeded, NotFoundError, WaitTimeout
from vertex_tuner.evaluation import batch
from vertex_tuner.evaluation.cache import GenerationCache
from vertex_tuner.evaluation.runner import Evaluator
from vertex_tuner.records import DatasetRef, RunRecord
from vertex_tuner.runstore import LocalBlobStore, RunStore
from vertex_tuner.spec import EvaluationSpec

STAGING = "gs://acme/vt"
EXAMPLES = 40


def line(i: int) -> bytes:
    return orjson.dumps(
        {
            "systemInstruction": {"parts": [{"text": "Be kind."}]},
            "contents": [
                {"role": "user", "parts": [{"text": f"Where is order {i}?"}]},
                {"role": "model", "parts": [{"text": f"Order {i} ships Thursday."}]},
            ],
        }
    )


def record(run_id: str, number: str) -> RunRecord:
    return run_record(
        run_id,
        job_name=f"projects/p/locations/l/tuningJobs/{run_id}",
        state="SUCCEEDED",
        base_model="gemini-2.5-flash",
        endpoint=f"projects/p/locations/l/endpoints/{number}",
        tuned_model=f"projects/p/locations/l/models/{number}@1",
        holdout=DatasetRef(uri="gs://b/holdout/h.jsonl", sha256="b" * 64, size=1, examples=4),
    )


def respond(model: str, contents: Any) -> str:
    number = "".join(c for c in str(contents) if c.isdigit())
    if model.endswith("/new"):
        return f"Order {number} ships Thursday."
    if model.endswith("/prod"):
        return f"Order {number} ships soon."
    return "We will get back to you."


class World:
    def __init__(self, tmp_path: Path, *, polls: int = 1) -> None:
        self.storage = FakeStorage()
        self.storage.write(
            "gs://b/holdout/h.jsonl",
            b"\n".join(line(i) for i in range(EXAMPLES)),
            if_generation_match=0,
        )
        self.runs = RunStore(LocalBlobStore(tmp_path / "runs"))
        self.runs.save(record("r0", "prod"))
        self.runs.set_alias("support-tone", "production", "r0")
        self.current = record("r1", "new")
        self.runs.save(self.current)
        self.generator = FakeGenerator(respond)

        def endpoint_of(model: str) -> str:
            # Batch prediction takes the tuned model; it answers as its endpoint does.
            return model.split("@")[0].replace("/models/", "/endpoints/")

        self.batch = FakeBatchPredictor(
            self.storage, self.generator, model_for=endpoint_of, polls=polls
        )
        self.sleeps: list[float] = []
        self.evaluator = Evaluator(
            generator=self.generator,
            runs=self.runs,
            storage=self.storage,
            cache=GenerationCache(tmp_path / "cache", "test"),
            sleep=self.sleeps.append,
            batch=self.batch,
        )

    def evaluate(self, settings: EvaluationSpec, **kwargs: Any) -> Any:
        return self.evaluator.evaluate(self.runs.get("r1"), settings, staging=STAGING, **kwargs)


SETTINGS = {
    "metrics": ["exact_match", "rouge_l"],
    "promote_if": "tuned.rouge_l >= base.rouge_l + 0.05",
}


def test_batch_and_online_give_the_same_metrics_on_the_same_held_out_set(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    batched = world.evaluate(EvaluationSpec(**SETTINGS, mode="batch"))
    assert batched.binding["modes"] == {"tuned": "batch", "base": "batch", "production": "batch"}
    assert len(world.batch.created) == 3
    assert world.generator.history and all(
        m for m, _ in world.generator.history
    )  # answered inside the jobs
    online = World(tmp_path / "other").evaluate(EvaluationSpec(**SETTINGS, mode="online"))
    for role in ("tuned", "base", "production"):
        assert batched.targets[role].metrics == online.targets[role].metrics
        assert batched.targets[role].errors == online.targets[role].errors == 0
    assert batched.verdict is not None and batched.verdict.passed
    assert (
        batched.comparisons["tuned-base"]["rouge_l"] == online.comparisons["tuned-base"]["rouge_l"]
    )
    # The request file: the prompt online evaluation sends, tagged with its example.
    source = next(u for u in world.storage.objects if u.endswith(".jsonl") and "/tuned-" in u)
    first = orjson.loads(world.storage.read(source)[0].splitlines()[0])
    assert first["request"]["labels"] == {"vt_key": "e0"}
    assert first["request"]["systemInstruction"] == {"parts": [{"text": "Be kind."}]}
    assert first["request"]["generationConfig"] == {"temperature": 0.0}
    assert source.startswith(f"{STAGING}/evaluations/r1/tuned-")


def test_a_retried_evaluation_attaches_to_its_jobs_and_the_cache_answers_online(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    world.evaluate(EvaluationSpec(**SETTINGS, mode="batch"))
    jobs = list(world.batch.created)
    world.evaluate(EvaluationSpec(**SETTINGS, mode="batch"))
    assert world.batch.created == jobs  # every answer cached: no job at all
    world.batch.cancel(jobs[0])  # (already finished: stays SUCCEEDED)
    # The same requests again (the cache not read): the finished jobs are found by name and
    # read again, not paid for twice...
    for name in jobs:
        world.batch.jobs[name] = world.batch.jobs[name]
    fresh = world.evaluate(EvaluationSpec(**SETTINGS, mode="batch"), fresh=True)
    # ...unless the answers are to be fresh: then new jobs answer.
    assert len(world.batch.created) == 6 and fresh.targets["tuned"].errors == 0
    calls = len(world.generator.history)
    again = world.evaluate(EvaluationSpec(**SETTINGS, mode="online"))
    assert len(world.generator.history) == calls  # every answer came from the cache
    assert again.targets["tuned"].metrics["exact_match"] == 1.0


def test_failed_lines_count_like_failed_generations(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.batch.fail_line("e3")
    result = world.evaluate(EvaluationSpec(**SETTINGS, mode="batch"))
    assert {r: t.errors for r, t in result.targets.items()} == {
        "tuned": 1,
        "base": 1,
        "production": 1,
    }
    for i in range(4, 8):
        world.batch.fail_line(f"e{i}")
    with pytest.raises(BackendError, match="got no answer"):
        world.evaluate(EvaluationSpec(**SETTINGS, mode="batch"), fresh=True)


def test_a_batch_still_running_at_the_timeout_is_resumed_not_created_again(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, polls=10**6)
    settings = EvaluationSpec(**SETTINGS, mode="batch", batch_timeout="3s")
    world.evaluator.clock = lambda: 1_700_000_000.0 + 2 * len(world.sleeps)
    with pytest.raises(WaitTimeout) as caught:
        world.evaluate(settings)
    assert caught.value.hint is not None and "--resume" in caught.value.hint
    created = list(world.batch.created)
    assert len(created) == 3 and world.runs.get("r1").evaluations == []
    world.batch.polls = 0
    result = world.evaluate(settings, resume=True)
    assert world.batch.created == created
    assert result.targets["tuned"].metrics["exact_match"] == 1.0


def test_resume_without_a_job_says_so(tmp_path: Path) -> None:
    world = World(tmp_path)
    with pytest.raises(NotFoundError, match="no batch job"):
        world.evaluate(EvaluationSpec(**SETTINGS, mode="batch"), resume=True)
    assert world.batch.created == []


def test_the_cost_is_estimated_and_a_budget_refuses_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    record_ = world.runs.get("r1")
    online = world.evaluator.dry_run(record_, EvaluationSpec(**SETTINGS), staging=STAGING)
    batched = world.evaluator.dry_run(
        record_, EvaluationSpec(**SETTINGS, mode="batch"), staging=STAGING
    )
    assert online.requests == batched.requests == 3 * EXAMPLES
    assert online.cost_usd is not None and batched.cost_usd is not None
    assert batched.cost_usd == pytest.approx(online.cost_usd / 2)
    assert online.cost_high_usd is not None and online.cost_high_usd > online.cost_usd
    tuned = online.targets[0]
    assert (tuned.role, tuned.priced_as) == ("tuned", "gemini-2.5-flash")
    assert "ships" not in online.describe() and "total $" in online.describe()
    with pytest.raises(BudgetExceeded, match="nothing was sent"):
        world.evaluate(EvaluationSpec(**SETTINGS, mode="batch", max_cost_usd=1e-9))
    assert world.batch.created == [] and world.generator.history == []
    world.evaluate(EvaluationSpec(**SETTINGS, mode="online"))
    cached = world.evaluator.dry_run(record_, EvaluationSpec(**SETTINGS), staging=STAGING)
    assert cached.requests == 0 and cached.cost_usd == 0
    assert all(t.cached == EXAMPLES for t in cached.targets)


def test_auto_batches_from_the_threshold_and_checkpoints_stay_online(tmp_path: Path) -> None:
    world = World(tmp_path)
    examples = list(range(EXAMPLES))
    targets = world.evaluator.targets(world.runs.get("r1"), ["base", "production"])
    auto_low = EvaluationSpec(**SETTINGS, mode="auto", batch_threshold=3 * len(examples) + 1)
    auto_high = EvaluationSpec(**SETTINGS, mode="auto", batch_threshold=3 * len(examples))
    fake_examples: Any = examples
    low = world.evaluator.choose_mode(auto_low, targets, fake_examples, staging=STAGING)
    high = world.evaluator.choose_mode(auto_high, targets, fake_examples, staging=STAGING)
    assert set(low.values()) == {"online"} and set(high.values()) == {"batch"}
    no_model = [t.__class__(t.role, t.model, t.run_id, t.generation, None) for t in targets]
    mixed = world.evaluator.choose_mode(auto_high, no_model, fake_examples, staging=STAGING)
    assert set(mixed.values()) == {"online"}
    with pytest.raises(Exception, match="--mode online"):
        Evaluator(generator=world.generator, runs=world.runs).choose_mode(
            EvaluationSpec(**SETTINGS, mode="batch"), targets, fake_examples, staging=STAGING
        )


def test_output_lines_are_read_by_key_and_thoughts_are_not_answers() -> None:
    assert (
        batch.response_text(
            {
                "candidates": [
                    {"content": {"parts": [{"text": "thinking…", "thought": True}, {"text": "OK"}]}}
                ]
            }
        )
        == "OK"
    )
    assert batch.response_text({"candidates": []}) is None
    assert batch.generation_config(
        {"temperature": 0.2, "max_output_tokens": 9, "thinking_level": "minimal"}
    ) == {"temperature": 0.2, "maxOutputTokens": 9, "thinkingConfig": {"thinkingLevel": "MINIMAL"}}


def test_retrain_stops_over_the_evaluation_budget_before_any_prompt(tmp_path: Path) -> None:
    from test_release import SPEC, Loop

    from vertex_tuner.spec import load_spec

    loop = Loop(tmp_path)
    loop.spec()
    text = SPEC.format(budget=50).replace(
        "  holdout: 0.2\n", "  holdout: 0.2\n  max_cost_usd: 1e-9\n"
    )
    (tmp_path / "spec.yaml").write_text(text)
    outcome = loop.retrain(load_spec(tmp_path / "spec.yaml", environ={}))
    assert (outcome.outcome, outcome.exit_code) == ("over-budget", 3)
    assert outcome.message == "evaluation refused: over its budget"
    assert outcome.error is not None and "nothing was sent" in outcome.error
    assert loop.generator.history == []
    assert loop.runs.aliases("support-tone") == {}
    from vertex_tuner.events import EvaluationPlanned

    planned = next(e for e in loop.events.seen if isinstance(e, EvaluationPlanned))
    assert "requests (online), ≈ $" in planned.summary


def test_ctrl_c_while_following_detaches_and_says_how_to_attach(tmp_path: Path) -> None:
    from vertex_tuner.errors import EXIT_INTERRUPTED, Detached

    world = World(tmp_path, polls=10**6)

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    world.evaluator.sleep = interrupt
    with pytest.raises(Detached) as caught:
        world.evaluate(EvaluationSpec(**SETTINGS, mode="batch"))
    assert caught.value.exit_code == EXIT_INTERRUPTED
    assert "keep running in Vertex" in caught.value.message
    assert caught.value.hint is not None and caught.value.hint.endswith("--resume")
    assert len(world.batch.created) == 3 and world.runs.get("r1").evaluations == []


def test_a_dry_run_of_every_checkpoint_is_a_usage_error() -> None:
    from click.testing import CliRunner

    from vertex_tuner.cli import cli

    result = CliRunner().invoke(
        cli, ["evaluate", "jobs/support_tone.yaml", "--dry-run", "--checkpoints", "--sandbox"]
    )
    assert result.exit_code == 2
    assert "--dry-run shows one evaluation; leave out --checkpoints" in result.stderr
