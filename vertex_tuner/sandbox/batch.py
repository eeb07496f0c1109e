"""Vertex batch prediction for Gemini (``batchPredictionJobs``), as the Vertex emulator serves it.

A job reads JSONL lines ``{"request": GenerateContentRequest, ...}`` from the storage emulator and
answers every request exactly as the emulator's own generateContent answers the job's model (a
publisher model, or the endpoint of a tuned model named ``projects/P/locations/L/models/ID``), so
a batch evaluation and an online one see the same answers. The answers are written, one line per
input line with the line's other fields echoed, to
``{outputUriPrefix}/prediction-model-{createTime}/predictions.jsonl``; a line whose request is
refused or whose answer fails carries the error in ``status`` and no ``response``, and the job
still succeeds, which is how Vertex reports partial failures.

Bodies are validated against ``BatchPredictionJob`` of their API version, as tuningJobs creates
are against ``TuningJob``, and every request line against ``GenerateContentRequest`` (by
generateContent itself). Jobs move PENDING → RUNNING → SUCCEEDED over the emulator's
``job_seconds``, the tuning jobs' clock; the lines are answered and written when the job starts
running. Output lines are not in input order (Vertex does not keep it): join them on the request.
What is modelled rather than known is listed in docs/sandbox.md.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from typing import Any

import orjson

from vertex_tuner import models
from vertex_tuner.sandbox import contract
from vertex_tuner.sandbox.contract import ContractError, snake
from vertex_tuner.sandbox.vertex import ApiError, VertexEmulator, _iso, deletion

_ROOT = "batch_prediction_job"
_PUBLISHER = re.compile(
    r"(?:projects/[^/]+/locations/[^/]+/)?publishers/(?P<publisher>[^/]+)/models/(?P<model>[^/@]+)"
)
_TUNED = re.compile(r"projects/[^/]+/locations/[^/]+/models/(?P<model>[^/@]+)(?:@(?P<ref>[^/]+))?")
#: One term of a list filter: ``field op value``, the value quoted or not.
_TERM = re.compile(
    r'\s*(?P<field>[a-z_]+(?:\.[a-z0-9_-]+)?)\s*(?P<op>!=|=|:)\s*(?P<value>"[^"]*"|\S+)\s*'
)
_AND = re.compile(r"\s+AND\s+", re.IGNORECASE)
_FINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")
#: Where a job starts running, as a fraction of the emulator's job_seconds.
_START = 0.2
#: The reason phrases of the status text of a failed line (``Bad Request: {error JSON}``).
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
}
#: google.rpc.Code numbers of the job-level errors.
CANCELLED_CODE, INVALID_ARGUMENT_CODE, NOT_FOUND_CODE, FAILED_PRECONDITION_CODE = 1, 3, 5, 9

LineFault = Callable[[], bool]


def _never() -> bool:
    return False


def _required(field: str) -> ContractError:
    """The front end's answer to a required field left out (its form is modelled)."""
    path = f"{_ROOT}.{field}"
    return ContractError(
        path, f"List of found errors:\t1.Field: {path}; Message: Required field is not set.\t"
    )


