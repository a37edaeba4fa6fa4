"""Settled SeparationJobs: finished, with no webhook left to deliver. The operator labels them
(SETTLED_LABEL) and Kopf's watch leaves them out (UNSETTLED_SELECTOR), so Kopf keeps no
memory per finished job and lists none at start: the operator's memory and start-up do not grow
with the history a cluster keeps (issue #18). Their deletions, which Kopf no longer sees, are
finished by a watch of their own here that keeps nothing of what it sees: the files go
(``remove``, the on-delete handler's work) and the finalizer with them.

A SeparationJob labelled while still in play (by hand) gets its label taken off again, so
that Kopf sees it."""

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from stemkube_operator import webhooks
from stemkube_operator.kube import Kube, NotLeadingError
from stemkube_operator.resource import (
    FINALIZER,
    GROUP,
    PLURAL,
    SETTLED,
    SETTLED_LABEL,
    SETTLED_SELECTOR,
    VERSION,
)
from stemkube_operator.status import TERMINAL

log = logging.getLogger(__name__)
PAGE = 500
WATCH_SECONDS = 300  # the server ends each watch after this; the next goes on from there
RETRY_SECONDS = 5.0  # after a failed list or watch, and between looks while not leading

Remove = Callable[[dict[str, Any]], None]


def settles(cr: dict[str, Any]) -> bool:
    """Finished, and no webhook left to deliver: nothing more to do for it but let it go."""
    status = cr.get("status") or {}
    return status.get("phase") in TERMINAL and not webhooks.pending(cr.get("spec"), status)


def labelled(cr: dict[str, Any]) -> bool:
    return ((cr.get("metadata") or {}).get("labels") or {}).get(SETTLED_LABEL) == SETTLED


def settle(kube: Kube, cr: dict[str, Any]) -> None:
    """Labels a SeparationJob that has settled, once (it then leaves Kopf's watch)."""
    meta = cr["metadata"]
    if settles(cr) and not labelled(cr) and not meta.get("deletionTimestamp"):
        kube.label_settled(cr)
        log.debug("%s/%s settled", meta["namespace"], meta["name"], extra={"job": meta["name"]})


def tend(kube: Kube, cr: dict[str, Any], remove: Remove) -> None:
    """What one labelled SeparationJob needs: back to Kopf if it has not settled; if it is
    being deleted, its files removed and the finalizer taken off."""
    meta = cr["metadata"]
    if not settles(cr):
        kube.label_settled(cr, settled=False)
        log.info(
            "%s/%s was labelled %s while still in play: the label is taken off",
            meta["namespace"],
            meta["name"],
            SETTLED_LABEL,
            extra={"job": meta["name"]},
        )
        return
    if meta.get("deletionTimestamp") and FINALIZER in (meta.get("finalizers") or []):
        remove(cr)
        kube.release(cr, FINALIZER)
        log.info("%s/%s deleted; its files are gone", meta["namespace"], meta["name"],
                 extra={"job": meta["name"]})  # fmt: skip


def _tend_logged(kube: Kube, cr: dict[str, Any], remove: Remove) -> None:
    meta = cr.get("metadata") or {}
    try:
        tend(kube, cr, remove)
    except NotLeadingError:
        pass
    except Exception:
        # The expiry sweep looks at it again (it lists every SeparationJob), as does the next
        # event or list here.
        log.exception(
            "settled %s/%s: not done; again later",
            meta.get("namespace"),
            meta.get("name"),
            extra={"job": meta.get("name")},
        )


class Watcher:
    """The settled SeparationJobs of one namespace (None: every namespace): listed, then
    watched from there, while this replica leads."""

    def __init__(self, kube: Kube, namespace: str | None, remove: Remove) -> None:
        self.kube, self.namespace, self.remove = kube, namespace, remove
        self._objects = client.CustomObjectsApi(kube.api)

    def _call(self, **kwargs: Any) -> Any:
        if self.namespace is None:
            return self._objects.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
        return self._objects.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, **kwargs
        )

    def list(self, acting: Callable[[], bool]) -> str | None:
        """Tends every settled SeparationJob, a page at a time; the list's resourceVersion
        (None: this replica stopped leading on the way)."""
        token = None
        while True:
            page = self._call(label_selector=SETTLED_SELECTOR, limit=PAGE, _continue=token)
            if not acting():
                return None
            for cr in page.get("items", []):
                _tend_logged(self.kube, cr, self.remove)
            token = page.get("metadata", {}).get("continue")
            if not token:
                return str(page["metadata"]["resourceVersion"])

    def events(self, version: str, acting: Callable[[], bool]) -> Iterator[str]:
        """Tends what changes from ``version`` on; yields each resourceVersion seen. Ends when
        the server ends the watch or this replica stops leading."""
        stream = watch.Watch().stream(
            self._call,
            label_selector=SETTLED_SELECTOR,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=(10, WATCH_SECONDS + 30),
        )
        for event in stream:
            if not acting():  # its files are the leader's to remove
                return
            cr = event["object"]
            if event["type"] in ("ADDED", "MODIFIED"):
                _tend_logged(self.kube, cr, self.remove)
            yield str(cr["metadata"]["resourceVersion"])

    def run(self, stop: threading.Event, acting: Callable[[], bool]) -> None:
        version: str | None = None
        while not stop.is_set():
            if not acting():
                version = None  # a new leader's first look is a whole list
                stop.wait(RETRY_SECONDS)
                continue
            try:
                if version is None:
                    version = self.list(acting)
                    if version is None:
                        continue
                for seen in self.events(version, acting):
                    version = seen
                    if stop.is_set():
                        return
            except ApiException as exc:
                if exc.status == 410:  # the version is too old to watch from: list again
                    version = None
                    continue
                log.warning("watch of settled SeparationJobs failed (%s); again shortly", exc)
                version = None
                stop.wait(RETRY_SECONDS)
            except Exception:
                log.exception("watch of settled SeparationJobs failed; again shortly")
                version = None
                stop.wait(RETRY_SECONDS)


def start(
    kube: Kube,
    namespaces: tuple[str, ...],
    remove: Remove,
    stop: threading.Event,
    acting: Callable[[], bool] = lambda: True,
) -> list[threading.Thread]:
    """A watcher per namespace (one for all when ``namespaces`` is empty), each a thread."""
    threads = []
    for namespace in namespaces or (None,):
        watcher = Watcher(kube, namespace, remove)
        thread = threading.Thread(
            target=watcher.run, args=(stop, acting), name=f"settled-{namespace or 'all'}",
            daemon=True,
        )  # fmt: skip
        thread.start()
        threads.append(thread)
    return threads
