"""Jobs: upload a song (a new job), its status, the list, deletion. Each sees the caller's
tenant only (admin keys: every tenant); another tenant's job is missing."""

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from stemkube_api.auth.dependency import CallerDep, current_caller
from stemkube_api.errors import ApiError, error_responses
from stemkube_api.idempotency import HEADER as IDEMPOTENCY_HEADER
from stemkube_api.idempotency import REPLAYED_HEADER, header_parameter, validate_key
from stemkube_api.idempotency import RESPONSES as IDEMPOTENCY_RESPONSES
from stemkube_api.jobs import BadCursorError
from stemkube_api.models import (
    Deleted,
    JobList,
    JobStatus,
    Status,
    UploadResponse,
)
from stemkube_api.services import ServicesDep, not_found
from stemkube_api.settings import Settings
from stemkube_api.sniff import ACCEPTED
from stemkube_api.upload import UploadReceiver
from stemkube_contract import options as catalogue
from stemkube_contract.urls import MAX_URL_LENGTH

log = logging.getLogger(__name__)
_router = APIRouter(tags=["jobs"])


def router(settings: Settings) -> APIRouter:
    """The job routes; the upload form's OpenAPI schema is this deployment's (its models)."""
    # The caller is known (or refused) before anything else: an upload's body is not read.
    routes = APIRouter(dependencies=[Depends(current_caller)])
    routes.add_api_route(
        "/upload",
        upload,
        methods=["POST"],
        tags=["jobs"],
        response_model=UploadResponse,
        responses={
            **error_responses(401, 403, 413, 415, 422, 429, 503),
            **IDEMPOTENCY_RESPONSES,
        },
        openapi_extra=upload_body(settings),
        summary="Upload a song; its separation starts in the background",
    )
    routes.include_router(_router)
    return routes


def upload_body(settings: Settings) -> dict[str, Any]:
    """The upload form's OpenAPI schema: the file, and each option from the catalogue."""
    return {
        "parameters": [
            header_parameter(
                "1-255 printable ASCII characters (a UUID, say). The same key (per API key) "
                "with the same request within 24 hours answers the first response again, with "
                "`Idempotent-Replayed: true`, and creates nothing; with another request "
                "(options, file), a 409."
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
                                "type": "string",
                                "format": "binary",
                                "description": f"The song: {ACCEPTED}.",
                            },
                            **catalogue.form_schema(settings.models),
                            "webhook_url": {
                                "type": "string",
                                "maxLength": MAX_URL_LENGTH,
                                "description": "Where to POST the job's outcome when it ends, "
                                "signed (Stemkube-Signature); http(s), no user:password@. "
                                "Default: the deployment's, if any.",
                            },
                        },
                    }
                }
            },
        },
    }


async def upload(
    request: Request, response: Response, services: ServicesDep, caller: CallerDep
) -> UploadResponse:
    key = validate_key(request.headers.get(IDEMPOTENCY_HEADER))  # before the body
    receiver = UploadReceiver(services, caller=caller, idempotency_key=key, path=request.url.path)
    record = await receiver.receive(
        request.stream(),
        request.headers.get("content-type"),
        request.headers.get("content-length", ""),
    )
    if receiver.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return UploadResponse(
        job_id=record.job_id,
        status="pending",
        filename=record.filename,
        created_at=record.created_at,
    )


@_router.get(
    "/status/{job_id}",
    response_model=JobStatus,
    responses=error_responses(401, 404, 429, 503),
    summary="A job's status and progress",
)
async def status(job_id: str, services: ServicesDep, caller: CallerDep) -> JobStatus:
    return JobStatus.of(await services.find(job_id, caller), show_tenant=caller.admin)


@_router.get(
    "/jobs",
    response_model=JobList,
    responses=error_responses(401, 403, 422, 429, 503),
    summary="The caller's jobs (admin keys: every tenant's), newest first",
)
async def jobs(
    services: ServicesDep,
    caller: CallerDep,
    status: Annotated[Status | None, Query(description="Only jobs with this status.")] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=1000, description="At most this many jobs.")
    ] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
    tenant: Annotated[
        str | None, Query(description="Only this tenant's jobs (admin keys only).")
    ] = None,
) -> JobList:
    if tenant is not None and not caller.admin:
        raise ApiError(403, "only admin keys may filter by tenant")
    # A key sees its own tenant's jobs; an admin every job, or the tenant it asks for.
    scope = tenant if caller.admin else caller.tenant
    try:
        page = await run_in_threadpool(services.backend.list, status, limit, cursor, scope)
    except BadCursorError as exc:
        raise ApiError(422, str(exc)) from None
    return JobList(
        jobs=[JobStatus.of(r, show_tenant=caller.admin) for r in page.jobs],
        count=len(page.jobs),
        next_cursor=page.next_cursor,
    )


@_router.delete(
    "/job/{job_id}",
    response_model=Deleted,
    responses=error_responses(401, 404, 429, 503),
    summary="Cancel a job if it runs, and delete it and its files",
)
async def delete(job_id: str, services: ServicesDep, caller: CallerDep) -> Deleted:
    record = await services.find(job_id, caller)
    if not await services.delete(record):
        raise not_found(job_id)
    was = "cancelled and deleted" if record.status in ("pending", "processing") else "deleted"
    log.info("job %s %s by key %s (tenant %s)", job_id, was, caller.key_name, caller.tenant)
    return Deleted(job_id=job_id, deleted=True, message=f"job {job_id} {was}")
