"""Prometheus metrics of one API instance (its own registry, so several apps can share a
process, as tests do), served on a port of their own (``MetricsServer``): the API's port is
the one an ingress routes, and the metrics are nobody's business outside the cluster."""

import threading
import time
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # memory, CPU, open files of this process
        PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "stemkube_api_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "stemkube_api_request_duration_seconds",
            "Time to answer an HTTP request (to the end of its body), by route template.",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "stemkube_api_upload_bytes",
            "Bytes of songs received and stored.",
            registry=self.registry,
        )
        self.uploads_rejected = Counter(
            "stemkube_api_uploads_rejected",
            "Uploads refused, by reason (too_large, not_audio, invalid, incomplete, quota).",
            ["reason"],
            registry=self.registry,
        )
        self.jobs_created = Counter(
            "stemkube_api_jobs_created",
            "Separation jobs created.",
            registry=self.registry,
        )


class MetricsMiddleware:
    """Counts and times every request by its route template (``/status/{job_id}``), never by
    the raw path, so job ids do not become label values."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(template, method, str(status["code"])).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - started)


@dataclass
class MetricsServer:
    """The metrics' own HTTP server (any path answers them, ``/metrics`` included), in a
    thread of the API's process, started and stopped with the app."""

    host: str
    port: int
    _running: tuple[WSGIServer, threading.Thread] | None = field(default=None, init=False)

    def start(self, registry: CollectorRegistry) -> None:
        try:
            self._running = start_http_server(self.port, self.host, registry=registry)
        except OSError as exc:
            raise RuntimeError(f"--metrics-port {self.port}: cannot listen: {exc}") from exc

    @property
    def bound_port(self) -> int:
        """The port listened on (``port`` 0 picks a free one)."""
        assert self._running is not None
        return int(self._running[0].server_address[1])

    def stop(self) -> None:
        if self._running is not None:
            server, thread = self._running
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._running = None
