"""An emulator of the Vertex AI REST surface google-genai uses for tuning and generation.

It is a test double, not a model: jobs move through Vertex's states on a timer, the dataset is
read from the storage emulator and checked with the same rules as ``vertex-tuner validate``
(:func:`vertex_tuner.dataset.rules.check_example`), and a tuned endpoint answers each prompt with
the answer of the most similar training example, so evaluation has something to measure. A base
model answers with a polite, generic, deterministic reply, except when it is asked to judge two
responses (the ``judge`` metric's request): then it answers the judge's JSON from each
response's word overlap with the reference, a stand-in for a judging model.

countTokens answers with the sandbox's own count (:func:`sandbox_tokens`), deterministic and
roughly English-like, but not Gemini's tokenizer: it exercises the exact-count path, not its
figures.

Every tuningJobs create, generateContent and countTokens body is validated against Vertex's
published schema for its API version (:mod:`vertex_tuner.sandbox.contract`): a body the front
end would refuse gets the same 400, and a job keeps only the fields the schema knows. Resource
ids are random 19-digit numbers, as on Vertex, so two sandboxes' resources never collide in one
run store.

Routes (``v1`` and ``v1beta1``)::

    POST   /{v}/projects/{p}/locations/{l}/tuningJobs
    GET    /{v}/projects/{p}/locations/{l}/tuningJobs[?pageSize&pageToken&filter]
    GET    /{v}/projects/{p}/locations/{l}/tuningJobs/{id}
    POST   /{v}/projects/{p}/locations/{l}/tuningJobs/{id}:cancel
    POST   /v1beta1/projects/{p}/locations/{l}/tuningJobs:validateReinforcementTuningReward
    POST   /{v}/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent
    POST   /{v}/projects/{p}/locations/{l}/publishers/google/models/{model}:countTokens
    POST   /{v}/projects/{p}/locations/{l}/endpoints/{id}:generateContent
    DELETE /{v}/projects/{p}/locations/{l}/models/{id}
    POST   /{v}/projects/{p}/locations/{l}/batchPredictionJobs
    GET    /{v}/projects/{p}/locations/{l}/batchPredictionJobs[?pageSize&pageToken&filter]
    GET    /{v}/projects/{p}/locations/{l}/batchPredictionJobs/{id}
    POST   /{v}/projects/{p}/locations/{l}/batchPredictionJobs/{id}:cancel
    DELETE /{v}/projects/{p}/locations/{l}/batchPredictionJobs/{id}
    GET    /sandbox/stats, /sandbox/health      (never faulted)
"""

from __future__ import annotations

import re
import secrets
import statistics
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from vertex_tuner import models
from vertex_tuner.dataset import tokens
from vertex_tuner.dataset.gemini import MEDIA_PART_KEYS, content_text, last_user_text
from vertex_tuner.dataset.rules import TRUNCATION_CODES, check_example
from vertex_tuner.sandbox import contract
from vertex_tuner.sandbox.contract import ContractError
from vertex_tuner.sandbox.faults import FaultInjector
from vertex_tuner.sandbox.http import ANSWERED, FaultyHandler, FaultyServer

_PREFIX = r"/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(_PREFIX + r"/tuningJobs$"), "create"),
    ("GET", re.compile(_PREFIX + r"/tuningJobs$"), "list"),
    ("GET", re.compile(_PREFIX + r"/tuningJobs/(?P<id>\d+)$"), "get"),
    ("POST", re.compile(_PREFIX + r"/tuningJobs/(?P<id>\d+):cancel$"), "cancel"),
    # Reinforcement tuning (vertex_tuner.sandbox.reinforcement).
    (
        "POST",
        re.compile(_PREFIX + r"/tuningJobs:validateReinforcementTuningReward$"),
        "validate_reward",
    ),
    (
        "POST",
        re.compile(_PREFIX + r"/publishers/google/models/(?P<model>[^/:]+):generateContent$"),
        "generate_base",
    ),
    (
        "POST",
        re.compile(_PREFIX + r"/publishers/google/models/(?P<model>[^/:]+):countTokens$"),
        "count_tokens",
    ),
    (
        "POST",
        re.compile(_PREFIX + r"/endpoints/(?P<endpoint>\d+):generateContent$"),
        "generate_tuned",
    ),
    ("DELETE", re.compile(_PREFIX + r"/models/(?P<model>[^/:]+)$"), "delete_model"),
    # Batch prediction (vertex_tuner.sandbox.batch).
    ("POST", re.compile(_PREFIX + r"/batchPredictionJobs$"), "batch_create"),
    ("GET", re.compile(_PREFIX + r"/batchPredictionJobs$"), "batch_list"),
    ("GET", re.compile(_PREFIX + r"/batchPredictionJobs/(?P<id>\d+)$"), "batch_get"),
    ("POST", re.compile(_PREFIX + r"/batchPredictionJobs/(?P<id>\d+):cancel$"), "batch_cancel"),
    ("DELETE", re.compile(_PREFIX + r"/batchPredictionJobs/(?P<id>\d+)$"), "batch_delete"),
]
_WORD = re.compile(r"[a-z0-9]+")
#: What marks a judge request (vertex_tuner.evaluation.judge sends it; the emulator imports none
#: of the evaluator, so the wire format is restated here and a test holds the two together): the
#: marker opens the system instruction, the user turn's first line carries the sections' tag.
JUDGE_MARKER = "[vertex-tuner pairwise judge]"
_JUDGE_TAG = re.compile(r"\A[^\n]*\[tag ([0-9a-f]{16})\]")
_JUDGE_VERDICTS = ("1", "2", "tie")
_JUDGE_SECTIONS = ("REFERENCE", "RESPONSE 1", "RESPONSE 2")
_ROOT = "generate_content_request"
_FILTER = re.compile(r'labels\.([a-z0-9_-]+)\s*=\s*"?([^"\s]*)"?')
MAX_REMEMBERED_EXAMPLES = 5000
#: The metadata type of a models.delete Operation, per API version (``DeleteOperationMetadata``).
DELETE_METADATA_TYPE = (
    "type.googleapis.com/google.cloud.aiplatform.{version}.DeleteOperationMetadata"
)
_GENERIC_REPLIES = (
    "Thank you for contacting us. We have received your request and will get back to you as "
    "soon as possible.",
    "Thanks for reaching out. Your message has been forwarded to the relevant team, who will "
    "review it shortly.",
    "We appreciate your patience. A member of our team will look into this and respond in due "
    "course.",
)


