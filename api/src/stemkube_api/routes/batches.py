"""Request batches: ``POST /batches`` (several songs, one job each, under one batch id),
``GET /batches/{id}`` (each job's state and the aggregate), ``DELETE /batches/{id}`` (cancels
what has not finished). The rules are ``stemkube_api.batches``; a batch's jobs are ordinary jobs
(``/status``, ``/download``, ``DELETE /job``), labelled with the batch (Kubernetes mode:
``stemkube_contract.resource.BATCH_LABEL``; local mode: the ``batch_id`` column).

``POST /batches`` takes either a multipart form (several ``file`` parts and the upload form's
option fields, applied to every song) or JSON (``{"sources": [{"url": ...}, {"upload_id":
...}], "options": {...}, "webhook_url": ...}``). A direct upload joins a JSON batch by its
``upload_id`` once ``POST /uploads/{id}/complete`` has completed it with ``"create_job":
false``; its job's id is the upload's (as /complete's would be), so an upload makes one job at
most, whichever way."""

import contextlib
import datetime
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from stemkube_api import batches, idempotency, uploads
from stemkube_api.auth.caller import Caller
from stemkube_api.auth.dependency import CallerDep, current_caller
from stemkube_api.auth.limits import counts_usage
from stemkube_api.errors import ApiError, error_responses
from stemkube_api.form import MAX_PARTS as MAX_FORM_PARTS
from stemkube_api.form import FormError, boundary_of, read_form
from stemkube_api.interfaces import JobExistsError, NewJob, TooLargeError, UnavailableError
from stemkube_api.jobs import COMPLETED, FAILED, JobRecord, valid_job_id
from stemkube_api.models import JobStatus, Status
from stemkube_api.options import OptionError, parse_request
from stemkube_api.routes.sources import (
    JobSource,
    OptionValue,
    parse_options,
    prepare,
    webhook_of,
)
from stemkube_api.services import Services, ServicesDep
from stemkube_api.upload import FORM_SLACK, drain
from stemkube_contract import options as catalogue
from stemkube_contract import urls
from stemkube_contract.options import Options

log = logging.getLogger(__name__)

EXAMPLE_BATCH = "9b2d6c1a-4f3e-4a8b-9c7d-1e5f2a3b4c6d"
EXAMPLE_JOB = "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b"
# A JSON batch is small (URLs and ids): read whole, up to this.
MAX_JSON_BYTES = 1024 * 1024


class CreateBatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sources": [
                        {"url": "https://example.com/music/one.mp3"},
                        {"url": "https://example.com/music/two.flac"},
                    ],
                    "options": {"model": "htdemucs", "two_stems": "vocals", "format": "wav"},
                    "webhook_url": "https://example.com/hooks/stemkube",
                }
            ]
        },
    )

    sources: list[JobSource] = Field(
        description=f"The songs, 1 to {batches.MAX_SONGS}: one job each, in this order."
    )
    options: dict[str, OptionValue] = Field(
        default_factory=dict,
        description="The upload form's options, for every song (as POST /jobs takes them).",
    )
    webhook_url: str | None = Field(
        None,
        description="Where each job's outcome is POSTed when it ends (as POST /jobs's).",
    )


class BatchJob(BaseModel):
    job_id: str = Field(description="Use it with /status, /download and /job, as any job's.")
    status: Status = Field(description="Always pending: the separations start in the background.")
    filename: str
    created_at: datetime.datetime
    source: dict[str, str] | None = Field(
        None, description="A JSON batch's source as shown (a URL without its query)."
    )


class BatchCreated(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "batch_id": EXAMPLE_BATCH,
                    "status": "pending",
                    "jobs": [
                        {
                            "job_id": EXAMPLE_JOB,
                            "status": "pending",
                            "filename": "one.mp3",
                            "created_at": "2026-11-28T12:00:00.123456Z",
                            "source": None,
                        }
                    ],
                }
            ]
        }
    )

    batch_id: str = Field(description="Use it with GET and DELETE /batches/{batch_id}.")
    status: Status = Field(description="Always pending.")
    jobs: list[BatchJob] = Field(description="One job a song, in the request's order.")


class BatchCounts(BaseModel):
    pending: int = 0
    processing: int = 0
    completed: int = 0
    failed: int = 0


