"""Direct uploads (``uploads``): ``POST /uploads`` (the part URLs), ``PUT
/uploads/{id}/parts/{n}`` (local mode's part URLs: a signed token, no API key), ``POST
/uploads/{id}/complete`` (the object checked, its job created) and ``DELETE /uploads/{id}``;
and the sweep of expired uploads, with the app's lifespan."""

import asyncio
import contextlib
import datetime
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from stemkube_api import idempotency, uploads
from stemkube_api.auth.caller import Caller
from stemkube_api.auth.dependency import CallerDep
from stemkube_api.errors import ApiError, error_responses
from stemkube_api.interfaces import (
    JobExistsError,
    ObjectNotFoundError,
    PartsError,
    TooLargeError,
    UploadedPart,
)
from stemkube_api.jobs import clean_filename, input_key
from stemkube_api.routes.sources import (
    CreateJob,
    JobCreated,
    OptionValue,
    Prepared,
    _admit,
    create_prepared,
    parse_options,
)
from stemkube_api.services import Services, ServicesDep
from stemkube_api.sniff import ACCEPTED, SNIFF_BYTES, NotAudioError, sniff

log = logging.getLogger(__name__)

WRITE_BATCH = 1024 * 1024
EXAMPLE_ID = "3f2b8c1e-9d4a-4e6b-8f0a-2c5d7e9b1a34"


class NewUpload(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "filename": "concert.flac",
                    "size": 2_147_483_648,
                    "content_type": "audio/flac",
                    "options": {"model": "htdemucs", "format": "wav"},
                }
            ]
        },
    )

    filename: str = Field(
        min_length=1, max_length=1024, description="The song's file name (metadata only)."
    )
    size: int = Field(ge=1, description="The file's exact size in bytes (at most MAX_FILE_SIZE).")
    content_type: str | None = Field(
        None, max_length=255, description="The file's media type (informative; the bytes decide)."
    )
    options: dict[str, OptionValue] = Field(
        default_factory=dict,
        description="The job's options, as POST /jobs takes them; checked now, before a byte "
        "is sent, and used by /complete.",
    )


class PartUrl(BaseModel):
    number: int = Field(description="The part's number, from 1.")
    url: str = Field(
        description="PUT the part's bytes here, with no other header than Content-Length; "
        "keep the answer's ETag header for /complete."
    )


class UploadCreated(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "upload_id": EXAMPLE_ID,
                    "part_size": 16777216,
                    "parts": [
                        {
                            "number": 1,
                            "url": "https://s3.example.com/stemkube/tenants/acme/inputs/"
                            f"{EXAMPLE_ID}/input.flac?uploadId=...&partNumber=1&X-Amz-...",
                        }
                    ],
                    "expires_at": "2025-01-02T12:00:00Z",
                }
            ]
        }
    )

    upload_id: str
    part_size: int = Field(
        description="Every part holds exactly this many bytes of the file, but the last (the rest)."
    )
    parts: list[PartUrl]
    expires_at: datetime.datetime = Field(
        description="An upload not completed by then is aborted and removed; its URLs expire."
    )


class CompletedPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: int = Field(ge=1, le=uploads.MAX_PARTS)
    etag: str = Field(min_length=1, max_length=256, description="The ETag its PUT answered.")


class CompleteUpload(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "parts": [
                        {"number": 1, "etag": '"0f343b0931126a20f133d67c2b018a3b"'},
                        {"number": 2, "etag": '"b026324c6904b2a9cb4b88d6d61c81d1"'},
                    ]
                }
            ]
        },
    )

    parts: list[CompletedPart] = Field(min_length=1, max_length=uploads.MAX_PARTS)
    create_job: bool = Field(
        True,
        description="false: complete and check the file but create no job; the upload then "
        "waits (until its expires_at) to join a batch as a source of POST /batches "
        '({"sources": [{"upload_id": ...}]}), which creates its job with the batch\'s options.',
    )


