"""Direct uploads (``POST /uploads``, ``routes/uploads``): a large song goes from the client
straight to the object store in parts, never through the API.

``POST /uploads`` declares the file (its name, size, the job's options), is checked as an
upload is (``MAX_FILE_SIZE``, the key's quotas, the options, the model's weights) before a
byte is sent, and begins a multipart upload (``MultipartStore``) under the tenant's inputs
prefix, under a key built from a new id (never from user text). It answers one URL per part:
S3's presigned UploadPart URLs, or in local mode the API's own ``PUT
/uploads/{id}/parts/{n}``, authorized by a token in the URL (``sign``: an HMAC of the
upload id, the part number and the expiry under the data folder's secret), so a client has
one code path. ``POST /uploads/{id}/complete`` with the parts' ETags completes the object,
checks its size against the declared one and its first bytes (``sniff``), and creates the
job (``routes/sources``), whose id is the upload's id: completing twice answers that job again.

The record of an upload in progress (``UploadRecord``) is a small JSON object in the store,
``uploads/<id>.json`` (one prefix, so a sweep lists them all; the tenant is inside), so that
every API replica sees it. Uploads not completed by their ``expires_at`` are aborted and their
records removed by ``sweep``, which every replica runs (at start and every
``UploadConfig.sweep_interval``): aborting twice is harmless.
"""

import base64
import dataclasses
import datetime
import hashlib
import hmac
import json
import logging
import math
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stemkube_api.interfaces import (
    JobBackend,
    MultipartStore,
    ObjectNotFoundError,
    ObjectStore,
    UnavailableError,
)
from stemkube_api.jobs import UNKNOWN_EXTENSION
from stemkube_api.sizes import parse_size
from stemkube_api.sniff import EXTENSIONS
from stemkube_contract.keys import INPUTS_PREFIX, RESULTS_PREFIX, TENANTS_PREFIX

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's least part (but the last)
DEFAULT_PART_SIZE = 16 * MiB
MAX_PARTS = 10_000  # S3's most parts
RECORDS_PREFIX = "uploads/"
RECORD_LIMIT = 64 * 1024
MAX_PRESIGN = datetime.timedelta(days=7)  # SigV4's longest presigned URL

EXPIRY_ENV = "STEMKUBE_UPLOAD_EXPIRY_SECONDS"
PART_SIZE_ENV = "STEMKUBE_UPLOAD_PART_SIZE"
SWEEP_ENV = "STEMKUBE_UPLOAD_SWEEP_SECONDS"
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class UploadSettingsError(ValueError):
    pass


@dataclass(frozen=True)
class UploadConfig:
    expiry: datetime.timedelta = datetime.timedelta(hours=24)
    part_size: int = DEFAULT_PART_SIZE  # the preferred part size; larger files get larger
    sweep_interval: float = 600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "UploadConfig":
        env = os.environ if env is None else env

        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            try:
                value = float(raw) if raw else default
            except ValueError:
                raise UploadSettingsError(f"{name} must be a number, not {raw!r}") from None
            if value <= 0:
                raise UploadSettingsError(f"{name} must be positive, not {raw!r}")
            return value

        part_raw = env.get(PART_SIZE_ENV, "").strip()
        try:
            part_size = parse_size(part_raw) if part_raw else DEFAULT_PART_SIZE
        except ValueError as exc:
            raise UploadSettingsError(f"{PART_SIZE_ENV}: {exc}") from None
        if part_size < MIN_PART_SIZE:
            raise UploadSettingsError(f"{PART_SIZE_ENV} must be at least 5MiB (S3's least part)")
        return cls(
            expiry=datetime.timedelta(seconds=number(EXPIRY_ENV, 86400)),
            part_size=part_size,
            sweep_interval=number(SWEEP_ENV, 600),
        )


def choose_part_size(size: int, preferred: int = DEFAULT_PART_SIZE) -> int:
    """The part size for a file of ``size`` bytes: ``preferred`` (at least S3's 5 MiB), larger
    (in whole MiB) where the file would need more than 10,000 parts."""
    part = max(MIN_PART_SIZE, preferred, math.ceil(size / MAX_PARTS))
    if part > preferred:
        part = math.ceil(part / MiB) * MiB
    return part


def part_count(size: int, part_size: int) -> int:
    return max(1, math.ceil(size / part_size))


def part_length(size: int, part_size: int, number: int) -> int:
    """The bytes part ``number`` (from 1) holds: ``part_size``, the last the rest."""
    return min(part_size, size - (number - 1) * part_size)


def extension_of(filename: str) -> str:
    """The stored input's extension: the file name's if it is a known audio one, else
    ``UNKNOWN_EXTENSION`` (the separator tells the format from the bytes; the name is only a
    hint)."""
    _, dot, ext = filename.rpartition(".")
    ext = ext.lower()
    return ext if dot and ext in EXTENSIONS else UNKNOWN_EXTENSION


def valid_upload_id(upload_id: str) -> bool:
    return bool(_ID.fullmatch(upload_id))


def new_upload_id() -> str:
    return str(uuid.uuid4())


# The part URLs' tokens (local mode) ------------------------------------------------------


