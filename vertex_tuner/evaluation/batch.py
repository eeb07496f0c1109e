"""Held-out prompts answered by Vertex batch prediction instead of one generateContent call each.

A batch job reads a JSONL of ``{"request": GenerateContentRequest}`` lines from Cloud Storage
and writes the requests back with their responses, at half the online price and without
touching the online quota that production traffic shares. Per target:

1. the requests the cache cannot answer are written to
   ``{staging}/evaluations/{run}/{role}-{digest}.jsonl``, each tagged with its example in the
   request's ``labels`` (``vt_key``), which Vertex echoes back with the response;
2. the job is named ``vt-eval-{role}-{digest}``, the digest covering the model and every byte
   of the requests, so an evaluation that is retried, interrupted or resumed finds the job it
   created (by that name) and attaches to it instead of paying twice;
3. the jobs are followed together, under the one retry policy, until each ends or the timeout
   passes (then :class:`~vertex_tuner.errors.WaitTimeout`: the jobs keep running and
   ``evaluate --resume`` attaches to them);
4. ``predictions*.jsonl`` under the job's output folder are read back by key; a line with a
   ``status`` and no response is a failed generation, counted like an online one.

Batch prediction takes a tuned model by its model resource name (``projects/…/models/ID@V``),
not its endpoint; a checkpoint has no model name of its own, so checkpoints are evaluated
online.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from vertex_tuner.backends.interface import Generation
from vertex_tuner.errors import BackendError, Detached, NotFoundError, WaitTimeout
from vertex_tuner.events import BatchState, Observer, Retried, SilentObserver
from vertex_tuner.retry import RetryOptions, retrying

if TYPE_CHECKING:
    from vertex_tuner.backends.interface import BatchJob, BatchPredictor, Storage
    from vertex_tuner.evaluation.holdout import HeldOutExample

#: The request label that carries an example's key through the job.
KEY_LABEL = "vt_key"
#: Jobs that ended this way are not attached to: a new one is created.
_DEAD = frozenset({"FAILED", "CANCELLED", "CANCELLING", "EXPIRED"})


@dataclass(frozen=True)
class BatchTarget:
    """One target's share of a batch evaluation: what to ask, and of which model."""

    role: str
    #: The model batch prediction takes: a base model id or a tuned model's resource name.
    model: str
    generation: Mapping[str, Any]
    examples: Sequence[HeldOutExample]


def key(example: HeldOutExample) -> str:
    return f"e{example.index}"


def request_line(example: HeldOutExample, generation: Mapping[str, Any]) -> dict[str, Any]:
    """One input line: the GenerateContentRequest online evaluation would send, tagged."""
    request: dict[str, Any] = {"contents": list(example.contents)}
    if example.system_instruction:
        request["systemInstruction"] = {"parts": [{"text": example.system_instruction}]}
    config = generation_config(generation)
    if config:
        request["generationConfig"] = config
    request["labels"] = {KEY_LABEL: key(example)}
    return {"request": request}


def generation_config(generation: Mapping[str, Any]) -> dict[str, Any]:
    """``evaluation.generation`` as the REST ``GenerationConfig`` (what google-genai sends)."""
    config: dict[str, Any] = {}
    if generation.get("temperature") is not None:
        config["temperature"] = generation["temperature"]
    if generation.get("max_output_tokens") is not None:
        config["maxOutputTokens"] = generation["max_output_tokens"]
    thinking: dict[str, Any] = {}
    if generation.get("thinking_budget") is not None:
        thinking["thinkingBudget"] = generation["thinking_budget"]
    if generation.get("thinking_level") is not None:
        thinking["thinkingLevel"] = str(generation["thinking_level"]).upper()
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def response_text(response: Mapping[str, Any]) -> str | None:
    """The answer in a GenerateContentResponse (thought parts left out), or None."""
    candidates = response.get("candidates") or []
    if not candidates:
        return None
    parts = (candidates[0].get("content") or {}).get("parts") or []
    texts = [str(p["text"]) for p in parts if "text" in p and not p.get("thought")]
    return "".join(texts) if texts else None


