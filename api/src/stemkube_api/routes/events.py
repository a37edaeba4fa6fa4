"""Live progress: ``GET /jobs/{job_id}/events``, a job's status as Server-Sent Events until it
ends.

The stream polls the job backend's ``get`` every ``poll`` seconds (Kubernetes mode reads the
watch cache, local mode one SQLite row: cheap) and sends an ``event: status`` only when what
``GET /status/{job_id}`` would answer has changed; its data is that very JSON. It ends after
the event of a terminal status (``completed``, ``failed``), with an ``event: deleted`` when the
job goes away, and with an ``event: reconnect`` when it has run ``lifetime`` seconds (the
client opens a new one, which starts with the job's current status). A ``: ping`` comment
goes out after ``ping`` seconds without an event, so that proxies keep the connection open.

Bounded per replica: at most ``max_streams`` at once (a 429 past that, with Retry-After);
the caller's rate limit counts a stream as one request. The pure parts (``format_event``,
``StreamLimits``, ``StreamSlots``) are unit-tested on their own.
"""

import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from stemkube_api.auth.caller import Caller
from stemkube_api.auth.dependency import CallerDep, current_caller
from stemkube_api.errors import ApiError, error_responses
from stemkube_api.interfaces import UnavailableError
from stemkube_api.jobs import COMPLETED, FAILED, JobRecord
from stemkube_api.models import JobStatus
from stemkube_api.services import ServicesDep

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/event-stream"
POLL_SECONDS = 0.5
PING_SECONDS = 15.0
LIFETIME_SECONDS = 3600.0
MAX_STREAMS = 200
# Environment variables that override the bounds (the chart or a local run may set them).
MAX_STREAMS_ENV = "STEMKUBE_EVENT_STREAMS_MAX"
LIFETIME_ENV = "STEMKUBE_EVENT_STREAM_SECONDS"
RETRY_MS = 3000  # what a browser's EventSource waits before reconnecting
TERMINAL = (COMPLETED, FAILED)
# One event of the stream (OpenAPI 3.1 has no itemSchema: a text/event-stream's schema is, by
# the usual reading (Schemathesis's too), the schema of each event).
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["status", "deleted", "reconnect"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "status: the JSON of GET /status/{job_id}; deleted and reconnect: "
            '{"job_id": ..., "detail": ...}',
        },
        "id": {"type": "string", "description": "The event's number in this stream."},
        "retry": {"type": "integer"},
    },
}

EXAMPLE = (
    "retry: 3000\n\n"
    'id: 1\nevent: status\ndata: {"job_id": "3f2c...", "status": "pending", "progress": 0, ...}\n\n'
    'id: 2\nevent: status\ndata: {"job_id": "3f2c...", "status": "processing", '
    '"progress": 40, ...}\n\n'
    ": ping\n\n"
    'id: 3\nevent: status\ndata: {"job_id": "3f2c...", "status": "completed", '
    '"progress": 100, ...}\n\n'
)


@dataclass(frozen=True)
class StreamLimits:
    poll: float = POLL_SECONDS
    ping: float = PING_SECONDS
    lifetime: float = LIFETIME_SECONDS
    max_streams: int = MAX_STREAMS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "StreamLimits":
        """The defaults, ``max_streams`` and ``lifetime`` overridden by the environment."""
        env = os.environ if env is None else env
        streams = env.get(MAX_STREAMS_ENV, "").strip()
        lifetime = env.get(LIFETIME_ENV, "").strip()
        try:
            return cls(
                poll=POLL_SECONDS,
                ping=PING_SECONDS,
                max_streams=int(streams) if streams else MAX_STREAMS,
                lifetime=float(lifetime) if lifetime else LIFETIME_SECONDS,
            )
        except ValueError:
            raise ValueError(
                f"{MAX_STREAMS_ENV} is a whole number and {LIFETIME_ENV} seconds"
            ) from None


