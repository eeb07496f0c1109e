"""The release loop: the run a spec stands for, its evaluation, its gate, and the alias it earns.

These functions are the library's home of the loop users care about (submit → wait → evaluate →
gate → promote). They are handed their collaborators (a :class:`~vertex_tuner.tuning.TuningService`,
an :class:`~vertex_tuner.evaluation.runner.Evaluator`, a run store), so the CLI, the retrain
workflow and Python services run one implementation; :mod:`vertex_tuner.api` has the same calls
with the collaborators built for you (``vertex_tuner.retrain(spec, sandbox=True)``).

:func:`retrain` validates the dataset once: the submit's run record carries the uploaded
held-out set, and the evaluation reads it from there, so the verdict is about the exact
examples recorded with the run.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from vertex_tuner.backends.interface import JobState
from vertex_tuner.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    BudgetExceeded,
    GateFailed,
    NotFoundError,
    SmokeTestFailed,
    SpecError,
    VertexTunerError,
    WaitTimeout,
)
from vertex_tuner.evaluation import verdicts
from vertex_tuner.evaluation.reward import RewardSettings
from vertex_tuner.evaluation.runner import checkpoint_endpoint
from vertex_tuner.events import Observer, SilentObserver, Step
from vertex_tuner.records import human_seconds
from vertex_tuner.retry import RetryOptions, retrying

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import Generator
    from vertex_tuner.dataset import PreparedDataset
    from vertex_tuner.evaluation.cost import EvaluationCost
    from vertex_tuner.evaluation.results import EvaluationResult
    from vertex_tuner.evaluation.runner import Evaluator
    from vertex_tuner.records import RunRecord
    from vertex_tuner.runstore import AliasEntry, RunStore
    from vertex_tuner.spec import EvaluationSpec, JobSpec
    from vertex_tuner.tuning import Plan, TuningService

Outcome = Literal[
    "promoted",
    "unchanged",
    "running",
    "gate-failed",
    "smoke-failed",
    "over-budget",
    "failed",
    "interrupted",
]
#: Every retrain outcome, and whether it leaves the workflow green.
OUTCOMES: dict[str, bool] = {
    "promoted": True,
    "unchanged": True,
    "running": True,
    "gate-failed": False,
    "smoke-failed": False,
    "over-budget": False,
    "failed": False,
    "interrupted": False,
}
#: The alias a retrain moves.
PRODUCTION = "production"


# --- finding the run ---------------------------------------------------------------------------


def current_run(service: TuningService, spec: JobSpec) -> RunRecord:
    """The run of the job that tuned the spec's current data and settings, refreshed from Vertex.

    NotFoundError when no job has (submit it first).
    """
    with tempfile.TemporaryDirectory(prefix="vertex-tuner-") as tmp:
        prepared = service.prepare(spec, Path(tmp))
        plan = service.plan(spec, prepared)
        if plan.job is None:
            raise NotFoundError(
                f"no job has tuned the current data and settings of {spec.name}",
                hint=f"submit it first: vertex-tuner submit {spec.spec_path}",
            )
        # The job may have no record here yet (its submit's create answer was lost, or it ran
        # from another store): record it with the spec's details, once, as submit would.
        record = service.record_for(spec, prepared, plan, plan.job)
    return service.refresh(record)


# --- evaluating and judging ---------------------------------------------------------------------


def evaluate_run(
    evaluator: Evaluator,
    spec: JobSpec,
    record: RunRecord,
    *,
    against: tuple[str, ...] | list[str] = ("base", PRODUCTION),
    checkpoint: str | None = None,
    mode: str | None = None,
    fresh: bool = False,
    resume: bool = False,
) -> EvaluationResult:
    """Evaluate one run as its spec says, on the held-out set uploaded with the run.

    ``checkpoint``: that checkpoint's endpoint stands for the tuned model. ``mode``
    (``online``, ``batch``, ``auto``) overrides ``evaluation.mode``; ``fresh`` generates every
    answer again; ``resume`` only attaches to the batch jobs an earlier evaluation created.
    The result is stored with the run record (see :meth:`Evaluator.evaluate`).
    """
    settings = _evaluation_of(spec)
    schema: dict[str, Any] | None = None
    if settings.json_schema:
        path = spec.resolve_path(settings.json_schema)
        try:
            schema = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SpecError(f"evaluation.json_schema: cannot read {path}: {exc}") from None
    return evaluator.evaluate(
        record,
        settings,
        against=list(against),
        json_schema=schema,
        checkpoint=checkpoint,
        staging=spec.gcp.base_uri,
        mode=mode,
        fresh=fresh,
        resume=resume,
        reward=reward_settings(spec),
    )


def reward_settings(spec: JobSpec) -> RewardSettings | None:
    """A reinforcement spec's reward as the ``reward`` metric scores with it (None without)."""
    if spec.reward is None:
        return None
    fingerprint = orjson.dumps(spec.reward_fingerprint(), option=orjson.OPT_SORT_KEYS)
    return RewardSettings(
        payload=spec.reward_payload(),
        sha256=hashlib.sha256(fingerprint).hexdigest(),
        autorater=any(r.judge is not None for _, r in spec.reward.rewards()),
    )


