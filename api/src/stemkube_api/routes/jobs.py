"""Jobs: upload a song (a new job), its status, the list, deletion."""

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from stemkube_api.errors import ApiError, error_responses
from stemkube_api.interfaces import UnavailableError
from stemkube_api.jobs import BadCursorError
from stemkube_api.models import Deleted, JobList, JobStatus, Status, UploadResponse
from stemkube_api.services import ServicesDep
from stemkube_api.settings import Settings
from stemkube_api.sniff import ACCEPTED
from stemkube_api.upload import UploadReceiver
from stemkube_contract import options as catalogue

_router = APIRouter(tags=["jobs"])


def router(settings: Settings) -> APIRouter:
    """The job routes; the upload form's OpenAPI schema is this deployment's (its models)."""
    routes = APIRouter()
    routes.add_api_route(
        "/upload",
        upload,
        methods=["POST"],
        tags=["jobs"],
        response_model=UploadResponse,
        responses=error_responses(413, 415, 422, 503),
        openapi_extra=upload_body(settings),
        summary="Upload a song; its separation starts in the background",
    )
    routes.include_router(_router)
    return routes


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


async def upload(request: Request, services: ServicesDep) -> UploadResponse:
    record = await UploadReceiver(services).receive(
        request.stream(),
        request.headers.get("content-type"),
        request.headers.get("content-length", ""),
    )
    return UploadResponse(
        job_id=record.job_id,
        status="pending",
        filename=record.filename,
        created_at=record.created_at,
    )


@_router.get(
    "/status/{job_id}",
    response_model=JobStatus,
    responses=error_responses(404, 503),
    summary="A job's status and progress",
)
async def status(job_id: str, services: ServicesDep) -> JobStatus:
    return JobStatus.of(await services.find(job_id))


@_router.get(
    "/jobs",
    response_model=JobList,
    responses=error_responses(422, 503),
    summary="All jobs, newest first",
)
async def jobs(
    services: ServicesDep,
    status: Annotated[Status | None, Query(description="Only jobs with this status.")] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=1000, description="At most this many jobs.")
    ] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> JobList:
    try:
        page = await run_in_threadpool(services.backend.list, status, limit, cursor)
    except BadCursorError as exc:
        raise ApiError(422, str(exc)) from None
    return JobList(
        jobs=[JobStatus.of(r) for r in page.jobs],
        count=len(page.jobs),
        next_cursor=page.next_cursor,
    )


@_router.delete(
    "/job/{job_id}",
    response_model=Deleted,
    responses=error_responses(404, 503),
    summary="Cancel a job if it runs, and delete it and its files",
)
async def delete(job_id: str, services: ServicesDep) -> Deleted:
    record = await services.find(job_id)
    if not await run_in_threadpool(services.backend.delete, job_id):
        raise ApiError(404, f"job {job_id} not found")
    # The operator's finalizer removes the files; removing them here too covers a job
    # deleted before the operator ever saw it.
    for key in (record.input_key, record.result_key):
        if key:
            with contextlib.suppress(UnavailableError):
                await run_in_threadpool(services.store.delete, key)
    was = "cancelled and deleted" if record.status in ("pending", "processing") else "deleted"
    return Deleted(job_id=job_id, deleted=True, message=f"job {job_id} {was}")