class BatchStatus(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "batch_id": EXAMPLE_BATCH,
                    "status": "processing",
                    "progress": 70,
                    "counts": {"pending": 0, "processing": 1, "completed": 1, "failed": 0},
                    "jobs": ["... each job as GET /status/{job_id} shows it"],
                }
            ]
        }
    )

    batch_id: str
    status: Status = Field(
        description="completed: every job completed; failed: every job finished, one failed at "
        "least (the others' stems are there); pending: every job waits; else processing."
    )
    progress: int = Field(
        ge=0,
        le=100,
        description="The mean of the jobs' progress, a finished job (completed or failed) "
        "counting 100.",
    )
    counts: BatchCounts
    jobs: list[JobStatus] = Field(description="Each job of the batch the caller sees, as /status.")


class BatchDeleted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "batch_id": EXAMPLE_BATCH,
                    "cancelled": [EXAMPLE_JOB],
                    "kept": [],
                    "message": f"batch {EXAMPLE_BATCH}: 1 job(s) cancelled and deleted, 0 kept",
                }
            ]
        }
    )

    batch_id: str
    cancelled: list[str] = Field(description="Jobs not finished: cancelled and deleted.")
    kept: list[str] = Field(description="Finished jobs (completed or failed): left as they are.")
    message: str


@dataclass(frozen=True)
class Planned:
    """One song made ready for its job."""

    index: int
    job_id: str
    filename: str
    input_key: str = ""
    input_size: int | None = None
    source_url: str | None = None
    shown: dict[str, str] | None = None
    upload_id: str | None = None  # a direct upload's: its record goes once the job exists
    keep_input: bool = False  # an object of the caller's (``s3``): it stays when the job goes


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _answer(batch_id: str, records: list[JobRecord], planned: list[Planned]) -> BatchCreated:
    shown = {p.job_id: p.shown for p in planned}
    return BatchCreated(
        batch_id=batch_id,
        status="pending",
        jobs=[
            BatchJob(
                job_id=r.job_id,
                status="pending",
                filename=r.filename,
                created_at=r.created_at,
                source=shown.get(r.job_id),
            )
            for r in records
        ],
    )


async def _replay_of(
    services: Services, batch_id: str, ids: list[str], request_hash: str | None
) -> list[JobRecord] | None:
    """The jobs an earlier request of the batch's Idempotency-Key made (None: none; [] when
    ``request_hash`` is None and they exist: the body decides), or the 409 of ``decide``.
    Each job is looked up (another replica's, made a moment ago, too), not only the first: a
    job of the batch may have been deleted since."""
    for job_id in ids:
        found = await run_in_threadpool(services.backend.idempotent, job_id)
        if found is None:
            continue
        if found.record is not None and found.record.batch_id != batch_id:
            continue  # a direct upload's job made otherwise: creating says so
        idempotency.decide(found, request_hash, job_id, _now())
        if request_hash is None:
            return []
        records = []
        for other in ids:
            record = await run_in_threadpool(services.backend.get, other)
            if record is not None and record.batch_id == batch_id:
                records.append(record)
        return records
    return None


async def _admit(services: Services, caller: Caller, sizes: list[int], names: list[str]) -> None:
    """The key's quotas over every song of the batch, from a fresh count."""
    if not caller.key_id or not counts_usage(caller.quotas):
        return
    usage = await run_in_threadpool(services.backend.usage, caller.key_id, _now())
    over = batches.admit_songs(caller, usage, sizes)
    if over is not None:
        index, refusal = over
        log.info(
            "refused a batch of %d songs for key %s (tenant %s): %s",
            len(sizes),
            caller.key_name,
            caller.tenant,
            refusal.message,
        )
        raise batches.refused(index, names[index], refusal, len(sizes))


async def _create(
    services: Services,
    caller: Caller,
    batch_id: str,
    planned: list[Planned],
    request: Options,
    webhook_url: str | None,
    keyed: tuple[str, str] | None,
) -> list[JobRecord]:
    """The jobs, in order; should one fail, those made are deleted again. ``keyed``: the
    key's fingerprint and the request's hash, carried by every job."""
    made: list[JobRecord] = []
    try:
        for song in planned:
            new = NewJob(
                job_id=song.job_id,
                request=request,
                input_key=song.input_key,
                filename=song.filename,
                tenant=caller.tenant,
                key_id=caller.key_id or None,
                input_size=song.input_size,
                source_url=song.source_url,
                idempotency_key=keyed[0] if keyed else None,
                request_hash=keyed[1] if keyed else None,
                webhook_url=webhook_url,
                batch_id=batch_id,
                keep_input=song.keep_input,
            )
            made.append(await run_in_threadpool(services.backend.create, new))
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            for record in made:
                with contextlib.suppress(Exception):
                    await run_in_threadpool(services.backend.delete, record.job_id)
        log.warning(
            "batch %s: creating job %d of %d failed (%s); the %d made were deleted",
            batch_id,
            len(made) + 1,
            len(planned),
            type(exc).__name__,
            len(made),
        )
        if isinstance(exc, UnavailableError):
            raise ApiError(503, f"service unavailable: {exc}", "unavailable") from None
        raise
    services.metrics.jobs_created.inc(len(made))
    return made