class ApiError(Exception):
    def __init__(self, http: int, status: str, message: str) -> None:
        super().__init__(message)
        self.http = http
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.http, "message": self.message, "status": self.status}}


def deletion(
    project: str, location: str, operation_id: str, version: str, now: str
) -> dict[str, Any]:
    """The finished long-running Operation a delete answers with (``DeleteOperationMetadata``,
    an ``Empty`` response), as Vertex returns it."""
    return {
        "name": f"projects/{project}/locations/{location}/operations/{operation_id}",
        "metadata": {
            "@type": DELETE_METADATA_TYPE.format(version=version),
            "genericMetadata": {"createTime": now, "updateTime": now},
        },
        "done": True,
        "response": {"@type": "type.googleapis.com/google.protobuf.Empty"},
    }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1e6) % 1000000:06d}Z"


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _distribution(values: list[int], *, supervised: bool = True) -> dict[str, Any]:
    """A SupervisedTuningDatasetDistribution (int64 sums, float bucket counts), or else a
    DatasetDistribution (double sum, int64 bucket counts), as the schema has them."""
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(len(ordered) * p))])

    shape: dict[str, Any] = {
        "min": float(ordered[0]),
        "max": float(ordered[-1]),
        "mean": statistics.fmean(values),
        "median": float(statistics.median(values)),
        "p5": pct(0.05),
        "p95": pct(0.95),
    }
    bucket: dict[str, Any] = {"left": float(ordered[0]), "right": float(ordered[-1])}
    if not supervised:
        return {
            "sum": float(sum(values)),
            **shape,
            "buckets": [{"count": str(len(values)), **bucket}],
        }
    return {
        "sum": str(sum(values)),
        "billableSum": str(sum(values)),
        **shape,
        "buckets": [{"count": float(len(values)), **bucket}],
    }


def _pre_tuned_name(pre: dict[str, Any]) -> str:
    """Validated bodies have JSON names; the snake_case key is for state saved before that."""
    return str(pre.get("tunedModelName") or pre.get("tuned_model_name") or "")


#: Vertex's numeric resource ids: 19 digits, within int64.
_ID_LOW, _ID_HIGH = 10**18, 2**63 - 1


