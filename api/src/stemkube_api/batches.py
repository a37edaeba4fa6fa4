"""Request batches (``POST /batches``, ``routes/batches``): several songs sent in one request, one
job each, under one batch id that the API makes (a UUID). Not to be confused with the operator's
GPU batching (``stemkube_contract.batch``: several waiting SeparationJobs given to one Job),
which no client sees; a request batch's jobs may or may not share a Job.

A batch is all or nothing: every song is checked (its format, its size, the options, the key's
quotas counting every song of the batch) before any job exists, and a refusal names the song
(its number, from 1, and its file name) and leaves nothing stored. The jobs are then created
one after the other; should one creation fail (the backend unreachable), the jobs made so far
and the files stored are removed again.

What is pure is here (the limit, the ids, the quota over the batch, the aggregate of its jobs'
states); ``BatchForm`` receives the multipart form as it arrives, each file streamed to an
object writer that is committed only once the whole form checks out.
"""

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

import anyio
from starlette.concurrency import run_in_threadpool

from stemkube_api import idempotency
from stemkube_api.auth.caller import Caller
from stemkube_api.auth.limits import Refusal, Usage, admit_job
from stemkube_api.errors import ApiError
from stemkube_api.form import Event, Field, FileData, FileEnd, FileStart
from stemkube_api.interfaces import ObjectWriter
from stemkube_api.jobs import COMPLETED, FAILED, PENDING, PROCESSING, JobRecord, clean_filename
from stemkube_api.jobs import input_key as make_input_key
from stemkube_api.options import FIELDS, OptionError, check_field, parse_request
from stemkube_api.services import Services
from stemkube_api.sniff import ACCEPTED, SNIFF_BYTES, NotAudioError, sniff
from stemkube_contract import webhooks

# The most songs one batch may hold: stated here only (the OpenAPI document, the 422 and the
# README quote it from here).
MAX_SONGS = 100
WEBHOOK_FIELD = "webhook_url"
WRITE_BATCH = 1024 * 1024
# The namespace of the job ids of a batch made under an Idempotency-Key: fixed forever (it
# names jobs). Each job's id is derived from the batch's id and the song's place in it, so that
# a replay finds them and two racing requests of one key name the same jobs.
JOB_NAMESPACE = uuid.UUID("0c6f4d8e-2b7a-5e19-8d3c-41a9f0b7e252")
# Keeps a batch's keys apart from /upload's own (the same Idempotency-Key sent to both names
# two requests).
KEY_PREFIX = "batches:"


def new_batch_id() -> str:
    return str(uuid.uuid4())


def batch_id_for(scope: str, key: str) -> str:
    """The batch id of an Idempotency-Key (``idempotency.scope_of`` the caller)."""
    return idempotency.job_id_for(scope, KEY_PREFIX + key)


def key_hash_for(scope: str, key: str) -> str:
    """What each job of a keyed batch carries as its idempotency label."""
    return idempotency.key_fingerprint(scope, KEY_PREFIX + key)


def job_id_in(batch_id: str, index: int) -> str:
    """The id of the ``index``-th (from 0) job of a batch made under an Idempotency-Key."""
    return str(uuid.uuid5(JOB_NAMESPACE, f"{batch_id}/{index}"))


def song(index: int, filename: str | None = None) -> str:
    """How a refusal names a song: its number in the request, from 1, and its file name."""
    return f"song {index + 1}" + (f" ({filename!r})" if filename else "")


def count_problem(count: int) -> ApiError | None:
    """A 422 for a batch of no song or of more than ``MAX_SONGS``."""
    if count < 1:
        return ApiError(422, "a batch needs one song at least")
    if count > MAX_SONGS:
        return ApiError(
            422,
            f"a batch holds at most {MAX_SONGS} songs; this one has {count if count else 'more'}"
            ": send the rest in another batch; nothing was stored",
            "too_many",
        )
    return None