def _evaluation_of(spec: JobSpec) -> EvaluationSpec:
    """The spec's evaluation section; a SpecError saying what to add when it has none."""
    if spec.evaluation is None:
        raise SpecError(
            f"{spec.spec_path}: the spec has no evaluation section",
            hint="add evaluation: {holdout: 0.1, metrics: [exact_match, rouge_l]}",
        )
    return spec.evaluation


def evaluation_estimate(
    evaluator: Evaluator,
    spec: JobSpec,
    record: RunRecord,
    *,
    against: tuple[str, ...] | list[str] = ("base", PRODUCTION),
    checkpoint: str | None = None,
    mode: str | None = None,
    fresh: bool = False,
) -> EvaluationCost:
    """What evaluating the run would send and cost, sending nothing."""
    return evaluator.dry_run(
        record,
        _evaluation_of(spec),
        against=list(against),
        checkpoint=checkpoint,
        staging=spec.gcp.base_uri,
        mode=mode,
        fresh=fresh,
        reward=reward_settings(spec),
    )


def evaluate_checkpoints(
    evaluator: Evaluator,
    spec: JobSpec,
    record: RunRecord,
    *,
    against: tuple[str, ...] | list[str] = ("base", PRODUCTION),
    mode: str | None = None,
    fresh: bool = False,
    resume: bool = False,
) -> list[tuple[str, EvaluationResult]]:
    """Evaluate every checkpoint of the run that has an endpoint, on the same held-out set
    (the comparison targets' answers come from the generation cache after the first).
    ``mode``, ``fresh`` and ``resume`` as for :func:`evaluate_run`."""
    ids = [str(c["checkpoint_id"]) for c in record.checkpoints if c.get("endpoint")]
    if not ids:
        raise NotFoundError(
            f"run {record.run_id} has no checkpoint with its own endpoint",
            hint="Vertex deploys checkpoints when export_last_checkpoint_only is false",
        )
    options: dict[str, Any] = {"mode": mode, "fresh": fresh, "resume": resume}
    return [
        (cid, evaluate_run(evaluator, spec, record, against=against, checkpoint=cid, **options))
        for cid in ids
    ]


def spec_gate(spec: JobSpec) -> str | None:
    """The spec's gate in the normalised form verdicts record, or None without one."""
    from vertex_tuner.evaluation.gate import parse_gate

    text = spec.evaluation.promote_if if spec.evaluation else None
    return str(parse_gate(text)) if text else None


def spec_generation(spec: JobSpec) -> dict[str, Any] | None:
    """The spec's generation settings as verdicts record them, or None without evaluation."""
    return spec.evaluation.generation.settings() if spec.evaluation else None


def check_gate(result: EvaluationResult) -> None:
    """GateFailed when the evaluation's gate did not hold."""
    if result.verdict is not None and not result.verdict.passed:
        raise GateFailed(
            f"the evaluation gate {result.verdict.explanation}",
            hint="the alias was not moved; see the report for the regressions",
        )