def _not_emulated(what: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", f"{what} is not emulated by the sandbox.")


def _processed_time(ts: float) -> str:
    """A line's ``processed_time``, in the form Vertex writes it (milliseconds, ``+00:00``)."""
    return _iso(ts)[:23] + "+00:00"


def status_text(error: ApiError | ContractError) -> str:
    """The ``status`` of a failed line: the reason phrase, then the error's JSON, as Vertex
    writes it (``Bad Request: {"error": {"code": 400, ...}}``)."""
    reason = _REASONS.get(error.http, "Error")
    body = {"error": {"code": error.http, "message": error.message, "status": error.status}}
    return f"{reason}: {json.dumps(body)}"


def output_directory(prefix: str, created: float) -> str:
    """The folder a job writes into: ``prediction-model-{createTime}`` under the prefix (a ``/``
    is added to a prefix without one, as the schema says)."""
    return f"{prefix if prefix.endswith('/') else prefix + '/'}prediction-model-{_iso(created)}"


class BatchJobs:
    """The batch prediction jobs of one :class:`VertexEmulator`, kept with its state."""

    def __init__(self, emulator: VertexEmulator) -> None:
        self.emulator = emulator
        self.jobs: dict[str, dict[str, Any]] = {}
        self.store: Callable[[str, bytes], bool] = self._store_in_storage

    # --- create ------------------------------------------------------------------------------

    def create(
        self, project: str, location: str, body: dict[str, Any], version: str
    ) -> dict[str, Any]:
        schema = contract.load(version)
        body = schema.validate(body, schema.root("BatchPredictionJob"), path=_ROOT)
        _check_job(body)
        self._target(str(body["model"]))  # an unknown model is refused at once
        emulator = self.emulator
        with emulator.lock:
            job_id = emulator._new_id()
            while job_id in self.jobs:
                job_id = emulator._new_id()
            now = emulator.clock()
            job = dict(body)
            job["name"] = f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}"
            job["createTime"] = _iso(now)
            self.jobs[job_id] = {
                "job": job,
                "created": now,
                "project": project,
                "location": location,
                "version": version,
                "cancel_at": None,
                "outcome": None,
            }
            emulator._save()
            return self._render(job_id, version, _never)

    def _target(self, model: str) -> dict[str, str]:
        """What answers the job's lines: ``{"model": id}`` for a publisher model, or
        ``{"endpoint": id}``, the endpoint of a tuned model (its latest version unless ``@N``)."""
        publisher = _PUBLISHER.fullmatch(model)
        if publisher is not None:
            model_id = publisher.group("model")
            known = models.model_info(model_id) is not None or model_id.startswith("gemini-")
            if publisher.group("publisher") != "google" or not known:
                raise ApiError(404, "NOT_FOUND", f"The PublisherModel {model_id} does not exist.")
            return {"model": model_id}
        tuned = _TUNED.fullmatch(model)
        if tuned is None:
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid model name: {model}.")
        model_id, ref = tuned.group("model"), tuned.group("ref")
        with self.emulator.lock:
            record = self.emulator.models.get(model_id)
            wanted = int(record["versions"]) if record and ref in (None, "default") else None
            if record and ref and ref.isdigit():
                wanted = int(ref)
            for endpoint_id, target in self.emulator.endpoints.items():
                if (
                    target["model"] == model_id
                    and int(target["version"]) == wanted
                    and not target.get("checkpoint")
                ):
                    return {"endpoint": endpoint_id}
        raise ApiError(404, "NOT_FOUND", f"Model {model} not found.")

    # --- reading -----------------------------------------------------------------------------

    def get(self, job_id: str, version: str, line_fault: LineFault = _never) -> dict[str, Any]:
        with self.emulator.lock:
            if job_id not in self.jobs:
                raise ApiError(404, "NOT_FOUND", f"BatchPredictionJob {job_id} not found.")
            return self._render(job_id, version, line_fault)

    def list_jobs(
        self,
        project: str,
        location: str,
        query: dict[str, list[str]],
        version: str,
        *,
        ignore_filter: bool = False,
        line_fault: LineFault = _never,
    ) -> dict[str, Any]:
        """A page of jobs, newest first; ``ignore_filter`` is the ``list-filter=ignore`` fault."""
        page_size = _int_query(query, "pageSize", 50) or 50
        start = _int_query(query, "pageToken", 0)
        terms = _parse_filter("" if ignore_filter else (query.get("filter") or [""])[0])
        with self.emulator.lock:
            ids = sorted(
                (
                    i
                    for i, r in self.jobs.items()
                    if r["project"] == project and r["location"] == location
                ),
                key=lambda i: (float(self.jobs[i]["created"]), i),
                reverse=True,
            )
            rendered = [self._render(i, version, line_fault) for i in ids]
        matching = [job for job in rendered if all(_matches(job, *term) for term in terms)]
        out: dict[str, Any] = {"batchPredictionJobs": matching[start : start + page_size]}
        if start + page_size < len(matching):
            out["nextPageToken"] = str(start + page_size)
        return out

    # --- cancel and delete ---------------------------------------------------------------------

    def cancel(self, job_id: str, line_fault: LineFault = _never) -> dict[str, Any]:
        with self.emulator.lock:
            record = self._record(job_id)
            state = self._state(record, line_fault)
            if state in _FINAL:
                raise ApiError(
                    400,
                    "FAILED_PRECONDITION",
                    f"BatchPredictionJob {job_id} is in state {state} and cannot be cancelled.",
                )
            if record["cancel_at"] is None:
                record["cancel_at"] = self.emulator.clock()
                self.emulator._save()
        return {}

    def delete(
        self, project: str, location: str, job_id: str, version: str, line_fault: LineFault = _never
    ) -> dict[str, Any]:
        """batchPredictionJobs.delete: only a finished job, answered with a done Operation (the
        output it wrote stays, as in Cloud Storage)."""
        with self.emulator.lock:
            record = self._record(job_id)
            state = self._state(record, line_fault)
            if state not in _FINAL:
                raise ApiError(
                    400,
                    "FAILED_PRECONDITION",
                    f"BatchPredictionJob {job_id} is in state {state}; only a finished job can "
                    "be deleted.",
                )
            del self.jobs[job_id]
            operation_id = self.emulator._new_id()
            self.emulator._save()
        return deletion(project, location, operation_id, version, _iso(self.emulator.clock()))

    def _record(self, job_id: str) -> dict[str, Any]:
        if job_id not in self.jobs:
            raise ApiError(404, "NOT_FOUND", f"BatchPredictionJob {job_id} not found.")
        return self.jobs[job_id]

    # --- the clock ---------------------------------------------------------------------------

    def _seconds(self) -> float:
        return max(self.emulator.job_seconds, 0.001)

    def _cancelling_seconds(self) -> float:
        return max(0.1 * self._seconds(), 0.2)

    def _state(self, record: dict[str, Any], line_fault: LineFault) -> str:
        """The job's state now; the lines are answered the first time it is seen running."""
        now = self.emulator.clock()
        if record["cancel_at"] is not None:
            cancelling = now - float(record["cancel_at"]) < self._cancelling_seconds()
            return "JOB_STATE_CANCELLING" if cancelling else "JOB_STATE_CANCELLED"
        elapsed = now - float(record["created"])
        if elapsed < _START * self._seconds():
            return "JOB_STATE_PENDING"
        if self._run(record, line_fault).get("error"):
            return "JOB_STATE_FAILED"
        return "JOB_STATE_RUNNING" if elapsed < self._seconds() else "JOB_STATE_SUCCEEDED"

    def _render(self, job_id: str, version: str, line_fault: LineFault) -> dict[str, Any]:
        """The job as ``version`` of the API shows it, with the output-only fields of its state."""
        record = self.jobs[job_id]
        state = self._state(record, line_fault)
        created, seconds = float(record["created"]), self._seconds()
        outcome = record["outcome"] or {}
        job = dict(record["job"])
        job["state"] = state
        changed = created
        if outcome:
            changed = created + _START * seconds
            job["startTime"] = _iso(changed)
        if outcome.get("directory"):
            job["outputInfo"] = {"gcsOutputDirectory": outcome["directory"]}
        end = None
        if state == "JOB_STATE_SUCCEEDED":
            end = created + seconds
        elif state == "JOB_STATE_FAILED":
            end = changed
            job["error"] = outcome["error"]
        elif state in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"):
            changed = float(record["cancel_at"])
            if state == "JOB_STATE_CANCELLED":
                end = changed + self._cancelling_seconds()
                job["error"] = {"code": CANCELLED_CODE, "message": "CANCELED"}
        if end is not None:
            job["endTime"] = _iso(end)
            stats = _completion_stats(outcome)
            if stats:
                job["completionStats"] = stats
        job["updateTime"] = _iso(end if end is not None else changed)
        if version != "v1beta1":
            schema = contract.load(version)
            job = schema.conform(job, schema.root("BatchPredictionJob"))
        return dict(job)

    # --- processing --------------------------------------------------------------------------

    def _run(self, record: dict[str, Any], line_fault: LineFault) -> dict[str, Any]:
        """Answer and write the job's lines, once (the outcome is kept with the state)."""
        if record["outcome"] is None:
            record["outcome"] = self._process(record, line_fault)
            self.emulator._save()
        outcome: dict[str, Any] = record["outcome"]
        return outcome

    def _process(self, record: dict[str, Any], line_fault: LineFault) -> dict[str, Any]:
        job = record["job"]
        lines = self._read_input(job["inputConfig"]["gcsSource"]["uris"])
        if isinstance(lines, dict):
            return lines
        try:
            target = self._target(str(job["model"]))
        except ApiError as exc:  # the model was deleted since the job was created
            return {"error": {"code": NOT_FOUND_CODE, "message": exc.message}}
        version = str(record["version"])
        answers = [self._answer(line, target, version, line_fault) for line in lines]
        job_id = str(job["name"]).rsplit("/", 1)[-1]
        order = sorted(range(len(answers)), key=lambda i: zlib.crc32(f"{job_id}:{i}".encode()))
        prefix = job["outputConfig"]["gcsDestination"]["outputUriPrefix"]
        directory = output_directory(prefix, float(record["created"]))
        failed = sum(1 for a in answers if a["status"])
        outcome: dict[str, Any] = {
            "directory": directory,
            "successful": len(answers) - failed,
            "failed": failed,
        }
        data = b"".join(orjson.dumps(answers[i]) + b"\n" for i in order)
        if not self.store(f"{directory}/predictions.jsonl", data):
            outcome["error"] = _bucket_error(directory)
        return outcome

    def _read_input(self, uris: list[str]) -> list[dict[str, Any]] | dict[str, Any]:
        """The input lines, or the outcome of a job whose input cannot be imported."""
        lines: list[dict[str, Any]] = []
        for uri in uris:
            data = self.emulator.fetch(uri)
            if data is None:
                if not self._bucket_exists(uri):
                    return {"error": _bucket_error(uri)}
                return _import_error(f"the input file {uri} does not exist or cannot be read")
            for number, raw in enumerate(data.splitlines(), start=1):
                if not raw.strip():
                    continue
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    line = None
                if not isinstance(line, dict):
                    return _import_error(f"line {number} of {uri} is not a JSON object")
                lines.append(line)
        if not lines:
            return _import_error("the input has no lines")
        return lines

    def _answer(
        self, line: dict[str, Any], target: dict[str, str], version: str, line_fault: LineFault
    ) -> dict[str, Any]:
        """One output line: the input line's fields with ``status`` and ``response``."""
        echoed = {
            k: v for k, v in line.items() if k not in ("status", "processed_time", "response")
        }
        head = {"status": "", "processed_time": _processed_time(self.emulator.clock())}
        try:
            request = line.get("request")
            if not isinstance(request, dict):
                raise ApiError(400, "INVALID_ARGUMENT", 'The line has no "request" object.')
            response = self.emulator.generate(
                request,
                model=target.get("model"),
                endpoint=target.get("endpoint"),
                api_version=version,
            )
            if line_fault():
                raise ApiError(
                    500, "INTERNAL", "Internal error encountered (injected by the sandbox)."
                )
        except (ApiError, ContractError) as exc:
            return {**head, "status": status_text(exc), **echoed}
        return {**head, **echoed, "response": response}

    # --- storage -----------------------------------------------------------------------------

    def _store_in_storage(self, uri: str, data: bytes) -> bool:
        """Upload to the storage emulator; False when the bucket does not exist."""
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        url = (
            f"{self.emulator.storage_url}/upload/storage/v1/b/{urllib.parse.quote(bucket, safe='')}"
            f"/o?uploadType=media&name={urllib.parse.quote(name, safe='')}"
        )
        request = urllib.request.Request(
            url, data=data, method="POST", headers={"Content-Type": "application/jsonl"}
        )
        return _answered(request)

    def _bucket_exists(self, uri: str) -> bool:
        bucket = uri.removeprefix("gs://").partition("/")[0]
        url = f"{self.emulator.storage_url}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}"
        try:
            return _answered(url)
        except urllib.error.HTTPError:
            raise
        except OSError:
            return True  # no storage to ask (an emulator without one): say the object is missing