class VertexEmulator:
    """The state and behaviour; :class:`VertexServer` puts it on HTTP."""

    def __init__(
        self,
        *,
        storage_url: str,
        job_seconds: float = 3.0,
        state_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        fetch: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self.storage_url = storage_url.rstrip("/")
        self.job_seconds = job_seconds
        self.state_dir = state_dir
        self.clock = clock
        self.fetch = fetch or self._fetch_from_storage
        self.lock = threading.RLock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.models: dict[str, dict[str, Any]] = {}  # model id -> {versions, base, examples}
        self.endpoints: dict[str, dict[str, Any]] = {}  # endpoint id -> {model, version}
        self.requests: Counter[str] = Counter()
        self.jobs_created = 0
        self._random = secrets.SystemRandom()
        from vertex_tuner.sandbox.batch import BatchJobs  # batch.py builds on this module

        self.batches = BatchJobs(self)
        from vertex_tuner.sandbox.reinforcement import ReinforcementTuning

        self.reinforcement = ReinforcementTuning(self)
        self._load()

    # --- persistence ----------------------------------------------------------------------

    def _state_file(self) -> Path | None:
        return self.state_dir / "vertex-state.json" if self.state_dir else None

    def _load(self) -> None:
        path = self._state_file()
        if path is None or not path.is_file():
            return
        doc = orjson.loads(path.read_bytes())
        self.jobs = doc.get("jobs", {})
        self.models = doc.get("models", {})
        self.endpoints = doc.get("endpoints", {})
        self.batches.jobs = doc.get("batchPredictionJobs", {})

    def _save(self) -> None:
        path = self._state_file()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(
            orjson.dumps(
                {
                    "jobs": self.jobs,
                    "models": self.models,
                    "endpoints": self.endpoints,
                    "batchPredictionJobs": self.batches.jobs,
                }
            )
        )
        tmp.replace(path)

    def _new_id(self) -> str:
        """A random 19-digit id no job, model or endpoint of this instance has (the saved state
        holds them all, so uniqueness survives a restart)."""
        while True:
            candidate = str(self._random.randint(_ID_LOW, _ID_HIGH))
            if not (
                candidate in self.jobs or candidate in self.models or candidate in self.endpoints
            ):
                return candidate

    # --- storage --------------------------------------------------------------------------

    def _fetch_from_storage(self, uri: str) -> bytes | None:
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        url = (
            f"{self.storage_url}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o/"
            f"{urllib.parse.quote(name, safe='')}?alt=media"
        )
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    # --- tuning jobs ----------------------------------------------------------------------

    def create(
        self, project: str, location: str, body: dict[str, Any], version: str = "v1beta1"
    ) -> dict[str, Any]:
        schema = contract.load(version)
        body = schema.validate(body, schema.root("TuningJob"), path="tuning_job")
        method, spec_key, train_key = "supervised", "supervisedTuningSpec", "trainingDatasetUri"
        if "preferenceOptimizationSpec" in body:
            method, spec_key = "preference", "preferenceOptimizationSpec"
        elif "distillationSpec" in body:
            method, spec_key, train_key = "distillation", "distillationSpec", "promptDatasetUri"
        elif "reinforcementTuningSpec" in body:
            method, spec_key = "reinforcement", "reinforcementTuningSpec"
        spec = body.get(spec_key)
        if not isinstance(spec, dict) or not spec.get(train_key):
            raise ApiError(400, "INVALID_ARGUMENT", f"{spec_key}.{train_key} is required")
        uri = str(spec[train_key])
        if not uri.startswith("gs://") or not uri.endswith(".jsonl"):
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                "training_dataset_uri should be a GCS object of type JSONL.",
            )
        base_model = body.get("baseModel")
        pre = body.get("preTunedModel")
        if pre:
            tuned_name = _pre_tuned_name(pre)
            model_id = tuned_name.split("/models/")[-1].split("@")[0]
            if model_id not in self.models:
                raise ApiError(404, "NOT_FOUND", f"Model {tuned_name} not found.")
        else:
            model_key = str(base_model or "").rsplit("/", 1)[-1]
            if models.model_info(model_key) is None:
                raise ApiError(
                    400, "INVALID_ARGUMENT", f"Base model {base_model} is not supported for tuning."
                )
        if method == "reinforcement":
            self.reinforcement.check_create(body)
        with self.lock:
            self.jobs_created += 1
            job_id = self._new_id()
            name = f"projects/{project}/locations/{location}/tuningJobs/{job_id}"
            now = self.clock()
            job = dict(body)
            job.update({"name": name, "createTime": _iso(now), "updateTime": _iso(now)})
            self.jobs[job_id] = {
                "job": job,
                "created": now,
                "method": method,
                "uri": uri,
                "validation_uri": spec.get("validationDatasetUri"),
                "outcome": None,
                "cancel_at": None,
                "project": project,
                "location": location,
                "version": version,
            }
            self._save()
            return self._render(job_id, version)

    def _phase(self, record: dict[str, Any]) -> tuple[str, str | None, float]:
        elapsed = self.clock() - record["created"]
        t = max(self.job_seconds, 0.001)
        if record["cancel_at"] is not None:
            since = self.clock() - record["cancel_at"]
            return (
                "JOB_STATE_CANCELLING" if since < max(0.1 * t, 0.2) else "JOB_STATE_CANCELLED",
                None,
                elapsed / t,
            )
        if elapsed < 0.1 * t:
            return "JOB_STATE_QUEUED", None, 0.0
        if elapsed < 0.2 * t:
            return "JOB_STATE_PENDING", None, 0.0
        if elapsed < 0.35 * t:
            return "JOB_STATE_RUNNING", "TUNING_JOB_STATE_PROCESSING_DATASET", 0.0
        outcome = self._process(record)
        if outcome.get("error"):
            return "JOB_STATE_FAILED", None, 0.0
        if elapsed < 0.9 * t:
            return "JOB_STATE_RUNNING", "TUNING_JOB_STATE_TUNING", (elapsed - 0.35 * t) / (0.55 * t)
        if elapsed < t:
            return "JOB_STATE_RUNNING", "TUNING_JOB_STATE_POST_PROCESSING", 1.0
        return "JOB_STATE_SUCCEEDED", None, 1.0

    def _process(self, record: dict[str, Any]) -> dict[str, Any]:
        """Read and check the dataset once (what Vertex does while PROCESSING_DATASET)."""
        if record["outcome"] is not None:
            return dict(record["outcome"])
        if record["method"] == "reinforcement":
            outcome = self.reinforcement.process(record)
        else:
            outcome = self._check_dataset(record)
        with self.lock:
            record["outcome"] = outcome
            if not outcome.get("error"):
                self._make_model(record, outcome)
            self._save()
        return dict(outcome)

    def _base_info(self, record: dict[str, Any]) -> models.ModelInfo:
        job = record["job"]
        if job.get("preTunedModel"):
            name = _pre_tuned_name(job["preTunedModel"])
            model = self.models.get(name.split("/models/")[-1].split("@")[0], {})
            base = str(model.get("base", models.DEFAULT_BASE_MODEL))
        else:
            base = str(job.get("baseModel", models.DEFAULT_BASE_MODEL)).rsplit("/", 1)[-1]
        info = models.model_info(base) or models.MODELS[models.DEFAULT_BASE_MODEL]
        return info

    def _check_dataset(self, record: dict[str, Any]) -> dict[str, Any]:
        info = self._base_info(record)
        data = self.fetch(record["uri"])
        if data is None:
            return {
                "error": {
                    "code": 3,
                    "message": f"Training dataset {record['uri']} "
                    "does not exist or cannot be read.",
                }
            }
        if record.get("validation_uri") and self.fetch(record["validation_uri"]) is None:
            return {
                "error": {
                    "code": 3,
                    "message": f"Validation dataset {record['validation_uri']} does not exist.",
                }
            }
        count = 0
        truncated: list[int] = []
        inputs: list[int] = []
        outputs: list[int] = []
        turns: list[int] = []
        billable = 0
        remembered: list[list[str]] = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                example = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return {
                    "error": {
                        "code": 3,
                        "message": f"Dataset validation failed: line {number}: not valid JSON.",
                    }
                }
            if not isinstance(example, dict):
                return {
                    "error": {
                        "code": 3,
                        "message": f"Dataset validation failed: line "
                        f"{number}: each line must be a JSON object.",
                    }
                }
            findings = check_example(example, method=record["method"], model=info, line=number)
            hard = [f for f in findings if f.severity == "error" and f.code not in TRUNCATION_CODES]
            if hard:
                f = hard[0]
                where = f"{f.field}: " if f.field else ""
                return {
                    "error": {
                        "code": 3,
                        "message": f"Dataset validation failed: line {number}: {where}{f.message}",
                    }
                }
            count += 1
            if findings:
                truncated.append(count)
                continue
            n_in, n_out = tokens.example_tokens(example)
            inputs.append(n_in)
            outputs.append(n_out)
            contents = example.get("contents", [])
            turns.append(len(contents))
            billable += tokens.billable_tokens(example)
            if len(remembered) < MAX_REMEMBERED_EXAMPLES and contents:
                last = contents[-1]
                answer = " ".join(
                    p.get("text", "") for p in last.get("parts", []) if isinstance(p, dict)
                )
                remembered.append([last_user_text(contents[:-1]), answer])
        if count == 0:
            return {
                "error": {
                    "code": 3,
                    "message": "Dataset validation failed: the training dataset has no examples.",
                }
            }
        epochs = int(
            record["job"]
            .get(self._spec_key(record), {})
            .get("hyperParameters", {})
            .get("epochCount", 3)
            or 3
        )
        method = record["method"]
        supervised = method == "supervised"
        stats: dict[str, Any] = {
            "tuningDatasetExampleCount": str(count),
            "totalBillableTokenCount": str(billable),
            "tuningStepCount": str(max(1, count * epochs // 8)),
            "userInputTokenDistribution": _distribution(inputs, supervised=supervised),
            "userOutputTokenDistribution": _distribution(outputs, supervised=supervised),
        }
        if method != "preference":
            stats["totalTuningCharacterCount"] = str(len(data))
            stats["userMessagePerExampleDistribution"] = _distribution(turns, supervised=supervised)
        shown = truncated[:100]
        # One reason per listed index, as the schema pairs them.
        reasons = [
            f"example {i} exceeded the maximum number of tokens ({info.max_tokens_per_example}) "
            "or images"
            for i in shown
        ]
        if supervised:
            stats["totalTruncatedExampleCount"] = str(len(truncated))
            if shown:
                stats["truncatedExampleIndices"] = [str(i) for i in shown]
                stats["droppedExampleReasons"] = [f"{r} and was truncated" for r in reasons]
        elif shown:
            stats["droppedExampleIndices"] = [str(i) for i in shown]
            stats["droppedExampleReasons"] = [f"{r} and was dropped" for r in reasons]
        return {"stats": stats, "examples": remembered, "epochs": epochs}

    @staticmethod
    def _data_stats(method: str, stats: dict[str, Any]) -> dict[str, Any]:
        """The job's ``tuningDataStats``: the block of its own method."""
        if method == "preference":
            return {"preferenceOptimizationDataStats": stats}
        if method == "distillation":
            return {"distillationDataStats": {"trainingDatasetStats": stats}}
        if method == "reinforcement":
            return {"reinforcementTuningDataStats": stats}
        return {"supervisedTuningDataStats": stats}

    def _spec_key(self, record: dict[str, Any]) -> str:
        return {
            "supervised": "supervisedTuningSpec",
            "preference": "preferenceOptimizationSpec",
            "distillation": "distillationSpec",
            "reinforcement": "reinforcementTuningSpec",
        }[record["method"]]

    def _make_model(self, record: dict[str, Any], outcome: dict[str, Any]) -> None:
        job = record["job"]
        pre = job.get("preTunedModel")
        display = job.get("tunedModelDisplayName")
        model_id = None
        if pre:
            parent = _pre_tuned_name(pre).split("/models/")[-1].split("@")[0]
            if not display or self.models.get(parent, {}).get("display") == display:
                model_id = parent
        if model_id is None:
            model_id = self._new_id()
            self.models[model_id] = {
                "versions": 0,
                "display": display,
                "base": self._base_info(record).id,
            }
        model = self.models[model_id]
        model["versions"] = int(model["versions"]) + 1
        version = model["versions"]
        endpoint_id = self._new_id()
        self.endpoints[endpoint_id] = {
            "model": model_id,
            "version": version,
            "examples": outcome.get("examples", []),
        }
        # Every epoch's checkpoint is deployed to an endpoint of its own, as Vertex does; the
        # stand-in answers the same from each (it is not a model).
        checkpoint_endpoints = []
        count = outcome.get("checkpoint_count", outcome.get("epochs", 0))  # RFT: by steps
        for epoch in range(max(int(count or 0), 1)):
            checkpoint_id = self._new_id()
            self.endpoints[checkpoint_id] = {**self.endpoints[endpoint_id], "checkpoint": epoch + 1}
            checkpoint_endpoints.append(checkpoint_id)
        outcome.pop("examples", None)
        prefix = f"projects/{record['project']}/locations/{record['location']}"
        outcome["tunedModel"] = {
            "model": f"{prefix}/models/{model_id}@{version}",
            "endpoint": f"{prefix}/endpoints/{endpoint_id}",
        }
        outcome["checkpointEndpoints"] = [f"{prefix}/endpoints/{c}" for c in checkpoint_endpoints]
        record["outcome"] = outcome

    def _checkpoints(
        self, record: dict[str, Any], job: dict[str, Any], state: str, progress: float
    ) -> list[dict[str, Any]]:
        """The checkpoints so far: one per completed epoch while TUNING (each with its own
        endpoint), all of them once the job succeeded; only the last with
        exportLastCheckpointOnly."""
        if record["method"] == "reinforcement":
            return self.reinforcement.checkpoints(record, state, progress)
        outcome = record.get("outcome") or {}
        endpoints = list(outcome.get("checkpointEndpoints") or [])
        if not endpoints or state not in ("JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"):
            return []
        epochs = len(endpoints)
        steps = int(outcome.get("stats", {}).get("tuningStepCount", 0) or 0)
        done = epochs if state == "JOB_STATE_SUCCEEDED" else int(epochs * progress)
        spec = job.get(self._spec_key(record), {})
        if spec.get("exportLastCheckpointOnly"):
            return [] if done < epochs else [self._checkpoint(epochs, epochs, steps, endpoints)]
        return [self._checkpoint(e + 1, epochs, steps, endpoints) for e in range(done)]

    @staticmethod
    def _checkpoint(epoch: int, epochs: int, steps: int, endpoints: list[str]) -> dict[str, Any]:
        return {
            "checkpointId": str(epoch),
            "epoch": str(epoch),
            "step": str(steps * epoch // max(epochs, 1)),
            "endpoint": endpoints[epoch - 1],
        }

    def _render(self, job_id: str, version: str = "v1beta1") -> dict[str, Any]:
        """The job as ``version`` of the API shows it (v1 has no tuningJobState, …)."""
        record = self.jobs[job_id]
        job = self._render_v1beta1(record)
        if version != "v1beta1":
            schema = contract.load(version)
            job = schema.conform(job, schema.root("TuningJob"))
        return dict(job)

    def _render_v1beta1(self, record: dict[str, Any]) -> dict[str, Any]:
        state, sub_state, progress = self._phase(record)
        job = dict(record["job"])
        job["state"] = state
        now = self.clock()
        job["updateTime"] = _iso(now)
        if sub_state:
            job["tuningJobState"] = sub_state
        if state not in ("JOB_STATE_QUEUED", "JOB_STATE_PENDING"):
            job["startTime"] = _iso(record["created"] + 0.2 * self.job_seconds)
        outcome = record.get("outcome") or {}
        epochs = int(outcome.get("epochs", 0) or 0)
        steps = int(outcome.get("stats", {}).get("tuningStepCount", 0) or 0)
        if sub_state == "TUNING_JOB_STATE_TUNING" or state == "JOB_STATE_SUCCEEDED":
            job["tuningJobMetadata"] = {
                "completedEpochCount": str(int(epochs * progress)),
                "completedStepCount": str(int(steps * progress)),
            }
        if outcome.get("stats"):
            job["tuningDataStats"] = self._data_stats(record["method"], outcome["stats"])
        if state == "JOB_STATE_FAILED":
            job["error"] = outcome["error"]
            job["endTime"] = _iso(record["created"] + 0.35 * self.job_seconds)
        checkpoints = self._checkpoints(record, job, state, progress)
        if state == "JOB_STATE_SUCCEEDED":
            tuned = dict(outcome["tunedModel"])
            if checkpoints:
                tuned["checkpoints"] = checkpoints
            job["tunedModel"] = tuned
            job["endTime"] = _iso(record["created"] + self.job_seconds)
        elif checkpoints:
            # While tuning, the checkpoints of the epochs done so far, each already deployed.
            job["tunedModel"] = {"checkpoints": checkpoints}
        if state == "JOB_STATE_CANCELLED":
            job["endTime"] = _iso(record["cancel_at"])
            job["error"] = {"code": 1, "message": "CANCELLED"}  # google.rpc.Code 1 is CANCELLED
        return job

    def get(self, job_id: str, version: str = "v1beta1") -> dict[str, Any]:
        with self.lock:
            if job_id not in self.jobs:
                raise ApiError(404, "NOT_FOUND", f"TuningJob {job_id} not found.")
            return self._render(job_id, version)

    def list_jobs(
        self,
        project: str,
        location: str,
        query: dict[str, list[str]],
        version: str = "v1beta1",
        *,
        ignore_filter: bool = False,
    ) -> dict[str, Any]:
        """A page of jobs, newest first; ``ignore_filter`` is the ``list-filter=ignore`` fault."""
        page_size = int((query.get("pageSize") or ["50"])[0] or 50)
        start = int((query.get("pageToken") or ["0"])[0] or 0)
        text = "" if ignore_filter else (query.get("filter") or [""])[0]
        wanted = dict(_FILTER.findall(text))
        with self.lock:
            ids = sorted(
                (
                    i
                    for i, r in self.jobs.items()
                    if r["project"] == project and r["location"] == location
                ),
                key=lambda i: (float(self.jobs[i]["created"]), i),
                reverse=True,
            )
            matching = [
                i
                for i in ids
                if all(self.jobs[i]["job"].get("labels", {}).get(k) == v for k, v in wanted.items())
            ]
            page = [self._render(i, version) for i in matching[start : start + page_size]]
        out: dict[str, Any] = {"tuningJobs": page}
        if start + page_size < len(matching):
            out["nextPageToken"] = str(start + page_size)
        return out

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            if job_id not in self.jobs:
                raise ApiError(404, "NOT_FOUND", f"TuningJob {job_id} not found.")
            record = self.jobs[job_id]
            state, _, _ = self._phase(record)
            if state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
                raise ApiError(
                    400, "FAILED_PRECONDITION", f"TuningJob {job_id} is already in a final state."
                )
            if record["cancel_at"] is None:
                record["cancel_at"] = self.clock()
                self._save()
        return {}

    # --- generation ------------------------------------------------------------------------

    def generate(
        self,
        body: dict[str, Any],
        *,
        model: str | None = None,
        endpoint: str | None = None,
        api_version: str = "v1beta1",
    ) -> dict[str, Any]:
        body = _validate_generate(body, api_version)
        contents = body.get("contents") or []
        if not isinstance(contents, list) or not contents:
            raise ApiError(400, "INVALID_ARGUMENT", "contents must not be empty.")
        prompt = last_user_text(contents)
        if endpoint is not None:
            with self.lock:
                target = self.endpoints.get(endpoint)
                tuned = self.models.get(str(target.get("model"))) if target else None
            if target is None:
                raise ApiError(404, "NOT_FOUND", f"Endpoint {endpoint} not found.")
            _check_thinking(body, str((tuned or {}).get("base") or ""))
            text = self._nearest(target.get("examples", []), prompt)
            version = f"tuned-{target['model']}@{target['version']}"
        else:
            assert model is not None
            if models.model_info(model) is None and not model.startswith("gemini-"):
                raise ApiError(404, "NOT_FOUND", f"Publisher model {model} not found.")
            _check_thinking(body, model)
            judged = _judge_answer(body, prompt)
            # Generic on purpose: a base model that has not learned the task's voice or format.
            text = judged or _GENERIC_REPLIES[zlib.crc32(prompt.encode()) % len(_GENERIC_REPLIES)]
            version = model
        prompt_tokens = sum(tokens.content_tokens(c) for c in contents)
        out_tokens = tokens.text_tokens(text)
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": out_tokens,
                "totalTokenCount": prompt_tokens + out_tokens,
            },
            "modelVersion": version,
        }

    @staticmethod
    def _nearest(examples: list[list[str]], prompt: str) -> str:
        if not examples:
            return "(the tuned model has no examples)"
        words = _words(prompt)
        best, best_score = examples[0][1], -1.0
        for question, answer in examples:
            other = _words(question)
            union = len(words | other)
            score = len(words & other) / union if union else 0.0
            if score > best_score:
                best, best_score = answer, score
        return best

    # --- countTokens -----------------------------------------------------------------------

    def count_tokens(self, body: dict[str, Any], *, model: str, api_version: str) -> dict[str, Any]:
        """A CountTokensResponse with the sandbox's own count (:func:`sandbox_tokens`)."""
        body = _validate_count_tokens(body, api_version)
        if models.model_info(model) is None and not model.startswith("gemini-"):
            raise ApiError(404, "NOT_FOUND", f"Publisher model {model} not found.")
        contents = body.get("contents") or []
        if not contents:
            raise ApiError(400, "INVALID_ARGUMENT", "contents must not be empty.")
        total = characters = 0
        for value in (*contents, body.get("systemInstruction"), *(body.get("tools") or ())):
            n, chars = _request_tokens(value)
            total += n
            characters += chars
        return {
            "totalTokens": total,
            "totalBillableCharacters": characters,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}],
        }

    # --- models ----------------------------------------------------------------------------

    def delete_model(
        self, project: str, location: str, model_id: str, version: str = "v1beta1"
    ) -> dict[str, Any]:
        """models.delete: the model, every version of it and every endpoint it is deployed to
        (checkpoint endpoints too) are gone at once, answered with an Operation already done.

        Whether Vertex deletes a tuned Gemini model while it is deployed to its endpoint, and
        undeploys it, is an assumption (docs/sandbox.md); its generic rule refuses a deployed
        model.
        """
        name = f"projects/{project}/locations/{location}/models/{model_id}"
        if "@" in model_id:
            # The method's name is a model, not a version (models.deleteVersion takes those).
            raise ApiError(
                400, "INVALID_ARGUMENT", f"Model name {name} must not name a version (@)."
            )
        with self.lock:
            if model_id not in self.models:
                raise ApiError(404, "NOT_FOUND", f"Model {name} not found.")
            del self.models[model_id]
            for endpoint_id in [e for e, t in self.endpoints.items() if t["model"] == model_id]:
                del self.endpoints[endpoint_id]
            operation_id = self._new_id()
            self._save()
        return deletion(project, location, operation_id, version, _iso(self.clock()))

    def stats(self, injected: dict[str, int]) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "faults": injected,
                "jobs_created": self.jobs_created,
            }