# --- moving aliases -----------------------------------------------------------------------------

#: What the smoke test sends when the run has no held-out set.
SMOKE_PROMPT = "Reply with the single word OK."


@dataclass(frozen=True)
class SmokeResult:
    """One call to the model an alias is about to serve, made the way a service makes it."""

    passed: bool
    endpoint: str
    #: The location the call went to (a 3.x model's multi-region ``us``/``eu``).
    location: str | None
    detail: str
    seconds: float
    generation: dict[str, Any] = field(default_factory=dict)
    prompt: str = "held-out example 0"

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "endpoint": self.endpoint,
            "location": self.location,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "generation": self.generation,
            "prompt": self.prompt,
        }


#: ``smoke(name, alias, record, checkpoint)``: the result of calling what ``name@alias`` would
#: serve once moved. :mod:`vertex_tuner.api` builds one that resolves and calls exactly as
#: :func:`vertex_tuner.genai_client_for` does.
SmokeTest = Callable[[str, str, "RunRecord", "str | None"], SmokeResult]


def smoke_test(
    generator: Generator,
    endpoint: str,
    *,
    location: str | None,
    generation: Mapping[str, Any],
    contents: Sequence[Mapping[str, Any]] | None = None,
    system_instruction: str | None = None,
    prompt: str = "held-out example 0",
    retry: RetryOptions | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> SmokeResult:
    """Call ``endpoint`` once with ``generation`` (under the one retry policy, so a 429 is not a
    failure) and say whether text came back. The answer is not scored: the gate did that; this
    proves the model answers the call a service will make (host, region, settings)."""
    if contents is None:
        contents, prompt = [{"role": "user", "parts": [{"text": SMOKE_PROMPT}]}], SMOKE_PROMPT
    start = clock()
    try:
        reply = retrying(retry or RetryOptions(), sleep=sleep)(
            lambda: generator.generate(
                endpoint, contents, system_instruction=system_instruction, **generation
            )
        )
    except VertexTunerError as exc:
        passed, detail = False, exc.message
    else:
        passed = bool(reply.text.strip())
        detail = f"answered ({len(reply.text)} characters)" if passed else "answered with no text"
    return SmokeResult(
        passed, endpoint, location, detail, clock() - start, dict(generation), prompt
    )


def default_actor(environ: Mapping[str, str] | None = None) -> str:
    """Who moves an alias, for its history: the GitHub actor and workflow run under Actions,
    else user@host."""
    env = os.environ if environ is None else environ
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_ACTOR"):
        run = ""
        if env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
            server = env.get("GITHUB_SERVER_URL") or "https://github.com"
            run = f" ({server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']})"
        return f"github:{env['GITHUB_ACTOR']}{run}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Promotion:
    """An alias move: the run it points at now, and the alias entry with its history."""

    name: str
    alias: str
    record: RunRecord
    entry: AliasEntry
    #: The stored verdict ``--if-gate`` relied on.
    verdict: str | None = None
    #: Said when a run is promoted without ``--if-gate`` although its latest verdict failed.
    warning: str | None = None
    #: The smoke test the move passed (None: none was run).
    smoke: SmokeResult | None = None

    @property
    def endpoint(self) -> str | None:
        """What the alias serves now: the checkpoint's endpoint, or the run's."""
        if self.entry.checkpoint is not None:
            return checkpoint_endpoint(self.record, self.entry.checkpoint)
        return self.record.endpoint

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias": self.alias,
            "run_id": self.record.run_id,
            "checkpoint": self.entry.checkpoint,
            "endpoint": self.endpoint,
            "verdict": self.verdict,
            "warning": self.warning,
            "smoke": self.smoke.to_json() if self.smoke else None,
            "actor": self.entry.history[-1].get("actor") if self.entry.history else None,
        }