def admit_songs(caller: Caller, usage: Usage, sizes: Sequence[int]) -> tuple[int, Refusal] | None:
    """The key's job quotas over every song of the batch: song ``i`` is admitted as one more
    job after the ``i`` songs before it (each queued, each storing its bytes). The first song
    that does not fit, and why; None if all fit."""
    stored = 0
    for index, size in enumerate(sizes):
        ahead = replace(
            usage,
            active_jobs=usage.active_jobs + index,
            bytes_stored=usage.bytes_stored + stored,
        )
        refusal = admit_job(caller.key_name, caller.quotas, ahead, size)
        if refusal is not None:
            return index, refusal
        stored += size
    return None


def refused(index: int, filename: str, refusal: Refusal, count: int) -> ApiError:
    counted = f" (counting the batch's {index} song(s) before it)" if index else ""
    count_text = f"the batch of {count} songs was refused and " if count > 1 else ""
    retry = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
    return ApiError(
        refusal.status,
        f"{song(index, filename)}: {refusal.message}{counted}; {count_text}nothing was stored",
        "quota",
        headers=retry,
    )


@dataclass(frozen=True)
class Aggregate:
    """A batch as a whole: its status word, its progress, its jobs by status."""

    status: str
    progress: int
    counts: dict[str, int]


def aggregate(jobs: Sequence[JobRecord]) -> Aggregate:
    """``progress``: the mean of the jobs' progress, a finished job (completed or failed)
    counting 100. ``status``: ``completed`` once every job completed; ``failed`` once every
    job finished and one failed at least (the others' stems are there); ``pending`` while
    every job waits; else ``processing``."""
    counts = {PENDING: 0, PROCESSING: 0, COMPLETED: 0, FAILED: 0}
    total = 0
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
        finished = job.status in (COMPLETED, FAILED)
        total += 100 if finished else max(0, min(100, job.progress))
    progress = total // len(jobs) if jobs else 0
    ended = counts[COMPLETED] + counts[FAILED]
    if jobs and ended == len(jobs):
        status = FAILED if counts[FAILED] else COMPLETED
    elif counts[PENDING] == len(jobs):
        status = PENDING
    else:
        status = PROCESSING
    return Aggregate(status, progress, counts)


@dataclass
class FormSong:
    """One file of the form, as it arrives: streamed into ``writer`` (opened once its first
    bytes tell its format), committed only when the whole form checks out."""

    index: int
    filename: str
    upload_id: str  # what its input is stored under (never the user's text)
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    pending: bytearray = field(default_factory=bytearray)
    key: str = ""
    writer: ObjectWriter | None = None
    committed: bool = False
    done: bool = False
    digest: "hashlib._Hash" = field(default_factory=hashlib.sha256)


