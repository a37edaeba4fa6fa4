"""The API's view of a namespace's objects (the SeparationJobs; the API keys' Secrets), every one
kept current by list + watch.

A background thread lists the namespace's SeparationJobs once, then follows a watch from that
list's resourceVersion, and lists again when the watch says the version is too old (410 Gone)
or the connection fails.
"""

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from stemkube_contract.resource import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)
WATCH_SECONDS = 240  # the server ends each watch after this; we start the next one
REQUEST_TIMEOUT = (5, 30)  # connect, read (seconds)


def explain(exc: Exception) -> str:
    """A Kubernetes client error in a few words: the status and the API server's message."""
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message")
        except (ValueError, AttributeError):
            message = None
        return f"{exc.status} {message or exc.reason}"
    return str(exc)


def _rv(cr: dict[str, Any]) -> int:
    try:
        return int((cr.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


# (**list or watch arguments) -> the list as a dict, or the watch's streaming response
Lister = Callable[..., Any]


class WatchCache:
    """Every object of one kind in one namespace (default: the SeparationJobs), kept current by
    list + watch. ``lister`` lists them: a Kubernetes client list call with its fixed
    arguments bound (the namespace, a label selector), answering a dict when not watching."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        lister: Lister | None = None,
        what: str = "separationjob",
    ) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._namespace = namespace
        self._lister = lister
        self.what = what
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"{what}-watch", daemon=True)
        self.last_error: str | None = None

    def _list_call(self, **kwargs: Any) -> Any:
        if self._lister is not None:
            return self._lister(**kwargs)
        return self._objects.list_namespaced_custom_object(
            GROUP, VERSION, self._namespace, PLURAL, **kwargs
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            # Closing the response would wait for the reading thread's buffer lock; shutting
            # the socket down wakes that thread's blocked read instead.
            sock = getattr(getattr(response, "connection", None), "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2)

    def wait_synced(self, timeout: float) -> bool:
        return self.synced.wait(timeout)

    # Reading ---------------------------------------------------------------------------------

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(name)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    # Writing (from the watch, and from our own create/read) ----------------------------------

    def put(self, cr: dict[str, Any]) -> None:
        """Keeps the newer of what we hold and ``cr``: a direct read may race the watch."""
        name = cr["metadata"]["name"]
        with self._lock:
            held = self._items.get(name)
            if (
                held is None
                or _rv(cr) >= _rv(held)
                or held["metadata"].get("uid") != cr["metadata"].get("uid")
            ):
                self._items[name] = cr

    def mark_deleted(self, name: str) -> None:
        """Hides a job we just deleted until the watch reports its deletion."""
        with self._lock:
            held = self._items.get(name)
            if held is not None:
                meta = {**held["metadata"], "deletionTimestamp": "deleting"}
                self._items[name] = {**held, "metadata": meta}

    def remove(self, name: str, uid: str | None = None) -> None:
        with self._lock:
            held = self._items.get(name)
            if held is not None and (uid is None or held["metadata"].get("uid") == uid):
                del self._items[name]

    # The loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                version: str | None = self._list()
                backoff = 0.5
                while version is not None and not self._stop.is_set():
                    version = self._watch(version)  # None after 410 Gone: list again
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.last_error = explain(exc)
                log.warning("%s watch failed (%s); relisting", self.what, self.last_error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _list(self) -> str:
        listed = self._list_call(_request_timeout=REQUEST_TIMEOUT)
        items = {item["metadata"]["name"]: item for item in listed.get("items", [])}
        with self._lock:
            self._items = items
        self.last_error = None
        self.synced.set()
        version: str = listed["metadata"]["resourceVersion"]
        return version

    def _lines(self, response: Any) -> Iterator[bytes]:
        pending = b""
        for chunk in response.stream(64 * 1024, decode_content=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            yield from (line for line in lines if line.strip())
        if pending.strip():
            yield pending

    def _watch(self, version: str) -> str | None:
        """Follows one watch; the version to continue from, or None to list again."""
        response = self._list_call(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _preload_content=False,
            _request_timeout=(REQUEST_TIMEOUT[0], WATCH_SECONDS + 30),
        )
        self._response = response
        try:
            for line in self._lines(response):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        log.info("%s watch expired (410); relisting", self.what)
                        return None
                    raise RuntimeError(f"watch error: {obj.get('message') or obj}")
                version = obj["metadata"]["resourceVersion"]
                if kind in ("ADDED", "MODIFIED"):
                    self.put(obj)
                elif kind == "DELETED":
                    self.remove(obj["metadata"]["name"], obj["metadata"].get("uid"))
        finally:
            self._response = None
            with contextlib.suppress(Exception):
                response.release_conn()
        return version
