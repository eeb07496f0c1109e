"""Running held-out prompts against the tuned, base and production models, and judging them.

:class:`Evaluator` is handed its collaborators like the tuning service: a
:class:`~vertex_tuner.backends.interface.Generator`, the run store (to find the ``production``
run and to store the result), storage (to read a held-out file from ``gs://``), a generation
cache, and the retry options, sleep and observer. Generations run with bounded concurrency, each
under the one retry policy (429 and 5xx, honouring ``Retry-After``).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from vertex_tuner import models
from vertex_tuner.errors import (
    BackendError,
    BudgetExceeded,
    DatasetError,
    NotFoundError,
    VertexTunerError,
)
from vertex_tuner.evaluation import verdicts
from vertex_tuner.evaluation.holdout import HeldOutExample, parse_holdout
from vertex_tuner.evaluation.metrics import REWARD
from vertex_tuner.events import (
    EvaluationPlanned,
    GenerationFailed,
    GenerationProgress,
    Observer,
    Retried,
    SilentObserver,
)
from vertex_tuner.retry import RetryOptions, retrying

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import (
        BatchPredictor,
        Generation,
        Generator,
        RewardScore,
        RewardValidator,
        Storage,
    )
    from vertex_tuner.evaluation.cache import GenerationCache
    from vertex_tuner.evaluation.cost import EvaluationCost
    from vertex_tuner.evaluation.judge import JudgeResult, JudgeSettings
    from vertex_tuner.evaluation.pacing import Pacer
    from vertex_tuner.evaluation.results import EvaluationResult, TargetResult
    from vertex_tuner.evaluation.reward import RewardScores, RewardSettings
    from vertex_tuner.records import RunRecord
    from vertex_tuner.runstore import RunStore


#: The share of a target's held-out prompts that may go unanswered (after every retry); beyond it
#: the evaluation stops instead of scoring the missing answers as empty ones.
MAX_FAILED_SHARE = 0.05


class GenerationSettings(Protocol):
    """How the evaluated models are called; the spec's ``evaluation.generation`` is one."""

    def settings(self) -> dict[str, Any]:
        """The settings that are set, named as :meth:`Generator.generate` takes them."""
        ...


class EvaluationSettings(Protocol):
    """What an evaluation needs to know; a spec's ``evaluation:`` section is one.

    A protocol rather than the spec's own model, so evaluation depends on nothing above it.
    """

    @property
    def metrics(self) -> Sequence[str]: ...
    @property
    def promote_if(self) -> str | None: ...
    @property
    def label_field(self) -> str | None: ...
    @property
    def max_examples(self) -> int | None: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def confidence(self) -> float: ...
    @property
    def judge(self) -> JudgeSettings | None: ...
    @property
    def generation(self) -> GenerationSettings: ...
    @property
    def mode(self) -> str: ...
    @property
    def batch_threshold(self) -> int: ...
    @property
    def batch_timeout(self) -> float: ...
    @property
    def max_qps(self) -> float | None: ...
    @property
    def max_cost_usd(self) -> float | None: ...


@dataclass(frozen=True)
class Target:
    """One model to evaluate: its role, what generateContent is called with, where it came from."""

    role: str
    model: str
    run_id: str | None = None
    #: What generateContent is called with (temperature, max output tokens, thinking).
    generation: Mapping[str, Any] = field(default_factory=lambda: dict(verdicts.DEFAULT_GENERATION))
    #: What batch prediction takes for it: a base model id or a tuned model's resource name
    #: (None: online only, e.g. a checkpoint, which has no model name of its own).
    batch_model: str | None = None
    #: The base model whose price applies (a tuned model is billed as its base).
    priced_as: str | None = None