class BatchGenerations:
    """Creates (or finds), follows and reads back one batch job per target."""

    def __init__(
        self,
        predictor: BatchPredictor,
        storage: Storage,
        *,
        retry: RetryOptions | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        observer: Observer | None = None,
        poll_max: float = 60.0,
        resume_command: str = "vertex-tuner evaluate SPEC --resume",
    ) -> None:
        self.predictor = predictor
        self.storage = storage
        self.retry = retry or RetryOptions()
        self.sleep = sleep
        self.clock = clock
        self.observer: Observer = observer or SilentObserver()
        self.poll_max = poll_max
        #: What a timed-out evaluation tells the user to run to attach again.
        self.resume_command = resume_command

    def _call(self, what: str, func: Callable[[], Any]) -> Any:
        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.observer.notify(Retried(what, str(exc), state.attempt_number))

        return retrying(self.retry, sleep=self.sleep, before_sleep=before_sleep)(func)

    def run(
        self,
        run_id: str,
        targets: Sequence[BatchTarget],
        *,
        staging: str,
        timeout: float,
        resume: bool = False,
        fresh: bool = False,
    ) -> dict[str, dict[int, Generation | None]]:
        """Every target's answers by example index (None: the line failed). ``fresh``: a job
        that already finished is not read again (its answers are old); a running one is
        still attached to."""
        staging = staging.rstrip("/")
        jobs = {t.role: self._start(run_id, t, staging, resume, fresh) for t in targets}
        try:
            finished = self._follow(jobs, {t.role: len(t.examples) for t in targets}, timeout)
        except KeyboardInterrupt:
            names = ", ".join(j.name for j in jobs.values())
            raise Detached(
                f"detached; the batch jobs ({names}) keep running in Vertex, and no verdict "
                "was stored",
                hint=f"attach to them with: {self.resume_command}",
            ) from None
        return {t.role: self._read(finished[t.role], t) for t in targets}

    def _start(
        self, run_id: str, target: BatchTarget, staging: str, resume: bool, fresh: bool
    ) -> BatchJob:
        body = b"".join(
            orjson.dumps(request_line(e, target.generation)) + b"\n" for e in target.examples
        )
        digest = hashlib.sha256(target.model.encode() + b"\0" + body).hexdigest()[:16]
        name = f"vt-eval-{target.role}-{digest}"
        found = self._call(f"find {name}", lambda: self.predictor.find(name))
        alive = [
            j for j in found if j.state.value not in _DEAD and not (fresh and j.state.is_terminal)
        ]
        if alive:
            job: BatchJob = alive[0]
            self.observer.notify(
                BatchState(target.role, job.name, job.state.value, len(target.examples), True)
            )
            return job
        if resume:
            raise NotFoundError(
                f"{target.role}: no batch job {name} to resume (none was created for these "
                "prompts, or it failed)",
                hint="evaluate without --resume to create it",
            )
        source = f"{staging}/evaluations/{run_id}/{target.role}-{digest}.jsonl"
        if self.storage.stat(source) is None:
            self._call(
                f"upload {source}",
                lambda: self.storage.write(source, body, if_generation_match=None),
            )
        dest = f"{staging}/evaluations/{run_id}/out-{target.role}-{digest}/"
        job = self._call(
            f"create {name}", lambda: self.predictor.create(target.model, source, dest, name)
        )
        self.observer.notify(
            BatchState(target.role, job.name, job.state.value, len(target.examples))
        )
        return job

    def _follow(
        self, jobs: dict[str, BatchJob], sizes: Mapping[str, int], timeout: float
    ) -> dict[str, BatchJob]:
        """Poll every job until each has ended (backing off to ``poll_max``)."""
        deadline = self.clock() + timeout
        pause = 1.0
        current = dict(jobs)
        while True:
            for role, job in list(current.items()):
                if job.state.is_terminal:
                    continue
                latest: BatchJob = self._call(
                    f"read {job.name}", functools.partial(self.predictor.get, job.name)
                )
                if latest.state != job.state:
                    self.observer.notify(
                        BatchState(role, latest.name, latest.state.value, sizes[role])
                    )
                current[role] = latest
            if all(j.state.is_terminal for j in current.values()):
                return current
            if self.clock() >= deadline:
                running = ", ".join(j.name for j in current.values() if not j.state.is_terminal)
                raise WaitTimeout(
                    f"the batch evaluation is still running ({running}); it keeps running in "
                    "Vertex, and no verdict was stored",
                    job_name=running,
                    hint=f"attach to it later with: {self.resume_command}",
                )
            self.sleep(min(pause, max(0.0, deadline - self.clock())))
            pause = min(pause * 2, self.poll_max)

    def _read(self, job: BatchJob, target: BatchTarget) -> dict[int, Generation | None]:
        if not job.state.is_success:
            raise BackendError(
                f"{target.role}: batch job {job.name} ended {job.state.value}"
                + (f": {job.error}" if job.error else ""),
                hint="evaluate again to create a new job, or --mode online",
            )
        if not job.output_dir:
            raise BackendError(f"{target.role}: batch job {job.name} names no output folder")
        wanted = {key(e): e.index for e in target.examples}
        answers: dict[int, Generation | None] = dict.fromkeys(wanted.values())
        folder = job.output_dir
        listed = self._call(f"list {folder}", lambda: list(self.storage.list(folder)))
        files = [o.uri for o in listed if o.uri.endswith(".jsonl")]
        for uri in files:
            data, _ = self._call(f"read {uri}", functools.partial(self.storage.read, uri))
            for raw in data.splitlines():
                if raw.strip():
                    self._answer(raw, wanted, answers)
        return answers

    @staticmethod
    def _answer(
        raw: bytes, wanted: Mapping[str, int], answers: dict[int, Generation | None]
    ) -> None:
        try:
            line = orjson.loads(raw)
            labels = (line.get("request") or {}).get("labels") or {}
            index = wanted.get(str(labels.get(KEY_LABEL)))
        except (orjson.JSONDecodeError, AttributeError):
            return  # not a line of ours: a damaged output line is a missing answer
        if index is None:
            return
        response = line.get("response")
        text = (
            response_text(response)
            if isinstance(response, Mapping) and not line.get("status")
            else None
        )
        if text is None:
            answers[index] = None
            return
        usage = response.get("usageMetadata") or {}
        answers[index] = Generation(
            text,
            input_tokens=usage.get("promptTokenCount"),
            output_tokens=usage.get("candidatesTokenCount"),
        )
