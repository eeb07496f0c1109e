"""Cloud Storage through google-cloud-storage, with generation preconditions and checksums.

Uploads are content-addressed by the caller and sent with ``if_generation_match=0``: an object
that already has the name should already have the bytes, so it is skipped (0 bytes sent), but
only once its size and CRC32C match the local file: a truncated or foreign object at the name
would otherwise be trained on. The library verifies the upload's CRC32C (``checksum="crc32c"``);
large files go through its resumable upload in ``chunk_size`` pieces, and its own retry runs only
on calls made safe by a precondition. Errors are translated into vertex-tuner's at this boundary.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vertex_tuner.backends.interface import ObjectInfo, ProgressCallback, Storage, UploadResult
from vertex_tuner.errors import (
    BackendError,
    ConfigurationError,
    DatasetError,
    NotFoundError,
    PreconditionFailed,
    TransientBackendError,
)

LOGIN_HINT = (
    "run `gcloud auth application-default login`, check that the bucket exists and "
    "you may write to it, or add --sandbox"
)


def crc32c_of(path: Path) -> str:
    """The base64 CRC32C of a file, as Cloud Storage reports an object's ``crc32c``."""
    import google_crc32c

    # google-crc32c ships py.typed without annotations; Any keeps mypy strict elsewhere.
    checksum: Any = google_crc32c.Checksum()  # type: ignore[no-untyped-call]
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode("ascii")


def split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://"):
        raise BackendError(f"{uri!r} is not a gs:// URI")
    bucket, _, name = uri[5:].partition("/")
    if not bucket:
        raise BackendError(f"{uri!r} names no bucket")
    return bucket, name


def _data_corruption_types() -> tuple[type[Exception], ...]:
    """google-cloud-storage's DataCorruption, and google-resumable-media's where installed.

    Since google-cloud-storage 3 the library raises its own class; it derives from the
    resumable-media one only when that package is installed, so both are checked.
    """
    found: list[type[Exception]] = []
    try:
        from google.cloud.storage.exceptions import DataCorruption
    except ImportError:  # pragma: no cover - google-cloud-storage < 3
        pass
    else:
        found.append(DataCorruption)
    try:
        from google.resumable_media.common import DataCorruption as MediaDataCorruption
    except ImportError:  # pragma: no cover - not installed
        pass
    else:
        found.append(MediaDataCorruption)
    return tuple(found)


def translate(exc: Exception, *, what: str) -> Exception:
    from google.api_core import exceptions as gexc

    if isinstance(exc, _data_corruption_types()):
        # The library deletes an object finalized with bad bytes, so sending again is safe.
        return TransientBackendError(
            f"{what}: the data was corrupted in transit (CRC32C mismatch: {exc}); "
            "it will be retried"
        )
    if isinstance(exc, gexc.RetryError):
        # The library's own retry ran out of time on a retryable failure.
        cause = exc.cause if exc.cause is not None else exc.message
        return TransientBackendError(f"{what}: Cloud Storage unavailable: {cause}")
    if isinstance(exc, gexc.PreconditionFailed):
        return PreconditionFailed(f"{what}: the object changed (generation precondition)")
    if isinstance(exc, gexc.NotFound):
        return NotFoundError(f"{what}: not found")
    if isinstance(exc, (gexc.Unauthorized, gexc.Forbidden)):
        return ConfigurationError(f"{what}: {exc.message}", hint=LOGIN_HINT)
    if isinstance(exc, (gexc.TooManyRequests, gexc.ServerError)) or (
        isinstance(exc, gexc.GoogleAPICallError) and exc.code == 408
    ):
        retry_after = None
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None) or {}
        if headers.get("Retry-After"):
            try:
                retry_after = float(headers["Retry-After"])
            except ValueError:
                retry_after = None
        return TransientBackendError(
            f"{what}: {exc.code} {exc.message}", status=int(exc.code or 0), retry_after=retry_after
        )
    if isinstance(exc, gexc.GoogleAPICallError):
        return BackendError(f"{what}: {exc.code} {exc.message}", status=int(exc.code or 0))
    if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__module__.startswith(
        ("requests", "urllib3")
    ):
        return TransientBackendError(f"{what}: {type(exc).__name__}: {exc}")
    try:
        from google.auth import exceptions as auth_exceptions
    except ImportError:  # pragma: no cover
        return exc
    if isinstance(exc, auth_exceptions.GoogleAuthError):
        return ConfigurationError(f"{what}: no usable Google credentials ({exc})", hint=LOGIN_HINT)
    if isinstance(exc, auth_exceptions.TransportError):
        return TransientBackendError(f"{what}: {exc}")
    return exc


