"""The REST API. It keeps no job state: jobs live in the job backend (SeparationJob resources in
Kubernetes mode), files in the object store."""

import contextlib
import logging
import uuid
import zipfile
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from stemkube_api import __version__
from stemkube_api.form import FileData, FileEnd, FileStart, FormError, boundary_of, read_form
from stemkube_api.interfaces import (
    JobBackend,
    NewJob,
    ObjectNotFoundError,
    ObjectStore,
    ObjectWriter,
    TooLargeError,
    UnavailableError,
)
from stemkube_api.jobs import (
    COMPLETED,
    FAILED,
    STEM_MEDIA_TYPES,
    BadCursorError,
    JobRecord,
    clean_filename,
    content_disposition,
    input_key,
    stem_download_name,
    zip_download_name,
)
from stemkube_api.metrics import Metrics, MetricsMiddleware
from stemkube_api.models import (
    Alive,
    Deleted,
    ErrorResponse,
    Health,
    JobList,
    JobStatus,
    ModelList,
    Ready,
    Status,
    UploadResponse,
)
from stemkube_api.options import FIELDS, OptionError, check_field, parse_request
from stemkube_api.settings import Settings
from stemkube_api.sniff import ACCEPTED, SNIFF_BYTES, NotAudioError, sniff
from stemkube_api.zipmember import NoSuchMemberError, open_member
from stemkube_contract import options as catalogue

log = logging.getLogger(__name__)

# Bytes a form may carry beyond the file itself (boundaries, part headers, option fields).
FORM_SLACK = 64 * 1024
# After refusing an upload part-way, the rest of the body is read and dropped (up to this much)
# so that the client, still sending, gets the answer rather than a broken connection.
DRAIN_LIMIT = 64 * 1024 * 1024
WRITE_BATCH = 1024 * 1024
CHECK_TIMEOUT = 5.0


