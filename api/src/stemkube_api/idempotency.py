"""Idempotent job creation: the ``Idempotency-Key`` header, pure.

A request that carries ``Idempotency-Key: K`` creates at most one job per (scope, K), where
the scope is the caller's API key id ("open" on a service without keys): sending it again
(a retry after a timeout, a lost answer) answers the first response, with
``Idempotent-Replayed: true``, and creates nothing. The same key with another request is a 409
that says so.

How it is exact across replicas without a lock: the job's id is derived from (scope, K)
(``job_id_for``: a UUID version 5), so two creations under one key name the same job and the
backend lets one through (Kubernetes: the API server's 409 AlreadyExists; local mode: the jobs
table's primary key); the other finds the first and answers as a replay (or a conflict).
The record of the request is the job itself: its request hash (``RequestHasher``: the method,
the path, the option fields and a SHA-256 of the file's bytes as they arrive) travels with it
(a SeparationJob annotation; local mode's ``idempotency`` table), and a job's key lasts while
the job exists, replayed for ``WINDOW`` after its creation (later: a 409 asking for a new
key). Deleting the job frees its key.

The order, for an upload: the header is checked before the body (``validate_key``); an
existing job is looked up before the body too (``JobBackend.idempotent``); the request's hash
is known once the body has ended, and compared (``decide``) before anything is committed: a
mismatch stores nothing. A route of JSON bodies (no file) has the whole request at once:
``create_once`` is the one call it makes (the only part here that is not pure).
"""

import datetime
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from stemkube_api.auth.caller import Caller
from stemkube_api.errors import ApiError
from stemkube_api.interfaces import IdempotentJob, JobBackend, JobExistsError
from stemkube_api.jobs import JobRecord
from stemkube_api.models import ErrorResponse

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# What a route taking the header may answer besides its own (OpenAPI ``responses``).
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": f"A malformed {HEADER}."},
    409: {
        "model": ErrorResponse,
        "description": f"The {HEADER} was used for another request (or more than 24 hours "
        "ago, or its job is being deleted); nothing was stored.",
    },
}
MAX_KEY_LENGTH = 255
WINDOW = datetime.timedelta(hours=24)
OPEN_SCOPE = "open"
# The namespace of the job ids derived from (scope, key): fixed forever (it names jobs).
NAMESPACE = uuid.UUID("6b9e3c2a-5f0d-5d8e-9a51-7f3e2b1c4d60")


def header_parameter(description: str) -> dict[str, Any]:
    """The header in a route's OpenAPI document (routes whose body FastAPI does not parse)."""
    return {
        "name": HEADER,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    }


def validate_key(value: str | None) -> str | None:
    """The header's key, or None when absent; a 400 unless it is 1-255 printable ASCII
    characters (space to tilde)."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in value):
        raise ApiError(
            400,
            f"{HEADER}: 1 to {MAX_KEY_LENGTH} printable ASCII characters (e.g. a UUID); "
            f"got {len(value)} characters"
            + ("" if all(" " <= c <= "~" for c in value) else ", some not printable ASCII"),
            "idempotency",
        )
    return value


def scope_of(caller: Caller) -> str:
    """Whose keys these are: the caller's API key id; "open" without keys."""
    return caller.key_id or OPEN_SCOPE


def _scoped(scope: str, key: str) -> str:
    return json.dumps([scope, key])


def job_id_for(scope: str, key: str) -> str:
    """The id of the one job (scope, key) may create: a UUID (version 5), a valid job id."""
    return str(uuid.uuid5(NAMESPACE, _scoped(scope, key)))


def key_fingerprint(scope: str, key: str) -> str:
    """(scope, key) as a label value: 63 hex digits of its SHA-256 (the key itself, which a
    client chose, is never stored)."""
    return hashlib.sha256(_scoped(scope, key).encode()).hexdigest()[:63]