def _exists(batch_id: str, song: Planned | None) -> ApiError:
    if song is not None and song.upload_id is not None:
        return ApiError(
            409,
            f"{batches.song(song.index, song.filename)}: upload {song.upload_id} has its job "
            f"already (job {song.upload_id}); nothing was created",
        )
    return ApiError(
        409,
        f"{idempotency.HEADER}: batch {batch_id} of this key is being created or deleted by "
        "another request; retry in a moment",
        "idempotency",
    )


async def _create_or_replay(
    services: Services,
    caller: Caller,
    batch_id: str,
    planned: list[Planned],
    request: Options,
    webhook_url: str | None,
    keyed: tuple[str, str] | None,
) -> tuple[list[JobRecord], bool]:
    try:
        return await _create(
            services, caller, batch_id, planned, request, webhook_url, keyed
        ), False
    except JobExistsError as exc:
        song = next((p for p in planned if p.job_id == str(exc)), None)
        if keyed is not None and (song is None or song.upload_id is None):
            # Another request of the key made it between our look and our creation.
            late = await _replay_of(services, batch_id, [p.job_id for p in planned], keyed[1])
            if late:
                return late, True
        raise _exists(batch_id, song) from None


def _ids(batch_id: str, count: int, key: str | None) -> list[str]:
    if key is None:
        return [str(uuid.uuid4()) for _ in range(count)]
    return [batches.job_id_in(batch_id, i) for i in range(count)]


# The form ----------------------------------------------------------------------------------


async def _from_form(
    request: Request, services: Services, caller: Caller, key: str | None
) -> tuple[BatchCreated, bool]:
    settings = services.settings
    try:
        boundary = boundary_of(request.headers.get("content-type"))
    except FormError as exc:
        raise ApiError(422, f"file: {exc}") from None
    length = request.headers.get("content-length", "")
    most = batches.MAX_SONGS * (settings.max_file_size + FORM_SLACK)
    if length.isdigit() and int(length) > most:
        raise ApiError(
            413,
            f"the batch is larger than {batches.MAX_SONGS} songs of the limit "
            f"({settings.max_file_size_text} each) can be; nothing was stored",
            "too_large",
            drain=False,
        )
    scope = idempotency.scope_of(caller)
    batch_id = batches.batch_id_for(scope, key) if key else batches.new_batch_id()
    # A replay of the key's batch is only hashed, nothing stored.
    first = await _replay_of(services, batch_id, _ids(batch_id, 1, key), None) if key else None
    form = batches.BatchForm(services, caller, store=first is None)
    body = request.stream()  # once: what a refusal leaves unread is drained from it
    try:
        try:
            if form.store and caller.key_id and counts_usage(caller.quotas):
                # Before a byte is read: one more job (of a byte at least) must fit.
                form.usage = await run_in_threadpool(services.backend.usage, caller.key_id, _now())
                over = batches.admit_songs(caller, form.usage, [1])
                if over is not None:
                    raise batches.refused(0, "", over[1], 1)
            # A part per song, and the option fields: the 101st song is refused by its count.
            parts = batches.MAX_SONGS + MAX_FORM_PARTS
            await form.consume(read_form(body, boundary, parts))
            names = [s.filename for s in form.songs]
            fields = dict(form.fields)
            if form.webhook_url:
                fields[batches.WEBHOOK_FIELD] = form.webhook_url
            request_hash = idempotency.request_hash("POST", "/batches", fields, form.body_digest())
            ids = _ids(batch_id, len(form.songs), key)
            if key is not None:
                earlier = await _replay_of(services, batch_id, ids, request_hash)
                if earlier is not None:  # made meanwhile, or found only now: keep nothing
                    await form.discard()
                    return _answer(batch_id, earlier, []), True
                if not form.store:  # the key's batch went while this request was read
                    raise _exists(batch_id, None)
            options = parse_request(form.fields, settings.models, settings.limits)
            await _admit(services, caller, [s.size for s in form.songs], names)
            await form.commit()
            services.metrics.upload_bytes.inc(sum(s.size for s in form.songs))
            planned = [
                Planned(s.index, ids[s.index], s.filename, s.key, s.size) for s in form.songs
            ]
            keyed = (batches.key_hash_for(scope, key), request_hash) if key else None
            webhook = form.webhook_url or settings.webhook_url
            records, replayed = await _create_or_replay(
                services, caller, batch_id, planned, options, webhook, keyed
            )
            if replayed:
                await form.discard()
            return _answer(batch_id, records, []), replayed
        except OptionError as exc:
            raise ApiError(422, str(exc)) from None
        except FormError as exc:
            raise ApiError(422, f"file: {exc}") from None
        except TooLargeError:
            raise ApiError(
                413, f"file too large: the limit is {settings.max_file_size_text} a song"
            ) from None
        except ClientDisconnect:
            raise ApiError(400, "the client went away mid-upload", "incomplete", False) from None
        except UnavailableError as exc:
            raise ApiError(503, f"service unavailable: {exc}", "unavailable") from None
    except BaseException as exc:
        await form.discard()
        if isinstance(exc, ApiError):
            services.metrics.uploads_rejected.labels(exc.reason or "invalid").inc()
            if exc.drain:
                await drain(body)
        raise


