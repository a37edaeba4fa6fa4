"""The job backend on Kubernetes: one SeparationJob custom resource per job, named by its id.

Reads come from a watch cache: a background thread lists the namespace's SeparationJobs once,
then follows a watch from that list's resourceVersion, and lists again when the watch says the
version is too old (410 Gone) or the connection fails. Status requests read the cache instead
of the API server; an id the cache does not know yet (a job just created through another
replica) is read once from the API server.
"""

import contextlib
import datetime
import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from stemkube_api.interfaces import NewJob, UnavailableError
from stemkube_api.jobs import (
    CREATED_AT_ANNOTATION,
    JobPage,
    JobRecord,
    created_stamp,
    paginate,
    record_from_cr,
    result_key,
    valid_job_id,
)
from stemkube_api.settings import Settings
from stemkube_contract import options as catalogue
from stemkube_contract.models import Catalog
from stemkube_contract.resource import (
    API_CREATOR,
    API_VERSION,
    APP_NAME,
    APP_NAME_LABEL,
    CREATED_BY_LABEL,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
)

log = logging.getLogger(__name__)
WATCH_SECONDS = 240  # the server ends each watch after this; we start the next one
REQUEST_TIMEOUT = (5, 30)  # connect, read (seconds)
KUBE_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


def api_client(settings: Settings) -> client.ApiClient:
    """From KUBECONFIG when set, else the pod's service account (in-cluster)."""
    if settings.kubeconfig:
        return config.new_client_from_config(config_file=settings.kubeconfig)
    config.load_incluster_config()
    return client.ApiClient()


def manifest(
    job: NewJob, namespace: str, bucket: str, output_key: str, models: Catalog
) -> dict[str, Any]:
    """The SeparationJob for a new job: the options the user gave, and the model always (the
    deployment's default is the API's to apply); the CRD's defaults apply to the rest."""
    options = {"model": models.default, **job.request}
    spec: dict[str, Any] = {
        "input": {"bucket": bucket, "key": job.input_key, "filename": job.filename},
        "output": {"bucket": bucket, "key": output_key},
        **catalogue.to_spec(options),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": job.job_id,
            "namespace": namespace,
            "labels": {APP_NAME_LABEL: APP_NAME, CREATED_BY_LABEL: API_CREATOR},
            "annotations": {
                CREATED_AT_ANNOTATION: created_stamp(datetime.datetime.now(datetime.UTC))
            },
        },
        "spec": spec,
    }


def _visible(cr: dict[str, Any]) -> bool:
    """A SeparationJob being deleted (held by the operator's finalizer while its files go) is
    already gone for the API."""
    return not (cr.get("metadata") or {}).get("deletionTimestamp")


def _rv(cr: dict[str, Any]) -> int:
    try:
        return int((cr.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _explain(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message")
        except (ValueError, AttributeError):
            message = None
        return f"{exc.status} {message or exc.reason}"
    return str(exc)


class WatchCache:
    """Every SeparationJob of one namespace, kept current by list + watch."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._namespace = namespace
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name="separationjob-watch", daemon=True)
        self.last_error: str | None = None

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
                self.last_error = _explain(exc)
                log.warning("separationjob watch failed (%s); relisting", self.last_error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _list(self) -> str:
        listed = self._objects.list_namespaced_custom_object(
            GROUP, VERSION, self._namespace, PLURAL, _request_timeout=REQUEST_TIMEOUT
        )
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
        response = self._objects.list_namespaced_custom_object(
            GROUP,
            VERSION,
            self._namespace,
            PLURAL,
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
                        log.info("separationjob watch expired (410); relisting")
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


class KubernetesBackend:
    name = "kubernetes"

    def __init__(
        self,
        api: client.ApiClient,
        watch_api: client.ApiClient,
        namespace: str,
        bucket: str,
        models: Catalog | None = None,
    ) -> None:
        self.models = models or Catalog()
        self._objects = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.bucket = bucket
        self.cache = WatchCache(watch_api, namespace)

    @classmethod
    def from_settings(cls, settings: Settings) -> "KubernetesBackend":
        return cls(
            api_client(settings),
            api_client(settings),
            settings.namespace,
            settings.bucket,
            settings.models,
        )

    def start(self) -> None:
        self.cache.start()

    def stop(self) -> None:
        self.cache.stop()

    def create(self, job: NewJob) -> JobRecord:
        body = manifest(job, self.namespace, self.bucket, result_key(job.job_id), self.models)
        try:
            created: dict[str, Any] = self._objects.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body, _request_timeout=REQUEST_TIMEOUT
            )
        except KUBE_ERRORS as exc:
            raise UnavailableError(f"cannot create the SeparationJob: {_explain(exc)}") from exc
        self.cache.put(created)
        return record_from_cr(created, self.models)

    def _read(self, job_id: str) -> dict[str, Any] | None:
        try:
            cr: dict[str, Any] = self._objects.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, job_id, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise UnavailableError(f"cannot read the SeparationJob: {_explain(exc)}") from exc
        except KUBE_ERRORS as exc:
            raise UnavailableError(f"cannot read the SeparationJob: {_explain(exc)}") from exc
        return cr

    def get(self, job_id: str) -> JobRecord | None:
        if not valid_job_id(job_id):
            return None
        cr = self.cache.get(job_id)
        if cr is None:
            # Not seen by our watch (yet): created a moment ago through another replica, or no
            # such job. One read tells; what it finds the watch will keep current.
            cr = self._read(job_id)
            if cr is None:
                return None
            self.cache.put(cr)
        return record_from_cr(cr, self.models) if _visible(cr) else None

    def list(
        self, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JobPage:
        if not self.cache.wait_synced(10):
            raise UnavailableError(
                f"the SeparationJob watch has not synced ({self.cache.last_error or 'starting'})"
            )
        records = [record_from_cr(cr, self.models) for cr in self.cache.all() if _visible(cr)]
        return paginate(records, status, limit, cursor)

    def delete(self, job_id: str) -> bool:
        if not valid_job_id(job_id):
            return False
        try:
            self._objects.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                job_id,
                body={"propagationPolicy": "Background"},
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                self.cache.remove(job_id)
                return False
            raise UnavailableError(f"cannot delete the SeparationJob: {_explain(exc)}") from exc
        except KUBE_ERRORS as exc:
            raise UnavailableError(f"cannot delete the SeparationJob: {_explain(exc)}") from exc
        self.cache.mark_deleted(job_id)
        return True

    def model_problem(self, model: str) -> str | None:
        # The weights are the separator pods' concern (image or model cache claim): a missing
        # model fails its SeparationJob with reason ModelNotFound.
        return None

    def check(self) -> None:
        if not self.cache.synced.is_set():
            why = self.cache.last_error or "starting"
            raise UnavailableError(f"kubernetes: SeparationJob watch not synced ({why})")
        try:
            self._objects.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, limit=1, _request_timeout=(3, 5)
            )
        except KUBE_ERRORS as exc:
            raise UnavailableError(f"kubernetes: {_explain(exc)}") from exc