def sign(secret: bytes, upload_id: str, number: int, expires: int) -> str:
    """The token that lets a PUT of part ``number`` of ``upload_id`` in until ``expires``
    (Unix seconds): an HMAC-SHA256, URL-safe base64 without padding."""
    message = f"{upload_id}\n{number}\n{expires}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify(
    secret: bytes, upload_id: str, number: int, expires: int, token: str, now: float
) -> bool:
    if now > expires:
        return False
    # As bytes: compare_digest refuses str with non-ASCII characters (a 500 the fuzzing found).
    expected = sign(secret, upload_id, number, expires).encode()
    return hmac.compare_digest(expected, token.encode("utf-8", "replace"))


# The record ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadRecord:
    upload_id: str
    tenant: str | None
    key_id: str | None
    object_key: str  # where the object appears on completion
    store_upload_id: str  # the store's multipart upload id
    size: int  # declared
    part_size: int
    filename: str
    content_type: str
    options: dict[str, Any]  # the job's, as given (checked at POST /uploads)
    created_at: datetime.datetime
    expires_at: datetime.datetime
    request_hash: str = ""  # of the POST /uploads that made it (Idempotency-Key)

    @property
    def parts(self) -> int:
        return part_count(self.size, self.part_size)

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["expires_at"] = self.expires_at.isoformat()
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "UploadRecord":
        data = json.loads(raw)
        data["created_at"] = datetime.datetime.fromisoformat(data["created_at"])
        data["expires_at"] = datetime.datetime.fromisoformat(data["expires_at"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def record_key(upload_id: str) -> str:
    if not valid_upload_id(upload_id):
        raise ValueError(f"not an upload id: {upload_id!r}")
    return f"{RECORDS_PREFIX}{upload_id}.json"


def multipart(store: ObjectStore) -> MultipartStore:
    if not isinstance(store, MultipartStore):
        raise UnavailableError("this object store takes no direct uploads")
    return store


def save(store: ObjectStore, record: UploadRecord) -> None:
    writer = store.writer(record_key(record.upload_id), RECORD_LIMIT, "application/json")
    try:
        writer.write(record.to_json())
    except BaseException:
        writer.abort()
        raise
    writer.commit()


def load(store: ObjectStore, upload_id: str) -> UploadRecord | None:
    """The record of ``upload_id``, or None (no such upload, or not an upload id)."""
    if not valid_upload_id(upload_id):
        return None
    try:
        reader = store.open(record_key(upload_id))
    except ObjectNotFoundError:
        return None
    raw = b"".join(reader)
    try:
        return UploadRecord.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("upload record %s is not readable: %s", upload_id, exc)
        return None


def discard(store: ObjectStore, record: UploadRecord, keep_object: bool = False) -> None:
    """Everything of an upload: its parts, its object (unless ``keep_object``: a job's input
    now), its record last (so that a failure leaves the record for the next sweep)."""
    multipart(store).abort_multipart(record.object_key, record.store_upload_id)
    if not keep_object:
        store.delete(record.object_key)
    store.delete(record_key(record.upload_id))


def _abort_stale(store: MultipartStore, root: str, begun_before: datetime.datetime) -> int:
    aborted = 0
    # Only where the API and its jobs write: a bucket may hold other applications' uploads.
    prefixes = tuple(root + p for p in (INPUTS_PREFIX, RESULTS_PREFIX, TENANTS_PREFIX))
    for key, upload_id in store.stale_multiparts(prefixes, begun_before):
        try:
            store.abort_multipart(key, upload_id)
        except UnavailableError as exc:
            log.warning("could not abort the stale multipart upload of %s: %s", key, exc)
            continue
        aborted += 1
        log.info(
            "aborted the multipart upload of %s begun before %s and never finished",
            key,
            begun_before.isoformat(timespec="seconds"),
        )
    return aborted


def sweep(
    store: ObjectStore,
    backend: JobBackend,
    now: datetime.datetime,
    root: str = "",
    stale_after: datetime.timedelta | None = None,
) -> int:
    """Aborts the uploads past their expiry and removes them (an upload whose job exists, its
    creation's record left behind by a crash, loses its record only); with ``stale_after``,
    also aborts the multipart uploads under the API's prefixes (below ``root``) begun longer
    ago than that, which no record names: an ``/upload`` or a batch whose process was killed
    mid-request, a separator killed mid-result. Returns how many. Any replica may run it at
    any time."""
    removed = 0
    if stale_after is not None:
        removed += _abort_stale(multipart(store), root, now - stale_after)
    for key in multipart(store).keys(RECORDS_PREFIX):
        upload_id = key[len(RECORDS_PREFIX) :].removesuffix(".json")
        record = load(store, upload_id)
        if record is None or record.expires_at > now:
            continue
        try:
            has_job = backend.get(record.upload_id) is not None
            discard(store, record, keep_object=has_job)
        except UnavailableError as exc:
            log.warning("could not remove expired upload %s: %s", upload_id, exc)
            continue
        removed += 1
        log.info(
            "upload %s (%s, %d bytes, tenant %s) expired %s: aborted and removed",
            record.upload_id,
            record.filename,
            record.size,
            record.tenant,
            record.expires_at.isoformat(timespec="seconds"),
        )
    return removed
