"""``POST /jobs``: a job from a source other than an upload's body, as JSON:

    {"source": {"url": "https://example.com/song.mp3"}, "options": {"format": "wav"}}

``source`` names exactly one source: today ``url`` (fetched by the separator, not by the API:
here its form is checked, never resolved or fetched; the separator checks every address it
resolves to, ``stemkube_contract.addresses``). ``options`` are the upload form's fields
(``stemkube_contract.options``), as JSON strings, numbers or (``stems``) a list, checked by
the same parser as ``/upload``'s. The answer is ``/upload``'s, plus the source as it is shown
(a URL without its query or user information: a presigned link's signature is a secret).

Tenants and quotas apply as at upload: the job is the caller's tenant's; the key's jobs queued
or running and its audio minutes are checked before the job exists; its bytes stored count the
job's result only (it has no stored input).

The sources to come (an upload in parts, ``upload_id``; an object in the caller's bucket,
``s3``) are more fields of ``JobSource``, each turned into the ``NewJob``'s input by
``_prepare``."""

import datetime
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from stemkube_api import idempotency
from stemkube_api.auth.caller import Caller
from stemkube_api.auth.dependency import CallerDep, current_caller
from stemkube_api.auth.limits import Refusal, admit_job, counts_usage
from stemkube_api.errors import ApiError, error_responses
from stemkube_api.interfaces import NewJob, UnavailableError
from stemkube_api.jobs import JobRecord
from stemkube_api.models import UploadResponse
from stemkube_api.options import FIELDS, OptionError, parse_request
from stemkube_api.services import Services, ServicesDep
from stemkube_contract import urls, webhooks

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
    # A direct upload (``uploads``): its job is created by POST /uploads/{id}/complete, which
    # prepares this source itself (``create_prepared``); here it only points there.
    upload_id: str | None = Field(
        None,
        description=(
            "A direct upload's id (POST /uploads). Its job is created by POST "
            "/uploads/{upload_id}/complete, with the options given to POST /uploads; this "
            "route answers a 422 pointing there."
        ),
        examples=["3f2b8c1e-9d4a-4e6b-8f0a-2c5d7e9b1a34"],
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


def _prepare(source: JobSource) -> Prepared:
    """The one source given, checked (its form only: nothing is fetched here)."""
    given = [name for name, value in source.model_dump().items() if value is not None]
    if len(given) != 1:
        names = ", ".join(JobSource.model_fields)
        raise ApiError(422, f"source: give exactly one of {names}")
    if source.upload_id is not None:
        raise ApiError(
            422,
            "source.upload_id: a direct upload's job is created by POST "
            "/uploads/{upload_id}/complete",
        )
    url = source.url or ""
    problem = urls.url_problem(url)
    if problem:
        raise ApiError(422, f"source.url: {problem}")
    return Prepared(filename=urls.filename_of(url), shown={"url": urls.redact(url)}, source_url=url)


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
    responses={**error_responses(401, 403, 422, 429, 503), **idempotency.RESPONSES},
    summary="Create a job from a source (a URL); its separation starts in the background",
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
    prepared = _prepare(body.source)
    return await create_prepared(body, prepared, response, services, caller, idempotency_key)


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