def promote(
    runs: RunStore,
    name: str,
    run_id: str | None = None,
    *,
    alias: str = PRODUCTION,
    if_gate: bool = False,
    actor: str = "",
    gate: str | None = None,
    checkpoint: str | None = None,
    generation: Mapping[str, Any] | None = None,
    smoke: SmokeTest | None = None,
) -> Promotion:
    """Point ``name@alias`` at a run (default: the newest successful one with an endpoint).

    With ``if_gate``, only when the run's latest verdict that compared it against base on its
    held-out set (with ``gate``, normalised, when given: the spec's current gate) passed; see
    :mod:`vertex_tuner.evaluation.verdicts`. Without it, a run whose latest verdict failed is
    promoted with a warning.

    ``checkpoint``: serve one of the run's checkpoints (its id), or ``"best"``: of the
    checkpoints whose latest qualifying verdict passed, the one with the highest tuned scores
    on the gate's metrics, in the order the gate names them (implies ``if_gate``).

    ``generation``: with ``if_gate``, the verdict must have called the models with these
    settings (the spec's ``evaluation.generation``), since services will call it so.

    ``smoke``: before the alias moves, call what it would serve the way a service will; on a
    failure the alias stays where it was, the refused move is kept in the alias file, and
    SmokeTestFailed says what failed. A passing result is kept in the move's history event.
    """
    if run_id is None:
        ok = [r for r in runs.list(name) if JobState.parse(r.state).is_success and r.endpoint]
        if not ok:
            raise NotFoundError(
                f"{name} has no successful run to promote",
                hint=f"list runs with: vertex-tuner runs {name}",
            )
        record = ok[0]
    else:
        record = runs.get(run_id)
        if record.spec_name != name:
            raise NotFoundError(f"run {run_id} belongs to {record.spec_name}, not {name}")
    if not record.endpoint:
        raise NotFoundError(f"run {record.run_id} has no endpoint (state {record.state})")
    holdout = record.holdout.sha256 if record.holdout else None
    if checkpoint == "best":
        checkpoint = _best_checkpoint(
            runs, record, gate=gate, holdout_sha256=holdout, generation=generation
        )
        if_gate = True
    endpoint = record.endpoint if checkpoint is None else checkpoint_endpoint(record, checkpoint)
    history = _history(record)
    choice = verdicts.choose(
        history, tuned=endpoint, holdout_sha256=holdout, gate=gate, generation=generation
    )
    warning = None
    if if_gate:
        chosen = choice.verdict
        if chosen is None:
            why = "; ".join(choice.passed_over) or "it was never evaluated"
            raise GateFailed(
                f"run {record.run_id} has no verdict that compared it against base on its "
                f"held-out set{' with the gate ' + repr(gate) if gate else ''} ({why})",
                hint=f"evaluate it: vertex-tuner evaluate {record.spec_path or record.run_id}",
            )
        if not chosen.get("passed"):
            raise GateFailed(
                f"run {record.run_id} did not pass its gate: {choice.describe()} of "
                f"{chosen.get('created_at')} failed; later evaluations cannot undo it unless "
                "they compare against base again and pass"
            )
    else:
        if history and history[-1].get("passed") is False:
            warning = (
                f"run {record.run_id}'s latest verdict ({history[-1].get('id')}) failed its "
                "gate; promoting it anyway, as asked"
            )
    reason = f"--if-gate: {choice.describe()}" if if_gate else ""
    checked = smoke(name, alias, record, checkpoint) if smoke is not None else None
    if checked is not None and not checked.passed:
        runs.refuse_move(
            name,
            alias,
            {
                "run_id": record.run_id,
                "checkpoint": checkpoint,
                "actor": actor,
                "reason": "smoke test failed",
                "smoke": checked.to_json(),
            },
        )
        where = f" in {checked.location}" if checked.location else ""
        raise SmokeTestFailed(
            f"{name}@{alias} was not moved to run {record.run_id}: calling {checked.endpoint}"
            f"{where} the way a service will failed: {checked.detail}",
            hint=f"see the refused move with: vertex-tuner aliases {name} --json",
        )
    entry = runs.set_alias(
        name,
        alias,
        record.run_id,
        actor=actor,
        reason=reason,
        checkpoint=checkpoint,
        smoke=checked.to_json() if checked else None,
    )
    return Promotion(
        name,
        alias,
        record,
        entry,
        verdict=choice.verdict.get("id") if if_gate and choice.verdict else None,
        warning=warning,
        smoke=checked,
    )