class VertexServer(FaultyServer):
    def __init__(
        self, address: tuple[str, int], emulator: VertexEmulator, faults: FaultInjector
    ) -> None:
        super().__init__(address, _Handler, faults)
        self.emulator = emulator


class _Handler(FaultyHandler):
    server: VertexServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, verb: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        emulator = self.server.emulator
        if parsed.path == "/sandbox/stats":
            self.send_json(200, emulator.stats(dict(self.server.faults.injected)))
            return
        if parsed.path == "/sandbox/health":
            self.send_json(200, {"ok": True})
            return
        route = None
        for method, pattern, name in _ROUTES:
            match = pattern.match(parsed.path)
            if method == verb and match:
                route = (name, match.groupdict())
                break
        if route is None:
            self.send_json(
                404,
                ApiError(
                    404, "NOT_FOUND", f"{verb} {parsed.path} is not emulated by the sandbox."
                ).body(),
            )
            return
        name, params = route
        with emulator.lock:
            emulator.requests[name] += 1
        fault = self.inject()
        if fault == ANSWERED:
            return
        try:
            body = orjson.loads(raw) if raw else {}
            result = self._handle(name, params, body, parse_qs(parsed.query))
        except (ApiError, ContractError) as exc:
            self.send_json(exc.http, exc.body())
            return
        except orjson.JSONDecodeError:
            self.send_json(400, ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload.").body())
            return
        if fault == "lost":
            # The request took effect; the answer is lost on the way back.
            self.reset()
            return
        self.send_json(200, result)

    def _handle(
        self, name: str, p: dict[str, str], body: dict[str, Any], query: dict[str, list[str]]
    ) -> dict[str, Any]:
        emulator = self.server.emulator
        version = p["version"]
        if name == "delete_model":
            return emulator.delete_model(p["project"], p["location"], p["model"], version)
        if name == "create":
            return emulator.create(p["project"], p["location"], body, version)
        if name == "list":
            faults = self.server.faults
            ignore = faults.spec.list_filter == "ignore"
            if ignore and (query.get("filter") or [""])[0]:
                faults.count("list-filter")
            return emulator.list_jobs(
                p["project"], p["location"], query, version, ignore_filter=ignore
            )
        if name == "get":
            return emulator.get(p["id"], version)
        if name == "cancel":
            return emulator.cancel(p["id"])
        if name == "validate_reward":
            return emulator.reinforcement.validate_reward(body, version)
        if name == "generate_base":
            return emulator.generate(body, model=p["model"], api_version=version)
        if name == "count_tokens":
            return emulator.count_tokens(body, model=p["model"], api_version=version)
        if name.startswith("batch_"):
            return self._handle_batch(name, p, body, query)
        return emulator.generate(body, endpoint=p["endpoint"], api_version=version)

    def _handle_batch(
        self, name: str, p: dict[str, str], body: dict[str, Any], query: dict[str, list[str]]
    ) -> dict[str, Any]:
        """batchPredictionJobs; the ``batch-line`` fault reaches the lines a request answers."""
        batches, faults, version = self.server.emulator.batches, self.server.faults, p["version"]
        if name == "batch_create":
            return batches.create(p["project"], p["location"], body, version)
        if name == "batch_list":
            ignore = faults.spec.list_filter == "ignore"
            if ignore and (query.get("filter") or [""])[0]:
                faults.count("list-filter")
            return batches.list_jobs(
                p["project"],
                p["location"],
                query,
                version,
                ignore_filter=ignore,
                line_fault=faults.line_fails,
            )
        if name == "batch_get":
            return batches.get(p["id"], version, faults.line_fails)
        if name == "batch_cancel":
            return batches.cancel(p["id"], faults.line_fails)
        return batches.delete(p["project"], p["location"], p["id"], version, faults.line_fails)


def _check_thinking(body: dict[str, Any], base: str) -> None:
    """Refuse a thinking setting the model's family does not take, as Vertex does: a
    ``thinkingLevel`` before Gemini 3, a ``thinkingBudget`` from Gemini 3.5 on, either on a
    model that does not think. A tuned endpoint is held to its base's rule (an assumption:
    docs/sandbox.md). The families are read from the model table's ``thinking`` column, the
    one piece of the code under test this check shares."""
    config = (body.get("generationConfig") or {}).get("thinkingConfig") or {}
    info = models.model_info(base) if base else None
    if info is None or not isinstance(config, dict):
        return
    if config.get("thinkingBudget") is not None and "budget" not in info.thinking:
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            f"thinking_budget is not supported by {info.id}; use thinking_level instead."
            if info.thinking
            else f"Thinking is not supported by {info.id}.",
        )
    if config.get("thinkingLevel") not in (None, "THINKING_LEVEL_UNSPECIFIED") and (
        "level" not in info.thinking
    ):
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            f"thinking_level is not supported by {info.id}."
            if info.thinking
            else f"Thinking is not supported by {info.id}.",
        )