class _Counting(io.RawIOBase):
    """A file reader that reports how many bytes the library has read (sent)."""

    def __init__(self, f: Any, total: int, progress: ProgressCallback | None) -> None:
        self.f = f
        self.total = total
        self.progress = progress
        self.done = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        position = int(self.f.seek(offset, whence))
        self.done = position
        return position

    def tell(self) -> int:
        return int(self.f.tell())

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.f.read(size)
        self.done += len(data)
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class GcsStorage(Storage):
    def __init__(
        self,
        client: Any,
        *,
        create_missing_buckets: bool = False,
        chunk_size: int = 8 * 1024 * 1024,
        resumable_threshold: int = 8 * 1024 * 1024,
    ) -> None:
        self.client = client
        self.create_missing_buckets = create_missing_buckets
        self.chunk_size = chunk_size
        self.resumable_threshold = resumable_threshold
        self._made: set[str] = set()

    def _blob(self, uri: str) -> Any:
        bucket, name = split_uri(uri)
        return self.client.bucket(bucket).blob(name)

    def _ensure_bucket(self, uri: str) -> None:
        bucket, _ = split_uri(uri)
        if not self.create_missing_buckets or bucket in self._made:
            return
        from google.api_core import exceptions as gexc

        try:
            self.client.create_bucket(bucket)
        except gexc.Conflict:
            pass
        except Exception as exc:
            raise translate(exc, what=f"create bucket {bucket}") from exc
        self._made.add(bucket)

    def stat(self, uri: str) -> ObjectInfo | None:
        from google.api_core import exceptions as gexc

        bucket, name = split_uri(uri)
        try:
            blob = self.client.bucket(bucket).get_blob(name)
        except gexc.NotFound:
            return None
        except Exception as exc:
            raise translate(exc, what=f"stat {uri}") from exc
        if blob is None:
            return None
        return ObjectInfo(
            uri, int(blob.size or 0), int(blob.generation or 0), blob.crc32c, blob.md5_hash
        )

    def upload_file(
        self,
        path: Path,
        uri: str,
        *,
        if_generation_match: int | None = 0,
        progress: ProgressCallback | None = None,
    ) -> UploadResult:
        from google.cloud.storage.retry import DEFAULT_RETRY_IF_GENERATION_SPECIFIED

        self._ensure_bucket(uri)
        size = path.stat().st_size
        if if_generation_match == 0:
            # Names are content addresses: an object that exists already holds these bytes.
            # Looking first sends nothing for it; the precondition still guards the race.
            existing = self.stat(uri)
            if existing is not None:
                return self._existing(path, size, existing)
        blob = self._blob(uri)
        if size > self.resumable_threshold:
            blob.chunk_size = self.chunk_size
        try:
            with path.open("rb") as raw:
                reader = _Counting(raw, size, progress)
                blob.upload_from_file(
                    reader,
                    size=size,
                    rewind=False,
                    if_generation_match=if_generation_match,
                    checksum="crc32c",
                    content_type="application/jsonl",
                    # Safe: with a generation precondition a repeat cannot overwrite anything.
                    retry=DEFAULT_RETRY_IF_GENERATION_SPECIFIED,
                )
        except Exception as exc:
            error = translate(exc, what=f"upload {uri}")
            if isinstance(error, PreconditionFailed) and if_generation_match == 0:
                info = self.stat(uri)
                if info is not None:
                    return self._existing(path, size, info)
            raise error from exc
        return UploadResult(uri, int(blob.generation or 0), size, size, False, blob.crc32c)

    def _existing(self, path: Path, size: int, info: ObjectInfo) -> UploadResult:
        """Skip an upload whose object is there, once it holds the same bytes as ``path``.

        Raises :class:`DatasetError` when the size or CRC32C differs (a truncated upload by
        another tool, or other bytes under the name): training on it would be wrong.
        """
        differs = []
        if info.size != size:
            differs.append(f"size {info.size} bytes, the local file has {size}")
        else:
            local = crc32c_of(path)
            if info.crc32c is not None and info.crc32c != local:
                differs.append(f"CRC32C {info.crc32c}, the local file has {local}")
        if differs:
            raise DatasetError(
                f"{info.uri} already exists but does not hold {path}: " + "; ".join(differs),
                hint=f"delete the object (gcloud storage rm {info.uri}), then submit again",
            )
        return UploadResult(info.uri, info.generation, info.size, 0, True, info.crc32c)

    def read(self, uri: str) -> tuple[bytes, int]:
        blob = self._blob(uri)
        try:
            data = blob.download_as_bytes(checksum="crc32c")
        except Exception as exc:
            raise translate(exc, what=f"read {uri}") from exc
        return data, int(blob.generation or 0)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None) -> int:
        self._ensure_bucket(uri)
        blob = self._blob(uri)
        try:
            blob.upload_from_string(
                data,
                if_generation_match=if_generation_match,
                checksum="crc32c",
                content_type="application/json",
                retry=None,
            )
        except Exception as exc:
            raise translate(exc, what=f"write {uri}") from exc
        return int(blob.generation or 0)

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        from google.api_core import exceptions as gexc

        try:
            self._blob(uri).delete(if_generation_match=if_generation_match, retry=None)
        except gexc.NotFound:
            return
        except Exception as exc:
            raise translate(exc, what=f"delete {uri}") from exc

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        from google.api_core import exceptions as gexc

        bucket, prefix = split_uri(prefix_uri)
        try:
            blobs = list(self.client.list_blobs(bucket, prefix=prefix))
        except gexc.NotFound:
            return iter(())
        except Exception as exc:
            raise translate(exc, what=f"list {prefix_uri}") from exc
        return iter(
            [
                ObjectInfo(
                    f"gs://{bucket}/{b.name}",
                    int(b.size or 0),
                    int(b.generation or 0),
                    b.crc32c,
                    b.md5_hash,
                )
                for b in blobs
            ]
        )
