"""``stemkube-operator``: the operator's process. Leader election first, then Kopf."""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import kopf
from kubernetes import client, config

from stemkube_operator import (
    expiry,
    handlers,  # also registers the Kopf handlers
    metrics,
    resync,
    settled,
    workqueue,
)
from stemkube_operator.config import ConfigError, load_config, resolve_link_url
from stemkube_operator.events import EventQueue
from stemkube_operator.health import serve
from stemkube_operator.kube import Kube, LinkKube, TimedApiClient
from stemkube_operator.leader import LeaderElector
from stemkube_operator.link import Link, serve_link
from stemkube_operator.reconcile import Runtime, remove_objects
from stemkube_operator.storage import Storage

log = logging.getLogger("stemkube_operator")
POLL_SECONDS = 0.2
# How long Kopf may take to stop on its own before what is left of it is cancelled.
KOPF_STOP_SECONDS = 1.0
# Kopf's requests to the API server at once, beside its watch streams (``kube_connections``).
REQUEST_CONNECTIONS = 16
# How long the exit waits for handlers still in a call (see _exit_when_idle).
WORKERS_EXIT_SECONDS = 3.0
# SeparationJobs synced at once: each sync is a few API calls, mostly waiting for the answers.
SYNC_WORKERS = 8
API_CONNECTIONS = 32


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stemkube-operator",
        description="Turns each SeparationJob into one Kubernetes Job and reports its status.",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=None,
        help="watch only this namespace (repeatable; default: STEMKUBE_NAMESPACES, else all)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("STEMKUBE_HEALTH_PORT", "8080")),
        help="port of /healthz, /readyz and /metrics (default 8080)",
    )
    parser.add_argument(
        "--link-port",
        type=int,
        default=None,
        help="port of the job link, the separator pods' server "
        "(default STEMKUBE_LINK_PORT, else 8082)",
    )
    parser.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="elect one active replica through a Lease (default on)",
    )
    parser.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"))
    parser.add_argument("--lease-name", default="stemkube-operator")
    parser.add_argument(
        "--identity", default=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    )
    parser.add_argument("--log-format", choices=["json", "plain"], default="json")
    parser.add_argument("--verbose", action="store_true")
    return parser


def _service_reader(api: client.ApiClient) -> Callable[[str, str], dict[str, Any] | None]:
    def read(namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = client.CoreV1Api(api).read_namespaced_service(
                name, namespace, _preload_content=False
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise ConfigError(
                f"cannot read the link Service {namespace}/{name}: {exc.status} {exc.reason}"
            ) from None
        service: dict[str, Any] = json.loads(response.data)
        return service

    return read


class _QuietQueueing(logging.Filter):
    """Drops Kopf's line for each run of an event handler of ours ("Handler 'on_pod'
    succeeded."): they only queue a sync, and under a burst they were most of the log."""

    HANDLERS = ("on_separation_job", "on_job", "on_pod")  # handlers.py's event handlers
    QUIET = frozenset(f"Handler {name!r} succeeded." for name in HANDLERS)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.QUIET


def _api_client() -> client.ApiClient:
    configuration = client.Configuration()
    if os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config")):
        config.load_kube_config(client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    # A connection for every thread that calls at once (the sync workers, the resync's, the
    # job link's, expiry, the settled watch, the leader election): with the library's default
    # (5 per core) a burst discarded and reopened connections, a TLS handshake each.
    configuration.connection_pool_maxsize = API_CONNECTIONS
    return TimedApiClient(configuration)


class _Supervisor:
    """The process's life: wait for the Lease, run Kopf while leading, stand by again when the
    Lease is not renewed in time (an API-server outage), stop on SIGTERM or SIGINT."""

    def __init__(self, namespaces: tuple[str, ...], elector: LeaderElector | None) -> None:
        self.namespaces, self.elector = namespaces, elector
        self.halt = threading.Event()  # a signal came: the process stops
        self.ready = threading.Event()  # Kopf runs and has started (its ready flag)
        self._stopping = asyncio.Event()

    def acting(self) -> bool:
        """Whether this replica may act: it leads and is not stopping. Every write of ours
        asks (Kube, the handlers, expiry), so that the writes end the moment leadership or the
        process does, not when Kopf's queued handlers have wound down."""
        return not self.halt.is_set() and (self.elector is None or self.elector.leads())

    def _on_signal(self) -> None:
        if not self.halt.is_set():
            log.info("stopping: signal received")
        self.halt.set()
        self._stopping.set()

    def _take_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal)

    async def _until(self, condition: Callable[[], bool]) -> bool:
        """Waits for ``condition`` (polled: the Lease is renewed on another thread); False when
        the process is stopping first."""
        while not condition():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), POLL_SECONDS)
            if self._stopping.is_set():
                return False
        return True

    async def run(self, runtime: Runtime) -> None:
        self._take_signals()
        while not self.halt.is_set():
            if self.elector is not None:
                log.info("waiting for the lease %s/%s", self.elector.namespace, self.elector.name)
                if not await self._until(self.acting):
                    return
            await self._term(runtime)
            if not self.halt.is_set():
                log.warning("stopped acting: the lease was not renewed in time; waiting for it")

    async def _term(self, runtime: Runtime) -> None:
        """One term of Kopf's processing, until the process stops or this replica stops
        leading. Kopf starts afresh for each term: its watches, timers and indexes begin again,
        and its resume handlers sync every unfinished SeparationJob."""
        # An asyncio flag, not a threading.Event: Kopf waits for a threading.Event in a thread
        # of the loop's default executor, which asyncio.run joins at exit, forever if the flag
        # is never raised (what kept the operator alive after SIGTERM).
        kopf_stop = asyncio.Event()
        # What runs before Kopf is not Kopf's to cancel when it stops (this task).
        ours = asyncio.all_tasks()
        settings = kopf.OperatorSettings()
        try:
            tasks = await kopf.spawn_tasks(
                clusterwide=not self.namespaces,
                namespaces=self.namespaces,
                standalone=True,  # one active replica by our Lease: no Kopf peering
                settings=settings,
                stop_flag=kopf_stop,
                ready_flag=self.ready,
                memo=kopf.Memo(
                    runtime=runtime,
                    acting=self.acting,
                    connections=kube_connections(self.namespaces),
                ),
            )
            # Kopf has just taken SIGTERM and SIGINT for a flag of its own, which would stop
            # this term but not the process: take them back (no await between: none is lost).
            self._take_signals()
            kopf_run = asyncio.create_task(kopf.run_tasks(tasks, ignored=ours), name="kopf")
            while not kopf_run.done() and self.acting():
                await asyncio.wait({kopf_run}, timeout=POLL_SECONDS)
            if kopf_run.done():
                kopf_run.result()  # Kopf ended on its own: its failure is the process's
                return
            kopf_stop.set()
            if not (await asyncio.wait({kopf_run}, timeout=KOPF_STOP_SECONDS))[0]:
                # Kopf waits 5 s more for any timer whose handler is still queued or running
                # in its thread pool, which no cancellation reaches. Such a handler has nothing
                # left to do (acting() is False: every write of ours refuses), so cut the wait
                # short: cancelled, Kopf cancels what is left at once.
                kopf_run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await kopf_run
        finally:
            self.ready.clear()
            # Handlers still queued are dropped; one in a call ends by its request timeout.
            settings.execution.executor.shutdown(wait=False, cancel_futures=True)


