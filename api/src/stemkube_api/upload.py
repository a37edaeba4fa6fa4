"""An upload, received as it arrives: the form's events (``form.read_form``) drive an object
writer and the job backend, with nothing spooled and nothing left behind on a refusal.

``UploadReceiver`` holds one upload's state; ``receive`` takes the request body, ``consume`` the
form's events (what the unit tests feed it directly). The order of the checks is the point:
each option is checked as it arrives, and the options sent so far and the model's weights
(``JobBackend.model_problem``) before the file's first byte is stored; the format is told from
the file's first ``SNIFF_BYTES``; the size limit holds as the bytes come. Nothing is visible in
the store until the form has ended and every option checks out: any error aborts the writer,
and the stored input is deleted again when the job cannot be created.

With an ``Idempotency-Key`` (``idempotency``) the job's id comes from the key: the key's job is
looked up before the body (found: the body is only hashed, nothing stored, and the request
replays that job or is a 409), the request's hash builds as the body arrives, and the key's job
is looked up again before the file is committed and, should the creation still find it made
meanwhile (``JobExistsError``, another replica's), what was stored is deleted and the request
replays or is refused as if it had found the job first. The input of a keyed upload is stored
under an id of its own (not the job's), so that two racing requests never write one object.
"""

import contextlib
import datetime
import logging
import uuid
from collections.abc import AsyncIterator

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from stemkube_api.auth.caller import OPEN, Caller
from stemkube_api.auth.limits import Refusal, Usage, admit_job, counts_usage
from stemkube_api.errors import ApiError
from stemkube_api.form import (
    Event,
    Field,
    FileData,
    FileEnd,
    FileStart,
    FormError,
    boundary_of,
    read_form,
)
from stemkube_api.idempotency import (
    RequestHasher,
    decide,
    job_id_for,
    key_fingerprint,
    scope_of,
)
from stemkube_api.interfaces import (
    IdempotentJob,
    JobExistsError,
    NewJob,
    ObjectWriter,
    TooLargeError,
    UnavailableError,
)
from stemkube_api.jobs import JobRecord, clean_filename, input_key
from stemkube_api.options import FIELDS, OptionError, check_field, parse_request
from stemkube_api.services import Services
from stemkube_api.sniff import ACCEPTED, SNIFF_BYTES, NotAudioError, sniff
from stemkube_contract import webhooks

log = logging.getLogger(__name__)

# Bytes a form may carry beyond the file itself (boundaries, part headers, option fields).
FORM_SLACK = 64 * 1024
# After refusing an upload part-way, the rest of the body is read and dropped (up to this much)
# so that the client, still sending, gets the answer rather than a broken connection.
DRAIN_LIMIT = 64 * 1024 * 1024
WRITE_BATCH = 1024 * 1024
# The form's field for the job's webhook (not an option: ``stemkube_contract.webhooks``).
WEBHOOK_FIELD = "webhook_url"