class UploadReady(BaseModel):
    """A direct upload completed without its job (``create_job`` false)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "upload_id": EXAMPLE_ID,
                    "filename": "concert.flac",
                    "size": 2_147_483_648,
                    "expires_at": "2025-01-02T12:00:00Z",
                }
            ]
        }
    )

    upload_id: str = Field(description="Name it as a source of POST /batches.")
    filename: str
    size: int
    expires_at: datetime.datetime = Field(
        description="Not in a batch by then, it is removed with its file."
    )


def _not_found(upload_id: str) -> ApiError:
    return ApiError(404, f"upload {upload_id} not found (never made, expired, or aborted)")


async def _sweeping(services: Services, config: uploads.UploadConfig) -> None:
    """The sweep at start and every ``sweep_interval`` seconds, for the app's life."""
    try:
        uploads.multipart(services.store)
    except Exception:
        return  # a store without direct uploads: nothing to sweep
    # No request streams for twice a direct upload's whole life, and every direct upload has
    # expired by then: what is older was left by a killed process.
    stale_after = 2 * config.expiry
    while True:
        try:
            now = datetime.datetime.now(datetime.UTC)
            await run_in_threadpool(
                uploads.sweep,
                services.store,
                services.backend,
                now,
                services.settings.key_root,
                stale_after,
            )
        except Exception:
            log.exception("the sweep of expired uploads failed; retried later")
        await asyncio.sleep(config.sweep_interval)


