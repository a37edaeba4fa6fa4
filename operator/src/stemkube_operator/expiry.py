"""Deletes finished SeparationJobs past their time to live.

One loop for the whole operator, listing every so often, rather than a Kopf timer per
resource: finished jobs pile up (thousands), and a timer each costs memory and wake-ups.
"""

import datetime
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client

from stemkube_contract.timefmt import parse_time
from stemkube_operator import settled
from stemkube_operator.reconcile import Runtime, expire, remove_objects
from stemkube_operator.resource import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)
PAGE = 500


def _separation_jobs(
    api: client.ApiClient, namespaces: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    objects = client.CustomObjectsApi(api)
    for namespace in namespaces or (None,):
        token = None
        while True:
            if namespace is None:
                page = objects.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, limit=PAGE, _continue=token
                )
            else:
                page = objects.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, limit=PAGE, _continue=token
                )
            yield from page.get("items", [])
            token = page.get("metadata", {}).get("continue")
            if not token:
                break


def sweep(rt: Runtime, namespaces: tuple[str, ...]) -> int:
    """Deletes what is past its TTL, and recounts the phases gauge from the same listing."""
    now = datetime.datetime.now(datetime.UTC)
    deleted = 0
    seen: list[tuple[str, str, datetime.datetime | None]] = []
    for cr in _separation_jobs(rt.kube.api, namespaces):
        meta = cr["metadata"]
        if settled.labelled(cr) and meta.get("deletionTimestamp"):
            # What the settled watch missed (it failed, or was between watches).
            settled.tend(rt.kube, cr, lambda cr: remove_objects(rt, cr))
            continue
        if expire(rt, cr, now):
            deleted += 1
            log.info(
                "deleted %s/%s: past its TTL",
                meta["namespace"],
                meta["name"],
                extra={"job": meta["name"]},
            )
            continue
        phase = (cr.get("status") or {}).get("phase")
        if phase and not meta.get("deletionTimestamp"):
            seen.append((meta["uid"], phase, parse_time(meta.get("creationTimestamp"))))
    rt.phases.recount(seen)
    return deleted


def start(
    rt: Runtime,
    namespaces: tuple[str, ...],
    stop: threading.Event,
    acting: Callable[[], bool] = lambda: True,
) -> threading.Thread:
    """The sweep every ``expiry_interval_seconds`` while ``acting`` (this replica leads)."""

    def loop() -> None:
        while not stop.wait(rt.config.expiry_interval_seconds):
            if not acting():
                continue
            try:
                sweep(rt, namespaces)
            except Exception:
                log.exception("expiry sweep failed; retrying at the next interval")

    thread = threading.Thread(target=loop, name="expiry", daemon=True)
    thread.start()
    return thread
