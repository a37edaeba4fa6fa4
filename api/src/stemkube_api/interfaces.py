"""The two interfaces the REST API talks to. Kubernetes mode implements them with SeparationJob
custom resources and S3 (kubernetes/); local mode with worker processes and local files
(local/). All methods are blocking: the API calls them from worker threads."""

import datetime
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from stemkube_api.auth.limits import Usage
from stemkube_api.jobs import JobPage, JobRecord
from stemkube_contract.options import Options


class UnavailableError(RuntimeError):
    """A backend cannot be reached or refused the call: the request may be retried (503)."""


class ObjectNotFoundError(LookupError):
    pass


class TooLargeError(ValueError):
    """More bytes than the writer's limit; what was written is gone."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class ObjectWriter(Protocol):
    """One object being written. Nothing is visible under its key until ``commit``; ``abort``
    (or an error, or passing the limit) leaves nothing behind."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> int: ...

    def abort(self) -> None: ...


class ObjectReader(Protocol):
    """An object being read: its size (of the range read) and its bytes, chunk by chunk."""

    size: int

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class ObjectStore(Protocol):
    def writer(self, key: str, limit: int, content_type: str) -> ObjectWriter: ...

    def open(self, key: str, offset: int = 0, length: int | None = None) -> ObjectReader:
        """Raises ObjectNotFoundError."""
        ...

    def stat(self, key: str) -> ObjectInfo | None: ...

    def presigned_url(self, key: str, expires: datetime.timedelta, disposition: str) -> str | None:
        """A URL that GETs the object without credentials, its answer's Content-Disposition
        ``disposition``; or None where there is no such thing (local files)."""
        ...

    def delete(self, key: str) -> None:
        """Deleting what is not there is success."""
        ...

    def check(self) -> None:
        """Raises UnavailableError unless the store answers."""
        ...


@dataclass(frozen=True)
class UploadedPart:
    """One part of a multipart upload, as its PUT answered: its number (from 1) and ETag."""

    number: int
    etag: str


class PartsError(ValueError):
    """``complete_multipart``: the parts named are not the ones uploaded (a missing part, a
    wrong ETag, a part but the last under the store's minimum size)."""


class PartWriter(ObjectWriter, Protocol):
    etag: str  # once committed: what the client names the part by when it completes


@runtime_checkable
class MultipartStore(Protocol):
    """Direct uploads (``uploads``): an object written in parts that the client sends itself,
    to presigned URLs (S3) or to the API's own part route (local files). ``upload_id`` is the
    store's id of the multipart upload."""

    def begin_multipart(self, key: str, content_type: str) -> str: ...

    def part_url(
        self, key: str, upload_id: str, number: int, expires: datetime.timedelta
    ) -> str | None:
        """A URL that takes part ``number`` by PUT without credentials; None where the API
        takes the parts itself (``part_writer``)."""
        ...

    def part_writer(self, upload_id: str, number: int, limit: int) -> "PartWriter":
        """Where the API writes a part it takes itself (``commit`` answers its size; ``etag``
        after commit). Only a store whose ``part_url`` is None."""
        ...

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[UploadedPart]) -> None:
        """The object appears under ``key``. Raises PartsError, ObjectNotFoundError (no such
        upload: aborted, or completed already)."""
        ...

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Removes the parts; aborting what is not there is success."""
        ...

    def stale_multiparts(
        self, prefixes: tuple[str, ...], begun_before: datetime.datetime
    ) -> list[tuple[str, str]]:
        """(key, upload id) of the multipart uploads under ``prefixes`` begun before
        ``begun_before`` and neither completed nor aborted: what a process killed mid-upload
        left behind."""
        ...

    def keys(self, prefix: str) -> list[str]: ...


@dataclass(frozen=True)
class NewJob:
    job_id: str
    request: Options  # the options given (validated); the defaults stay implicit
    input_key: str
    filename: str
    tenant: str | None = None  # the creator's; None: no tenant (an open service)
    key_id: str | None = None  # the creating key's id (public), for the record
    input_size: int | None = None  # bytes stored for the upload (its key's bytes_stored)
    # A job from a URL (``POST /jobs``): the separator fetches it (input_key and input_size
    # empty). The full URL, query included: never logged, shown without its query.
    source_url: str | None = None
    # Made under an Idempotency-Key (``idempotency``): the (scope, key) fingerprint and the
    # request's hash, kept with the job (its id is derived from the key).
    idempotency_key: str | None = None
    request_hash: str | None = None
    # Where the job's outcome is POSTed when it ends (``stemkube_contract.webhooks``): the
    # request's, else the deployment's default; its form checked. Never shown with its query.
    webhook_url: str | None = None
    # The request batch (``POST /batches``) the job was created in, if any.
    batch_id: str | None = None
    # The input is an object the caller had already (``s3`` source): it stays when the job goes.
    keep_input: bool = False


class JobExistsError(Exception):
    """``create``: a job of that id exists already (made by a request of the same
    idempotency key, on this replica or another)."""


@dataclass(frozen=True)
class IdempotentJob:
    """A job made under an idempotency key, as a later request of that key finds it."""

    record: JobRecord | None  # None: being deleted
    request_hash: str  # of the request that made it ("" if not known)


class JobBackend(Protocol):
    name: str  # what /readyz calls it: "kubernetes" or "local"

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def create(self, job: NewJob) -> JobRecord:
        """Raises JobExistsError when a job of that id exists."""
        ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def idempotent(self, job_id: str) -> IdempotentJob | None:
        """The job of that id with its idempotency record, for a request of the key it was
        derived from (``idempotency.job_id_for``); None if there is no such job."""
        ...

    def list(
        self,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        tenant: str | None = None,
    ) -> JobPage:
        """Newest first; ``tenant``: only that tenant's jobs (None: every job), filtered
        before paging."""
        ...

    def delete(self, job_id: str) -> bool:
        """Cancels the job if it runs and deletes it and its files; False if there was none."""
        ...

    def check(self) -> None:
        """Raises UnavailableError unless the backend can serve."""
        ...

    def model_problem(self, model: str) -> str | None:
        """Why a job of ``model`` could not run here now (no weights...), or None."""
        ...

    def usage(self, key_id: str, now: datetime.datetime) -> Usage:
        """What the jobs created with key ``key_id`` hold now (queued or running, bytes
        stored), counted from the jobs themselves so that every replica sees the same."""
        ...