class RequestHasher:
    """The request's fingerprint, built as it arrives: its method and path, its fields (in any
    order) and its file's bytes (``file``, chunk by chunk)."""

    def __init__(self, method: str, path: str) -> None:
        self.method = method.upper()
        self.path = path
        self.fields: dict[str, str] = {}
        self._file = hashlib.sha256()
        self.file_size = 0

    def field(self, name: str, value: str) -> None:
        self.fields[name] = value

    def file(self, data: bytes) -> None:
        self._file.update(data)
        self.file_size += len(data)

    def hexdigest(self) -> str:
        return request_hash(
            self.method, self.path, self.fields, f"{self._file.hexdigest()}:{self.file_size}"
        )


def request_hash(method: str, path: str, fields: dict[str, str], body: str = "") -> str:
    """SHA-256 of a canonical form of the request: ``fields`` sorted, ``body`` a digest of
    what else it carries (the file's; a JSON route's own body as canonical JSON)."""
    canonical = json.dumps(
        [method.upper(), path, sorted(fields.items()), body], separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Replay:
    """Answer as the first request was answered: its job."""

    job: IdempotentJob


def decide(
    existing: IdempotentJob | None,
    request: str | None,
    job_id: str,
    now: datetime.datetime,
) -> Replay | None:
    """What a request under an idempotency key does, given the job its key made before (if
    any) and its own hash (None: not known yet, before the body): None to go on (create the
    job; with ``request`` None, read the body first), a ``Replay``, or an ``ApiError`` 409."""
    if existing is None:
        return None
    if existing.record is None:
        raise ApiError(
            409,
            f"{HEADER}: job {job_id}, created with this key, is being deleted; retry in a "
            "moment (or send a new key)",
            "idempotency",
        )
    if now - existing.record.created_at > WINDOW:
        raise ApiError(
            409,
            f"{HEADER}: this key created job {job_id} more than 24 hours ago; send a new key "
            "for a new job",
            "idempotency",
        )
    if request is None:
        return None  # the body decides
    if request != existing.request_hash:
        raise ApiError(
            409,
            f"{HEADER}: this key was used for another request (job {job_id}: other options "
            "or another file); nothing was stored. Send a new key for a new job",
            "idempotency",
        )
    return Replay(existing)


@dataclass(frozen=True)
class Keyed:
    """What a job made under a key carries: its id, and (``NewJob.idempotency_key``,
    ``NewJob.request_hash``) the key's fingerprint and the request's hash."""

    job_id: str
    key_hash: str
    request_hash: str


async def create_once(
    backend: JobBackend,
    caller: Caller,
    header: str | None,
    request: str,
    make: Callable[[Keyed | None], Awaitable[JobRecord]],
) -> tuple[JobRecord, bool]:
    """A route's job creation under its request's ``Idempotency-Key`` (``header``, unchecked;
    ``request``: the request's ``request_hash``): (the job, whether it is a replay). ``make``
    creates the job (``Keyed``: with that id and record; None: no key, any id) and removes
    what it stored if its creation fails; it is not called for a replay. A 400 for a bad key,
    a 409 (``decide``) for a key of another request."""
    key = validate_key(header)
    if key is None:
        return await make(None), False
    scope = scope_of(caller)
    keyed = Keyed(job_id_for(scope, key), key_fingerprint(scope, key), request)

    async def replayed() -> tuple[JobRecord, bool] | None:
        found = await run_in_threadpool(backend.idempotent, keyed.job_id)
        now = datetime.datetime.now(datetime.UTC)
        replay = decide(found, request, keyed.job_id, now)
        if replay is None or replay.job.record is None:
            return None
        return replay.job.record, True

    first = await replayed()
    if first is not None:
        return first
    try:
        return await make(keyed), False
    except JobExistsError:  # made meanwhile, by a request of the same key
        late = await replayed()
        if late is None:
            raise ApiError(
                409,
                f"{HEADER}: job {keyed.job_id} of this key is being created or deleted by "
                "another request; retry in a moment",
                "idempotency",
            ) from None
        return late