# JSON --------------------------------------------------------------------------------------


async def _json_body(request: Request) -> CreateBatch:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            raise ApiError(413, f"a JSON batch is at most {MAX_JSON_BYTES} bytes")
    try:
        return CreateBatch.model_validate_json(bytes(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc") or ()) or "body"
        raise ApiError(422, f"{where}: {first.get('msg', 'invalid')}") from None


async def _plan_source(
    services: Services, caller: Caller, index: int, job_id: str, source: JobSource
) -> Planned:
    """One source, checked as POST /jobs checks it (``sources.prepare``); a direct upload's
    job takes the upload's id."""
    where = f"{batches.song(index)} (sources[{index}])"
    ready = await prepare(services, caller, source, where)
    return Planned(
        index,
        ready.job_id or job_id,
        ready.filename,
        input_key=ready.input_key,
        input_size=ready.input_size,
        source_url=ready.source_url,
        shown=ready.shown,
        upload_id=ready.upload_id,
        keep_input=ready.keep_input,
    )


async def _from_json(
    request: Request, services: Services, caller: Caller, key: str | None
) -> tuple[BatchCreated, bool]:
    body = await _json_body(request)
    problem = batches.count_problem(len(body.sources))
    if problem is not None:
        raise problem
    webhook = webhook_of(services, body.webhook_url)
    options = parse_options(services, body.options)
    model = str(options.get("model") or services.settings.models.default)
    model_problem = await run_in_threadpool(services.backend.model_problem, model)
    if model_problem:
        raise ApiError(503, f"model {model}: {model_problem}", "no_weights")
    scope = idempotency.scope_of(caller)
    batch_id = batches.batch_id_for(scope, key) if key else batches.new_batch_id()
    ids = _ids(batch_id, len(body.sources), key)
    planned = [
        await _plan_source(services, caller, i, ids[i], source)
        for i, source in enumerate(body.sources)
    ]
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    request_hash = idempotency.request_hash("POST", "/batches", {}, canonical)
    if key is not None:
        earlier = await _replay_of(services, batch_id, [p.job_id for p in planned], request_hash)
        if earlier is not None:
            return _answer(batch_id, earlier, planned), True
    await _admit(
        services, caller, [p.input_size or 0 for p in planned], [p.filename for p in planned]
    )
    keyed = (batches.key_hash_for(scope, key), request_hash) if key else None
    records, replayed = await _create_or_replay(
        services, caller, batch_id, planned, options, webhook, keyed
    )
    for song in planned:
        if song.upload_id is not None and not replayed:  # its job is the input's owner now
            with contextlib.suppress(Exception):
                await run_in_threadpool(services.store.delete, uploads.record_key(song.upload_id))
    return _answer(batch_id, records, planned), replayed


# The routes --------------------------------------------------------------------------------


def request_body(settings_models: Any) -> dict[str, Any]:
    """The OpenAPI request of POST /batches: a form of files, or JSON sources."""
    return {
        "parameters": [
            idempotency.header_parameter(
                "As on /upload: the same key (per API key) with the same request within 24 "
                "hours answers the first response again (`Idempotent-Replayed: true`) and "
                "creates nothing; with another request, a 409."
            )
        ],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "minItems": 1,
                                "maxItems": batches.MAX_SONGS,
                                "description": "The songs, one 'file' part each (at most "
                                f"{batches.MAX_SONGS}, each at most MAX_FILE_SIZE).",
                            },
                            **catalogue.form_schema(settings_models),
                            "webhook_url": {
                                "type": "string",
                                "maxLength": urls.MAX_URL_LENGTH,
                                "description": "Where each job's outcome is POSTed when it ends.",
                            },
                        },
                    }
                },
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/CreateBatch"},
                    "example": CreateBatch.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
                },
            },
        },
    }


