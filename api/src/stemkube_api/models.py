"""The REST API's request and response bodies, as OpenAPI shows them."""

import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from stemkube_api.jobs import JobRecord
from stemkube_contract import webhooks
from stemkube_contract.models import Catalog

Status = Literal["pending", "processing", "completed", "failed"]


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong, for people; names the field at fault.")


class Health(BaseModel):
    service: str = Field(examples=["stemkube"])
    version: str
    status: Literal["ok"]
    ui: str = Field(default="/ui/", description="The web page for people.")


class Ready(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str] = Field(description="Each dependency and its state.")


class Alive(BaseModel):
    status: Literal["alive"]


class UploadResponse(BaseModel):
    job_id: str = Field(description="The job's id: use it with /status, /download and /job.")
    status: Status = Field(description="Always pending: the separation starts in the background.")
    filename: str = Field(description="The uploaded file's name (metadata only).")
    created_at: datetime.datetime


class WebhookStatus(BaseModel):
    url: str = Field(description="Where the outcome is POSTed, without its query.")
    state: Literal["Pending", "Delivered", "Failed", "Refused"] = Field(
        description="Pending (not yet delivered: more attempts come), Delivered (a 2xx "
        "answer), Failed (none within 24 hours), Refused (the address check refused it: "
        "never contacted)."
    )
    attempts: int = Field(0, description="POSTs sent so far.")
    last_status: int | None = Field(None, description="HTTP status of the last answer.")
    last_error: str | None = Field(None, description="Why the last attempt failed.")
    delivered_at: datetime.datetime | None = None
    next_attempt_at: datetime.datetime | None = None
    event_id: str | None = Field(None, description="The Stemkube-Event-Id of its POSTs.")

    @classmethod
    def of(cls, url: str, delivery: webhooks.Delivery | None) -> "WebhookStatus":
        d = delivery or webhooks.Delivery()
        return cls(
            url=webhooks.shown(url),
            state=d.state,  # type: ignore[arg-type]
            attempts=d.attempts,
            last_status=d.last_status,
            last_error=d.last_error,
            delivered_at=d.delivered_at,
            next_attempt_at=d.next_attempt_at,
            event_id=d.event_id,
        )


class JobStatus(BaseModel):
    job_id: str
    status: Status
    filename: str
    created_at: datetime.datetime
    progress: int = Field(ge=0, le=100, description="Percent done.")
    started_at: datetime.datetime | None = None
    completed_at: datetime.datetime | None = None
    duration: str | None = Field(None, description="From start to completion, e.g. 1m23s.")
    error: str | None = Field(None, description="Why the job failed (failed jobs only).")
    reason: str | None = Field(None, description="Why the job is in its status, in CamelCase.")
    message: str | None = Field(None, description="The reason in words.")
    model: str
    format: Literal["mp3", "wav", "flac"]
    bitrate: int | None = Field(None, description="MP3 kbit/s (mp3 only).")
    stems: list[str] = Field(description="The stems the ZIP holds (or will hold).")
    two_stems: str | None = None
    options: dict[str, Any] = Field(
        description="Every separation option of the job, defaults filled in (GET /models and "
        "the upload's schema list them)."
    )
    size: int | None = Field(None, description="Bytes of the result ZIP, once completed.")
    download_url: str | None = Field(None, description="Where to get the ZIP, once completed.")
    tenant: str | None = Field(
        None,
        description="The tenant the job belongs to, shown to admin keys only (null for other "
        "keys, and for jobs of no tenant).",
    )
    webhook: WebhookStatus | None = Field(
        None, description="The job's webhook and how its delivery stands (null: none)."
    )

    @classmethod
    def of(cls, record: JobRecord, show_tenant: bool = False) -> "JobStatus":
        done = record.status == "completed"
        return cls(
            job_id=record.job_id,
            status=record.status,  # type: ignore[arg-type]
            filename=record.filename,
            created_at=record.created_at,
            progress=max(0, min(100, record.progress)),
            started_at=record.started_at,
            completed_at=record.completed_at,
            duration=record.duration,
            error=record.error,
            reason=record.reason,
            message=record.message,
            model=record.model,
            format=record.format,  # type: ignore[arg-type]
            bitrate=record.bitrate,
            stems=record.stems,
            two_stems=record.two_stems,
            options={k: list(v) if isinstance(v, tuple) else v for k, v in record.options.items()},
            size=record.result_size if done else None,
            download_url=f"/download/{record.job_id}" if done else None,
            tenant=record.tenant if show_tenant else None,
            webhook=WebhookStatus.of(record.webhook_url, record.webhook)
            if record.webhook_url
            else None,
        )


class JobList(BaseModel):
    jobs: list[JobStatus] = Field(description="Newest first.")
    count: int = Field(description="Jobs on this page.")
    next_cursor: str | None = Field(
        None, description="Pass as ?cursor= for the next page; null on the last page."
    )


class Deleted(BaseModel):
    job_id: str
    deleted: Literal[True]
    message: str


class ModelInfo(BaseModel):
    name: str = Field(examples=["htdemucs"])
    stems: list[str] = Field(description="The stems it gives (its sources).")
    default: bool = Field(description="Used when an upload names no model.")
    description: str = ""


class ModelList(BaseModel):
    default: str = Field(description="The model of uploads that name none.")
    models: list[ModelInfo]

    @classmethod
    def of(cls, catalog: Catalog) -> "ModelList":
        return cls(
            default=catalog.default,
            models=[
                ModelInfo(
                    name=m.name,
                    stems=list(m.sources),
                    default=m.name == catalog.default,
                    description=m.description,
                )
                for m in catalog.models
            ],
        )
