"""Vertex tuning jobs, generateContent and countTokens through google-genai.

This is the only module that talks to ``google.genai`` for jobs, generation and token counts, and it
translates the SDK's errors into ours here, so nothing above it sees a Google exception:

- 429, 408, 5xx and transport failures → :class:`TransientBackendError` (with ``Retry-After``);
- for a create, a failure after the request may have reached Vertex (5xx, a read timeout, a
  reset) → :class:`AmbiguousCreateError`: the service looks the job up before creating again;
- 401 → :class:`ConfigurationError` saying how to log in; 403 → :class:`ConfigurationError` with
  a hint for its reason (:func:`permission_hint`: the API is disabled, no quota project, no
  ``iam.serviceAccounts.actAs`` on the job's service account, or a missing role);
  404 → :class:`NotFoundError`.

:func:`request_body` renders, offline, the REST body ``tunings.tune`` would POST for a request.

The SDK's own retries stay off (its default), so nothing is retried twice and a create is never
retried blindly. countTokens is free and safe to repeat: :class:`GenaiTokenCounter` retries it
under the one retry policy and paces it below its quota (:data:`COUNT_TOKENS_PER_MINUTE`).
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    RewardScore,
    RewardValidator,
    TokenCounter,
    Tuner,
    TuningRequest,
)
from vertex_tuner.errors import (
    AmbiguousCreateError,
    BackendError,
    ConfigurationError,
    NotFoundError,
    TransientBackendError,
)
from vertex_tuner.models import resource_location
from vertex_tuner.retry import RetryOptions, retrying
from vertex_tuner.vocabulary import VERTEX_API_VERSION

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_ADAPTER_SIZES = {
    1: "ADAPTER_SIZE_ONE",
    2: "ADAPTER_SIZE_TWO",
    4: "ADAPTER_SIZE_FOUR",
    8: "ADAPTER_SIZE_EIGHT",
    16: "ADAPTER_SIZE_SIXTEEN",
    32: "ADAPTER_SIZE_THIRTY_TWO",
}
_METHODS = {
    "supervised": "SUPERVISED_FINE_TUNING",
    "preference": "PREFERENCE_TUNING",
    "distillation": "DISTILLATION",
    "reinforcement": "REINFORCEMENT_TUNING",
}
LOGIN_HINT = (
    "run `gcloud auth application-default login`, check GOOGLE_CLOUD_PROJECT, "
    "or add --sandbox to use the local emulators"
)


_PROJECT_IN_MESSAGE = re.compile(r"\bin project ([A-Za-z0-9_-]+)")
_SERVICE_ACCOUNT_IN_MESSAGE = re.compile(r"service account ([^\s'\"]+@[^\s'\"]+?)[.'\"]?(?:\s|$)")


def _error_infos(details: Any) -> list[Mapping[str, Any]]:
    """The ``google.rpc.ErrorInfo`` entries of a Google error body."""
    if not isinstance(details, Mapping):
        return []
    error = details.get("error", details)
    items = error.get("details") if isinstance(error, Mapping) else None
    if not isinstance(items, list):
        return []
    return [
        i
        for i in items
        if isinstance(i, Mapping) and str(i.get("@type", "")).endswith("google.rpc.ErrorInfo")
    ]


def permission_hint(message: str, details: Any = None) -> tuple[str, str]:
    """(what went wrong, what to run) for a 403, from its ErrorInfo reason and its message.

    - ``iam.serviceAccounts.actAs`` denied: the caller may not run the job as
      ``gcp.service_account``: grant ``roles/iam.serviceAccountUser`` on that account;
    - a missing quota project (``USER_PROJECT_DENIED``, or a message about a "quota project"):
      ``gcloud auth application-default set-quota-project``;
    - ``SERVICE_DISABLED`` ("… has not been used in project … or it is disabled"):
      ``gcloud services enable``;
    - anything else: a missing role, or the wrong account.
    """
    infos = _error_infos(details)
    reasons = {str(i.get("reason", "")) for i in infos}
    metadata: dict[str, Any] = {}
    for info in infos:
        if isinstance(info.get("metadata"), Mapping):
            metadata.update(info["metadata"])
    lowered = message.lower()
    if "iam.serviceaccounts.actas" in lowered or metadata.get("permission") == (
        "iam.serviceAccounts.actAs"
    ):
        match = _SERVICE_ACCOUNT_IN_MESSAGE.search(message)
        account = match.group(1) if match else "SERVICE_ACCOUNT"
        return (
            "you may not run jobs as this service account (iam.serviceAccounts.actAs)",
            f"grant yourself roles/iam.serviceAccountUser on it: `gcloud iam service-accounts "
            f"add-iam-policy-binding {account} --member=user:YOU@EXAMPLE.COM "
            "--role=roles/iam.serviceAccountUser`, or remove gcp.service_account",
        )
    if "USER_PROJECT_DENIED" in reasons or "quota project" in lowered:
        return (
            "no usable quota project for these credentials",
            "set one: `gcloud auth application-default set-quota-project PROJECT_ID` (you need "
            "roles/serviceusage.serviceUsageConsumer on it)",
        )
    if (
        "SERVICE_DISABLED" in reasons
        or "has not been used in project" in lowered
        or ("api" in lowered and "is disabled" in lowered)
    ):
        service = str(metadata.get("service") or "aiplatform.googleapis.com")
        consumer = str(metadata.get("consumer") or "").removeprefix("projects/")
        if not consumer:
            match = _PROJECT_IN_MESSAGE.search(message)
            consumer = match.group(1) if match else "PROJECT_ID"
        return (
            f"the {service} API is not enabled in project {consumer}",
            f"enable it: `gcloud services enable {service} --project={consumer}`, wait a few "
            "minutes, then run again",
        )
    return (
        "permission denied",
        "the account needs roles/aiplatform.user (and storage access to the bucket) in the "
        "project; check GOOGLE_CLOUD_PROJECT and which account "
        "`gcloud auth application-default login` used, or add --sandbox",
    )


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def translate(exc: Exception, *, what: str, create: bool = False) -> Exception:
    """Our error for an exception raised by google-genai or its HTTP stack."""
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        code = int(exc.code or 0)
        message = f"{what}: {code} {exc.status or ''}: {exc.message or exc}".replace("  ", " ")
        if code == 401:
            return ConfigurationError(message, hint=LOGIN_HINT)
        if code == 403:
            what_failed, hint = permission_hint(str(exc.message or exc), exc.details)
            return ConfigurationError(f"{message} ({what_failed})", hint=hint)
        if code == 404:
            return NotFoundError(message)
        if code in _TRANSIENT_STATUS:
            retry_after = _retry_after(exc.response)
            if create and code != 429:
                return AmbiguousCreateError(message, status=code, retry_after=retry_after)
            return TransientBackendError(message, status=code, retry_after=retry_after)
        return BackendError(message, status=code)
    if _is_transport_error(exc):
        message = f"{what}: {type(exc).__name__}: {exc}"
        if create and not _is_connect_error(exc):
            return AmbiguousCreateError(message)
        return TransientBackendError(message)
    try:
        from google.auth import exceptions as auth_exceptions
    except ImportError:  # pragma: no cover - google-auth comes with google-genai
        auth_exceptions = None  # type: ignore[assignment]
    if auth_exceptions is not None and isinstance(exc, auth_exceptions.GoogleAuthError):
        return ConfigurationError(f"{what}: no usable Google credentials ({exc})", hint=LOGIN_HINT)
    return exc


def _transport_modules() -> list[Any]:
    mods = []
    for name in ("httpx", "httpx2"):
        try:
            mods.append(__import__(name))
        except ImportError:
            continue
    return mods


def _is_transport_error(exc: Exception) -> bool:
    return any(isinstance(exc, m.TransportError) for m in _transport_modules()) or isinstance(
        exc, (ConnectionError, TimeoutError)
    )


def _is_connect_error(exc: Exception) -> bool:
    """A failure to connect: the request never left, so a create can be retried safely."""
    return any(
        isinstance(exc, (m.ConnectError, m.ConnectTimeout)) for m in _transport_modules()
    ) or isinstance(exc, ConnectionRefusedError)


def _state(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


#: The Vertex API version every client and request names (see vocabulary.VERTEX_API_VERSION).
API_VERSION = VERTEX_API_VERSION


def http_options(options: Any = None, **fields: Any) -> Any:
    """``types.HttpOptions`` pinned to :data:`API_VERSION`, merged with ``options`` and ``fields``.

    ``options`` may be an ``HttpOptions``, a dict of its fields or None; ``fields`` win over it,
    and ``api_version`` is always :data:`API_VERSION`.
    """
    from google.genai import types

    if options is None:
        merged: dict[str, Any] = {}
    elif isinstance(options, types.HttpOptions):
        # Shallow, so client objects (httpx_client, …) are passed through as they are.
        merged = {
            k: getattr(options, k)
            for k in type(options).model_fields
            if getattr(options, k) is not None
        }
    else:
        merged = dict(options)
    merged.update({k: v for k, v in fields.items() if v is not None})
    merged["api_version"] = API_VERSION
    return types.HttpOptions(**merged)


def _count(value: int | None) -> int:
    return int(value or 0)


def data_stats(tds: Any) -> DataStats:
    """Our DataStats from a ``google.genai.types.TuningDataStats``, whatever the method.

    - supervised: ``supervisedTuningDataStats``, with a count of dropped (``truncated``) examples
      next to a partial sample of their indices;
    - preference: ``preferenceOptimizationDataStats``; distillation:
      ``distillationDataStats.trainingDatasetStats``; reinforcement:
      ``reinforcementTuningDataStats``. These have no count field, only a partial sample of the
      dropped indices (and a reason for each), so the count is the sample's size: a lower bound
      (``count_is_lower_bound``).

    All methods document their indices as "a partial sample", so ``indices_are_sample`` is set
    whenever indices are reported.
    """
    raw = tds.model_dump(mode="json", exclude_none=True)
    sft = tds.supervised_tuning_data_stats
    if sft is not None:
        indices = tuple(sft.truncated_example_indices or ())
        return DataStats(
            example_count=sft.tuning_dataset_example_count,
            billable_tokens=sft.total_billable_token_count,
            tuning_step_count=sft.tuning_step_count,
            truncated_examples=_count(sft.total_truncated_example_count),
            truncated_example_indices=indices,
            dropped_example_reasons=tuple(sft.dropped_example_reasons or ()),
            method="supervised",
            indices_are_sample=bool(indices),
            raw=raw.get("supervised_tuning_data_stats", raw),
        )
    candidates: tuple[tuple[str, Any, str], ...] = (
        (
            "preference",
            tds.preference_optimization_data_stats,
            "preference_optimization_data_stats",
        ),
        (
            "distillation",
            tds.distillation_data_stats.training_dataset_stats
            if tds.distillation_data_stats is not None
            else None,
            "distillation_data_stats",
        ),
        ("reinforcement", tds.reinforcement_tuning_data_stats, "reinforcement_tuning_data_stats"),
    )
    for method, stats, key in candidates:
        if stats is None:
            continue
        indices = tuple(stats.dropped_example_indices or ())
        reasons = tuple(stats.dropped_example_reasons or ())
        return DataStats(
            example_count=stats.tuning_dataset_example_count,
            billable_tokens=stats.total_billable_token_count,
            tuning_step_count=stats.tuning_step_count,
            # No count field: at least as many were dropped as the sample names.
            truncated_examples=max(len(indices), len(reasons)),
            truncated_example_indices=indices,
            dropped_example_reasons=reasons,
            method=method,
            indices_are_sample=bool(indices),
            count_is_lower_bound=True,
            raw=raw.get(key, raw),
        )
    return DataStats(raw=raw)


def reported_epochs(job: Any) -> int | None:
    """The epoch count a ``google.genai.types.TuningJob`` reports in its method's spec.

    ``supervisedTuningSpec.hyperParameters.epochCount`` (or the preference, distillation or
    reinforcement spec's): the value sent, or the one Vertex chose when none was.
    """
    for spec_field in (
        "supervised_tuning_spec",
        "preference_optimization_spec",
        "distillation_spec",
        "reinforcement_tuning_spec",
    ):
        spec = getattr(job, spec_field, None)
        hyper = getattr(spec, "hyper_parameters", None) if spec is not None else None
        count = getattr(hyper, "epoch_count", None) if hyper is not None else None
        if count:
            return int(count)
    return None


def to_job(job: Any) -> Job:
    """Our Job from a ``google.genai.types.TuningJob``."""
    tuned = job.tuned_model
    tds = job.tuning_data_stats
    stats = data_stats(tds) if tds is not None else None
    sub_state = _state(job.tuning_job_state)
    meta = job.tuning_job_metadata
    return Job(
        name=job.name or "",
        state=JobState.parse(_state(job.state)),
        sub_state=sub_state.removeprefix("TUNING_JOB_STATE_") if sub_state else None,
        display_name=job.tuned_model_display_name,
        description=job.description,
        base_model=job.base_model
        or (job.pre_tuned_model.tuned_model_name if job.pre_tuned_model else None),
        labels=dict(job.labels or {}),
        tuned_model=tuned.model if tuned else None,
        endpoint=tuned.endpoint if tuned else None,
        checkpoints=tuple(
            Checkpoint(str(c.checkpoint_id), c.epoch, c.step, c.endpoint)
            for c in (tuned.checkpoints or ())
            if c.checkpoint_id is not None
        )
        if tuned
        else (),
        data_stats=stats,
        error_code=job.error.code if job.error else None,
        error_message=job.error.message if job.error else None,
        create_time=job.create_time.isoformat() if job.create_time else None,
        start_time=job.start_time.isoformat() if job.start_time else None,
        end_time=job.end_time.isoformat() if job.end_time else None,
        update_time=job.update_time.isoformat() if job.update_time else None,
        epochs_completed=getattr(meta, "completed_epoch_count", None) if meta else None,
        steps_completed=getattr(meta, "completed_step_count", None) if meta else None,
        epochs=reported_epochs(job),
    )


def build_config(request: TuningRequest, *, timeout_s: float) -> Any:
    """A typed ``CreateTuningJobConfig`` (a dict would silently drop some fields)."""
    from google.genai import types

    extra_body: dict[str, Any] = {}
    if request.service_account:
        # Not a config field in google-genai; the REST TuningJob takes it.
        extra_body["serviceAccount"] = request.service_account
    options = http_options(timeout=int(timeout_s * 1000), extra_body=extra_body or None)
    fields: dict[str, Any] = {
        "method": _METHODS[request.method],
        "tuned_model_display_name": request.display_name,
        "description": request.description,
        "labels": dict(request.labels),
        "epoch_count": request.epochs,
        "learning_rate_multiplier": request.learning_rate_multiplier,
        "adapter_size": _ADAPTER_SIZES[request.adapter_size] if request.adapter_size else None,
        "export_last_checkpoint_only": request.export_last_checkpoint_only,
        "output_uri": request.output_uri,
        "http_options": options,
    }
    if request.validation_uri:
        fields["validation_dataset"] = types.TuningValidationDataset(gcs_uri=request.validation_uri)
    if request.kms_key_name:
        fields["encryption_spec"] = types.EncryptionSpec(kms_key_name=request.kms_key_name)
    if request.method == "preference":
        fields["beta"] = request.beta
    if request.method == "distillation":
        fields["base_teacher_model"] = request.teacher_model
    if request.reinforcement is not None:
        settings = dict(request.reinforcement)
        fields.update(reward_configs(settings.pop("reward")))
        level = settings.pop("thinking_level", None)
        if level is not None:
            fields["thinking_level"] = str(level).upper()
        fields.update(settings)
    if request.checkpoint_id:
        fields["pre_tuned_model_checkpoint_id"] = request.checkpoint_id
    return types.CreateTuningJobConfig(**{k: v for k, v in fields.items() if v is not None})


def request_body(request: TuningRequest) -> dict[str, Any]:
    """The JSON body ``client.tunings.tune`` would POST for ``request``, built offline.

    It runs google-genai's own converter (``_CreateTuningJobParametersPrivate_to_vertex``) on
    the same parameters :meth:`GenaiTuner.create` passes, the way ``tunings.tune`` and
    ``Tunings._tune`` do (a ``projects/…`` base becomes ``preTunedModel`` with the checkpoint
    id), then merges ``http_options.extra_body`` as the API client does. Nothing is sent.
    """
    from google.genai import _common, tunings, types

    config = build_config(request, timeout_s=60.0)
    pre_tuned = None
    base: str | None = request.base_model
    if request.base_model.startswith("projects/"):
        pre_tuned = types.PreTunedModel(
            tuned_model_name=request.base_model,
            checkpoint_id=config.pre_tuned_model_checkpoint_id,
        )
        base = None
    params = types._CreateTuningJobParametersPrivate(
        base_model=base,
        pre_tuned_model=pre_tuned,
        training_dataset=types.TuningDataset(gcs_uri=request.training_uri),
        config=config,
    )
    body: dict[str, Any] = tunings._CreateTuningJobParametersPrivate_to_vertex(params, None, params)
    for private in ("config", "_url", "_query"):
        body.pop(private, None)
    body = _common.encode_unserializable_types(_common.convert_to_dict(body))
    extra = config.http_options.extra_body if config.http_options else None
    if extra:
        _common.recursive_dict_update(body, extra)
    return body


class GenaiTuner(Tuner):
    def __init__(self, client: Any, *, timeout_s: float = 60.0) -> None:
        self.client = client
        self.timeout_s = timeout_s

    def _options(self) -> Any:
        return http_options(timeout=int(self.timeout_s * 1000))

    def create(self, request: TuningRequest) -> Job:
        from google.genai import types

        config = build_config(request, timeout_s=self.timeout_s)
        try:
            with warnings.catch_warnings():
                # tunings.tune() is marked experimental in google-genai.
                from google.genai._common import ExperimentalWarning

                warnings.simplefilter("ignore", category=ExperimentalWarning)
                job = self.client.tunings.tune(
                    base_model=request.base_model,
                    training_dataset=types.TuningDataset(gcs_uri=request.training_uri),
                    config=config,
                )
        except Exception as exc:
            raise translate(exc, what="create tuning job", create=True) from exc
        return to_job(job)

    def get(self, name: str) -> Job:
        try:
            return to_job(
                self.client.tunings.get(name=name, config={"http_options": self._options()})
            )
        except Exception as exc:
            raise translate(exc, what=f"get {name}") from exc

    def list(self, *, labels: Mapping[str, str] | None = None) -> Iterator[Job]:
        config: dict[str, Any] = {"page_size": 100, "http_options": self._options()}
        if labels:
            config["filter"] = " AND ".join(f'labels.{k}="{v}"' for k, v in labels.items())
        try:
            jobs = [to_job(j) for j in self.client.tunings.list(config=config)]
        except Exception as exc:
            raise translate(exc, what="list tuning jobs") from exc
        jobs.sort(key=lambda j: (j.create_time or "", j.name), reverse=True)
        return iter(jobs)

    def cancel(self, name: str) -> None:
        try:
            self.client.tunings.cancel(name=name, config={"http_options": self._options()})
        except Exception as exc:
            raise translate(exc, what=f"cancel {name}") from exc

    def delete_model(self, name: str) -> None:
        # google-genai's models.delete deletes the whole model, so it is sent without the @V
        # (Vertex deletes one version only through models.deleteVersion, which the SDK lacks).
        model = model_without_version(name)
        try:
            self.client.models.delete(model=model, config={"http_options": self._options()})
        except Exception as exc:
            raise translate(exc, what=f"delete {model}") from exc


class GenaiGenerator(Generator):
    """generateContent through google-genai.

    ``client_for(location)`` builds a client for another location: a tuned endpoint whose name
    says ``locations/us`` (3.x models are served from the multi-region endpoints) is called
    there, not in the region the client was made for.
    """

    def __init__(
        self,
        client: Any,
        *,
        timeout_s: float = 120.0,
        location: str | None = None,
        client_for: Callable[[str], Any] | None = None,
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.location = location
        self.client_for = client_for
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _client(self, model: str) -> Any:
        where = resource_location(model)
        if where is None or where == self.location or self.client_for is None:
            return self.client
        with self._lock:
            if where not in self._clients:
                self._clients[where] = self.client_for(where)
            return self._clients[where]

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
        from google.genai import types

        config = types.GenerateContentConfig(
            system_instruction=system_instruction,
            temperature=temperature,
            max_output_tokens=max_output_tokens,
            response_mime_type="application/json" if response_schema is not None else None,
            response_schema=dict(response_schema) if response_schema is not None else None,
            thinking_config=thinking_config(thinking_budget, thinking_level),
            http_options=http_options(timeout=int(self.timeout_s * 1000)),
        )
        try:
            response = self._client(model).models.generate_content(
                model=model,
                contents=[types.Content.model_validate(c) for c in contents],
                config=config,
            )
        except Exception as exc:
            raise translate(exc, what=f"generate with {model}") from exc
        text = response.text
        if text is None:
            reason = None
            if response.candidates:
                reason = _state(response.candidates[0].finish_reason)
            raise BackendError(f"{model} returned no text (finish reason {reason})")
        usage = response.usage_metadata
        return Generation(
            text=text,
            input_tokens=usage.prompt_token_count if usage else None,
            output_tokens=usage.candidates_token_count if usage else None,
        )


#: countTokens' quota: "The maximum quota for the CountTokens API is 3,000 requests per minute".
COUNT_TOKENS_PER_MINUTE = 3000
#: The share of that quota one counter uses, leaving room for anything else in the project.
QUOTA_SHARE = 0.9


class RateLimiter:
    """Spaces calls evenly, at most ``per_minute`` a minute across every thread."""

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 60.0 / per_minute
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self.clock()
            at = max(now, self._next)
            self._next = at + self.interval
        if at > now:
            self.sleep(at - now)


class GenaiTokenCounter(TokenCounter):
    """Exact token counts from ``models.count_tokens`` (Vertex's ``countTokens``).

    Calls are paced by a :class:`RateLimiter` (none when ``per_minute`` is None: the sandbox)
    and retried under the retry policy; errors are translated like every other call's.
    ``source`` names who counts in findings: ``Vertex``, or ``the sandbox emulator``.
    """

    def __init__(
        self,
        client: Any,
        *,
        source: str = "Vertex",
        per_minute: float | None = COUNT_TOKENS_PER_MINUTE * QUOTA_SHARE,
        retry: RetryOptions | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float = 60.0,
    ) -> None:
        self.client = client
        self.source = source
        self.limiter = RateLimiter(per_minute, sleep=sleep) if per_minute else None
        self.retry = retry or RetryOptions()
        self.sleep = sleep
        self.timeout_s = timeout_s

    def count(
        self,
        model: str,
        contents: Sequence[Mapping[str, Any]],
        *,
        system_instruction: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        from google.genai import types

        try:
            config = types.CountTokensConfig(
                system_instruction=types.Content.model_validate(system_instruction)
                if system_instruction is not None
                else None,
                tools=[types.Tool.model_validate(t) for t in tools] if tools else None,
                http_options=http_options(timeout=int(self.timeout_s * 1000)),
            )
            typed = [types.Content.model_validate(c) for c in contents]
        except ValueError as exc:
            raise BackendError(
                f"count tokens with {model}: not a Gemini request ({exc})", status=400
            ) from exc

        def once() -> int:
            if self.limiter is not None:
                self.limiter.acquire()
            try:
                response = self.client.models.count_tokens(
                    model=model, contents=typed, config=config
                )
            except Exception as exc:
                raise translate(exc, what=f"count tokens with {model}") from exc
            return int(response.total_tokens or 0)

        result: int = retrying(self.retry, sleep=self.sleep)(once)
        return result


def thinking_config(budget: int | None, level: str | None) -> Any:
    """A ``ThinkingConfig`` for the settings that are set; None leaves the model's default."""
    from google.genai import types

    if budget is None and level is None:
        return None
    return types.ThinkingConfig(
        thinking_budget=budget,
        thinking_level=types.ThinkingLevel(level.upper()) if level is not None else None,
    )


def service_client(project: str | None, location: str | None, options: Any = None) -> Any:
    """A google-genai client as a service builds one to call a tuned model: Application
    Default Credentials, the endpoint's own location, v1beta1 even when
    GOOGLE_GENAI_API_VERSION says otherwise (``options``: more ``HttpOptions``)."""
    from google import genai

    return genai.Client(
        vertexai=True, project=project, location=location, http_options=http_options(options)
    )


def model_without_version(name: str) -> str:
    """``projects/P/locations/L/models/ID@V`` → ``projects/P/locations/L/models/ID``."""
    return name.split("@", 1)[0]


class GenaiBatchPredictor(BatchPredictor):
    """Batch prediction through google-genai's ``client.batches``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def create(self, model: str, source_uri: str, dest_prefix: str, display_name: str) -> BatchJob:
        from google.genai import types

        try:
            job = self.client.batches.create(
                model=model,
                src=source_uri,
                config=types.CreateBatchJobConfig(display_name=display_name, dest=dest_prefix),
            )
        except Exception as exc:
            raise translate(exc, what=f"create the batch job {display_name}") from exc
        return _batch_job(job)

    def get(self, name: str) -> BatchJob:
        try:
            return _batch_job(self.client.batches.get(name=name))
        except Exception as exc:
            raise translate(exc, what=f"read the batch job {name}") from exc

    def find(self, display_name: str) -> list[BatchJob]:
        from google.genai import types

        # Vertex filters on the display name; the exact match is checked here as well.
        config = types.ListBatchJobsConfig(filter=f'display_name="{display_name}"', page_size=50)
        try:
            found = [_batch_job(j) for j in self.client.batches.list(config=config)]
        except Exception as exc:
            raise translate(exc, what=f"list the batch jobs named {display_name}") from exc
        return [j for j in found if j.display_name == display_name]

    def cancel(self, name: str) -> None:
        try:
            self.client.batches.cancel(name=name)
        except Exception as exc:
            raise translate(exc, what=f"cancel the batch job {name}") from exc


def _batch_job(job: Any) -> BatchJob:
    stats = job.completion_stats
    dest = job.dest
    output = getattr(job, "output_info", None)
    directory = getattr(output, "gcs_output_directory", None) if output else None
    return BatchJob(
        name=job.name or "",
        display_name=job.display_name or "",
        state=JobState.parse(_state(job.state)),
        model=job.model or "",
        output_dir=directory or (dest.gcs_uri if dest else None),
        succeeded=int(stats.successful_count or 0) if stats else 0,
        failed=int(stats.failed_count or 0) if stats else 0,
        incomplete=int(stats.incomplete_count or 0) if stats else 0,
        error=job.error.message if job.error else None,
    )


def reward_configs(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A spec's reward payload (:meth:`vertex_tuner.spec.JobSpec.reward_payload`) as
    google-genai's typed configs: ``{"reward_config": …}`` or ``{"composite_reward_config": …}``
    (a dict would let a misspelt field through)."""
    from google.genai import types

    if "composite" in payload:
        composite = types.CompositeReinforcementTuningRewardConfig.model_validate(
            payload["composite"]
        )
        return {"composite_reward_config": composite}
    single = types.SingleReinforcementTuningRewardConfig.model_validate(payload["single"])
    return {"reward_config": single}


def check_reward_payload(payload: Mapping[str, Any]) -> str | None:
    """What google-genai's types refuse in a reward payload, or None."""
    from pydantic import ValidationError

    try:
        reward_configs(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}"
    return None


class GenaiRewardValidator(RewardValidator):
    """``client.tunings.validate_reward`` in ``projects/P/locations/L``."""

    def __init__(self, client: Any, *, project: str, location: str) -> None:
        self.client = client
        self.parent = f"projects/{project}/locations/{location}"

    def validate_reward(
        self, example: Mapping[str, Any], response: Mapping[str, Any], reward: Mapping[str, Any]
    ) -> RewardScore:
        from google.genai import types

        configs = reward_configs(reward)
        single = configs.get("reward_config")
        composite = configs.get("composite_reward_config")
        try:
            answer = self.client.tunings.validate_reward(
                parent=self.parent,
                sample_response=types.Content.model_validate(response),
                example=types.ReinforcementTuningExample.model_validate(example),
                single_reward_config=single,
                composite_reward_config=composite,
            )
        except Exception as exc:
            raise translate(exc, what="validate the reward") from exc
        # Vertex answers in proto3 JSON, which leaves out a reward of 0: absent with no error
        # means 0, not "not scored".
        details: dict[str, tuple[float | None, str | None]] = {}
        for name, info in (answer.reward_info_details or {}).items():
            problem = info.error_status.message if info.error_status else None
            value = info.reward if info.reward is not None or problem else 0.0
            details[name] = (value, problem or info.user_requested_aux_info)
        overall = answer.overall_reward
        if overall is None and not answer.error:
            overall = 0.0
        return RewardScore(overall, details, answer.error or None)