class Evaluator:
    def __init__(
        self,
        *,
        generator: Generator,
        runs: RunStore,
        storage: Storage | None = None,
        cache: GenerationCache | None = None,
        retry: RetryOptions | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        observer: Observer | None = None,
        batch: BatchPredictor | None = None,
        rewards: RewardValidator | None = None,
    ) -> None:
        self.generator = generator
        self.batch = batch
        self.rewards = rewards
        self.runs = runs
        self.storage = storage
        self.cache = cache
        self.retry = retry or RetryOptions()
        self.sleep = sleep
        self.clock = clock
        self.observer: Observer = observer or SilentObserver()

    # --- inputs ---------------------------------------------------------------------------

    def load_holdout(
        self, record: RunRecord, local: Path | None = None
    ) -> tuple[list[HeldOutExample], str]:
        """The run's held-out examples, from a local file or the uploaded copy, and the SHA-256
        of the bytes they were read from (what a verdict is bound to)."""
        if local is not None:
            data = local.read_bytes()
            source = str(local)
        else:
            ref = record.holdout
            if ref is None or ref.uri is None:
                raise DatasetError(
                    f"run {record.run_id} has no held-out set",
                    hint="set evaluation.holdout in the spec (e.g. 0.1) and submit again",
                )
            if self.storage is None:
                raise VertexTunerError("reading a held-out set from Cloud Storage needs storage")
            data, _ = self.storage.read(ref.uri)
            source = ref.uri
        return parse_holdout(data.splitlines(), source=source), hashlib.sha256(data).hexdigest()

    def targets(
        self,
        record: RunRecord,
        against: Sequence[str],
        checkpoint: str | None = None,
        generation: Mapping[str, Any] | None = None,
    ) -> list[Target]:
        """The tuned endpoint (or that of one of the run's checkpoints) plus the requested
        comparison targets that exist.

        Tuned and base are called with ``generation`` (the spec's settings); production the
        way it is served: with the settings its own verdict recorded (a production model on
        another base may not take the new settings at all)."""
        settings = dict(verdicts.DEFAULT_GENERATION if generation is None else generation)
        endpoint = record.endpoint
        if checkpoint is not None:
            endpoint = checkpoint_endpoint(record, checkpoint)
        if not endpoint:
            raise NotFoundError(
                f"run {record.run_id} has no tuned endpoint (state {record.state})",
                hint=f"wait for the job first: vertex-tuner wait {record.job_name}",
            )
        tuned_model = record.tuned_model if checkpoint is None else None
        priced = self._priced_as(record)
        out = [Target("tuned", endpoint, record.run_id, settings, tuned_model, priced)]
        for role in against:
            if role == "base":
                base = self._original_base(record)
                out.append(Target("base", base, None, settings, base, base))
            elif role == "production":
                entry = self.runs.aliases(record.spec_name).get("production")
                if entry is None:
                    continue
                production = self.runs.get(entry.run_id)
                served = (
                    checkpoint_endpoint(production, entry.checkpoint)
                    if entry.checkpoint is not None
                    else production.endpoint
                )
                if served:
                    used = verdicts.served_generation(production, served)
                    model = production.tuned_model if entry.checkpoint is None else None
                    priced = self._priced_as(production)
                    out.append(Target("production", served, production.run_id, used, model, priced))
            else:
                raise VertexTunerError(
                    f"unknown comparison target {role!r}; use base and/or production"
                )
        return out

    def _priced_as(self, record: RunRecord) -> str | None:
        """The base whose price a run's model is billed at (None when it cannot be found)."""
        try:
            return self._original_base(record)
        except NotFoundError:
            return None

    def _original_base(self, record: RunRecord) -> str:
        """The Gemini base model under a chain of continuous-tuning runs.

        Each record names its parent run (``parent_run_id``), so this reads one record per
        link, whatever the store's size. Records written before the lineage was kept are looked
        for among their own spec's runs (one prefix listing), never the whole store.
        """
        current = record
        seen = {record.run_id}
        while models.is_tuned_model_name(current.base_model):
            parent = self._parent(current)
            if parent is None or parent.run_id in seen:
                break
            seen.add(parent.run_id)
            current = parent
        base = current.base_model
        if models.is_tuned_model_name(base):
            # The parent run is unknown here: compare against the tuned model's endpoint is not
            # possible without it, so say what to do instead of guessing.
            raise NotFoundError(
                f"cannot find the base model under {base}",
                hint="evaluate against production only: --against production",
            )
        return base

    def _parent(self, record: RunRecord) -> RunRecord | None:
        if record.parent_run_id:
            try:
                return self.runs.get(record.parent_run_id)
            except NotFoundError:
                return None
        wanted = record.base_model
        return next((r for r in self.runs.list(record.spec_name) if r.tuned_model == wanted), None)

    # --- running ------------------------------------------------------------------------

    def generate_all(
        self,
        targets: Sequence[Target],
        examples: Sequence[HeldOutExample],
        *,
        concurrency: int,
        fresh: bool = False,
        max_qps: float | None = None,
    ) -> tuple[dict[str, list[str | None]], dict[str, dict[str, int]]]:
        """Every example against every target; ``None`` where generation failed for good. Also
        the tokens each target's answers cost (answers from the cache cost nothing; ``fresh``:
        the cache is not read, only written).

        One :class:`~vertex_tuner.evaluation.pacing.Pacer` paces every target (they draw on
        the same base-model quota): at most ``concurrency`` calls at once, halved on a burst
        of 429s and grown back by one per window of successes, and at most ``max_qps``
        requests a second, retries included."""
        from vertex_tuner.evaluation.pacing import Pacer

        pacer = Pacer.build(max(1, concurrency), max_qps, sleep=self.sleep)
        jobs = [(t, e) for t in targets for e in examples]
        outputs: dict[str, list[str | None]] = {t.role: [None] * len(examples) for t in targets}
        usage = {t.role: {"prompt": 0, "output": 0} for t in targets}
        done = dict.fromkeys(outputs, 0)

        def run(
            pair: tuple[Target, HeldOutExample],
        ) -> tuple[str, int, Generation | None, bool]:
            target, example = pair
            try:
                generation, cached = self._generate(target, example, fresh=fresh, pacer=pacer)
            except VertexTunerError as exc:
                self.observer.notify(GenerationFailed(target.role, example.index, str(exc)))
                return target.role, example.index, None, False
            return target.role, example.index, generation, cached

        with ThreadPoolExecutor(max_workers=pacer.workers) as pool:
            for role, index, generation, cached in pool.map(run, jobs):
                if generation is not None:
                    outputs[role][index] = generation.text
                    if not cached:
                        usage[role]["prompt"] += generation.input_tokens or 0
                        usage[role]["output"] += generation.output_tokens or 0
                done[role] += 1
                self.observer.notify(GenerationProgress(role, done[role], len(examples)))
        return outputs, usage

    def _check_failures(self, outputs: dict[str, list[str | None]]) -> None:
        """Stop when a target answered too few prompts: a failed generation scored as an empty
        answer would let a gate pass against a model that is down (fail closed)."""
        for role, answers in outputs.items():
            failed = sum(1 for a in answers if a is None)
            if answers and failed / len(answers) > MAX_FAILED_SHARE:
                raise BackendError(
                    f"{role}: {failed} of {len(answers)} held-out prompts got no answer (more "
                    f"than {MAX_FAILED_SHARE:.0%}); no verdict was stored",
                    hint="check that the model's endpoint still exists and has quota, then "
                    "evaluate again (answers that came back are cached)",
                )

    def _cache_key(self, target: Target, example: HeldOutExample) -> str | None:
        if self.cache is None:
            return None
        return self.cache.key(
            target.model, example.contents, example.system_instruction, dict(target.generation)
        )

    def _cached(self, target: Target, example: HeldOutExample) -> Generation | None:
        key = self._cache_key(target, example)
        return self.cache.get(key) if self.cache is not None and key is not None else None

    def _has_cached(self, target: Target, example: HeldOutExample) -> bool:
        key = self._cache_key(target, example)
        return self.cache is not None and key is not None and self.cache.has(key)

    def _generate(
        self,
        target: Target,
        example: HeldOutExample,
        *,
        fresh: bool = False,
        pacer: Pacer | None = None,
    ) -> tuple[Generation, bool]:
        """The target's answer to one example, and whether it came from the cache."""
        model = target.model
        settings = dict(target.generation)
        key = self._cache_key(target, example)
        if not fresh:
            hit = self._cached(target, example)
            if hit is not None:
                return hit, True

        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome else None
            call = f"generate ({target.role}, example {example.index})"
            self.observer.notify(Retried(call, str(exc), state.attempt_number))

        def attempt() -> Generation:
            return self.generator.generate(
                model, example.contents, system_instruction=example.system_instruction, **settings
            )

        # The retry policy wraps the pacer: each attempt takes a slot and a token, a 429
        # reaches the window at once, and a call waiting out its backoff holds no slot.
        generation = retrying(self.retry, sleep=self.sleep, before_sleep=before_sleep)(
            attempt if pacer is None else functools.partial(pacer.call, attempt)
        )
        if self.cache is not None and key is not None:
            self.cache.put(key, generation)
        return generation, False

    # --- batch prediction --------------------------------------------------------------------

    def choose_mode(
        self,
        settings: EvaluationSettings,
        targets: Sequence[Target],
        examples: Sequence[HeldOutExample],
        *,
        staging: str | None,
        mode: str | None = None,
    ) -> dict[str, str]:
        """``online`` or ``batch`` per target: ``mode`` (a flag) or ``evaluation.mode``; auto
        is batch from ``batch_threshold`` requests. A target batch prediction cannot take (a
        checkpoint) is online."""
        wanted = mode or settings.mode
        if wanted == "auto":
            requests = len(targets) * len(examples)
            wanted = "batch" if requests >= settings.batch_threshold else "online"
        if wanted == "batch" and (self.batch is None or self.storage is None or not staging):
            raise VertexTunerError(
                "batch evaluation needs Vertex batch prediction and a Cloud Storage staging "
                "folder (gcp.bucket, gcp.prefix)",
                hint="evaluate with --mode online",
            )
        return {
            t.role: "batch" if wanted == "batch" and t.batch_model else "online" for t in targets
        }

    def generate_batch(
        self,
        record: RunRecord,
        targets: Sequence[Target],
        examples: Sequence[HeldOutExample],
        *,
        staging: str,
        timeout: float,
        resume: bool = False,
        fresh: bool = False,
    ) -> tuple[dict[str, list[str | None]], dict[str, dict[str, int]]]:
        """Every example against every target through one batch job per target (what the
        cache answers is not asked again, unless ``fresh``); the answers join the cache."""
        from vertex_tuner.evaluation.batch import BatchGenerations, BatchTarget

        assert self.batch is not None and self.storage is not None
        outputs: dict[str, list[str | None]] = {t.role: [None] * len(examples) for t in targets}
        usage = {t.role: {"prompt": 0, "output": 0} for t in targets}
        asks: list[BatchTarget] = []
        for target in targets:
            pending = []
            for example in examples:
                hit = None if fresh else self._cached(target, example)
                if hit is None:
                    pending.append(example)
                else:
                    outputs[target.role][example.index] = hit.text
            if pending:
                assert target.batch_model is not None
                asks.append(
                    BatchTarget(target.role, target.batch_model, target.generation, pending)
                )
        runner = BatchGenerations(
            self.batch,
            self.storage,
            retry=self.retry,
            sleep=self.sleep,
            clock=self.clock,
            observer=self.observer,
            resume_command=f"vertex-tuner evaluate {record.spec_path or record.run_id} --resume",
        )
        answered = runner.run(
            record.run_id, asks, staging=staging, timeout=timeout, resume=resume, fresh=fresh
        )
        by_role = {t.role: t for t in targets}
        for role, answers in answered.items():
            target = by_role[role]
            for index, generation in answers.items():
                if generation is None:
                    self.observer.notify(
                        GenerationFailed(role, index, "the batch job answered no text")
                    )
                    continue
                outputs[role][index] = generation.text
                usage[role]["prompt"] += generation.input_tokens or 0
                usage[role]["output"] += generation.output_tokens or 0
                key = self._cache_key(target, examples[index])
                if self.cache is not None and key is not None:
                    self.cache.put(key, generation)
        return outputs, usage

    def estimate(
        self,
        settings: EvaluationSettings,
        targets: Sequence[Target],
        examples: Sequence[HeldOutExample],
        modes: Mapping[str, str],
        *,
        fresh: bool = False,
        reward: RewardSettings | None = None,
    ) -> EvaluationCost:
        """The evaluation's tokens and cost before any prompt is sent (see
        :mod:`vertex_tuner.evaluation.cost`): what the cache answers costs nothing."""
        from vertex_tuner.evaluation.cost import EvaluationCost, judge_cost, target_cost

        parts = []
        for target in targets:
            asked = [e for e in examples if fresh or not self._has_cached(target, e)]
            parts.append(
                target_cost(
                    target.role,
                    target.model,
                    target.priced_as or target.model,
                    modes[target.role],
                    asked,
                    len(examples) - len(asked),
                    target.generation,
                )
            )
        judge = None
        if "judge" in settings.metrics and settings.judge is not None and len(targets) > 1:
            samples = settings.judge.samples or len(examples)
            judge = judge_cost(
                settings.judge.model,
                settings.judge.rubric,
                examples[:samples],
                len(targets) - 1,
                targets[0].generation,
            )
        unpriced = sorted(
            {p.priced_as for p in [*parts, *([judge] if judge else [])] if p.cost_usd is None}
        )
        rewarded = any(m in REWARD for m in settings.metrics)
        if rewarded and reward is not None and reward.autorater:
            unpriced.append("the reward's autorater")
        calls = len(examples) * len(targets) if rewarded else 0
        return EvaluationCost(parts, judge, unpriced=unpriced, reward_calls=calls)

    def dry_run(
        self,
        record: RunRecord,
        settings: EvaluationSettings,
        *,
        against: Sequence[str] = ("base", "production"),
        checkpoint: str | None = None,
        staging: str | None = None,
        mode: str | None = None,
        fresh: bool = False,
        reward: RewardSettings | None = None,
    ) -> EvaluationCost:
        """What :meth:`evaluate` would send and cost, sending nothing (``evaluate --dry-run``)."""
        examples, _ = self.load_holdout(record)
        if settings.max_examples is not None:
            examples = examples[: settings.max_examples]
        targets = self.targets(record, against, checkpoint, settings.generation.settings())
        modes = self.choose_mode(settings, targets, examples, staging=staging, mode=mode)
        return self.estimate(settings, targets, examples, modes, fresh=fresh, reward=reward)

    def check_budget(self, settings: EvaluationSettings, cost: EvaluationCost) -> None:
        """BudgetExceeded (exit 3) when the upper end is over ``evaluation.max_cost_usd``, or
        cannot be known; nothing has been sent."""
        budget = settings.max_cost_usd
        if budget is None:
            return
        high = cost.cost_high_usd
        if high is None:
            raise BudgetExceeded(
                f"the evaluation's cost cannot be estimated (no price for "
                f"{', '.join(cost.unpriced)}), so it cannot be held to evaluation.max_cost_usd "
                f"${budget:,.2f}; nothing was sent",
                hint="remove evaluation.max_cost_usd, or evaluate fewer examples "
                "(evaluation.max_examples)",
            )
        if high > budget:
            raise BudgetExceeded(
                f"the evaluation is estimated at up to ${high:,.4f} (central "
                f"${cost.cost_usd or 0:,.4f}), over evaluation.max_cost_usd ${budget:,.2f}; "
                f"nothing was sent\n{cost.describe()}",
                hint="lower evaluation.max_examples, use mode batch (half the price), or raise "
                "evaluation.max_cost_usd",
            )

    def _judge(
        self,
        settings: EvaluationSettings,
        targets: Sequence[Target],
        examples: Sequence[HeldOutExample],
        outputs: dict[str, list[str | None]],
    ) -> dict[str, JudgeResult]:
        """The judge's verdicts, tuned against each other target, when ``judge`` is a metric."""
        if "judge" not in settings.metrics or settings.judge is None:
            return {}
        from vertex_tuner.evaluation.judge import judge_pairs

        if len(targets) < 2:
            raise VertexTunerError(
                "the judge metric compares the tuned model with another one",
                hint="evaluate against base and/or production (--against base,production)",
            )
        tuned = targets[0].role
        judged: dict[str, JudgeResult] = {}
        for other in targets[1:]:

            def progress(done: int, total: int, role: str = other.role) -> None:
                self.observer.notify(GenerationProgress(f"judge ({tuned} vs {role})", done, total))

            result = judge_pairs(
                self._judge_call,
                examples,
                outputs[tuned],
                outputs[other.role],
                settings=settings.judge,
                roles=(tuned, other.role),
                concurrency=settings.concurrency,
                on_progress=progress,
            )
            judged[result.pair] = result
        return judged

    def _judge_call(
        self,
        model: str,
        contents: Sequence[Mapping[str, Any]],
        system_instruction: str,
        response_schema: Mapping[str, Any],
    ) -> tuple[str, dict[str, int | None]]:
        """One question to the judge model, under the one retry policy."""

        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.observer.notify(Retried(f"judge ({model})", str(exc), state.attempt_number))

        answer = retrying(self.retry, sleep=self.sleep, before_sleep=before_sleep)(
            lambda: self.generator.generate(
                model,
                contents,
                system_instruction=system_instruction,
                temperature=0.0,
                response_schema=response_schema,
            )
        )
        return answer.text, {"prompt": answer.input_tokens, "output": answer.output_tokens}

    def _check_reward(
        self,
        settings: EvaluationSettings,
        examples: Sequence[HeldOutExample],
        reward: RewardSettings | None,
    ) -> bool:
        """Whether the reward metric is evaluated; an error before any prompt is sent when it
        cannot be (no reward, no way to score it, or a prompt without references)."""
        from vertex_tuner.evaluation.reward import example_of

        if not any(m in REWARD for m in settings.metrics):
            return False
        if reward is None:
            raise VertexTunerError(
                "the reward metric scores answers with the spec's reward, and none was given",
                hint="the reward metric is for method: reinforcement, whose spec has reward:",
            )
        if self.rewards is None:
            raise VertexTunerError(
                "the reward metric needs Vertex's validateReinforcementTuningReward, which "
                "this evaluator has no client for",
                hint="evaluate with cloud access, or with --sandbox",
            )
        for example in examples:
            example_of(example)
        return True

    def _score_rewards(
        self,
        settings: EvaluationSettings,
        examples: Sequence[HeldOutExample],
        outputs: Mapping[str, Sequence[str | None]],
        reward: RewardSettings | None,
        *,
        fresh: bool = False,
    ) -> RewardScores:
        """Every answer scored by the spec's reward, each call under the one retry policy; a
        score kept in the cache for the same reward, example and answer is not asked again
        (``fresh``: always asked)."""
        from vertex_tuner.evaluation.reward import score_rewards

        assert reward is not None and self.rewards is not None
        validator = self.rewards

        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.observer.notify(Retried("reward", str(exc), state.attempt_number))

        cache = self.cache
        kept_scores: list[int] = []

        def call(example: Mapping[str, Any], response: Mapping[str, Any]) -> RewardScore:
            key = cache.reward_key(reward.sha256, example, response) if cache else None
            if cache is not None and key is not None and not fresh:
                kept = cache.get_reward(key)
                if kept is not None:
                    kept_scores.append(1)  # list.append is atomic across the pool's threads
                    return kept
            score = retrying(self.retry, sleep=self.sleep, before_sleep=before_sleep)(
                lambda: validator.validate_reward(example, response, reward.payload)
            )
            if cache is not None and key is not None:
                cache.put_reward(key, score)
            return score

        def progress(done: int, total: int) -> None:
            self.observer.notify(GenerationProgress("the reward", done, total, scoring=True))

        scored = score_rewards(
            call, examples, outputs, concurrency=settings.concurrency, on_progress=progress
        )
        scored.cached = len(kept_scores)
        return scored

    def evaluate(
        self,
        record: RunRecord,
        settings: EvaluationSettings,
        *,
        against: Sequence[str] = ("base", "production"),
        holdout_file: Path | None = None,
        json_schema: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        staging: str | None = None,
        mode: str | None = None,
        fresh: bool = False,
        resume: bool = False,
        reward: RewardSettings | None = None,
    ) -> EvaluationResult:
        """Run the held-out set, score it, judge the gate, and store the result with the run.

        ``checkpoint``: evaluate that checkpoint's endpoint as the tuned model instead of the
        run's final one (the verdict records which). ``staging`` (``gs://bucket/prefix``):
        where batch prediction's request files go; ``mode`` overrides ``evaluation.mode``;
        ``fresh``: generate every answer again; ``resume``: only attach to batch jobs an
        earlier evaluation created. ``reward``: a reinforcement spec's reward, which the
        ``reward`` metric scores each answer with. The cost is estimated, and held to
        ``evaluation.max_cost_usd``, before any prompt is sent."""
        from vertex_tuner.evaluation.gate import parse_gate
        from vertex_tuner.evaluation.metrics import PAIRWISE, check_metric_options, compute_metrics
        from vertex_tuner.evaluation.results import (
            EvaluationResult,
            ExampleResult,
            TargetResult,
        )
        from vertex_tuner.evaluation.statistics import compare, compare_all

        examples, holdout_sha256 = self.load_holdout(record, holdout_file)
        if settings.max_examples is not None:
            examples = examples[: settings.max_examples]
        if not examples:
            raise DatasetError(f"run {record.run_id}: the held-out set is empty")
        # A metric missing an option (or given a bad schema) fails before any prompt is sent.
        options: dict[str, Any] = {"json_schema": json_schema, "label_field": settings.label_field}
        check_metric_options(settings.metrics, options)
        rewarded = self._check_reward(settings, examples, reward)
        targets = self.targets(record, against, checkpoint, settings.generation.settings())
        modes = self.choose_mode(settings, targets, examples, staging=staging, mode=mode)
        cost = self.estimate(settings, targets, examples, modes, fresh=fresh, reward=reward)
        self.observer.notify(EvaluationPlanned(record.run_id, cost.summary()))
        self.check_budget(settings, cost)
        batched = [t for t in targets if modes[t.role] == "batch"]
        outputs, outputs_usage = self.generate_all(
            [t for t in targets if modes[t.role] == "online"],
            examples,
            concurrency=settings.concurrency,
            fresh=fresh,
            max_qps=settings.max_qps,
        )
        if batched:
            assert staging is not None
            answers, used = self.generate_batch(
                record,
                batched,
                examples,
                staging=staging,
                timeout=settings.batch_timeout,
                resume=resume,
                fresh=fresh,
            )
            outputs.update(answers)
            outputs_usage.update(used)
        outputs = {t.role: outputs[t.role] for t in targets}
        self._check_failures(outputs)
        references = [e.reference for e in examples]
        target_results: dict[str, TargetResult] = {}
        per_example: dict[str, list[dict[str, float | None]]] = {}
        for target in targets:
            predictions = outputs[target.role]
            scored = compute_metrics(
                settings.metrics, references, [p or "" for p in predictions], options=options
            )
            target_results[target.role] = TargetResult(
                model=target.model,
                metrics=dict(scored.per_metric),
                errors=sum(1 for p in predictions if p is None),
            )
            per_example[target.role] = list(scored.per_example)
        rewards = (
            self._score_rewards(settings, examples, outputs, reward, fresh=fresh)
            if rewarded
            else None
        )
        if rewards is not None:
            for target in targets:
                scored_rewards = rewards.scores[target.role]
                for row, value in zip(per_example[target.role], scored_rewards, strict=True):
                    row["reward"] = value
                mean_reward = rewards.mean(target.role)
                if mean_reward is not None:
                    target_results[target.role].metrics["reward"] = mean_reward
        verdict = None
        gate = parse_gate(settings.promote_if) if settings.promote_if else None
        confidence = settings.confidence
        judged = self._judge(settings, targets, examples, outputs)
        _judge_scores(judged, targets, examples, target_results, per_example)
        # Every metric, tuned against each other target, example by example (paired). The
        # judge's scores are paired within each judged pair, so its comparisons come from there.
        comparisons = compare_all(
            [{t.role: per_example[t.role][e.index] for t in targets} for e in examples],
            [m for m in settings.metrics if m not in PAIRWISE],
            [t.role for t in targets],
            confidence=confidence,
        )
        for pair, res in judged.items():
            first, second = res.roles
            paired = compare(res.scores[first], res.scores[second], confidence=confidence)
            if paired is not None:
                comparisons.setdefault(pair, {})["judge"] = paired
        if gate is not None:
            values = {role: tr.metrics for role, tr in target_results.items()}
            verdict = gate.evaluate(values, comparisons, confidence=confidence)
        binding = {
            "run": record.run_id,
            "tuned": targets[0].model,
            "checkpoint": checkpoint,
            "holdout_sha256": holdout_sha256,
            "holdout": str(holdout_file)
            if holdout_file
            else (record.holdout.uri if record.holdout else None),
            "examples": len(examples),
            "gate": str(gate) if gate is not None else None,
            "against": list(against),
            "metrics": list(settings.metrics),
            "metric_options": {
                "label_field": settings.label_field,
                "json_schema_sha256": None
                if json_schema is None
                else hashlib.sha256(
                    orjson.dumps(json_schema, option=orjson.OPT_SORT_KEYS)
                ).hexdigest(),
            },
            "max_examples": settings.max_examples,
            "confidence": confidence,
            "modes": modes,
            "reward_sha256": reward.sha256 if rewarded and reward is not None else None,
            "generation": dict(targets[0].generation),
            **{
                f"{t.role}_generation": dict(t.generation)
                for t in targets[1:]
                if t.generation != targets[0].generation
            },
            "judge": None
            if settings.judge is None or not judged
            else {
                "model": settings.judge.model,
                "rubric_sha256": hashlib.sha256(settings.judge.rubric.encode()).hexdigest(),
                "samples": settings.judge.samples,
                "temperature": 0.0,
                "pairs": {pair: res.summary() for pair, res in judged.items()},
            },
        }
        result = EvaluationResult(
            spec=record.spec_name,
            run=record.run_id,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock())),
            metrics=list(settings.metrics),
            targets=target_results,
            examples=[
                ExampleResult(
                    index=e.index,
                    prompt=e.prompt_text,
                    reference=e.reference,
                    outputs={t.role: outputs[t.role][e.index] or "" for t in targets},
                    scores={t.role: per_example[t.role][e.index] for t in targets},
                    judge={
                        pair: dict(detail)
                        for pair, res in judged.items()
                        if (detail := res.details[e.index]) is not None
                    },
                    rewards={}
                    if rewards is None
                    else {t.role: dict(rewards.details[t.role][e.index]) for t in targets},
                )
                for e in examples
            ],
            verdict=verdict,
            binding=binding,
            comparisons=comparisons,
            usage=_usage(outputs_usage, judged, rewards),
            estimate=cost.to_json(),
        )
        self._keep(record, result)
        return result

    def _keep(self, record: RunRecord, result: EvaluationResult) -> None:
        """Store the verdict as a new object and list it in the run record, whose latest
        ``evaluation`` it becomes. Nothing earlier is replaced."""
        from vertex_tuner.evaluation import verdicts

        summary = _summary(result)
        verdict_id = self.runs.add_evaluation(record.run_id, summary)
        try:
            current = self.runs.get(record.run_id)  # the stored one: others may have appended
        except NotFoundError:
            current = record
        history = [*current.evaluations, verdicts.entry(summary, verdict_id)]
        self.runs.save(
            current.model_copy(
                update={"evaluation": {**summary, "id": verdict_id}, "evaluations": history}
            )
        )


