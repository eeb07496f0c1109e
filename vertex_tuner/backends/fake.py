"""In-memory fakes of every backend, for unit tests and for programs that embed vertex-tuner.

They are real subclasses of the interfaces, shipped in the package (like httpx's
``MockTransport``), with scripted behaviour and fault injection:

- :class:`FakeTuner`: ``script([...])`` sets the states the next created job walks through, one
  per ``get``; ``fail_next(method, error, after_effect=True)`` makes the next call raise, after
  having taken effect when ``after_effect`` is set (the lost-response case of a create).
- :class:`FakeStorage`: objects with generations and Cloud Storage's precondition semantics.
- :class:`FakeGenerator`: scripted answers per model, or a responder function.
- :class:`FakeTokenCounter`: counts by a function of the request (by default the text's
  characters over :data:`FakeTokenCounter.CHARS_PER_TOKEN`), with ``fail_next`` too.

Every call is appended to ``calls`` as ``(method, argument)``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vertex_tuner.backends.interface import (
    BatchJob,
    BatchPredictor,
    Checkpoint,
    DataStats,
    Generation,
    Generator,
    Job,
    JobState,
    ObjectInfo,
    ProgressCallback,
    RewardScore,
    RewardValidator,
    Storage,
    TokenCounter,
    Tuner,
    TuningRequest,
    UploadResult,
)
from vertex_tuner.errors import NotFoundError, PreconditionFailed

ScriptStep = JobState | tuple[JobState, str | None]


@dataclass
class _Fault:
    error: Exception
    after_effect: bool


class _Faults:
    def __init__(self) -> None:
        self.pending: dict[str, list[_Fault]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def fail_next(self, method: str, error: Exception, *, after_effect: bool = False) -> None:
        with self.lock:
            self.pending.setdefault(method, []).append(_Fault(error, after_effect))

    def record(self, method: str, argument: Any) -> _Fault | None:
        with self.lock:
            self.calls.append((method, argument))
            queue = self.pending.get(method)
            return queue.pop(0) if queue else None


@dataclass
class _FakeJob:
    job: Job
    script: list[tuple[JobState, str | None]]
    step: int = 0
    cancel_requested: bool = False


@dataclass
class FakeOutcome:
    """What a scripted job reports when it succeeds or fails."""

    example_count: int = 100
    billable_tokens: int = 50_000
    truncated_examples: int = 0
    dropped_example_reasons: tuple[str, ...] = ()
    error_code: int = 3
    error_message: str = "Dataset validation failed"
    checkpoints: int = 1


class FakeTuner(Tuner):
    """Tuning jobs in memory."""

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        *,
        project: str = "p",
        location: str = "us-central1",
    ) -> None:
        self.clock = clock or time.time
        self.prefix = f"projects/{project}/locations/{location}"
        self.jobs: dict[str, _FakeJob] = {}
        self._ids = itertools.count(1000)
        self._model_ids = itertools.count(500)
        self._versions: dict[str, int] = {}
        self._script: list[tuple[JobState, str | None]] = [
            (JobState.RUNNING, "TUNING"),
            (JobState.SUCCEEDED, None),
        ]
        self.outcome = FakeOutcome()
        self._faults = _Faults()
        self.calls = self._faults.calls
        self.lock = threading.Lock()

    def script(self, steps: Sequence[ScriptStep], outcome: FakeOutcome | None = None) -> None:
        """The states (one per ``get``; the last repeats) of jobs created from now on."""
        self._script = [s if isinstance(s, tuple) else (s, None) for s in steps]
        if outcome is not None:
            self.outcome = outcome

    def fail_next(self, method: str, error: Exception, *, after_effect: bool = False) -> None:
        self._faults.fail_next(method, error, after_effect=after_effect)

    def _stamp(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))

    def create(self, request: TuningRequest) -> Job:
        fault = self._faults.record("create", request)
        if fault is not None and not fault.after_effect:
            raise fault.error
        with self.lock:
            name = f"{self.prefix}/tuningJobs/{next(self._ids)}"
            job = Job(
                name=name,
                state=JobState.QUEUED,
                display_name=request.display_name,
                description=request.description,
                base_model=request.base_model,
                labels=dict(request.labels),
                create_time=self._stamp(),
                update_time=self._stamp(),
            )
            self.jobs[name] = _FakeJob(job, list(self._script), 0)
            self._model_for(name, request)
        if fault is not None:
            raise fault.error
        return job

    def _model_for(self, name: str, request: TuningRequest) -> None:
        base = request.base_model.split("@")[0]
        if base.startswith(f"{self.prefix}/models/") and base in self._versions:
            model_id = base
        else:
            model_id = f"{self.prefix}/models/{next(self._model_ids)}"
        self._versions[model_id] = self._versions.get(model_id, 0) + 1
        self.jobs[name].job = replace(
            self.jobs[name].job, tuned_model=f"{model_id}@{self._versions[model_id]}"
        )

    def _advance(self, fake: _FakeJob) -> Job:
        if fake.cancel_requested:
            state, sub = (
                (JobState.CANCELLED, None)
                if fake.job.state == JobState.CANCELLING
                else (JobState.CANCELLING, None)
            )
        else:
            state, sub = fake.script[min(fake.step, len(fake.script) - 1)]
            fake.step += 1
        if fake.job.state.is_terminal:
            return fake.job
        updates: dict[str, Any] = {"state": state, "sub_state": sub, "update_time": self._stamp()}
        if state == JobState.RUNNING:
            updates["start_time"] = fake.job.start_time or self._stamp()
            updates["steps_completed"] = (fake.job.steps_completed or 0) + 10
        if state.is_terminal:
            updates["end_time"] = self._stamp()
        if state.is_success:
            o = self.outcome
            model = fake.job.tuned_model or ""
            endpoint = (
                f"{self.prefix}/endpoints/{model.split('/')[-1].split('@')[0]}"
                f"{model.split('@')[-1]}"
            )
            updates.update(
                endpoint=endpoint,
                # Each checkpoint on its own endpoint, the last one on the model's (as Vertex).
                checkpoints=tuple(
                    Checkpoint(
                        str(i + 1),
                        i + 1,
                        (i + 1) * 10,
                        endpoint if i == o.checkpoints - 1 else f"{endpoint}0{i + 1}",
                    )
                    for i in range(o.checkpoints)
                ),
                data_stats=DataStats(
                    example_count=o.example_count,
                    billable_tokens=o.billable_tokens,
                    tuning_step_count=o.example_count,
                    truncated_examples=o.truncated_examples,
                    dropped_example_reasons=o.dropped_example_reasons,
                ),
            )
        else:
            updates.setdefault("tuned_model", fake.job.tuned_model)
            if state.is_terminal:
                updates["tuned_model"] = None
        if state == JobState.FAILED:
            updates.update(
                error_code=self.outcome.error_code, error_message=self.outcome.error_message
            )
        fake.job = replace(fake.job, **updates)
        return fake.job

    def _find(self, name: str) -> _FakeJob:
        """The job called ``name`` (the caller holds the lock)."""
        fake = self.jobs.get(name)
        if fake is None:
            raise NotFoundError(f"no tuning job {name}")
        return fake

    def get(self, name: str) -> Job:
        fault = self._faults.record("get", name)
        if fault is not None and not fault.after_effect:
            raise fault.error
        with self.lock:
            job = self._advance(self._find(name))
        if fault is not None:
            raise fault.error
        return _public(job)

    def list(self, *, labels: Mapping[str, str] | None = None) -> Iterator[Job]:
        fault = self._faults.record("list", dict(labels or {}))
        if fault is not None:
            raise fault.error
        with self.lock:
            jobs = [f.job for f in self.jobs.values()]
        wanted = dict(labels or {})
        matching = [j for j in jobs if all(j.labels.get(k) == v for k, v in wanted.items())]
        return iter(sorted((_public(j) for j in matching), key=lambda j: j.name, reverse=True))

    def cancel(self, name: str) -> None:
        fault = self._faults.record("cancel", name)
        if fault is not None and not fault.after_effect:
            raise fault.error
        with self.lock:
            fake = self._find(name)
            if not fake.job.state.is_terminal:
                fake.cancel_requested = True
        if fault is not None:
            raise fault.error

    def add_model(self, name: str) -> None:
        """Make a tuned model exist without a job of this fake (one tuned before it, or
        elsewhere), so that deleting it succeeds."""
        model_id = name.split("@", 1)[0]
        with self.lock:
            self._versions[model_id] = max(self._versions.get(model_id, 0), 1)

    def model_exists(self, name: str) -> bool:
        with self.lock:
            return name.split("@", 1)[0] in self._versions

    def delete_model(self, name: str) -> None:
        """Delete the whole model (every version), as Vertex does; NotFoundError when it is
        not there (never made, or deleted before)."""
        model_id = name.split("@", 1)[0]
        fault = self._faults.record("delete_model", model_id)
        if fault is not None and not fault.after_effect:
            raise fault.error
        with self.lock:
            if self._versions.pop(model_id, None) is None:
                raise NotFoundError(f"no model {model_id}")
        if fault is not None:
            raise fault.error


def _public(job: Job) -> Job:
    """A job as Vertex shows it: the tuned model appears only once the job has succeeded."""
    if job.state.is_success:
        return job
    return replace(job, tuned_model=None)


@dataclass
class _Object:
    data: bytes
    generation: int


def _crc32c(data: bytes) -> str:
    import google_crc32c

    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


@dataclass
class FakeStorage(Storage):
    """Cloud Storage objects in memory, with generation preconditions."""

    objects: dict[str, _Object] = field(default_factory=dict)
    bytes_sent: int = 0

    def __post_init__(self) -> None:
        self._faults = _Faults()
        self.calls = self._faults.calls
        self._generations = itertools.count(1_700_000_000_000_000)
        self.lock = threading.Lock()

    def fail_next(self, method: str, error: Exception, *, after_effect: bool = False) -> None:
        self._faults.fail_next(method, error, after_effect=after_effect)

    def _fault(self, method: str, argument: Any) -> _Fault | None:
        fault = self._faults.record(method, argument)
        if fault is not None and not fault.after_effect:
            raise fault.error
        return fault

    def _info(self, uri: str, obj: _Object) -> ObjectInfo:
        md5 = base64.b64encode(hashlib.md5(obj.data).digest()).decode()
        return ObjectInfo(uri, len(obj.data), obj.generation, _crc32c(obj.data), md5)

    def stat(self, uri: str) -> ObjectInfo | None:
        self._fault("stat", uri)
        with self.lock:
            obj = self.objects.get(uri)
            return self._info(uri, obj) if obj else None

    def upload_file(
        self,
        path: Path,
        uri: str,
        *,
        if_generation_match: int | None = 0,
        progress: ProgressCallback | None = None,
    ) -> UploadResult:
        fault = self._fault("upload_file", uri)
        data = path.read_bytes()
        with self.lock:
            existing = self.objects.get(uri)
            if existing is not None and if_generation_match == 0:
                info = self._info(uri, existing)
                result = UploadResult(uri, existing.generation, info.size, 0, True, info.crc32c)
            else:
                generation = self._write(uri, data, if_generation_match)
                self.bytes_sent += len(data)
                if progress is not None:
                    progress(len(data), len(data))
                result = UploadResult(uri, generation, len(data), len(data), False, _crc32c(data))
        if fault is not None:
            raise fault.error
        return result

    def _write(self, uri: str, data: bytes, if_generation_match: int | None) -> int:
        existing = self.objects.get(uri)
        current = existing.generation if existing else 0
        if if_generation_match is not None and current != if_generation_match:
            raise PreconditionFailed(f"{uri}: generation {current}, expected {if_generation_match}")
        generation = next(self._generations)
        self.objects[uri] = _Object(data, generation)
        return generation

    def read(self, uri: str) -> tuple[bytes, int]:
        self._fault("read", uri)
        with self.lock:
            obj = self.objects.get(uri)
            if obj is None:
                raise NotFoundError(f"no object {uri}")
            return obj.data, obj.generation

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None) -> int:
        fault = self._fault("write", uri)
        with self.lock:
            generation = self._write(uri, data, if_generation_match)
        if fault is not None:
            raise fault.error
        return generation

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        self._fault("delete", uri)
        with self.lock:
            obj = self.objects.get(uri)
            if obj is None:
                return
            if if_generation_match is not None and obj.generation != if_generation_match:
                raise PreconditionFailed(f"{uri} changed; not deleted")
            del self.objects[uri]

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        self._fault("list", prefix_uri)
        with self.lock:
            found = [(u, o) for u, o in sorted(self.objects.items()) if u.startswith(prefix_uri)]
        return iter([self._info(u, o) for u, o in found])


class FakeGenerator(Generator):
    """Scripted generateContent: ``enqueue(model, text)`` or a ``responder(model, contents)``."""

    def __init__(
        self, responder: Callable[[str, Sequence[Mapping[str, Any]]], str] | None = None
    ) -> None:
        self.responder = responder
        self.queues: dict[str, list[str]] = {}
        self._faults = _Faults()
        self.history = self._faults.calls
        #: (model, settings) of every call: temperature, max output tokens, thinking.
        self.settings: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def enqueue(self, model: str, *texts: str) -> None:
        with self.lock:
            self.queues.setdefault(model, []).extend(texts)

    def fail_next(self, error: Exception) -> None:
        self._faults.fail_next("generate", error)

    def generate(
        self,
        model: str,
        contents: Sequence[Mapping[str, Any]],
        *,
        system_instruction: str | None = None,
        temperature: float | None = 0.0,
        max_output_tokens: int | None = None,
        response_schema: Mapping[str, Any] | None = None,
        thinking_budget: int | None = None,
        thinking_level: str | None = None,
    ) -> Generation:
        fault = self._faults.record("generate", (model, list(contents)))
        if fault is not None:
            raise fault.error
        settings = {
            "temperature": temperature,
            "max_output_tokens": max_output_tokens,
            "thinking_budget": thinking_budget,
            "thinking_level": thinking_level,
        }
        with self.lock:
            self.settings.append((model, {k: v for k, v in settings.items() if v is not None}))
            queue = self.queues.get(model)
            text = queue.pop(0) if queue else None
        if text is None:
            if self.responder is None:
                raise NotFoundError(f"FakeGenerator has no answer queued for {model}")
            text = self.responder(model, contents)
        return Generation(
            text, input_tokens=sum(len(str(c)) for c in contents) // 4, output_tokens=len(text) // 4
        )


#: (model, contents, system instruction, tools) -> tokens.
CountFunction = Callable[
    [
        str,
        Sequence[Mapping[str, Any]],
        Mapping[str, Any] | None,
        Sequence[Mapping[str, Any]] | None,
    ],
    int,
]


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        text = value.get("text")
        if isinstance(text, str):
            yield text
        for item in value.values():
            if isinstance(item, (Mapping, list)):
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


class FakeTokenCounter(TokenCounter):
    """countTokens in memory: ``counter(model, contents, system, tools)``, by default one token
    per :data:`CHARS_PER_TOKEN` characters of text (3: more than the estimate's 4 would say).
    Every call is appended to ``calls`` as ``("count", (model, contents))``."""

    CHARS_PER_TOKEN = 3

    def __init__(self, counter: CountFunction | None = None, *, source: str = "a fake") -> None:
        self.counter = counter
        self.source = source
        self._faults = _Faults()
        self.calls = self._faults.calls

    def fail_next(self, error: Exception) -> None:
        self._faults.fail_next("count", error)

    def count(
        self,
        model: str,
        contents: Sequence[Mapping[str, Any]],
        *,
        system_instruction: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        fault = self._faults.record("count", (model, list(contents)))
        if fault is not None:
            raise fault.error
        if self.counter is not None:
            return self.counter(model, contents, system_instruction, tools)
        chars = sum(len(t) for t in _texts([*contents, system_instruction or {}]))
        return -(-chars // self.CHARS_PER_TOKEN)


class FakeBatchPredictor(BatchPredictor):
    """Batch prediction in memory: a job reads its requests from a :class:`FakeStorage`,
    answers each with a :class:`Generator` (``model_for`` maps the job's model, a tuned model's
    resource name, to what the generator answers as), and writes Vertex's output lines.

    A job is RUNNING for ``polls`` reads, then SUCCEEDED (``fail_line(key)`` makes a line's
    request fail, as a partial failure does).
    """

    def __init__(
        self,
        storage: FakeStorage,
        generator: Generator,
        *,
        model_for: Callable[[str], str] | None = None,
        polls: int = 1,
    ) -> None:
        self.storage = storage
        self.generator = generator
        self.model_for = model_for or (lambda model: model)
        self.polls = polls
        self.jobs: dict[str, BatchJob] = {}
        self.sources: dict[str, tuple[str, str]] = {}
        self.reads: dict[str, int] = {}
        self.failing: set[str] = set()
        self.created: list[str] = []
        self._faults = _Faults()
        self._ids = itertools.count(1)

    def fail_next(self, method: str, error: Exception) -> None:
        self._faults.fail_next(method, error)

    def fail_line(self, key: str) -> None:
        self.failing.add(key)

    def _fault(self, method: str, argument: Any) -> None:
        fault = self._faults.record(method, argument)
        if fault is not None:
            raise fault.error

    def create(self, model: str, source_uri: str, dest_prefix: str, display_name: str) -> BatchJob:
        self._fault("create", display_name)
        name = f"projects/p/locations/us-central1/batchPredictionJobs/{next(self._ids)}"
        job = BatchJob(name, display_name, JobState.PENDING, model)
        self.jobs[name] = job
        self.sources[name] = (source_uri, dest_prefix.rstrip("/"))
        self.reads[name] = 0
        self.created.append(name)
        return job

    def get(self, name: str) -> BatchJob:
        self._fault("get", name)
        job = self.jobs.get(name)
        if job is None:
            raise NotFoundError(f"no batch job {name}")
        if job.state.is_terminal:
            return job
        self.reads[name] += 1
        if self.reads[name] <= self.polls:
            job = self.jobs[name] = replace(job, state=JobState.RUNNING)
            return job
        self.jobs[name] = job = self._run(job)
        return job

    def find(self, display_name: str) -> list[BatchJob]:
        self._fault("find", display_name)
        return [j for j in reversed(self.jobs.values()) if j.display_name == display_name]

    def cancel(self, name: str) -> None:
        job = self.jobs[name]
        if not job.state.is_terminal:
            self.jobs[name] = replace(job, state=JobState.CANCELLED)

    def _run(self, job: BatchJob) -> BatchJob:
        import orjson

        source, dest = self.sources[job.name]
        try:
            data, _ = self.storage.read(source)
        except NotFoundError as exc:
            return replace(job, state=JobState.FAILED, error=str(exc))
        out: list[bytes] = []
        succeeded = failed = 0
        for raw in data.splitlines():
            line = orjson.loads(raw)
            request = line["request"]
            key = str((request.get("labels") or {}).get("vt_key", ""))
            if key in self.failing:
                out.append(orjson.dumps({**line, "status": "Internal error"}))
                failed += 1
                continue
            system = request.get("systemInstruction")
            reply = self.generator.generate(
                self.model_for(job.model),
                request["contents"],
                system_instruction=system["parts"][0]["text"] if system else None,
            )
            response = {
                "candidates": [{"content": {"role": "model", "parts": [{"text": reply.text}]}}],
                "usageMetadata": {
                    "promptTokenCount": reply.input_tokens,
                    "candidatesTokenCount": reply.output_tokens,
                },
            }
            out.append(orjson.dumps({**line, "response": response, "status": ""}))
            succeeded += 1
        folder = f"{dest}/prediction-model-{job.name.rsplit('/', 1)[-1]}"
        self.storage.write(
            f"{folder}/predictions.jsonl", b"\n".join(out) + b"\n", if_generation_match=None
        )
        return replace(
            job, state=JobState.SUCCEEDED, output_dir=folder, succeeded=succeeded, failed=failed
        )


class FakeRewardValidator(RewardValidator):
    """Rewards from a ``score(example, response_text, reward)`` function; the calls are kept."""

    def __init__(self, score: Callable[[Mapping[str, Any], str, Mapping[str, Any]], float]) -> None:
        self.score = score
        self.calls: list[tuple[Mapping[str, Any], str]] = []

    def validate_reward(
        self, example: Mapping[str, Any], response: Mapping[str, Any], reward: Mapping[str, Any]
    ) -> RewardScore:
        text = "".join(str(p.get("text", "")) for p in response.get("parts") or [])
        self.calls.append((example, text))
        value = max(-1.0, min(1.0, self.score(example, text, reward)))
        return RewardScore(value, {"reward": (value, None)})
