"""The release loop with in-package fakes: every retrain outcome, and alias moves that fail safe.

No test sleeps: the service and evaluator get a fake clock and a sleep that advances it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from vertex_tuner import release
from vertex_tuner.backends.fake import FakeGenerator, FakeOutcome, FakeStorage, FakeTuner
from vertex_tuner.backends.interface import JobState
from vertex_tuner.errors import NotFoundError
from vertex_tuner.evaluation.runner import Evaluator
from vertex_tuner.events import Event, Step
from vertex_tuner.runstore import LocalBlobStore, RunStore
from vertex_tuner.spec import JobSpec, load_spec
from vertex_tuner.tuning import TuningService

SPEC = """\
name: support-tone
base_model: gemini-2.5-flash
dataset: {{train: data.jsonl, validation: 0.1}}
hyperparameters: {{epochs: 2}}
gcp: {{project: acme-project, bucket: acme-tuning, prefix: vt}}
budget: {{max_cost_usd: {budget}}}
wait: {{timeout: 1h}}
evaluation:
  holdout: 0.2
  metrics: [exact_match]
  promote_if: "tuned.exact_match >= base.exact_match + 0.5"
"""


def example(i: int, answer: str = "it ships on Thursday") -> bytes:
    return orjson.dumps(
        {
            "messages": [
                {"role": "user", "content": f"Question number {i} about order HH-{i:06d}?"},
                {"role": "assistant", "content": f"Answer {i}: {answer}."},
            ]
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.interrupt_after: int | None = None
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.interrupt_after is not None and self.sleeps > self.interrupt_after:
            raise KeyboardInterrupt
        self.now += seconds


class Events:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    def notify(self, event: Event) -> None:
        self.seen.append(event)

    @property
    def steps(self) -> list[str]:
        return [e.step for e in self.seen if isinstance(e, Step)]


class Loop:
    """A tuning service and an evaluator over fakes, sharing one run store and clock."""

    def __init__(self, tmp_path: Path, *, tuned_answers: str = "right") -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.tuner = FakeTuner(clock=self.clock)
        self.storage = FakeStorage()
        self.tuned_answers = tuned_answers
        self.generator = FakeGenerator(responder=self.answer)
        self.runs = RunStore(LocalBlobStore(tmp_path / "runs"), clock=self.clock)
        self.events = Events()
        self.service = TuningService(
            storage=self.storage,
            tuner=self.tuner,
            runs=self.runs,
            clock=self.clock,
            sleep=self.clock.sleep,
            observer=self.events,
            workdir=tmp_path / "work",
        )
        self.evaluator = Evaluator(
            generator=self.generator,
            runs=self.runs,
            storage=self.storage,
            sleep=self.clock.sleep,
            clock=self.clock,
            observer=self.events,
        )

    def answer(self, model: str, contents: Sequence[Mapping[str, Any]]) -> str:
        text = str(contents[-1]["parts"][0]["text"])
        match = re.search(r"number (\d+)", text)
        assert match is not None
        if "/endpoints/" in model and self.tuned_answers == "right":
            return f"Answer {match.group(1)}: it ships on Thursday."
        return "I am not sure; please contact support."

    def spec(
        self, *, rows: int = 150, budget: float = 50, answer: str = "it ships on Thursday"
    ) -> JobSpec:
        (self.tmp_path / "data.jsonl").write_bytes(
            b"\n".join(example(i, answer) for i in range(rows)) + b"\n"
        )
        (self.tmp_path / "spec.yaml").write_text(SPEC.format(budget=budget))
        return load_spec(self.tmp_path / "spec.yaml", environ={})

    def retrain(self, spec: JobSpec, **kwargs: Any) -> release.RetrainOutcome:
        return release.retrain(
            spec, service=self.service, evaluator=self.evaluator, observer=self.events, **kwargs
        )


@pytest.fixture
def loop(tmp_path: Path) -> Loop:
    return Loop(tmp_path)


def test_a_first_retrain_promotes_and_an_unchanged_one_does_nothing(loop: Loop) -> None:
    spec = loop.spec()
    first = loop.retrain(spec)
    assert (first.outcome, first.exit_code, first.ok) == ("promoted", 0, True)
    assert first.plan is not None and first.plan.action == "create"
    assert first.record is not None and first.record.state == "SUCCEEDED"
    assert first.evaluation is not None and first.evaluation.verdict is not None
    assert first.evaluation.verdict.passed
    assert first.previous_run_id is None
    assert first.message == f"support-tone@production → run {first.run_id} (it was at nothing)"
    assert loop.runs.aliases("support-tone")["production"].run_id == first.run_id
    assert loop.events.steps == ["submit", "wait", "evaluate", "promote"]
    # The evaluation read the held-out set uploaded with the run, and stored its verdict there.
    assert first.record.holdout is not None and first.record.holdout.uri is not None
    assert loop.runs.get(first.run_id or "").evaluation["gate"]["passed"] is True  # type: ignore[index]

    generated = len(loop.generator.history)
    second = loop.retrain(spec)
    assert (second.outcome, second.exit_code) == ("unchanged", 0)
    assert second.plan is not None and second.plan.action == "reuse"
    assert second.run_id == first.run_id and second.previous_run_id == first.run_id
    assert second.evaluation is None and len(loop.generator.history) == generated
    assert len(loop.tuner.jobs) == 1


def test_new_data_is_evaluated_against_production_and_promoted_over_it(loop: Loop) -> None:
    first = loop.retrain(loop.spec())
    second = loop.retrain(loop.spec(rows=160))
    assert second.outcome == "promoted", second.message
    assert second.previous_run_id == first.run_id != second.run_id
    assert second.evaluation is not None and "production" in second.evaluation.targets
    assert second.message.endswith(f"(it was at run {first.run_id})")


def test_a_failed_gate_leaves_production_where_it_was(tmp_path: Path) -> None:
    loop = Loop(tmp_path, tuned_answers="wrong")
    outcome = loop.retrain(loop.spec())
    assert (outcome.outcome, outcome.exit_code, outcome.ok) == ("gate-failed", 5, False)
    assert outcome.message == "the evaluation gate failed; support-tone@production stays at nothing"
    assert outcome.error is not None and outcome.error.startswith("the evaluation gate failed:")
    assert loop.runs.aliases("support-tone") == {}
    assert outcome.record is not None and outcome.record.evaluation is not None
    assert outcome.record.evaluation["gate"]["passed"] is False


def test_over_budget_uploads_and_creates_nothing(loop: Loop) -> None:
    outcome = loop.retrain(loop.spec(budget=0.0001))
    assert (outcome.outcome, outcome.exit_code) == ("over-budget", 3)
    assert outcome.message == "submit refused: over budget"
    assert outcome.error is not None and "over the budget" in outcome.error
    assert outcome.record is None and loop.tuner.jobs == {}
    assert list(loop.storage.list("gs://acme-tuning/")) == []


def test_a_failed_job_is_a_failed_outcome_with_its_error(loop: Loop) -> None:
    loop.tuner.script(
        [JobState.RUNNING, JobState.FAILED], FakeOutcome(error_message="Dataset line 7 is bad")
    )
    outcome = loop.retrain(loop.spec())
    assert (outcome.outcome, outcome.exit_code) == ("failed", 1)
    assert outcome.message == "the tuning job did not succeed"
    assert outcome.error is not None and "Dataset line 7 is bad" in outcome.error
    assert outcome.record is not None and outcome.record.state == "FAILED"
    # The next retrain does not pay again for the same data and spec...
    again = loop.retrain(loop.spec())
    assert again.outcome == "failed" and again.message == "submit failed"
    assert again.error is not None and "ended FAILED" in again.error
    assert len(loop.tuner.jobs) == 1
    # ...unless asked to.
    loop.tuner.script([JobState.SUCCEEDED])
    assert loop.retrain(loop.spec(), retry_failed=True).outcome == "promoted"
    assert len(loop.tuner.jobs) == 2


def test_a_job_still_running_at_the_timeout_is_running_and_the_next_retrain_attaches(
    loop: Loop,
) -> None:
    loop.tuner.script([JobState.RUNNING])
    first = loop.retrain(loop.spec(), wait_timeout=120)
    assert (first.outcome, first.exit_code, first.ok) == ("running", 0, True)
    assert first.message.startswith("still running after 2m: the job keeps running in Vertex")
    assert first.record is not None and first.record.state == "RUNNING"
    second = loop.retrain(loop.spec(), wait_timeout=120)
    assert second.outcome == "running"
    assert second.plan is not None and second.plan.action == "attach"
    assert second.run_id == first.run_id and len(loop.tuner.jobs) == 1


def test_an_interrupt_while_waiting_detaches(loop: Loop) -> None:
    loop.tuner.script([JobState.RUNNING])
    loop.clock.interrupt_after = 2
    outcome = loop.retrain(loop.spec())
    assert (outcome.outcome, outcome.exit_code) == ("interrupted", 130)
    assert outcome.record is not None and outcome.record.job_name is not None
    assert outcome.message == (
        f"detached; {outcome.record.job_name} keeps running in Vertex, and the next retrain "
        "attaches to it"
    )
    assert not loop.tuner.jobs[outcome.record.job_name].job.state.is_terminal


def test_a_spec_without_evaluation_is_never_promoted(loop: Loop) -> None:
    spec = loop.spec()
    text = (loop.tmp_path / "spec.yaml").read_text().split("evaluation:")[0]
    (loop.tmp_path / "spec.yaml").write_text(text)
    spec = load_spec(loop.tmp_path / "spec.yaml", environ={})
    outcome = loop.retrain(spec)
    assert (outcome.outcome, outcome.exit_code) == ("failed", 1)
    assert outcome.message == "evaluation failed"
    assert outcome.error is not None and "no evaluation section" in outcome.error
    assert loop.runs.aliases("support-tone") == {}


def test_the_outcome_json_names_everything_a_workflow_needs(loop: Loop) -> None:
    doc = loop.retrain(loop.spec()).to_json()
    assert doc["outcome"] == "promoted" and doc["ok"] is True and doc["exit_code"] == 0
    assert doc["plan"] == "create" and doc["gate"]["passed"] is True
    assert doc["estimate"]["billable_tokens"] > 0
    assert set(doc) >= {"spec", "spec_name", "run_id", "job_name", "message", "bytes_uploaded"}
    assert set(release.OUTCOMES) == {
        "promoted",
        "unchanged",
        "running",
        "gate-failed",
        "smoke-failed",
        "over-budget",
        "failed",
        "interrupted",
    }


def test_promote_picks_the_newest_successful_run_and_checks_the_gate(loop: Loop) -> None:
    first = loop.retrain(loop.spec())
    promotion = release.promote(loop.runs, "support-tone", alias="canary", if_gate=True)
    assert promotion.record.run_id == first.run_id and promotion.entry.alias == "canary"
    with pytest.raises(NotFoundError, match="belongs to support-tone, not other"):
        release.promote(loop.runs, "other", first.run_id)


def test_rollback_never_moves_an_alias_onto_a_missing_run(loop: Loop) -> None:
    first = loop.retrain(loop.spec())
    second = loop.retrain(loop.spec(rows=160))
    assert second.outcome == "promoted"
    # The first run's record is lost (deleted by hand, a damaged bucket, ...).
    loop.runs.blobs.delete(f"runs/{first.run_id}.json")
    with pytest.raises(NotFoundError):
        release.rollback(loop.runs, "support-tone")
    assert loop.runs.aliases("support-tone")["production"].run_id == second.run_id

    third = loop.retrain(loop.spec(rows=170))
    back = release.rollback(loop.runs, "support-tone")
    assert back.record.run_id == second.run_id == back.entry.run_id
    assert third.run_id != second.run_id


def test_current_run_is_the_job_of_the_current_data(loop: Loop) -> None:
    spec = loop.spec()
    with pytest.raises(NotFoundError, match="submit it first"):
        release.current_run(loop.service, spec)
    outcome = loop.retrain(spec)
    assert release.current_run(loop.service, spec).run_id == outcome.run_id


def test_continuous_tuning_keeps_its_lineage_and_compares_with_the_original_base(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = loop.retrain(loop.spec())
    assert first.outcome == "promoted"
    text = (loop.tmp_path / "spec.yaml").read_text()
    text = text.replace("name: support-tone", "name: support-tone-v2").replace(
        "base_model: gemini-2.5-flash", "base_model: support-tone@production"
    )
    (loop.tmp_path / "v2.yaml").write_text(text)
    spec = load_spec(loop.tmp_path / "v2.yaml", environ={})
    whole_store = []
    real_list = loop.runs.list

    def spying_list(spec_name: str | None = None) -> Any:
        if spec_name is None:
            whole_store.append(True)
        return real_list(spec_name)

    monkeypatch.setattr(loop.runs, "list", spying_list)
    second = loop.retrain(spec)
    assert second.record is not None and second.record.parent_run_id == first.run_id
    assert second.record.base_model == first.record.tuned_model  # type: ignore[union-attr]
    assert second.evaluation is not None
    assert second.evaluation.targets["base"].model == "gemini-2.5-flash"
    assert whole_store == []  # the lineage is followed by key, not by reading every record


def test_runs_lists_past_a_damaged_record_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from vertex_tuner.cli import cli

    loop = Loop(tmp_path)
    first = loop.retrain(loop.spec())
    other = loop.runs.get(first.run_id or "").model_copy(update={"run_id": "support-tone-broken"})
    loop.runs.save(other)
    loop.runs.blobs.write("runs/support-tone-broken.json", b"{not json", if_generation_match=None)
    result = CliRunner().invoke(
        cli, ["runs", "support-tone", "--registry", str(tmp_path / "runs"), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.stdout)
    assert [r["run_id"] for r in doc["runs"]] == [first.run_id]
    assert len(doc["skipped"]) == 1 and "support-tone-broken" in doc["skipped"][0]
    assert "warning: skipped" in result.stderr