def _best_checkpoint(
    runs: RunStore,
    record: RunRecord,
    *,
    gate: str | None,
    holdout_sha256: str | None,
    generation: Mapping[str, Any] | None,
) -> str:
    scored: list[tuple[tuple[float, ...], str]] = []
    history = _history(record)
    for item in record.checkpoints:
        cid, endpoint = str(item.get("checkpoint_id")), item.get("endpoint")
        if not endpoint:
            continue
        chosen = verdicts.choose(
            history,
            tuned=str(endpoint),
            holdout_sha256=holdout_sha256,
            gate=gate,
            generation=generation,
        ).verdict
        if chosen is None or not chosen.get("passed"):
            continue
        doc = runs.evaluation(record.run_id, str(chosen["id"]))
        tuned = doc.get("targets", {}).get("tuned", {}).get("metrics", {})
        order = re.findall(r"\btuned\.([A-Za-z_][A-Za-z0-9_]*)", str(chosen.get("gate") or ""))
        key = tuple(float(tuned.get(m, float("-inf"))) for m in dict.fromkeys(order))
        scored.append((key, cid))
    if not scored:
        raise GateFailed(
            f"no checkpoint of run {record.run_id} has a passing verdict",
            hint=f"evaluate them first: vertex-tuner evaluate {record.spec_path or record.run_id} "
            "--checkpoints",
        )
    return max(scored)[1]


def _history(record: RunRecord) -> list[dict[str, Any]]:
    """The run's verdict entries, oldest first; a record from before the history was kept has
    its one stored evaluation, taken for what it says."""
    if record.evaluations:
        return list(record.evaluations)
    if record.evaluation and record.evaluation.get("gate") is not None:
        legacy = record.evaluation
        binding = legacy.get("binding") or {}
        return [
            {
                **verdicts.entry(legacy, str(legacy.get("id") or "legacy")),
                "gate": binding.get("gate") or "(unrecorded)",
                "holdout_sha256": binding.get("holdout_sha256")
                or (record.holdout.sha256 if record.holdout else None),
            }
        ]
    return []


def rollback(runs: RunStore, name: str, *, alias: str = PRODUCTION, actor: str = "") -> Promotion:
    """Move ``name@alias`` back to the run it pointed at before.

    The run it goes back to is read first: an alias is never moved onto a run whose record is
    missing, since every service resolving it would then fail.
    """
    target = runs.rollback_target(name, alias)
    if target is None:
        raise NotFoundError(f"{name}@{alias} has no earlier run to roll back to")
    record = runs.get(target)
    entry = runs.set_alias(name, alias, None, actor=actor)
    if entry.run_id != record.run_id:  # another rollback got there first
        record = runs.get(entry.run_id)
    return Promotion(name, alias, record, entry)


# --- the whole loop -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainOutcome:
    """How one retrain of one spec ended, and everything it learned on the way."""

    spec_path: str
    outcome: Outcome
    message: str
    exit_code: int = EXIT_OK
    spec_name: str | None = None
    plan: Plan | None = None
    record: RunRecord | None = None
    evaluation: EvaluationResult | None = None
    #: The run ``NAME@production`` served before this retrain (None: nothing yet).
    previous_run_id: str | None = None
    bytes_uploaded: int = 0
    #: The error that ended it, and its hint, for failures.
    error: str | None = None
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: What the workflow should hear even when all went well (a base model retiring soon).
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_error(
        cls, spec_path: str, kind: Outcome, message: str, exc: VertexTunerError, **more: Any
    ) -> RetrainOutcome:
        """An outcome that ended on ``exc``: its exit code, its words and its hint."""
        return cls(
            spec_path, kind, message, exc.exit_code, error=exc.message, hint=exc.hint, **more
        )

    @property
    def ok(self) -> bool:
        """Whether the outcome leaves a scheduled workflow green."""
        return OUTCOMES[self.outcome]

    @property
    def run_id(self) -> str | None:
        return self.record.run_id if self.record else None

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec_path,
            "spec_name": self.spec_name,
            "outcome": self.outcome,
            "ok": self.ok,
            "message": self.message,
            "exit_code": self.exit_code,
            "run_id": self.run_id,
            "job_name": self.record.job_name if self.record else None,
            "plan": self.plan.action if self.plan else None,
            "estimate": self.plan.estimate.model_dump(mode="json") if self.plan else None,
            "bytes_uploaded": self.bytes_uploaded,
            "previous_run_id": self.previous_run_id,
            "gate": self.evaluation.verdict.to_json()
            if self.evaluation and self.evaluation.verdict
            else None,
            "evaluation_estimate": self.evaluation.estimate if self.evaluation else None,
            "error": self.error,
            "hint": self.hint,
            "warnings": list(self.warnings),
            "base_model": self.record.base_model if self.record else None,
            "lineage": self.record.lineage if self.record else None,
        }


