"""``POST /jobs``: a job from a source other than an upload's body, as JSON:

    {"source": {"url": "https://example.com/song.mp3"}, "options": {"format": "wav"}}

``source`` names exactly one source: ``url`` (fetched by the separator, not by the API: here
its form is checked, never resolved or fetched; the separator checks every address it resolves
to, ``stemkube_contract.addresses``); ``upload_id``, a direct upload completed with
``"create_job": false`` (``routes/uploads``); or, in Kubernetes mode, ``s3``, an object already
in the deployment's bucket under the caller's own prefix, read where it is and kept when the
job goes. ``options`` are the upload form's fields
(``stemkube_contract.options``), as JSON strings, numbers or (``stems``) a list, checked by
the same parser as ``/upload``'s. The answer is ``/upload``'s, plus the source as it is shown
(a URL without its query or user information: a presigned link's signature is a secret).

Tenants and quotas apply as at upload: the job is the caller's tenant's; the key's jobs queued
or running and its audio minutes are checked before the job exists; its bytes stored count the
job's result only (it has no stored input).

Each source is a field of ``JobSource``, turned into the ``NewJob``'s input by ``prepare``
(also for each song of a JSON batch, ``routes/batches``)."""

import contextlib
import datetime
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from stemkube_api import idempotency, uploads
from stemkube_api.auth.caller import Caller
from stemkube_api.auth.dependency import CallerDep, current_caller
from stemkube_api.auth.limits import Refusal, admit_job, counts_usage
from stemkube_api.errors import ApiError, error_responses
from stemkube_api.interfaces import NewJob, UnavailableError
from stemkube_api.jobs import JobRecord
from stemkube_api.models import UploadResponse
from stemkube_api.options import FIELDS, OptionError, parse_request
from stemkube_api.services import Services, ServicesDep
from stemkube_api.sniff import ACCEPTED, SNIFF_BYTES, NotAudioError, sniff
from stemkube_contract import keys, urls, webhooks
from stemkube_contract.keys import key_problem

S3_SCHEME = "s3://"

log = logging.getLogger(__name__)


class JobSource(BaseModel):
    """Where the song comes from: exactly one field."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        description=(
            "An http(s) URL the service fetches the song from (at most "
            f"{urls.MAX_URL_LENGTH} characters, no user:password@, at most "
            f"{urls.MAX_REDIRECTS} redirects, at most MAX_FILE_SIZE bytes; addresses in "
            "private, loopback, link-local and the cluster's ranges are refused when the job "
            "runs, as reason SourceForbidden). Stored with the job (readable by whoever may read "
            "its SeparationJob); answers and logs show it without its query."
        ),
        examples=["https://example.com/music/song.mp3"],
    )
    upload_id: str | None = Field(
        None,
        description=(
            "A direct upload (POST /uploads) of the caller's, completed with POST "
            '/uploads/{upload_id}/complete and "create_job": false (without it, /complete '
            "creates the job itself, with the options given to POST /uploads). This request's "
            "options apply; the job's id is the upload's, so an upload makes one job at most."
        ),
        examples=["3f2b8c1e-9d4a-4e6b-8f0a-2c5d7e9b1a34"],
    )
    s3: str | None = Field(
        None,
        description=(
            "Kubernetes mode: an object already in the deployment's bucket, as "
            "s3://BUCKET/KEY, under the caller's own prefix (a user key: "
            "<namespace>/tenants/<tenant>/; an admin key: <namespace>/; else a 403). It is "
            "read where it is, never copied, and stays when the job is deleted. Checked when "
            "the job is created: it exists (else 422), has at most MAX_FILE_SIZE bytes (else "
            "413) and its first bytes are audio this service reads (else 415)."
        ),
        examples=["s3://stemkube/stemkube/tenants/acme/library/song.flac"],
    )


# bool first: a JSON true stays one (and is refused) instead of passing as 1.
OptionValue = bool | str | int | float | list[str]


class CreateJob(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "source": {"url": "https://example.com/music/song.mp3"},
                    "options": {"model": "htdemucs", "stems": ["vocals", "drums"], "format": "wav"},
                }
            ]
        },
    )

    source: JobSource
    webhook_url: str | None = Field(
        None,
        description="Where to POST the job's outcome when it ends, signed (header "
        "Stemkube-Signature; see the API's README): http(s), no user:password@, at most "
        f"{urls.MAX_URL_LENGTH} characters; its addresses are checked as a source URL's when it "
        "is sent (a refused one is never contacted). Default: the deployment's "
        "(STEMKUBE_WEBHOOK_URL), if any.",
        examples=["https://example.com/hooks/stemkube"],
    )
    options: dict[str, OptionValue] = Field(
        default_factory=dict,
        description="The upload form's options (model, stems, two_stems, format, bitrate, "
        "wav_depth, shifts, overlap, segment): the same names, values and defaults; stems may "
        "be a list or a comma-separated string.",
    )


class JobCreated(UploadResponse):
    source: dict[str, str] = Field(
        description="The source as shown: a URL without its query or user information.",
        examples=[{"url": "https://example.com/music/song.mp3"}],
    )


@dataclass(frozen=True)
class Prepared:
    """A source made ready for a job: what the NewJob says of its input, and how it is shown."""

    filename: str
    shown: dict[str, str]
    input_key: str = ""
    input_size: int | None = None
    source_url: str | None = None
    job_id: str | None = None  # the job's id without an Idempotency-Key (None: a new one)
    keep_input: bool = False  # the input is the caller's object, not the job's (``s3``)
    upload_id: str | None = None  # a direct upload's: its record goes once the job exists


def _option_text(name: str, value: OptionValue) -> str:
    if isinstance(value, bool):  # a JSON true/false is no option's value
        raise ApiError(422, f"options.{name}: expected a string or a number, not {value}")
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def parse_options(services: Services, options: dict[str, OptionValue]) -> Any:
    """The JSON options through the upload form's parser (``/upload``'s checks and messages)."""
    unknown = sorted(set(options) - set(FIELDS))
    if unknown:
        raise ApiError(
            422, f"options.{unknown[0]}: unknown option; the options are {', '.join(FIELDS)}"
        )
    fields = {name: _option_text(name, value) for name, value in options.items()}
    try:
        return parse_request(fields, services.settings.models, services.settings.limits)
    except OptionError as exc:
        raise ApiError(422, f"options.{exc}") from None


def webhook_of(services: Services, given: str | None) -> str | None:
    """The job's webhook: the request's (its form checked: a 422 naming ``webhook_url``),
    else the deployment's default."""
    if given is None or not given.strip():
        return services.settings.webhook_url
    problem = webhooks.url_problem(given)
    if problem:
        raise ApiError(422, f"webhook_url: {problem}")
    return given


