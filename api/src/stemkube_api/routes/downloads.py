"""A completed job's result: the stems ZIP, or one stem read out of it."""

import zipfile
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from stemkube_api.auth.dependency import CallerDep, current_caller
from stemkube_api.errors import ApiError, error_responses
from stemkube_api.interfaces import ObjectNotFoundError
from stemkube_api.jobs import (
    COMPLETED,
    FAILED,
    STEM_MEDIA_TYPES,
    JobRecord,
    ascii_filename,
    content_disposition,
    stem_download_name,
    zip_download_name,
)
from stemkube_api.services import ServicesDep
from stemkube_api.zipmember import NoSuchMemberError, open_member

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

router = APIRouter(tags=["jobs"], dependencies=[Depends(current_caller)])


def disposition(record: JobRecord, name_of: Callable[[str], str]) -> str:
    """The Content-Disposition of a download named ``name_of(<song's file name>)``. Its ASCII
    ``filename`` is the song's name transliterated, or the job's id where nothing of the name
    has an ASCII form (a CJK title): ``<job id>_stems.zip`` says more than ``_stems.zip``."""
    stem, dot, _ = record.filename.rpartition(".")
    title = ascii_filename(stem if dot and stem else record.filename)
    if not any(char.isalnum() for char in title):
        title = record.job_id
    # name_of drops the song's extension: a bare "." keeps a title's own dots.
    return content_disposition(name_of(record.filename), name_of(f"{title}."))


def finished(record: JobRecord) -> None:
    """Nothing, for a completed job; else a 409 that says its status or why it failed."""
    if record.status == FAILED:
        raise ApiError(409, f"job {record.job_id} failed: {record.error}")
    if record.status != COMPLETED:
        raise ApiError(
            409,
            f"job {record.job_id} is {record.status} ({record.progress}%); "
            "download it when its status is completed",
        )


@router.get(
    "/download/{job_id}",
    response_class=StreamingResponse,
    responses={200: ZIP_BODY, **REDIRECT, **error_responses(401, 404, 409, 429, 503)},
    summary="The stems ZIP of a completed job",
)
async def download(job_id: str, services: ServicesDep, caller: CallerDep) -> Any:
    settings, store = services.settings, services.store
    record = await services.find(job_id, caller)
    finished(record)
    if settings.presigned_downloads:
        url = await run_in_threadpool(
            store.presigned_url,
            record.result_key,
            settings.presign_expiry,
            disposition(record, zip_download_name),
        )
        if url:
            return RedirectResponse(url, status_code=307)
    try:
        reader = await run_in_threadpool(store.open, record.result_key)
    except ObjectNotFoundError:
        raise ApiError(404, f"job {job_id}: its result is missing from storage") from None
    return StreamingResponse(
        iter(reader),
        media_type="application/zip",
        headers={
            "Content-Disposition": disposition(record, zip_download_name),
            "Content-Length": str(reader.size),
        },
    )


@router.get(
    "/download/{job_id}/{stem}",
    response_class=StreamingResponse,
    responses={200: STEM_BODY, **error_responses(401, 404, 409, 429, 502, 503)},
    summary="One stem of a completed job",
)
async def download_stem(job_id: str, stem: str, services: ServicesDep, caller: CallerDep) -> Any:
    store = services.store
    record = await services.find(job_id, caller)
    finished(record)
    if stem not in record.stems:
        raise ApiError(
            404,
            f"job {job_id} has no stem {stem!r}; its stems: {', '.join(record.stems)}",
        )
    info = await run_in_threadpool(store.stat, record.result_key)
    if info is None:
        raise ApiError(404, f"job {job_id}: its result is missing from storage")
    member = f"{stem}.{record.format}"
    try:
        size, chunks = await run_in_threadpool(
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
            "Content-Disposition": disposition(
                record, lambda song: stem_download_name(song, stem, record.format)
            ),
            "Content-Length": str(size),
        },
    )