def _answered(request: urllib.request.Request | str) -> bool:
    """Whether fake-gcs-server answered the request (False: 404; any other error is raised)."""
    try:
        with urllib.request.urlopen(request, timeout=30):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


def _check_job(body: dict[str, Any]) -> None:
    """What the schema cannot say: the required fields, and the formats Gemini takes."""
    for field in ("displayName", "inputConfig", "outputConfig"):
        if not body.get(field):
            raise _required(snake(field))
    if body.get("endpoint") or body.get("unmanagedContainerModel"):
        raise _not_emulated("A batch prediction job on an endpoint or a container model")
    if not body.get("model"):
        raise _required("model")
    source, destination = body["inputConfig"], body["outputConfig"]
    if not source.get("instancesFormat"):
        raise _required("input_config.instances_format")
    if not destination.get("predictionsFormat"):
        raise _required("output_config.predictions_format")
    if "gcsSource" not in source:
        raise _not_emulated("A batch prediction input that is not in Cloud Storage")
    if "gcsDestination" not in destination:
        raise _not_emulated("A batch prediction output that is not in Cloud Storage")
    uris = source["gcsSource"].get("uris") or []
    if not uris:
        raise _required("input_config.gcs_source.uris")
    for uri in uris:
        if not str(uri).startswith("gs://"):
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid Cloud Storage URI: {uri}.")
    if source["instancesFormat"] != "jsonl":
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            f"Unsupported input format {source['instancesFormat']} for a Cloud Storage source: "
            "Gemini batch prediction reads jsonl.",
        )
    prefix = str(destination["gcsDestination"].get("outputUriPrefix") or "")
    if not prefix:
        raise _required("output_config.gcs_destination.output_uri_prefix")
    if not prefix.startswith("gs://"):
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid Cloud Storage URI: {prefix}.")
    if destination["predictionsFormat"] != "jsonl":
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            f"Unsupported output format {destination['predictionsFormat']} for a Cloud Storage "
            "destination: Gemini batch prediction writes jsonl.",
        )