async def prepare(
    services: Services, caller: Caller, source: JobSource, where: str = "source"
) -> Prepared:
    """The one source given, checked: a URL's form (nothing is fetched); a direct upload's
    record and object; a stored object's place, size and first bytes."""
    given = [name for name, value in source.model_dump().items() if value is not None]
    if len(given) != 1:
        names = ", ".join(JobSource.model_fields)
        raise ApiError(422, f"{where}: give exactly one of {names}")
    if source.upload_id is not None:
        return await prepare_upload(services, caller, source.upload_id, f"{where}.upload_id")
    if source.s3 is not None:
        return await prepare_object(services, caller, source.s3, f"{where}.s3")
    url = source.url or ""
    problem = urls.url_problem(url)
    if problem:
        raise ApiError(422, f"{where}.url: {problem}")
    return Prepared(filename=urls.filename_of(url), shown={"url": urls.redact(url)}, source_url=url)


async def prepare_upload(
    services: Services, caller: Caller, upload_id: str, where: str
) -> Prepared:
    """A direct upload of the caller's, completed and waiting for its job."""
    record = None
    if uploads.valid_upload_id(upload_id):
        record = await run_in_threadpool(uploads.load, services.store, upload_id)
    now = datetime.datetime.now(datetime.UTC)
    if record is None or record.tenant != caller.tenant or record.expires_at <= now:
        raise ApiError(
            422,
            f"{where}: no upload {upload_id} waits for its job (never made, expired, aborted, "
            "or its job made already)",
        )
    info = await run_in_threadpool(services.store.stat, record.object_key)
    if info is None or info.size != record.size:
        raise ApiError(
            422,
            f"{where}: upload {upload_id} ({record.filename!r}) is not completed: POST "
            f'/uploads/{upload_id}/complete with "create_job": false first',
        )
    return Prepared(
        filename=record.filename,
        shown={"upload_id": upload_id},
        input_key=record.object_key,
        input_size=info.size,
        job_id=upload_id,
        upload_id=upload_id,
    )