def retirement_warnings(spec: JobSpec, today: dt.date | None = None) -> tuple[str, ...]:
    """The warning a spec's base draws when it retires within :data:`models.WARN_DAYS` (or has
    an announced date within reach): the words ``validate`` and ``lifecycle`` use."""
    from vertex_tuner import models

    if models.model_info(spec.base_model) is None:
        return ()  # a tuned model or an alias: its base is the lifecycle command's to judge
    state = models.retirement(spec.base_model, models.today() if today is None else today)
    if state.status() != "retiring":
        return ()
    return (
        f"{state.message}; to re-tune this spec's data on it and promote it only if it passes "
        f"the gate: vertex-tuner retrain {spec.spec_path} --base-model "
        f"{(state.lifecycle.successor if state.lifecycle else None) or models.DEFAULT_BASE_MODEL}",
    )


def retrain(
    spec: JobSpec,
    *,
    service: TuningService,
    evaluator: Evaluator,
    wait_timeout: float | None = None,
    retry_failed: bool = False,
    observer: Observer | None = None,
    prepared: PreparedDataset | None = None,
    smoke: SmokeTest | None = None,
    actor: str = "",
    lineage: Mapping[str, Any] | None = None,
    today: dt.date | None = None,
) -> RetrainOutcome:
    """Submit (a no-op when nothing changed), wait, evaluate, and promote on a passing gate.

    ``prepared``: the spec's data, already validated by the caller (see TuningService.submit).
    ``smoke``: the smoke test the promotion must pass (see :func:`promote`).
    ``lineage``: the spec was re-targeted on a new base (:func:`vertex_tuner.spec.retarget`);
    the run records it, with the production run it is evaluated against (``replaces``).
    ``today``: the day retirement warnings are judged on.

    Never raises for what a run can end in: every ending is an outcome with its message and
    exit code (a still-running job is ``running``, exit 0: the next retrain attaches to it).
    """
    observer = observer or SilentObserver()
    state: dict[str, Any] = {"spec_name": spec.name, "warnings": retirement_warnings(spec, today)}

    def outcome(
        kind: Outcome, message: str, exit_code: int = EXIT_OK, **more: Any
    ) -> RetrainOutcome:
        return RetrainOutcome(str(spec.spec_path), kind, message, exit_code, **state, **more)

    def failure(kind: Outcome, what: str, exc: VertexTunerError) -> RetrainOutcome:
        return RetrainOutcome.from_error(str(spec.spec_path), kind, what, exc, **state)

    try:
        observer.notify(Step(spec.name, "submit"))
        try:
            submitted = service.submit(
                spec, wait=False, retry_failed=retry_failed, prepared=prepared
            )
        except BudgetExceeded as exc:
            return failure("over-budget", "submit refused: over budget", exc)
        except VertexTunerError as exc:
            return failure("failed", "submit failed", exc)
        record = submitted.record
        assert record is not None
        state.update(plan=submitted.plan, record=record, bytes_uploaded=submitted.bytes_uploaded)

        if not JobState.parse(record.state).is_terminal:
            observer.notify(Step(spec.name, "wait", record.job_name or ""))
            timeout = wait_timeout if wait_timeout is not None else spec.wait.timeout
            try:
                record = service.wait(
                    record,
                    timeout=timeout,
                    poll_max=spec.wait.poll_interval_max,
                    max_dropped_fraction=spec.dataset.max_dropped_fraction,
                )
            except WaitTimeout as exc:
                state["record"] = service.runs.get(record.run_id)
                return outcome(
                    "running",
                    f"still running after {human_seconds(timeout)}: the job keeps running in "
                    "Vertex, and the next retrain attaches to it (the run store carries the "
                    "state)",
                    error=exc.message,
                )
            except VertexTunerError as exc:
                state["record"] = _latest(service, record)
                return failure("failed", "the tuning job did not succeed", exc)
            state["record"] = record

        current = service.runs.aliases(spec.name).get(PRODUCTION)
        state["previous_run_id"] = current.run_id if current else None
        if current is not None and current.run_id == record.run_id:
            return outcome(
                "unchanged",
                f"{spec.name}@{PRODUCTION} already serves run {record.run_id}; nothing to "
                "evaluate or promote",
            )
        if current is not None and lineage is None:
            replaced = _replaced_by(service, current.run_id, record)
            if replaced is not None:
                return outcome("unchanged", replaced)
        if lineage is not None:
            record = record.model_copy(
                update={"lineage": {**lineage, "replaces": current.run_id if current else None}}
            )
            service.runs.save(record)
            state["record"] = record

        observer.notify(Step(spec.name, "evaluate", record.run_id))
        try:
            result = evaluate_run(evaluator, spec, record)
        except BudgetExceeded as exc:
            return failure("over-budget", "evaluation refused: over its budget", exc)
        except VertexTunerError as exc:
            return failure("failed", "evaluation failed", exc)
        state["evaluation"] = result
        state["record"] = service.runs.get(record.run_id)
        was = f"run {current.run_id}" if current else "nothing"
        try:
            check_gate(result)
            observer.notify(Step(spec.name, "promote", record.run_id))
            promotion = promote(
                service.runs,
                spec.name,
                record.run_id,
                alias=PRODUCTION,
                if_gate=True,
                gate=spec_gate(spec),
                generation=spec_generation(spec),
                smoke=smoke,
                actor=actor,
            )
        except GateFailed as exc:
            return failure(
                "gate-failed",
                f"the evaluation gate failed; {spec.name}@{PRODUCTION} stays at {was}",
                exc,
            )
        except SmokeTestFailed as exc:
            return failure(
                "smoke-failed",
                f"the smoke test failed; {spec.name}@{PRODUCTION} stays at {was}",
                exc,
            )
        except VertexTunerError as exc:
            return failure("failed", "promotion failed", exc)
        state["record"] = promotion.record
        return outcome(
            "promoted", f"{spec.name}@{PRODUCTION} → run {record.run_id} (it was at {was})"
        )
    except KeyboardInterrupt:
        current_record: RunRecord | None = state.get("record")
        job = current_record.job_name if current_record else None
        message = (
            f"detached; {job} keeps running in Vertex, and the next retrain attaches to it"
            if job
            else "interrupted before a job was created"
        )
        return outcome("interrupted", message, EXIT_INTERRUPTED)


def _replaced_by(service: TuningService, production_run: str, record: RunRecord) -> str | None:
    """Why ``record`` is not evaluated against production, when production serves a re-tune
    of it onto a new base: promoting the old run again would undo the migration."""
    try:
        production = service.runs.get(production_run)
    except NotFoundError:
        return None
    lineage = production.lineage or {}
    if lineage.get("replaces") != record.run_id:
        return None
    return (
        f"{record.spec_name}@{PRODUCTION} serves run {production.run_id}, a re-tune of run "
        f"{record.run_id} on {lineage.get('to_base')}; this spec still says base_model: "
        f"{record.base_model}. Set base_model: {lineage.get('to_base')} in "
        f"{record.spec_path or 'the spec'} to retrain on the new base"
    )


def _latest(service: TuningService, record: RunRecord) -> RunRecord:
    try:
        return service.runs.get(record.run_id)
    except VertexTunerError:
        return record
