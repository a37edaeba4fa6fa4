"""Service name and version, liveness, readiness, Prometheus metrics."""

import anyio
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stemkube_api import __version__
from stemkube_api.errors import ApiError, error_responses
from stemkube_api.interfaces import UnavailableError
from stemkube_api.models import Alive, Health, Ready
from stemkube_api.services import ServicesDep

CHECK_TIMEOUT = 5.0

router = APIRouter(tags=["health"])


@router.get("/", response_model=Health, summary="Service name and version")
async def root() -> Health:
    return Health(service="stemkube", version=__version__, status="ok")


@router.get("/healthz", response_model=Alive, summary="Liveness")
async def healthz() -> Alive:
    return Alive(status="alive")


@router.get(
    "/readyz",
    response_model=Ready,
    responses=error_responses(503),
    summary="Readiness: the job backend and the object store answer",
)
async def readyz(services: ServicesDep) -> Ready:
    backend, store = services.backend, services.store
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


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus")
async def metrics_endpoint(services: ServicesDep) -> PlainTextResponse:
    return PlainTextResponse(
        generate_latest(services.metrics.registry).decode(), media_type=CONTENT_TYPE_LATEST
    )