def _import_error(why: str) -> dict[str, Any]:
    return {
        "error": {
            "code": INVALID_ARGUMENT_CODE,
            "message": "Failed to import data. Please check 'Prepare input' section of the batch "
            f"predictions documentation: {why}.",
        }
    }


def _bucket_error(uri: str) -> dict[str, Any]:
    bucket = uri.removeprefix("gs://").partition("/")[0]
    return {
        "code": FAILED_PRECONDITION_CODE,
        "message": f"Failed to get GCS bucket location for {bucket}. Please check that the bucket "
        "exists and permissions are set correctly.",
    }


def _completion_stats(outcome: dict[str, Any]) -> dict[str, str]:
    """``completionStats`` of a finished job: int64 as strings, and zero counts left out, as
    proto3 JSON leaves out default values."""
    counts = {
        "successfulCount": int(outcome.get("successful", 0)),
        "failedCount": int(outcome.get("failed", 0)),
    }
    return {k: str(v) for k, v in counts.items() if v}


def _int_query(query: dict[str, list[str]], key: str, default: int) -> int:
    text = (query.get(key) or [""])[0]
    if not text:
        return default
    if not text.isdigit():
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid {key}: {text}.")
    return int(text)


def _parse_filter(text: str) -> list[tuple[str, str, str]]:
    """``(field, op, value)`` terms of a filter joined by AND. The emulator knows
    ``display_name`` (``=``, ``!=``, ``:`` with ``*`` wildcards), ``state`` (``=``, ``!=``) and
    ``labels.KEY`` (``=``, ``:*``); anything else is refused rather than ignored, so a filter it
    cannot apply never returns the wrong jobs silently."""
    if not text.strip():
        return []
    terms = []
    for part in _AND.split(text.strip()):
        match = _TERM.fullmatch(part)
        field = match.group("field") if match else ""
        known = field in ("display_name", "state") or field.startswith("labels.")
        if match is None or not known or (field == "state" and match.group("op") == ":"):
            raise _not_emulated(f"The list filter term {part.strip()!r}")
        terms.append((field, match.group("op"), match.group("value").strip('"')))
    return terms


def _matches(job: dict[str, Any], field: str, op: str, value: str) -> bool:
    if field.startswith("labels."):
        actual = (job.get("labels") or {}).get(field.removeprefix("labels."))
    else:
        actual = job.get({"display_name": "displayName", "state": "state"}[field])
    if op == ":":
        pattern = re.escape(value).replace(r"\*", ".*")
        return actual is not None and re.fullmatch(pattern, str(actual)) is not None
    return (actual == value) == (op == "=")
