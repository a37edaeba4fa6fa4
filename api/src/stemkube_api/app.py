"""The REST API. It keeps no job state: jobs live in the job backend (SeparationJob resources in
Kubernetes mode), files in the object store. ``create_app`` puts the parts together: the
routers (``routes/``), the error handlers (``errors``), the metrics middleware, who may call
(``auth``), and the start and stop of the backend, the key store and the metrics port with
the app's lifespan."""

import contextlib
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from stemkube_api import __version__
from stemkube_api.auth.dependency import Authenticator
from stemkube_api.auth.store import KeyStore
from stemkube_api.errors import add_handlers
from stemkube_api.interfaces import JobBackend, ObjectStore
from stemkube_api.metrics import Metrics, MetricsMiddleware, MetricsServer
from stemkube_api.routes import (
    batches,
    downloads,
    events,
    health,
    jobs,
    models,
    sources,
    ui,
    uploads,
)
from stemkube_api.services import Services
from stemkube_api.settings import Settings
from stemkube_api.web import BoundedHead, SecurityHeaders, cors_middleware


def create_app(
    settings: Settings,
    backend: JobBackend,
    store: ObjectStore,
    keys: KeyStore | None = None,
    metrics_server: MetricsServer | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """``keys``: where API keys are kept (required unless ``settings.auth`` is off);
    ``metrics_server``: where Prometheus scrapes, a port of its own (none: not served)."""
    auth = Authenticator(settings.auth, keys, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(backend.start)
        try:
            await run_in_threadpool(auth.start)
            if metrics_server is not None:
                metrics_server.start(services.metrics.registry)
            yield
        finally:
            if metrics_server is not None:
                metrics_server.stop()
            await run_in_threadpool(auth.stop)
            await run_in_threadpool(backend.stop)

    app = FastAPI(
        title="stemkube",
        version=__version__,
        summary="Split songs into stems (vocals, drums, bass, other) with Demucs.",
        description=(
            "Upload a song to /upload, follow /status/{job_id}, download the stems ZIP from "
            "/download/{job_id}. Every route but /, /healthz and /readyz takes an API key "
            "(`Authorization: Bearer <key>` or `X-API-Key`) unless the deployment runs "
            "without keys. Errors are JSON objects with a `detail` string."
        ),
        lifespan=lifespan,
    )
    services = Services(settings, backend, store, Metrics())
    app.state.services = services
    app.state.auth = auth
    app.add_middleware(MetricsMiddleware, metrics=services.metrics)
    # Added last, so outermost: a CORS preflight and an error answer get the headers too.
    if settings.cors_origins:
        app.add_middleware(cors_middleware, origins=settings.cors_origins)
    app.add_middleware(BoundedHead)
    app.add_middleware(SecurityHeaders)  # outermost: the refusals above get the headers too
    add_handlers(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(jobs.router(settings))
    app.include_router(downloads.router)
    app.include_router(sources.router)  # POST /jobs: a job from a URL
    app.include_router(uploads.router())  # POST /uploads: direct uploads, and their sweep
    app.include_router(events.router())
    app.include_router(batches.router(settings))  # POST /batches: several songs at once
    batches.add_schemas(app)
    app.include_router(ui.router)  # the web page (/ui/): open, it holds no data
    return app