def _s3_place(uri: str, where: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
    if not uri.startswith(S3_SCHEME) or not bucket or not key:
        raise ApiError(422, f"{where}: expected s3://BUCKET/KEY, not {uri[:200]!r}")
    problem = key_problem(key)
    if problem:
        raise ApiError(422, f"{where}: key {key[:200]!r}: {problem}")
    return bucket, key


async def prepare_object(services: Services, caller: Caller, uri: str, where: str) -> Prepared:
    """An object of the caller's in the deployment's bucket: its place (the caller's own
    prefix under the API's storage scope), that it exists, its size and its first bytes."""
    if services.backend.name != "kubernetes":
        raise ApiError(
            422,
            f"{where}: an object in storage is a source in Kubernetes mode only; here, upload "
            "the file (POST /upload or POST /uploads) or give its url",
        )
    bucket, key = _s3_place(uri, where)
    settings = services.settings
    # A user key reads its own tenant's objects only; an admin key (or an open service) every
    # object of the API's namespace. Never another namespace's: the operator would refuse it.
    home = keys.home(None if caller.admin else caller.tenant, settings.key_root)
    if bucket != settings.bucket or not key.startswith(home):
        raise ApiError(
            403,
            f"{where}: s3://{bucket}/{key} is not yours to read: name an object under "
            f"s3://{settings.bucket}/{home}",
            "forbidden",
        )
    shown = f"s3://{bucket}/{key}"
    info = await run_in_threadpool(services.store.stat, key)
    if info is None:
        raise ApiError(422, f"{where}: no object {shown}")
    if info.size > settings.max_file_size:
        raise ApiError(
            413,
            f"{where}: {shown} has {info.size} bytes; at most {settings.max_file_size_text}",
            "too_large",
        )
    reader = await run_in_threadpool(services.store.open, key, 0, SNIFF_BYTES)
    try:
        head = b"".join(await run_in_threadpool(list, reader))
    finally:
        reader.close()
    try:
        sniff(head)
    except NotAudioError as exc:
        raise ApiError(
            415,
            f"{where}: {shown} is not an audio file this service reads: {exc}; send {ACCEPTED}",
            "not_audio",
        ) from None
    return Prepared(
        filename=key.rsplit("/", 1)[-1], shown={"s3": shown}, input_key=key, keep_input=True
    )


async def _admit(services: Services, caller: Caller, size: int) -> None:
    """The key's job quotas for one more job storing ``size`` bytes now (as at upload)."""
    quotas = caller.quotas
    if not caller.key_id or not counts_usage(quotas):
        return
    now = datetime.datetime.now(datetime.UTC)
    usage = await run_in_threadpool(services.backend.usage, caller.key_id, now)
    refusal: Refusal | None = admit_job(caller.key_name, quotas, usage, size)
    if refusal is not None:
        log.info(
            "refused a job for key %s (tenant %s): %s",
            caller.key_name,
            caller.tenant,
            refusal.message,
        )
        retry = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
        raise ApiError(refusal.status, refusal.message, "quota", headers=retry)


router = APIRouter(tags=["jobs"], dependencies=[Depends(current_caller)])


@router.post(
    "/jobs",
    response_model=JobCreated,
    responses={**error_responses(401, 403, 413, 415, 422, 429, 503), **idempotency.RESPONSES},
    summary="Create a job from a source (a URL, a direct upload, a stored object); its "
    "separation starts in the background",
)
async def create_job(
    body: Annotated[CreateJob, Body()],
    response: Response,
    services: ServicesDep,
    caller: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=idempotency.HEADER,
            description="As on /upload: the same key (per API key) with the same body within "
            "24 hours answers the first response again (`Idempotent-Replayed: true`) and "
            "creates nothing; with another body, a 409.",
        ),
    ] = None,
) -> JobCreated:
    prepared = await prepare(services, caller, body.source)
    created = await create_prepared(body, prepared, response, services, caller, idempotency_key)
    if prepared.upload_id is not None:  # its job is the input's owner now
        with contextlib.suppress(Exception):
            await run_in_threadpool(services.store.delete, uploads.record_key(prepared.upload_id))
    return created


async def create_prepared(
    body: CreateJob,
    prepared: Prepared,
    response: Response,
    services: Services,
    caller: Caller,
    idempotency_key: str | None,
) -> JobCreated:
    """The job of a source made ready (``_prepare``; a direct upload's: ``routes/uploads``),
    with ``body``'s options, under the request's Idempotency-Key."""
    webhook_url = webhook_of(services, body.webhook_url)
    request = parse_options(services, body.options)
    model = str(request.get("model") or services.settings.models.default)
    problem = await run_in_threadpool(services.backend.model_problem, model)
    if problem:
        raise ApiError(503, f"model {model}: {problem}", "no_weights")
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    async def make(keyed: idempotency.Keyed | None) -> JobRecord:
        await _admit(services, caller, prepared.input_size or 0)
        new = NewJob(
            job_id=keyed.job_id if keyed else (prepared.job_id or str(uuid.uuid4())),
            request=request,
            input_key=prepared.input_key,
            filename=prepared.filename,
            tenant=caller.tenant,
            key_id=caller.key_id or None,
            input_size=prepared.input_size,
            source_url=prepared.source_url,
            idempotency_key=keyed.key_hash if keyed else None,
            request_hash=keyed.request_hash if keyed else None,
            webhook_url=webhook_url,
            keep_input=prepared.keep_input,
        )
        try:
            made = await run_in_threadpool(services.backend.create, new)
        except UnavailableError as exc:
            raise ApiError(503, f"service unavailable: {exc}", "unavailable") from None
        services.metrics.jobs_created.inc()
        log.info(
            "job %s created from %s by key %s (tenant %s)",
            made.job_id,
            ", ".join(f"{k} {v}" for k, v in prepared.shown.items()),
            caller.key_name,
            caller.tenant,
        )
        return made

    record, replayed = await idempotency.create_once(
        services.backend,
        caller,
        idempotency_key,
        idempotency.request_hash("POST", "/jobs", {}, canonical),
        make,
    )
    if replayed:
        response.headers[idempotency.REPLAYED_HEADER] = "true"
    return JobCreated(
        job_id=record.job_id,
        status="pending",
        filename=record.filename,
        created_at=record.created_at,
        source=prepared.shown,
    )