def _validate_generate(body: Any, version: str) -> dict[str, Any]:
    """A generateContent body checked against ``GenerateContentRequest`` (JSON field names).

    The request is the body itself, so paths in messages start at its fields
    (``generation_config.response_schema``), as the front end writes them.
    """
    schema = contract.load(version)
    try:
        return schema.validate(body, schema.root("GenerateContentRequest"), path=_ROOT)
    except ContractError as exc:
        field = exc.field.removeprefix(_ROOT).removeprefix(".")
        message = exc.message.replace(f" at '{_ROOT}'", "").replace(f"'{_ROOT}.", "'")
        raise ContractError(field, message) from None


#: The sandbox's tokenizer: a run of letters, one digit, or one other visible character.
_SANDBOX_TOKEN = re.compile(r"[^\W\d_]+|\d|[^\w\s]|_")
#: Letters of a word that make one token (a longer word is several).
LETTERS_PER_TOKEN = 8
_COUNT_ROOT = "count_tokens_request"


def sandbox_tokens(text: str) -> int:
    """The sandbox's own token count of ``text``: each run of letters is one token per
    :data:`LETTERS_PER_TOKEN` letters (rounded up), each digit and each other visible character
    one token; spaces are free. About Gemini's count on plain English, far from it elsewhere."""
    total = 0
    for match in _SANDBOX_TOKEN.finditer(text):
        word = match.group()
        total += -(-len(word) // LETTERS_PER_TOKEN) if word[0].isalpha() else 1
    return total


def _request_tokens(value: Any) -> tuple[int, int]:
    """(tokens, billable characters) of a Content or Tool of a countTokens body: text parts by
    :func:`sandbox_tokens`, a file :data:`~vertex_tuner.dataset.tokens.TOKENS_PER_MEDIA_PART`,
    anything else (function calls, declarations) by its JSON text."""
    if not isinstance(value, dict):
        return 0, 0
    parts = value.get("parts")
    if not isinstance(parts, list):
        dumped = orjson.dumps(value).decode()
        return sandbox_tokens(dumped), len("".join(dumped.split()))
    total = characters = 0
    for part in parts:
        if not isinstance(part, dict):
            continue
        text = part.get("text")
        if isinstance(text, str):
            total += sandbox_tokens(text)
            characters += len("".join(text.split()))
        elif not MEDIA_PART_KEYS.isdisjoint(part):
            total += tokens.TOKENS_PER_MEDIA_PART
        else:
            dumped = orjson.dumps(part).decode()
            total += sandbox_tokens(dumped)
            characters += len("".join(dumped.split()))
    return total, characters


def _count_tokens_contract(version: str) -> tuple[contract.Contract, str]:
    """The contract of the version, and the name of its published ``CountTokensRequest``."""
    schema = contract.load(version)
    return schema, schema.root("TuningJob").removesuffix("TuningJob") + "CountTokensRequest"


def _validate_count_tokens(body: Any, version: str) -> dict[str, Any]:
    """A countTokens body checked against ``CountTokensRequest``, as generateContent's is."""
    schema, name = _count_tokens_contract(version)
    try:
        return schema.validate(body, name, path=_COUNT_ROOT)
    except ContractError as exc:
        field = exc.field.removeprefix(_COUNT_ROOT).removeprefix(".")
        message = exc.message.replace(f" at '{_COUNT_ROOT}'", "").replace(f"'{_COUNT_ROOT}.", "'")
        raise ContractError(field, message) from None


def _judge_answer(body: dict[str, Any], prompt: str) -> str | None:
    """The stand-in judge's JSON answer, or None when ``body`` is no judge request.

    A judge request has the judge's marker at the start of its system instruction and asks for
    JSON with a response schema. The verdict is word overlap (Jaccard, as for the tuned
    endpoints' lookup) of each response with the reference: the higher one wins, equal is a tie.
    Swapping the responses swaps the verdict, so the stand-in never shows position bias.
    """
    config = body.get("generationConfig") or {}
    system = content_text(body.get("systemInstruction") or {})
    if not (
        system.startswith(JUDGE_MARKER)
        and config.get("responseMimeType") == "application/json"
        and (config.get("responseSchema") or config.get("responseJsonSchema"))
    ):
        return None
    match = _JUDGE_TAG.match(prompt)
    sections = None
    if match is not None:
        tag = match.group(1)
        sections = [_judge_section(prompt, name, tag) for name in _JUDGE_SECTIONS]
    if sections is None or any(s is None for s in sections):
        answer = {
            "winner": "tie",
            "reason": "sandbox stand-in judge (word overlap, not a model): the reference and "
            "the two responses were not found in the request",
        }
        return orjson.dumps(answer).decode()
    reference, one, two = (_words(s or "") for s in sections)
    first, second = _overlap(reference, one), _overlap(reference, two)
    winner = _JUDGE_VERDICTS[0 if first > second else 1 if second > first else 2]
    answer = {
        "winner": winner,
        "reason": f"sandbox stand-in judge (word overlap with the reference, not a model): "
        f"response 1 {first:.2f}, response 2 {second:.2f}",
    }
    return orjson.dumps(answer).decode()


def _judge_section(prompt: str, name: str, tag: str) -> str | None:
    begin, end = f"<<<BEGIN {name} {tag}>>>\n", f"\n<<<END {name} {tag}>>>"
    start = prompt.find(begin)
    if start < 0:
        return None
    stop = prompt.find(end, start + len(begin))
    return None if stop < 0 else prompt[start + len(begin) : stop]


def _overlap(reference: frozenset[str], response: frozenset[str]) -> float:
    union = len(reference | response)
    return len(reference & response) / union if union else 0.0


def parse_qs(query: str) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(query, keep_blank_values=True)