class ApiError(Exception):
    def __init__(
        self, status: int, detail: str, reason: str | None = None, drain: bool = True
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.reason = reason  # for the rejected-uploads metric
        self.drain = drain  # read the rest of an upload's body before answering


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    words = {
        404: "No such job (or stem).",
        409: "The job has no result yet, or failed.",
        413: "The file is larger than MAX_FILE_SIZE; nothing was stored.",
        415: "The file is not audio this service reads; nothing was stored.",
        422: "A bad request: the message names the field.",
        502: "The result in storage is not a readable ZIP.",
        503: "The job backend or the object store is unreachable.",
    }
    return {code: {"model": ErrorResponse, "description": words[code]} for code in codes}


def upload_body(settings: Settings) -> dict[str, Any]:
    """The upload form's OpenAPI schema: the file, and each option from the catalogue."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": f"The song: {ACCEPTED}.",
                            },
                            **catalogue.form_schema(settings.models),
                        },
                    }
                }
            },
        }
    }


ZIP_BODY: dict[str, Any] = {
    "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    "description": "The stems ZIP, as an attachment named <song>_stems.zip.",
}
STEM_BODY: dict[str, Any] = {
    "content": {
        media: {"schema": {"type": "string", "format": "binary"}}
        for media in STEM_MEDIA_TYPES.values()
    },
    "description": "One stem, as an attachment named <song>_<stem>.<format>.",
}
REDIRECT: dict[int | str, dict[str, Any]] = {
    307: {"description": "With STEMKUBE_PRESIGNED_DOWNLOADS: a short-lived URL of the object."}
}


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await run_in_threadpool(fn, *args)


async def _abort(writer: ObjectWriter | None) -> None:
    if writer is None:
        return
    with anyio.CancelScope(shield=True):
        try:
            await run_in_threadpool(writer.abort)
        except Exception:
            log.exception("aborting an upload failed")


async def _drain(body: AsyncIterator[bytes]) -> None:
    """Reads and drops what the client still sends (bounded), so it sees our answer."""
    dropped = 0
    with contextlib.suppress(Exception):
        async for chunk in body:
            dropped += len(chunk)
            if dropped > DRAIN_LIMIT:
                break


def create_app(settings: Settings, backend: JobBackend, store: ObjectStore) -> FastAPI:
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(backend.start)
        try:
            yield
        finally:
            await run_in_threadpool(backend.stop)

    app = FastAPI(
        title="stemkube",
        version=__version__,
        summary="Split songs into stems (vocals, drums, bass, other) with Demucs.",
        description=(
            "Upload a song to /upload, follow /status/{job_id}, download the stems ZIP from "
            "/download/{job_id}. Errors are JSON objects with a `detail` string."
        ),
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.settings = settings
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    # Errors: always {"detail": "..."} -------------------------------------------------------

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(UnavailableError)
    async def unavailable(request: Request, exc: UnavailableError) -> JSONResponse:
        log.warning("backend unavailable: %s", exc)
        return JSONResponse({"detail": f"service unavailable: {exc}"}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = str((first.get("loc") or ("request",))[-1])
        return JSONResponse({"detail": f"{field}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the API's log"}, status_code=500)

    # Helpers ---------------------------------------------------------------------------------

    async def find(job_id: str) -> JobRecord:
        record: JobRecord | None = await _in_thread(backend.get, job_id)
        if record is None:
            raise ApiError(404, f"job {job_id} not found")
        return record

    def finished(record: JobRecord) -> None:
        if record.status == FAILED:
            raise ApiError(409, f"job {record.job_id} failed: {record.error}")
        if record.status != COMPLETED:
            raise ApiError(
                409,
                f"job {record.job_id} is {record.status} ({record.progress}%); "
                "download it when its status is completed",
            )

    # Routes ----------------------------------------------------------------------------------

    @app.get("/", response_model=Health, tags=["health"], summary="Service name and version")
    async def root() -> Health:
        return Health(service="stemkube", version=__version__, status="ok")

    @app.get("/healthz", response_model=Alive, tags=["health"], summary="Liveness")
    async def healthz() -> Alive:
        return Alive(status="alive")

    @app.get(
        "/readyz",
        response_model=Ready,
        responses=_errors(503),
        tags=["health"],
        summary="Readiness: the job backend and the object store answer",
    )
    async def readyz() -> Ready:
        checks: dict[str, str] = {}
        for name, check in ((backend.name, backend.check), ("storage", store.check)):
            try:
                with anyio.fail_after(CHECK_TIMEOUT):
                    await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
            except TimeoutError:
                raise ApiError(503, f"{name}: no answer within {CHECK_TIMEOUT:.0f}s") from None
            except UnavailableError as exc:
                raise ApiError(503, str(exc)) from None
            checks[name] = "ok"
        return Ready(status="ready", checks=checks)

    @app.get(
        "/models",
        response_model=ModelList,
        tags=["models"],
        summary="The models this deployment serves, their stems, and the default",
    )
    async def models() -> ModelList:
        return ModelList.of(settings.models)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["health"], summary="Prometheus")
    async def metrics_endpoint() -> PlainTextResponse:
        return PlainTextResponse(
            generate_latest(metrics.registry).decode(), media_type=CONTENT_TYPE_LATEST
        )

    @app.post(
        "/upload",
        response_model=UploadResponse,
        responses=_errors(413, 415, 422, 503),
        openapi_extra=upload_body(settings),
        tags=["jobs"],
        summary="Upload a song; its separation starts in the background",
    )
    async def upload(request: Request) -> UploadResponse:
        body = request.stream()
        try:
            try:
                return await _receive(request, body)
            except UnavailableError as exc:
                raise ApiError(503, f"service unavailable: {exc}", "unavailable") from None
        except ApiError as exc:
            metrics.uploads_rejected.labels(exc.reason or "invalid").inc()
            if exc.drain:
                await _drain(body)
            raise

    async def _receive(request: Request, body: AsyncIterator[bytes]) -> UploadResponse:
        limit = settings.max_file_size
        too_large = ApiError(
            413,
            f"file too large: the limit is {settings.max_file_size_text} "
            f"({limit} bytes); nothing was stored",
            "too_large",
        )
        try:
            boundary = boundary_of(request.headers.get("content-type"))
        except FormError as exc:
            raise ApiError(422, f"file: {exc}") from None
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit + FORM_SLACK + DRAIN_LIMIT:
            # Far beyond the limit: answer before reading (a client that sent
            # "Expect: 100-continue", as curl does, sends nothing).
            raise ApiError(413, too_large.detail, "too_large", drain=False)
        fields: dict[str, str] = {}
        filename: str | None = None
        file_done = False
        job_id = str(uuid.uuid4())
        key = ""
        head = bytearray()
        batch = bytearray()
        size = 0
        writer: ObjectWriter | None = None
        committed = False

        async def begin() -> None:
            nonlocal writer, key
            try:
                detected = sniff(bytes(head))
            except NotAudioError as exc:
                raise ApiError(
                    415,
                    f"file: {filename!r} is not an audio file this service reads: {exc}; "
                    f"send {ACCEPTED}",
                    "not_audio",
                ) from None
            key = input_key(job_id, detected.extension)
            writer = store.writer(key, limit, "application/octet-stream")
            batch.extend(head)

        async def flush() -> None:
            if writer is not None and batch:
                data = bytes(batch)
                batch.clear()
                await _in_thread(writer.write, data)

        try:
            async for event in read_form(body, boundary):
                if isinstance(event, FileStart):
                    if event.name != "file":
                        raise ApiError(
                            422, f"{event.name}: unknown file field; send the song as 'file'"
                        )
                    if filename is not None:
                        raise ApiError(422, "file: send one file per upload")
                    filename = clean_filename(event.filename)
                    try:  # the options sent before the file, before storing anything
                        parse_request(fields, settings.models, settings.limits)
                    except OptionError as exc:
                        if not exc.later_fields_may_fix:
                            raise
                    model = fields.get("model", "").strip() or settings.models.default
                    problem = await _in_thread(backend.model_problem, model)
                    if problem:
                        raise ApiError(
                            503, f"model {model}: {problem}; nothing was stored", "no_weights"
                        )
                elif isinstance(event, FileData):
                    size += len(event.data)
                    if size > limit:
                        raise too_large
                    if writer is None:
                        head.extend(event.data)
                        if len(head) >= SNIFF_BYTES:
                            await begin()
                    else:
                        batch.extend(event.data)
                    if len(batch) >= WRITE_BATCH:
                        await flush()
                elif isinstance(event, FileEnd):
                    if writer is None:
                        await begin()
                    await flush()
                    file_done = True
                else:
                    if event.name == "file":
                        raise ApiError(422, "file: must be a file upload, not a text field")
                    if event.name in fields:
                        raise ApiError(422, f"{event.name}: given twice")
                    if event.name not in FIELDS:
                        raise ApiError(
                            422,
                            f"{event.name}: unknown field; the form takes file, "
                            f"{', '.join(FIELDS)}",
                        )
                    if event.value.strip():
                        check_field(event.name, event.value)
                    fields[event.name] = event.value
            if filename is None:
                raise ApiError(422, "file: field required (send the song as the 'file' field)")
            if not file_done:
                raise ApiError(422, "file: the upload ended before the file did", "incomplete")
            separation = parse_request(fields, settings.models, settings.limits)
            assert writer is not None
            stored = await _in_thread(writer.commit)
            committed = True
            metrics.upload_bytes.inc(stored)
            new = NewJob(job_id=job_id, request=separation, input_key=key, filename=filename)
            try:
                record: JobRecord = await _in_thread(backend.create, new)
            except BaseException:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await _in_thread(store.delete, key)
                raise
        except OptionError as exc:
            raise ApiError(422, str(exc)) from None
        except FormError as exc:
            raise ApiError(422, f"file: {exc}") from None
        except TooLargeError:
            raise too_large from None
        except ClientDisconnect:
            raise ApiError(400, "the client went away mid-upload", "incomplete", False) from None
        finally:
            if not committed:
                await _abort(writer)
        metrics.jobs_created.inc()
        log.info("job %s created for %s (%d bytes)", job_id, filename, stored)
        return UploadResponse(
            job_id=record.job_id,
            status="pending",
            filename=record.filename,
            created_at=record.created_at,
        )

    @app.get(
        "/status/{job_id}",
        response_model=JobStatus,
        responses=_errors(404, 503),
        tags=["jobs"],
        summary="A job's status and progress",
    )
    async def status(job_id: str) -> JobStatus:
        return JobStatus.of(await find(job_id))

    @app.get(
        "/download/{job_id}",
        response_class=StreamingResponse,
        responses={200: ZIP_BODY, **REDIRECT, **_errors(404, 409, 503)},
        tags=["jobs"],
        summary="The stems ZIP of a completed job",
    )
    async def download(job_id: str) -> Any:
        record = await find(job_id)
        finished(record)
        name = zip_download_name(record.filename)
        if settings.presigned_downloads:
            url = await _in_thread(
                store.presigned_url, record.result_key, settings.presign_expiry, name
            )
            if url:
                return RedirectResponse(url, status_code=307)
        try:
            reader = await _in_thread(store.open, record.result_key)
        except ObjectNotFoundError:
            raise ApiError(404, f"job {job_id}: its result is missing from storage") from None
        return StreamingResponse(
            iter(reader),
            media_type="application/zip",
            headers={
                "Content-Disposition": content_disposition(name),
                "Content-Length": str(reader.size),
            },
        )

    @app.get(
        "/download/{job_id}/{stem}",
        response_class=StreamingResponse,
        responses={200: STEM_BODY, **_errors(404, 409, 502, 503)},
        tags=["jobs"],
        summary="One stem of a completed job",
    )
    async def download_stem(job_id: str, stem: str) -> Any:
        record = await find(job_id)
        finished(record)
        if stem not in record.stems:
            raise ApiError(
                404,
                f"job {job_id} has no stem {stem!r}; its stems: {', '.join(record.stems)}",
            )
        info = await _in_thread(store.stat, record.result_key)
        if info is None:
            raise ApiError(404, f"job {job_id}: its result is missing from storage")
        member = f"{stem}.{record.format}"
        try:
            size, chunks = await _in_thread(
                open_member, store, record.result_key, info.size, member
            )
        except NoSuchMemberError:
            raise ApiError(404, f"job {job_id}: {member} is missing from its ZIP") from None
        except zipfile.BadZipFile as exc:
            raise ApiError(502, f"job {job_id}: its result is not a readable ZIP: {exc}") from None
        return StreamingResponse(
            chunks,
            media_type=STEM_MEDIA_TYPES.get(record.format, "application/octet-stream"),
            headers={
                "Content-Disposition": content_disposition(
                    stem_download_name(record.filename, stem, record.format)
                ),
                "Content-Length": str(size),
            },
        )

    @app.get(
        "/jobs",
        response_model=JobList,
        responses=_errors(422, 503),
        tags=["jobs"],
        summary="All jobs, newest first",
    )
    async def jobs(
        status: Annotated[Status | None, Query(description="Only jobs with this status.")] = None,
        limit: Annotated[
            int | None, Query(ge=1, le=1000, description="At most this many jobs.")
        ] = None,
        cursor: Annotated[
            str | None, Query(description="next_cursor of the previous page.")
        ] = None,
    ) -> JobList:
        try:
            page = await _in_thread(backend.list, status, limit, cursor)
        except BadCursorError as exc:
            raise ApiError(422, str(exc)) from None
        return JobList(
            jobs=[JobStatus.of(r) for r in page.jobs],
            count=len(page.jobs),
            next_cursor=page.next_cursor,
        )

    @app.delete(
        "/job/{job_id}",
        response_model=Deleted,
        responses=_errors(404, 503),
        tags=["jobs"],
        summary="Cancel a job if it runs, and delete it and its files",
    )
    async def delete(job_id: str) -> Deleted:
        record = await find(job_id)
        if not await _in_thread(backend.delete, job_id):
            raise ApiError(404, f"job {job_id} not found")
        # The operator's finalizer removes the files; removing them here too covers a job
        # deleted before the operator ever saw it.
        for key in (record.input_key, record.result_key):
            if key:
                with contextlib.suppress(UnavailableError):
                    await _in_thread(store.delete, key)
        was = "cancelled and deleted" if record.status in ("pending", "processing") else "deleted"
        return Deleted(job_id=job_id, deleted=True, message=f"job {job_id} {was}")

    return app