class StreamSlots:
    """How many streams this replica holds, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.held >= self.limit:
                return False
            self.held += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.held = max(0, self.held - 1)


def format_event(data: str, event: str | None = None, event_id: str | None = None) -> bytes:
    """One Server-Sent Event; ``data`` of one line (JSON is)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return ("\n".join(lines) + "\n\n").encode()


PING = b": ping\n\n"


class EventStream(StreamingResponse):
    """A streaming response that gives its slot back however it ends: done, the client gone
    (Starlette cancels the body's generator), or an error."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type=MEDIA_TYPE,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def status_json(record: JobRecord, caller: Caller) -> str:
    """What GET /status answers for the job, as JSON."""
    return JobStatus.of(record, show_tenant=caller.admin).model_dump_json()


async def job_events(
    first: JobRecord,
    get: Callable[[str], JobRecord | None],
    caller: Caller,
    limits: StreamLimits,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[bytes]:
    """The stream's bytes: ``first`` (the job as found), then each change ``get`` tells."""
    job_id = first.job_id
    started = clock()
    sent = 0
    last_sent_at = started
    told: str | None = None
    record: JobRecord | None = first
    yield f"retry: {RETRY_MS}\n\n".encode()
    while True:
        if record is None or not caller.sees(record.tenant):
            sent += 1
            detail = {"job_id": job_id, "deleted": True, "detail": f"job {job_id} was deleted"}
            yield format_event(json.dumps(detail), "deleted", str(sent))
            return
        now = clock()
        data = status_json(record, caller)
        if data != told:
            sent += 1
            told, last_sent_at = data, now
            yield format_event(data, "status", str(sent))
        elif now - last_sent_at >= limits.ping:
            last_sent_at = now
            yield PING
        if record.status in TERMINAL:
            return
        if now - started >= limits.lifetime:
            sent += 1
            detail = {
                "job_id": job_id,
                "detail": f"this stream's lifetime ({limits.lifetime:g} s) is over; "
                "reconnect for more",
            }
            yield format_event(json.dumps(detail), "reconnect", str(sent))
            return
        await anyio.sleep(limits.poll)
        try:
            record = await run_in_threadpool(get, job_id)
        except UnavailableError as exc:
            # A backend hiccup: the last known state stands; the next poll tries again.
            log.warning("events of job %s: %s", job_id, exc)


def router(limits: StreamLimits | None = None) -> APIRouter:
    limits = limits or StreamLimits.from_env()
    slots = StreamSlots(limits.max_streams)
    routes = APIRouter(tags=["jobs"], dependencies=[Depends(current_caller)])
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": (
                "Server-Sent Events: `event: status` with GET /status/{job_id}'s JSON as "
                "`data` at the start and on each change; `event: deleted` when the job goes "
                "away; `event: reconnect` after the stream's lifetime (default 1 hour); "
                "`: ping` comments every 15 s without events. The stream closes after a "
                "terminal status (completed, failed)."
            ),
            "content": {MEDIA_TYPE: {"schema": EVENT_SCHEMA, "example": EXAMPLE}},
        },
        **error_responses(401, 404, 429, 503),
    }

    async def events(job_id: str, services: ServicesDep, caller: CallerDep) -> EventStream:
        first = await services.find(job_id, caller)  # another tenant's job: 404 before any byte
        if not slots.take():
            log.info("refused the events of job %s: %d streams open", job_id, slots.held)
            raise ApiError(
                429,
                f"this replica follows {slots.limit} event streams already; poll "
                f"/status/{job_id} or retry later",
                headers={"Retry-After": "5"},
            )
        return EventStream(job_events(first, services.backend.get, caller, limits), slots.give)

    routes.add_api_route(
        "/jobs/{job_id}/events",
        events,
        methods=["GET"],
        response_class=StreamingResponse,
        responses=responses,
        summary="A job's status and progress as Server-Sent Events, until it ends",
    )
    return routes