def kube_connections(namespaces: tuple[str, ...]) -> int:
    """Kopf's connections to the API server at most: a watch stream each for SeparationJobs,
    Jobs and pods per namespace watched (one set cluster-wide) and for its discovery, plus
    REQUEST_CONNECTIONS for everything else."""
    return REQUEST_CONNECTIONS + 4 * max(1, len(namespaces))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("kopf.objects").addFilter(_QuietQueueing())
    try:
        settings = load_config()
    except ConfigError as exc:
        print(f"stemkube-operator: {exc}", file=sys.stderr)
        return 2
    namespaces = tuple(args.namespace or settings.namespaces)
    api = _api_client()
    try:
        settings = resolve_link_url(settings, _service_reader(api))
    except ConfigError as exc:
        print(f"stemkube-operator: {exc}", file=sys.stderr)
        return 2
    elector = (
        LeaderElector(api, args.lease_namespace, args.lease_name, args.identity)
        if args.leader_election
        else None
    )
    supervisor = _Supervisor(namespaces, elector)
    acting = supervisor.acting
    storage = Storage.from_env()
    runtime = Runtime(settings, Kube(api, acting), storage)
    runtime.events = EventQueue(runtime.kube.post_event).start()
    metrics.LEADING.set_function(lambda: 1.0 if acting() else 0.0)
    serve(args.port, lambda: supervisor.ready.is_set() and acting())
    # Every replica serves the link, standby too: the pods' calls need no leadership.
    link_port = settings.link_port if args.link_port is None else args.link_port
    serve_link(link_port, "0.0.0.0", Link(LinkKube(api), storage, settings.service_account))
    log.info("the job link listens on port %d; pods reach it at %s", link_port, settings.link_url)
    expiry.start(runtime, namespaces, supervisor.halt, acting)
    settled.start(
        runtime.kube, namespaces, lambda cr: remove_objects(runtime, cr), supervisor.halt, acting
    )
    workqueue.start_workers(
        runtime.queue,
        lambda namespace, name: handlers.sync(runtime, acting, namespace, name),
        SYNC_WORKERS,
    )
    loop = resync.Resync(
        lambda: runtime.view(),
        lambda namespace, name: runtime.queue.add((namespace, name), workqueue.ROUTINE),
        lambda namespace, name: handlers.deliver(runtime, acting, namespace, name),
    )
    resync.start(loop, supervisor.halt, acting)
    if elector is not None:
        elector.start()
    try:
        asyncio.run(supervisor.run(runtime))
    finally:
        supervisor.halt.set()
        runtime.queue.close()
        if elector is not None:
            elector.stop()  # gives the Lease up: a standby leads at its next retry
    return _exit_when_idle(0, WORKERS_EXIT_SECONDS)


def _exit_when_idle(code: int, seconds: float) -> int:
    """``code``, once the threads the interpreter would wait for at exit (Kopf's handler
    workers) are done, or at once after ``seconds``. A handler still in a call cannot write
    any more (acting() is False), but its call may take its full request timeout, retries
    included, against a server that does not answer: longer than the pod's grace period."""
    deadline = time.monotonic() + seconds
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    busy = [
        t.name
        for t in threading.enumerate()
        if t.is_alive() and not t.daemon and t is not threading.current_thread()
    ]
    if busy:
        log.warning("stopped; not waiting for %s, still in a call", ", ".join(busy))
        logging.shutdown()
        os._exit(code)
    log.info("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