class BatchForm:
    """A batch's multipart form (use once): several ``file`` parts and the upload form's
    option fields (and ``webhook_url``), which apply to every song. ``consume`` stores each
    file as it comes, uncommitted; ``commit`` makes them visible; ``discard`` removes what was
    stored. ``store`` False: only hashed (a replay of an Idempotency-Key: nothing is kept)."""

    def __init__(self, services: Services, caller: Caller, store: bool = True) -> None:
        self.services = services
        self.caller = caller
        self.store = store
        self.limit = services.settings.max_file_size
        self.fields: dict[str, str] = {}
        self.webhook_url: str | None = None
        self.songs: list[FormSong] = []
        self.model_checked = False
        self.usage: Usage | None = None  # the key's, for its room as bytes come (None: no quota)

    async def consume(self, events: AsyncIterator[Event]) -> None:
        try:
            async for event in events:
                await self._feed(event)
        except OptionError as exc:
            raise ApiError(422, str(exc)) from None
        if not self.songs:
            raise ApiError(422, "file: field required (send each song as a 'file' field)")
        if not self.songs[-1].done:
            raise ApiError(422, "file: the request ended before its last file did", "incomplete")

    async def _feed(self, event: Event) -> None:
        if isinstance(event, FileStart):
            await self._start(event)
        elif isinstance(event, FileData):
            await self._data(self.songs[-1], event.data)
        elif isinstance(event, FileEnd):
            current = self.songs[-1]
            if current.writer is None and self.store:
                await self._open(current)
            await self._flush(current)
            current.done = True
        else:
            self._field(event)

    def _field(self, event: Field) -> None:
        if event.name == "file":
            raise ApiError(422, "file: must be a file upload, not a text field")
        if event.name in self.fields or (event.name == WEBHOOK_FIELD and self.webhook_url):
            raise ApiError(422, f"{event.name}: given twice")
        if event.name == WEBHOOK_FIELD:
            self.webhook_url = event.value.strip()
            if self.webhook_url and (problem := webhooks.url_problem(self.webhook_url)):
                raise ApiError(422, f"{WEBHOOK_FIELD}: {problem}")
            return
        if event.name not in FIELDS:
            raise ApiError(
                422,
                f"{event.name}: unknown field; the form takes file (one per song), "
                f"{', '.join(FIELDS)}, {WEBHOOK_FIELD}",
            )
        if event.value.strip():
            check_field(event.name, event.value)
        self.fields[event.name] = event.value

    async def _start(self, event: FileStart) -> None:
        if event.name != "file":
            raise ApiError(422, f"{event.name}: unknown file field; send each song as 'file'")
        problem = count_problem(len(self.songs) + 1)
        if problem is not None:
            raise problem
        self.songs.append(
            FormSong(len(self.songs), clean_filename(event.filename), str(uuid.uuid4()))
        )
        if self.model_checked or not self.store:
            return
        try:  # the options sent before the first file, before storing anything
            parse_request(self.fields, self.services.settings.models, self.services.settings.limits)
        except OptionError as exc:
            if not exc.later_fields_may_fix:
                raise
        model = self.fields.get("model", "").strip() or self.services.settings.models.default
        problem_text = await run_in_threadpool(self.services.backend.model_problem, model)
        if problem_text:
            raise ApiError(503, f"model {model}: {problem_text}; nothing was stored", "no_weights")
        self.model_checked = True

    async def _data(self, current: FormSong, data: bytes) -> None:
        current.size += len(data)
        current.digest.update(data)
        if current.size > self.limit:
            settings = self.services.settings
            raise ApiError(
                413,
                f"{song(current.index, current.filename)}: file too large: the limit is "
                f"{settings.max_file_size_text} ({self.limit} bytes) a song; the batch was "
                "refused and nothing was stored",
                "too_large",
            )
        if not self.store:
            return
        if self.usage is not None:  # past the key's room for stored bytes: refused at once
            sizes = [s.size for s in self.songs]
            over = admit_songs(self.caller, self.usage, sizes)
            if over is not None:
                index, refusal = over
                raise refused(index, self.songs[index].filename, refusal, len(self.songs))
        if current.writer is None:
            current.head.extend(data)
            if len(current.head) >= SNIFF_BYTES:
                await self._open(current)
        else:
            current.pending.extend(data)
        if len(current.pending) >= WRITE_BATCH:
            await self._flush(current)

    async def _open(self, current: FormSong) -> None:
        try:
            detected = sniff(bytes(current.head))
        except NotAudioError as exc:
            raise ApiError(
                415,
                f"{song(current.index, current.filename)}: not an audio file this service "
                f"reads: {exc}; send {ACCEPTED}. The batch was refused and nothing was stored",
                "not_audio",
            ) from None
        current.key = make_input_key(current.upload_id, detected.extension, self.caller.tenant)
        current.writer = self.services.store.writer(
            current.key, self.limit, "application/octet-stream"
        )
        current.pending.extend(current.head)

    async def _flush(self, current: FormSong) -> None:
        if current.writer is not None and current.pending:
            data = bytes(current.pending)
            current.pending.clear()
            await run_in_threadpool(current.writer.write, data)

    def body_digest(self) -> str:
        """The files, for the request's hash: each one's name, bytes and size, in order."""
        return ";".join(f"{s.filename}:{s.digest.hexdigest()}:{s.size}" for s in self.songs)

    async def commit(self) -> None:
        for current in self.songs:
            assert current.writer is not None
            await run_in_threadpool(current.writer.commit)
            current.committed = True

    async def discard(self) -> None:
        """Aborts what is being written and deletes what was committed (shielded: it runs
        when the request is cancelled too)."""
        with anyio.CancelScope(shield=True):
            for current in self.songs:
                with contextlib.suppress(Exception):
                    if current.committed:
                        await run_in_threadpool(self.services.store.delete, current.key)
                    elif current.writer is not None:
                        await run_in_threadpool(current.writer.abort)