def _judge_scores(
    judged: Mapping[str, JudgeResult],
    targets: Sequence[Target],
    examples: Sequence[HeldOutExample],
    target_results: dict[str, TargetResult],
    per_example: dict[str, list[dict[str, float | None]]],
) -> None:
    """Put the judge's scores with the other metrics: each compared target's score against
    the tuned model, and the tuned model's against the first target it was compared with."""
    if not judged:
        return
    tuned = targets[0].role
    for res in judged.values():
        other = res.roles[1]
        _set_judge(res, other, examples, target_results, per_example)
    _set_judge(next(iter(judged.values())), tuned, examples, target_results, per_example)


def _set_judge(
    res: JudgeResult,
    role: str,
    examples: Sequence[HeldOutExample],
    target_results: dict[str, TargetResult],
    per_example: dict[str, list[dict[str, float | None]]],
) -> None:
    mean = res.mean(role)
    if mean is not None:
        target_results[role].metrics["judge"] = mean
    for e in examples:
        per_example[role][e.index]["judge"] = res.scores[role][e.index]


def _usage(
    generated: Mapping[str, Mapping[str, int]],
    judged: Mapping[str, JudgeResult],
    rewards: RewardScores | None = None,
) -> dict[str, dict[str, int]]:
    """Tokens the evaluation spent: per target, and the judge's over all its pairs; and the
    reward's scoring (``{"calls": N, "cached": C, "failed": M}``: calls made, scores the cache
    kept, answers not scored)."""
    usage = {role: dict(u) for role, u in generated.items()}
    if judged:
        usage["judge"] = {
            key: sum(res.usage.get(key, 0) for res in judged.values())
            for key in ("prompt", "output")
        }
    if rewards is not None:
        usage["reward"] = {
            "calls": rewards.calls - rewards.cached,
            "cached": rewards.cached,
            "failed": sum(rewards.failed.values()),
        }
    return usage


def checkpoint_endpoint(record: RunRecord, checkpoint: str) -> str:
    """The endpoint of one of the run's checkpoints; NotFoundError naming the ones there are."""
    found = {str(c.get("checkpoint_id")): c.get("endpoint") for c in record.checkpoints}
    endpoint = found.get(checkpoint)
    if not endpoint:
        known = ", ".join(k for k, v in found.items() if v) or "none with an endpoint"
        raise NotFoundError(
            f"run {record.run_id} has no checkpoint {checkpoint!r} with an endpoint ({known})",
            hint=f"list them with: vertex-tuner show {record.run_id}",
        )
    return str(endpoint)


def _summary(result: EvaluationResult) -> dict[str, Any]:
    """What the run record keeps of an evaluation: everything but the per-example outputs."""
    doc: dict[str, Any] = orjson.loads(orjson.dumps(result.to_json()))
    doc.pop("examples", None)
    return doc
