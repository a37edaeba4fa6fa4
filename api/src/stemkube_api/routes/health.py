"""Service name and version, liveness, readiness: open to all (they hold no data). The
Prometheus metrics have a port of their own (metrics.MetricsServer)."""

import anyio
from fastapi import APIRouter, Request

from stemkube_api import __version__
from stemkube_api.auth.dependency import Authenticator
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
async def readyz(request: Request, services: ServicesDep) -> Ready:
    backend, store = services.backend, services.store
    auth: Authenticator = request.app.state.auth
    checks: dict[str, str] = {}
    parts = [(backend.name, backend.check), ("storage", store.check)]
    if auth.mode == "required":
        # A replica takes traffic once it knows the keys (Kubernetes: the Secrets' first list).
        # Open until the first key (local mode on loopback), the store only decides whether
        # to ask for one: readiness is the jobs' and the files' as before.
        parts.append(("keys", auth.check))
    for name, check in parts:
        try:
            with anyio.fail_after(CHECK_TIMEOUT):
                await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
        except TimeoutError:
            raise ApiError(503, f"{name}: no answer within {CHECK_TIMEOUT:.0f}s") from None
        except UnavailableError as exc:
            raise ApiError(503, str(exc)) from None
        checks[name] = "ok"
    return Ready(status="ready", checks=checks)