class UploadReceiver:
    """One upload (use once): the form's events in, the stored file and its new job out, or
    an ``ApiError`` with nothing stored."""

    def __init__(
        self,
        services: Services,
        job_id: str | None = None,
        caller: Caller = OPEN,
        idempotency_key: str | None = None,
        path: str = "/upload",
    ) -> None:
        """``idempotency_key``: the request's (checked: ``idempotency.validate_key``);
        ``path``: the request's, for its hash."""
        self.services = services
        self.caller = caller  # the job is its tenant's, its files under its tenant's prefix
        self.settings = services.settings
        self.limit = services.settings.max_file_size
        self.job_id = job_id or str(uuid.uuid4())
        # An idempotent upload: its job id from the key, its hash as it comes, the key's job
        # if it was found before the body (then nothing is stored), whether it replayed.
        self.hasher: RequestHasher | None = None
        self.key_hash: str | None = None
        self.upload_id = self.job_id  # the id its input is stored under
        if idempotency_key is not None:
            scope = scope_of(caller)
            self.job_id = job_id_for(scope, idempotency_key)
            self.key_hash = key_fingerprint(scope, idempotency_key)
            self.hasher = RequestHasher("POST", path)
            self.upload_id = str(uuid.uuid4())
        self.existing: IdempotentJob | None = None
        self.replayed = False
        # What the form has said so far.
        self.fields: dict[str, str] = {}
        self.webhook_url: str | None = None  # the form's webhook_url field, if sent
        self.filename: str | None = None  # once the file's part has started
        self.file_done = False  # once it has ended
        # The file: its first bytes (head) until they tell its format; then a writer under
        # key, and the bytes for its next write (batch).
        self.size = 0
        self.head = bytearray()
        self.key = ""
        self.writer: ObjectWriter | None = None
        self.batch = bytearray()
        self.stored = 0
        self.committed = False
        # The key's usage when the upload began (None: it has no job quotas), for its room.
        self.usage: Usage | None = None

    # The request ---------------------------------------------------------------------------

    async def receive(
        self, body: AsyncIterator[bytes], content_type: str | None, content_length: str = ""
    ) -> JobRecord:
        """The upload from its request body. A refusal is counted (the rejected-uploads
        metric) and, unless it says otherwise, the rest of the body is read and dropped."""
        try:
            try:
                return await self._receive(body, content_type, content_length)
            except UnavailableError as exc:
                raise ApiError(503, f"service unavailable: {exc}", "unavailable") from None
        except ApiError as exc:
            self.services.metrics.uploads_rejected.labels(exc.reason or "invalid").inc()
            if exc.drain:
                await drain(body)
            raise

    async def _receive(
        self, body: AsyncIterator[bytes], content_type: str | None, content_length: str
    ) -> JobRecord:
        try:
            boundary = boundary_of(content_type)
        except FormError as exc:
            raise ApiError(422, f"file: {exc}") from None
        if content_length.isdigit() and int(content_length) > self.limit + FORM_SLACK + DRAIN_LIMIT:
            # Far beyond the limit: answer before reading (a client that sent
            # "Expect: 100-continue", as curl does, sends nothing).
            raise self._too_large(drain=False)
        return await self.consume(read_form(body, boundary))

    # The form ------------------------------------------------------------------------------

    async def consume(self, events: AsyncIterator[Event]) -> JobRecord:
        """The form's events, in order: the job created, or ``ApiError`` (and nothing stored)."""
        try:
            if self.hasher is not None:  # the key's job, before a byte is read
                self.existing = await run_in_threadpool(
                    self.services.backend.idempotent, self.job_id
                )
                decide(self.existing, None, self.job_id, _now())  # too old, being deleted: 409
            if self.existing is None:
                self.usage = await self._admit(1)  # before a byte is read or stored
            async for event in events:
                await self.feed(event)
            record = await self._finish()
        except OptionError as exc:
            raise ApiError(422, str(exc)) from None
        except FormError as exc:
            raise ApiError(422, f"file: {exc}") from None
        except TooLargeError:
            raise self._too_large() from None
        except ClientDisconnect:
            raise ApiError(400, "the client went away mid-upload", "incomplete", False) from None
        finally:
            if not self.committed:
                await _abort(self.writer)
        if self.replayed:
            log.info(
                "upload replayed job %s (same Idempotency-Key) for key %s (tenant %s)",
                self.job_id,
                self.caller.key_name,
                self.caller.tenant,
            )
            return record
        self.services.metrics.jobs_created.inc()
        log.info(
            "job %s created for %s (%d bytes) by key %s (tenant %s)",
            self.job_id,
            self.filename,
            self.stored,
            self.caller.key_name,
            self.caller.tenant,
        )
        return record

    async def feed(self, event: Event) -> None:
        if isinstance(event, FileStart):
            await self._file_start(event)
        elif isinstance(event, FileData):
            await self._file_data(event.data)
        elif isinstance(event, FileEnd):
            if self.writer is None and self.existing is None:
                await self._open()
            await self._flush()
            self.file_done = True
        else:
            self._field(event)

    def _field(self, event: Field) -> None:
        if event.name == WEBHOOK_FIELD:
            if self.webhook_url is not None:
                raise ApiError(422, f"{event.name}: given twice")
            self.webhook_url = event.value.strip()
            if self.webhook_url and (problem := webhooks.url_problem(self.webhook_url)):
                raise ApiError(422, f"{WEBHOOK_FIELD}: {problem}")
            if self.hasher is not None:
                self.hasher.field(event.name, event.value)
            return
        if event.name == "file":
            raise ApiError(422, "file: must be a file upload, not a text field")
        if event.name in self.fields:
            raise ApiError(422, f"{event.name}: given twice")
        if event.name not in FIELDS:
            raise ApiError(
                422,
                f"{event.name}: unknown field; the form takes file, {', '.join(FIELDS)}, "
                f"{WEBHOOK_FIELD}",
            )
        if event.value.strip():
            check_field(event.name, event.value)
        self.fields[event.name] = event.value
        if self.hasher is not None:
            self.hasher.field(event.name, event.value)

    async def _file_start(self, event: FileStart) -> None:
        if event.name != "file":
            raise ApiError(422, f"{event.name}: unknown file field; send the song as 'file'")
        if self.filename is not None:
            raise ApiError(422, "file: send one file per upload")
        self.filename = clean_filename(event.filename)
        if self.existing is not None:
            return  # hashed, not stored: the key's job exists
        try:  # the options sent before the file, before storing anything
            parse_request(self.fields, self.settings.models, self.settings.limits)
        except OptionError as exc:
            if not exc.later_fields_may_fix:
                raise
        model = self.fields.get("model", "").strip() or self.settings.models.default
        problem = await run_in_threadpool(self.services.backend.model_problem, model)
        if problem:
            raise ApiError(503, f"model {model}: {problem}; nothing was stored", "no_weights")

    async def _file_data(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise self._too_large()
        if self.hasher is not None:
            self.hasher.file(data)
            if self.existing is not None:
                return
        if self.usage is not None:
            # Past the key's room for stored bytes: refused as soon as it is (a request's
            # Content-Length bounds nothing: a form may carry any amount besides its file).
            refusal = admit_job(
                self.caller.key_name, self.caller.quotas, self.usage, self.size, at_least=True
            )
            if refusal is not None:
                raise self._refused(refusal)
        if self.writer is None:
            self.head.extend(data)
            if len(self.head) >= SNIFF_BYTES:
                await self._open()
        else:
            self.batch.extend(data)
        if len(self.batch) >= WRITE_BATCH:
            await self._flush()

    async def _open(self) -> None:
        """Tells the format from the head, and opens the writer with the head as its first
        bytes."""
        try:
            detected = sniff(bytes(self.head))
        except NotAudioError as exc:
            raise ApiError(
                415,
                f"file: {self.filename!r} is not an audio file this service reads: {exc}; "
                f"send {ACCEPTED}",
                "not_audio",
            ) from None
        self.key = input_key(
            self.upload_id, detected.extension, self.caller.tenant, self.settings.key_root
        )
        self.writer = self.services.store.writer(self.key, self.limit, "application/octet-stream")
        self.batch.extend(self.head)

    async def _flush(self) -> None:
        if self.writer is not None and self.batch:
            data = bytes(self.batch)
            self.batch.clear()
            await run_in_threadpool(self.writer.write, data)

    async def _finish(self) -> JobRecord:
        if self.filename is None:
            raise ApiError(422, "file: field required (send the song as the 'file' field)")
        if not self.file_done:
            raise ApiError(422, "file: the upload ended before the file did", "incomplete")
        if self.existing is not None:
            return self._replay(self.existing)
        separation = parse_request(self.fields, self.settings.models, self.settings.limits)
        assert self.writer is not None
        await self._admit(self.size)  # its exact size, before anything is visible
        if self.hasher is not None:
            # Made meanwhile (the same key on another connection)? Then nothing is committed.
            found = await run_in_threadpool(self.services.backend.idempotent, self.job_id)
            if found is not None:
                return self._replay(found)
        self.stored = await run_in_threadpool(self.writer.commit)
        self.committed = True
        self.services.metrics.upload_bytes.inc(self.stored)
        new = NewJob(
            job_id=self.job_id,
            request=separation,
            input_key=self.key,
            filename=self.filename,
            tenant=self.caller.tenant,
            key_id=self.caller.key_id or None,
            input_size=self.stored,
            idempotency_key=self.key_hash,
            request_hash=self.hasher.hexdigest() if self.hasher is not None else None,
            webhook_url=self.webhook_url or self.settings.webhook_url,
        )
        try:
            return await run_in_threadpool(self.services.backend.create, new)
        except BaseException as exc:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await run_in_threadpool(self.services.store.delete, self.key)
            if isinstance(exc, JobExistsError) and self.hasher is not None:
                # Another request of the key made it between our look and our creation.
                found = await run_in_threadpool(self.services.backend.idempotent, self.job_id)
                if found is None:
                    raise ApiError(
                        409,
                        f"Idempotency-Key: job {self.job_id} of this key is being created or "
                        "deleted by another request; retry in a moment",
                        "idempotency",
                    ) from None
                return self._replay(found)
            raise

    def _replay(self, found: IdempotentJob) -> JobRecord:
        """The key's job, if this request is the one that made it; else a 409."""
        assert self.hasher is not None
        replay = decide(found, self.hasher.hexdigest(), self.job_id, _now())
        assert replay is not None
        assert replay.job.record is not None
        self.replayed = True
        return replay.job.record

    async def _admit(self, size: int) -> Usage | None:
        """The key's job quotas (jobs queued or running, bytes stored) for one more job of
        ``size`` bytes, counted from its jobs (``JobBackend.usage``): a 429 with Retry-After
        or a 403, naming the limit; else the usage (None: the key has no job quotas).
        Checked before the body is read (a file has a byte at least), as the file's bytes
        come (against the usage then), and with its exact size and a fresh count before it
        is committed: concurrent uploads of one key may pass together only within that last
        moment."""
        quotas = self.caller.quotas
        if not self.caller.key_id or not counts_usage(quotas):
            return None
        now = datetime.datetime.now(datetime.UTC)
        usage = await run_in_threadpool(self.services.backend.usage, self.caller.key_id, now)
        refusal = admit_job(self.caller.key_name, quotas, usage, size)
        if refusal is not None:
            raise self._refused(refusal)
        return usage

    def _refused(self, refusal: Refusal) -> ApiError:
        log.info(
            "refused an upload for key %s (tenant %s): %s",
            self.caller.key_name,
            self.caller.tenant,
            refusal.message,
        )
        retry = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
        return ApiError(
            refusal.status, f"{refusal.message}; nothing was stored", "quota", headers=retry
        )

    def _too_large(self, drain: bool = True) -> ApiError:
        return ApiError(
            413,
            f"file too large: the limit is {self.settings.max_file_size_text} "
            f"({self.limit} bytes); nothing was stored",
            "too_large",
            drain,
        )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def _abort(writer: ObjectWriter | None) -> None:
    if writer is None:
        return
    with anyio.CancelScope(shield=True):
        try:
            await run_in_threadpool(writer.abort)
        except Exception:
            log.exception("aborting an upload failed")


async def drain(body: AsyncIterator[bytes]) -> None:
    """Reads and drops what the client still sends (bounded), so it sees our answer."""
    dropped = 0
    with contextlib.suppress(Exception):
        async for chunk in body:
            dropped += len(chunk)
            if dropped > DRAIN_LIMIT:
                break
