"""``stemkube-operator``: the operator's process. Leader election first, then Kopf."""

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import kopf
from kubernetes import client, config

from stemkube_operator import (
    expiry,
    handlers,  # noqa: F401 - registers the Kopf handlers
    metrics,
)
from stemkube_operator.config import ConfigError, load_config
from stemkube_operator.health import serve
from stemkube_operator.kube import Kube
from stemkube_operator.leader import LeaderElector
from stemkube_operator.reconcile import Runtime
from stemkube_operator.storage import Storage

log = logging.getLogger("stemkube_operator")


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


def _api_client() -> client.ApiClient:
    if os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config")):
        return config.new_client_from_config()
    config.load_incluster_config()
    return client.ApiClient()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    try:
        settings = load_config()
    except ConfigError as exc:
        print(f"stemkube-operator: {exc}", file=sys.stderr)
        return 2
    namespaces = tuple(args.namespace or settings.namespaces)
    api = _api_client()
    runtime = Runtime(settings, Kube(api), Storage.from_env())

    stop = threading.Event()
    ready = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    elector = LeaderElector(api, args.lease_namespace, args.lease_name, args.identity)
    serve(
        args.port, lambda: ready.is_set() and (not args.leader_election or elector.leading.is_set())
    )
    if args.leader_election:
        elector.start()
        log.info("waiting for the lease %s/%s", args.lease_namespace, args.lease_name)
        if not elector.wait_to_lead(stop):
            return 0

        def stop_when_lost() -> None:
            elector.lost.wait()
            stop.set()

        threading.Thread(target=stop_when_lost, name="leadership", daemon=True).start()

    else:
        metrics.LEADING.set(1)  # no election: this one replica acts
    expiry.start(runtime, namespaces, stop)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,  # one active replica by our Lease: no Kopf peering
        stop_flag=stop,
        ready_flag=ready,
        memo=kopf.Memo(runtime=runtime),
    )
    if args.leader_election:
        elector.stop()
    return 1 if elector.lost.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