def router(config: uploads.UploadConfig | None = None) -> APIRouter:
    config = config or uploads.UploadConfig.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_sweeping(app.state.services, config))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    api = APIRouter(tags=["uploads"], lifespan=lifespan)

    def part_urls(request: Request, services: Services, record: uploads.UploadRecord) -> Any:
        store = uploads.multipart(services.store)
        now = datetime.datetime.now(datetime.UTC)
        lifetime = min(record.expires_at - now, uploads.MAX_PRESIGN)
        lifetime = max(lifetime, datetime.timedelta(seconds=1))
        expires = int(record.expires_at.timestamp())
        secret: bytes | None = None
        result = []
        for number in range(1, record.parts + 1):
            url = store.part_url(record.object_key, record.store_upload_id, number, lifetime)
            if url is None:  # the API takes the part itself, on a signed URL
                if secret is None:
                    secret = services.store.signing_secret()  # type: ignore[attr-defined]
                token = uploads.sign(secret, record.upload_id, number, expires)
                base = str(
                    request.url_for("upload_part", upload_id=record.upload_id, number=number)
                )
                query = urllib.parse.urlencode({"expires": expires, "token": token})
                url = f"{base}?{query}"
            result.append(PartUrl(number=number, url=url))
        return result

    @api.post(
        "/uploads",
        response_model=UploadCreated,
        responses={**error_responses(401, 403, 413, 422, 429, 503), **idempotency.RESPONSES},
        summary="Begin a direct upload: one URL per part, the bytes go straight to storage",
    )
    async def create_upload(
        body: Annotated[NewUpload, Body()],
        request: Request,
        response: Response,
        services: ServicesDep,
        caller: CallerDep,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias=idempotency.HEADER,
                description="The same key (per API key) with the same body answers the same "
                "upload again (fresh URLs, `Idempotent-Replayed: true`); with another body, "
                "a 409.",
            ),
        ] = None,
    ) -> UploadCreated:
        settings = services.settings
        if body.size > settings.max_file_size:
            raise ApiError(
                413,
                f"size: the limit is {settings.max_file_size_text} ({settings.max_file_size} "
                "bytes); nothing was stored",
                "too_large",
            )
        filename = clean_filename(body.filename)
        request_options = parse_options(services, body.options)
        model = str(request_options.get("model") or settings.models.default)
        problem = await run_in_threadpool(services.backend.model_problem, model)
        if problem:
            raise ApiError(503, f"model {model}: {problem}", "no_weights")
        canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        request_hash = idempotency.request_hash("POST", "/uploads", {}, canonical)
        key = idempotency.validate_key(idempotency_key)
        upload_id = uploads.new_upload_id()
        if key is not None:
            scope = idempotency.scope_of(caller)
            upload_id = idempotency.job_id_for(scope, f"uploads:{key}")
            found = await run_in_threadpool(uploads.load, services.store, upload_id)
            if found is not None and found.tenant == caller.tenant:
                if found.request_hash != request_hash:
                    raise ApiError(
                        409,
                        f"{idempotency.HEADER}: this key began another upload; send a new key",
                        "idempotency",
                    )
                response.headers[idempotency.REPLAYED_HEADER] = "true"
                parts = await run_in_threadpool(part_urls, request, services, found)
                return UploadCreated(
                    upload_id=found.upload_id,
                    part_size=found.part_size,
                    parts=parts,
                    expires_at=found.expires_at,
                )
            if await run_in_threadpool(services.backend.get, upload_id) is not None:
                raise ApiError(
                    409,
                    f"{idempotency.HEADER}: this key's upload is complete (job {upload_id}); "
                    "send a new key for a new upload",
                    "idempotency",
                )
        await _admit(services, caller, body.size)
        store = uploads.multipart(services.store)
        object_key = input_key(
            upload_id, uploads.extension_of(filename), caller.tenant, services.settings.key_root
        )
        store_upload_id = await run_in_threadpool(
            store.begin_multipart, object_key, "application/octet-stream"
        )
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        record = uploads.UploadRecord(
            upload_id=upload_id,
            tenant=caller.tenant,
            key_id=caller.key_id or None,
            object_key=object_key,
            store_upload_id=store_upload_id,
            size=body.size,
            part_size=uploads.choose_part_size(body.size, config.part_size),
            filename=filename,
            content_type=body.content_type or "application/octet-stream",
            options=dict(body.options),
            created_at=now,
            expires_at=now + config.expiry,
            request_hash=request_hash,
        )
        try:
            await run_in_threadpool(uploads.save, services.store, record)
            parts = await run_in_threadpool(part_urls, request, services, record)
        except BaseException:
            with contextlib.suppress(Exception):
                await run_in_threadpool(uploads.discard, services.store, record)
            raise
        log.info(
            "upload %s begun for %s (%d bytes, %d parts) by key %s (tenant %s)",
            upload_id,
            filename,
            record.size,
            record.parts,
            caller.key_name,
            caller.tenant,
        )
        return UploadCreated(
            upload_id=upload_id,
            part_size=record.part_size,
            parts=parts,
            expires_at=record.expires_at,
        )

    @api.put(
        "/uploads/{upload_id}/parts/{number}",
        name="upload_part",
        responses=error_responses(403, 404, 413, 422, 503),
        summary="Local mode: one part of a direct upload (the URL /uploads answered; no API key)",
        status_code=200,
    )
    async def upload_part(
        request: Request,
        services: ServicesDep,
        upload_id: Annotated[str, Path()],
        number: Annotated[int, Path(ge=1, le=uploads.MAX_PARTS)],
        expires: Annotated[int, Query(description="Unix seconds the URL is good until.")],
        token: Annotated[str, Query(max_length=128, description="The URL's signature.")],
    ) -> Response:
        signing_secret = getattr(services.store, "signing_secret", None)
        if signing_secret is None:
            raise ApiError(404, "parts go to the URLs POST /uploads answered")
        secret = await run_in_threadpool(signing_secret)
        if not uploads.verify(secret, upload_id, number, expires, token, time.time()):
            raise ApiError(403, "this part URL is not valid (expired, or not one we signed)")
        record = await run_in_threadpool(uploads.load, services.store, upload_id)
        if record is None or number > record.parts:
            raise ApiError(404, f"upload {upload_id} has no part {number}")
        limit = uploads.part_length(record.size, record.part_size, number)
        store = uploads.multipart(services.store)
        try:
            writer = await run_in_threadpool(
                store.part_writer, record.store_upload_id, number, limit
            )
        except ObjectNotFoundError:
            raise _not_found(upload_id) from None
        committed = False
        try:
            batch = bytearray()
            async for chunk in request.stream():
                batch += chunk
                if len(batch) >= WRITE_BATCH:
                    data, batch = bytes(batch), bytearray()
                    await run_in_threadpool(writer.write, data)
            if batch:
                await run_in_threadpool(writer.write, bytes(batch))
            await run_in_threadpool(writer.commit)
            committed = True
        except TooLargeError:
            raise ApiError(
                413, f"part {number} of upload {upload_id} holds at most {limit} bytes"
            ) from None
        except ClientDisconnect:
            raise ApiError(400, "the client went away mid-part") from None
        finally:
            if not committed:
                await run_in_threadpool(writer.abort)
        return Response(status_code=200, headers={"ETag": f'"{writer.etag}"'})

    async def _replay(services: Services, caller: Caller, upload_id: str) -> JobCreated | None:
        """The job of an upload completed before, if this caller sees it."""
        if not uploads.valid_upload_id(upload_id):
            return None
        record = await run_in_threadpool(services.backend.get, upload_id)
        if record is None or record.tenant != caller.tenant:
            return None
        return JobCreated(
            job_id=record.job_id,
            status="pending",
            filename=record.filename,
            created_at=record.created_at,
            source={"upload_id": upload_id},
        )

    @api.post(
        "/uploads/{upload_id}/complete",
        response_model=JobCreated | UploadReady,
        responses={
            **error_responses(401, 403, 404, 415, 422, 429, 503),
            400: idempotency.RESPONSES[400],
        },
        summary="Complete a direct upload: its size and format are checked, its job created "
        "(or, create_job false, kept for a batch)",
    )
    async def complete_upload(
        upload_id: Annotated[str, Path()],
        body: Annotated[CompleteUpload, Body()],
        response: Response,
        services: ServicesDep,
        caller: CallerDep,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias=idempotency.HEADER,
                description="Accepted (checked for its form); /complete is idempotent by "
                "itself: the job's id is the upload's, so completing again answers that job "
                "(`Idempotent-Replayed: true`).",
            ),
        ] = None,
    ) -> JobCreated | UploadReady:
        idempotency.validate_key(idempotency_key)
        record = await run_in_threadpool(uploads.load, services.store, upload_id)
        if record is None or record.tenant != caller.tenant:
            replay = await _replay(services, caller, upload_id)
            if replay is None:
                raise _not_found(upload_id)
            response.headers[idempotency.REPLAYED_HEADER] = "true"
            return replay
        if record.expires_at <= datetime.datetime.now(datetime.UTC):
            await run_in_threadpool(uploads.discard, services.store, record)
            raise _not_found(upload_id)
        store = uploads.multipart(services.store)
        # An earlier /complete may have completed the object and failed after (a 503).
        info = await run_in_threadpool(services.store.stat, record.object_key)
        if info is None:
            parts = [UploadedPart(p.number, p.etag) for p in body.parts]
            try:
                await run_in_threadpool(
                    store.complete_multipart, record.object_key, record.store_upload_id, parts
                )
            except PartsError as exc:
                raise ApiError(422, f"parts: {exc}") from None
            except ObjectNotFoundError:
                raise _not_found(upload_id) from None
            info = await run_in_threadpool(services.store.stat, record.object_key)
        size = info.size if info is not None else 0
        if size != record.size:
            await run_in_threadpool(uploads.discard, services.store, record)
            raise ApiError(
                422,
                f"size: the parts hold {size} bytes, not the {record.size} declared; the upload "
                "was removed",
                "size_mismatch",
            )
        reader = await run_in_threadpool(services.store.open, record.object_key, 0, SNIFF_BYTES)
        head = b"".join(await run_in_threadpool(list, reader))
        try:
            sniff(head)
        except NotAudioError as exc:
            await run_in_threadpool(uploads.discard, services.store, record)
            raise ApiError(
                415,
                f"file: {record.filename!r} is not an audio file this service reads: {exc}; "
                f"send {ACCEPTED}. The upload was removed",
                "not_audio",
            ) from None
        if not body.create_job:  # for a batch (routes/batches), which creates its job
            log.info("upload %s completed (%d bytes), kept for a batch", upload_id, size)
            return UploadReady(
                upload_id=upload_id,
                filename=record.filename,
                size=size,
                expires_at=record.expires_at,
            )
        prepared = Prepared(
            filename=record.filename,
            shown={"upload_id": upload_id},
            input_key=record.object_key,
            input_size=size,
            job_id=upload_id,
        )
        create = CreateJob.model_validate(
            {"source": {"upload_id": upload_id}, "options": record.options}
        )
        try:
            created = await create_prepared(create, prepared, response, services, caller, None)
        except JobExistsError:  # another /complete of this upload, at the same moment
            replay = await _replay(services, caller, upload_id)
            if replay is None:
                raise ApiError(409, f"upload {upload_id}: completing; retry in a moment") from None
            response.headers[idempotency.REPLAYED_HEADER] = "true"
            return replay
        with contextlib.suppress(Exception):  # else the sweep removes it (keeping the object)
            await run_in_threadpool(services.store.delete, uploads.record_key(upload_id))
        log.info("upload %s completed (%d bytes): job %s", upload_id, size, created.job_id)
        return created

    @api.delete(
        "/uploads/{upload_id}",
        status_code=204,
        responses=error_responses(401, 404, 503),
        summary="Abort a direct upload: its parts and record are removed",
    )
    async def abort_upload(
        upload_id: Annotated[str, Path()], services: ServicesDep, caller: CallerDep
    ) -> Response:
        record = await run_in_threadpool(uploads.load, services.store, upload_id)
        if record is None or record.tenant != caller.tenant:
            raise _not_found(upload_id)
        await run_in_threadpool(uploads.discard, services.store, record)
        return Response(status_code=204)

    return api