def add_schemas(app: FastAPI) -> None:
    """Puts CreateBatch (read by hand, not as a FastAPI body: a form of files is streamed)
    and its parts into the OpenAPI document's components."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = build()
        schema = CreateBatch.model_json_schema(ref_template="#/components/schemas/{model}")
        found = document.setdefault("components", {}).setdefault("schemas", {})
        for name, part in schema.pop("$defs", {}).items():
            found.setdefault(name, part)
        found["CreateBatch"] = schema
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


async def _jobs_of(services: Services, caller: Caller, batch_id: str) -> list[JobRecord]:
    """The batch's jobs the caller sees, in the order they were created; a 404 for none."""
    if not valid_job_id(batch_id):
        raise ApiError(404, f"batch {batch_id} not found")
    scope = None if caller.admin else caller.tenant
    page = await run_in_threadpool(lambda: services.backend.list(tenant=scope))
    jobs = [r for r in page.jobs if r.batch_id == batch_id and caller.sees(r.tenant)]
    if not jobs:
        raise ApiError(404, f"batch {batch_id} not found")
    return sorted(jobs, key=lambda r: (r.created_at, r.job_id))


def router(settings: Any) -> APIRouter:
    routes = APIRouter(tags=["batches"], dependencies=[Depends(current_caller)])

    async def create_batch(
        request: Request, response: Response, services: ServicesDep, caller: CallerDep
    ) -> BatchCreated:
        key = idempotency.validate_key(request.headers.get(idempotency.HEADER))
        kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            created, replayed = await _from_form(request, services, caller, key)
        elif kind == "application/json":
            created, replayed = await _from_json(request, services, caller, key)
        else:
            raise ApiError(
                422,
                "Content-Type: send multipart/form-data (files) or application/json (sources)",
            )
        if replayed:
            response.headers[idempotency.REPLAYED_HEADER] = "true"
            log.info(
                "batch %s replayed (same Idempotency-Key) for key %s (tenant %s)",
                created.batch_id,
                caller.key_name,
                caller.tenant,
            )
        else:
            log.info(
                "batch %s created: %d job(s) %s by key %s (tenant %s)",
                created.batch_id,
                len(created.jobs),
                ", ".join(j.job_id for j in created.jobs),
                caller.key_name,
                caller.tenant,
            )
        return created

    routes.add_api_route(
        "/batches",
        create_batch,
        methods=["POST"],
        response_model=BatchCreated,
        responses={
            **error_responses(401, 403, 413, 415, 422, 429, 503),
            **idempotency.RESPONSES,
        },
        openapi_extra=request_body(settings.models),
        summary=f"Several songs at once (at most {batches.MAX_SONGS}): one job each, one batch",
    )

    @routes.get(
        "/batches/{batch_id}",
        response_model=BatchStatus,
        responses=error_responses(401, 404, 429, 503),
        summary="A batch: each job's state and the aggregate progress",
    )
    async def batch_status(
        batch_id: Annotated[str, Path()], services: ServicesDep, caller: CallerDep
    ) -> BatchStatus:
        jobs = await _jobs_of(services, caller, batch_id)
        total = batches.aggregate(jobs)
        return BatchStatus(
            batch_id=batch_id,
            status=total.status,  # type: ignore[arg-type]
            progress=total.progress,
            counts=BatchCounts(**total.counts),
            jobs=[JobStatus.of(r, show_tenant=caller.admin) for r in jobs],
        )

    @routes.delete(
        "/batches/{batch_id}",
        response_model=BatchDeleted,
        responses=error_responses(401, 404, 429, 503),
        summary="Cancel and delete a batch's jobs that have not finished; finished ones stay",
    )
    async def delete_batch(
        batch_id: Annotated[str, Path()], services: ServicesDep, caller: CallerDep
    ) -> BatchDeleted:
        jobs = await _jobs_of(services, caller, batch_id)
        cancelled, kept = [], []
        for record in jobs:
            if record.status in (COMPLETED, FAILED):
                kept.append(record.job_id)
                continue
            if await services.delete(record):  # else gone meanwhile
                cancelled.append(record.job_id)
        message = (
            f"batch {batch_id}: {len(cancelled)} job(s) cancelled and deleted, "
            f"{len(kept)} finished job(s) kept"
        )
        log.info("%s, by key %s (tenant %s)", message, caller.key_name, caller.tenant)
        return BatchDeleted(batch_id=batch_id, cancelled=cancelled, kept=kept, message=message)

    return routes
