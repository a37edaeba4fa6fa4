"""The Kubernetes API calls the operator makes, on plain dicts (camelCase, as the API speaks)."""

import datetime
import json
import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from stemkube_contract import joblink, kueue
from stemkube_contract.timefmt import rfc3339
from stemkube_operator.resource import (
    GROUP,
    KIND,
    MANAGED_BY,
    PLURAL,
    SETTLED,
    SETTLED_LABEL,
    UID_LABEL,
    VERSION,
)

log = logging.getLogger(__name__)
COMPONENT = MANAGED_BY  # the events' source
EVENT_MESSAGE = 1024  # characters of an event's message, as Kopf cut them

# (connect, read) seconds of every call that does not set its own. Without it a call to a
# server that stopped answering waits forever, and so does the process's exit, which joins
# the threads that run handlers.
REQUEST_TIMEOUT = (5.0, 15.0)


class TimedApiClient(client.ApiClient):  # type: ignore[misc]  # untyped library
    """An ApiClient whose calls time out (REQUEST_TIMEOUT) unless they say otherwise."""

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = REQUEST_TIMEOUT
        return super().call_api(*args, **kwargs)


class NotLeadingError(Exception):
    """A write refused because this replica no longer leads: another may act by now."""


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


class JobRefusedError(Exception):
    """The API server refused to create a Job, and would refuse it again: it is invalid (422,
    400) or an admission check of the cluster forbids it (403). Retrying would loop forever."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _refusal(exc: ApiException) -> JobRefusedError | None:
    """A final refusal, or None for what may pass on another try (a conflict, throttling, a
    quota that a finishing Job frees, the server's own trouble)."""
    if exc.status not in (400, 403, 422):
        return None
    try:
        message = str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        message = str(exc.reason)
    if exc.status == 403 and "exceeded quota" in message:
        return None
    return JobRefusedError(int(exc.status), " ".join(message.split())[:1000])


class KueueAbsentError(Exception):
    """The cluster serves no Kueue Workloads: Kueue is not installed."""


class Kube:
    def __init__(self, api: client.ApiClient, acting: Callable[[], bool] = lambda: True) -> None:
        self.api = api
        self._acting = acting
        self._objects = client.CustomObjectsApi(api)
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)

    def read_separation_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(
                self._objects.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _writing(self) -> None:
        if not self._acting():
            raise NotLeadingError("not leading: the write is left to the replica that leads")

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of the status subresource; the SeparationJob as written."""
        self._writing()
        return _json(
            self._objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status}, _preload_content=False
            )
        )

    def post_event(self, cr: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """A core/v1 Event on the SeparationJob, as ``kubectl describe`` shows them. Best
        effort: an event that cannot be posted is logged, never raised (the status says it)."""
        meta = cr["metadata"]
        now = rfc3339(datetime.datetime.now(datetime.UTC))
        event = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:EVENT_MESSAGE],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._writing()
            self._core.create_namespaced_event(meta["namespace"], event)
        except (ApiException, NotLeadingError, OSError) as exc:
            log.warning(
                "could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc
            )

    def delete_separation_job(self, namespace: str, name: str, uid: str) -> None:
        self._writing()
        try:
            self._objects.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body={"preconditions": {"uid": uid}}
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def label_settled(self, cr: dict[str, Any], settled: bool = True) -> None:
        """Sets (or takes off) SETTLED_LABEL on the SeparationJob, the one of this uid only."""
        meta = cr["metadata"]
        label = {SETTLED_LABEL: SETTLED if settled else None}
        self._patch_metadata(cr, {"uid": meta["uid"], "labels": label})

    def release(self, cr: dict[str, Any], finalizer: str) -> None:
        """Takes ``finalizer`` off the SeparationJob as it was read (its resourceVersion: a
        conflict leaves it for the next look, which sees the newer one)."""
        meta = cr["metadata"]
        rest = [f for f in meta.get("finalizers") or [] if f != finalizer]
        self._patch_metadata(cr, {"finalizers": rest, "resourceVersion": meta["resourceVersion"]})

    def _patch_metadata(self, cr: dict[str, Any], metadata: dict[str, Any]) -> None:
        """A merge patch of the SeparationJob's metadata; gone or changed since: nothing."""
        self._writing()
        meta = cr["metadata"]
        try:
            self._objects.patch_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"metadata": metadata}
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        """The Job and, in the background, its pods; that very Job (``uid``) only. Gone
        already, or replaced: nothing to do."""
        self._writing()
        try:
            self._batch.delete_namespaced_job(
                name,
                namespace,
                body={"propagationPolicy": "Background", "preconditions": {"uid": uid}},
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(self._batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Creates the Job, or returns the one that exists: a retried or repeated creation (after
        an operator restart, say) is not an error. JobRefusedError when it never can be created."""
        meta = manifest["metadata"]
        self._writing()
        try:
            return _json(
                self._batch.create_namespaced_job(
                    meta["namespace"], manifest, _preload_content=False
                )
            )
        except ApiException as exc:
            refused = _refusal(exc)
            if refused is not None:
                raise refused from exc
            if exc.status != 409:
                raise
        existing = self.read_job(meta["namespace"], meta["name"])
        if existing is None:  # deleted between our create and read: the next sync creates it
            raise RuntimeError(f"job {meta['namespace']}/{meta['name']} vanished while created")
        return existing

    def list_pods(self, namespace: str, owner_uid: str) -> list[dict[str, Any]]:
        """The pods of the Job whose (leading) SeparationJob has ``owner_uid``."""
        response = self._core.list_namespaced_pod(
            namespace, label_selector=f"{UID_LABEL}={owner_uid}", _preload_content=False
        )
        items: list[dict[str, Any]] = _json(response).get("items", [])
        return items

    def pod_creation_failure(self, namespace: str, job_uid: str) -> str | None:
        """The Job controller's latest word on why it cannot create the Job's pod (its
        ``FailedCreate`` event: a missing PriorityClass, a quota, an admission policy), if any."""
        response = self._core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.uid={job_uid},reason=FailedCreate",
            _preload_content=False,
        )
        events: list[dict[str, Any]] = _json(response).get("items", [])
        if not events:
            return None
        newest = max(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return str(newest.get("message") or "") or None

    def find_workload(self, namespace: str, job_uid: str) -> dict[str, Any] | None:
        """The Kueue Workload standing for the Job with ``job_uid`` (None while Kueue has made
        none); ``KueueAbsentError`` when the cluster serves no Workloads at all."""
        try:
            response = self._objects.list_namespaced_custom_object(
                kueue.GROUP,
                kueue.VERSION,
                namespace,
                kueue.WORKLOADS,
                label_selector=f"{kueue.JOB_UID_LABEL}={job_uid}",
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 404:
                raise KueueAbsentError(f"{kueue.WORKLOADS}.{kueue.GROUP}/{kueue.VERSION}") from None
            raise
        items: list[dict[str, Any]] = _json(response).get("items", [])
        # One per Job; a second one for a moment when Kueue replaces it.
        live = [w for w in items if not w["metadata"].get("deletionTimestamp")] or items
        return max(live, key=lambda w: w["metadata"].get("creationTimestamp") or "", default=None)


class LinkKube(Kube):
    """The job link's calls (``link``, ``linkauth``): Kube's reads and status patch, whose writes
    never wait for leadership (any replica serves a pod's own report), and what only the link
    needs: the token review, the pod, a JSON patch of the status."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api)
        self._auth = client.AuthenticationV1Api(api)

    def review_token(self, token: str) -> dict[str, Any]:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [joblink.AUDIENCE]},
        }
        return _json(self._auth.create_token_review(body, _preload_content=False))

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(self._core.read_namespaced_pod(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def json_patch_status(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """A JSON patch (RFC 6902) of the status subresource. Through call_api: the generated
        method always sends application/merge-patch+json (kubernetes 34), whatever the body."""
        return _json(
            self.api.call_api(
                "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}/status",
                "PATCH",
                {
                    "group": GROUP,
                    "version": VERSION,
                    "namespace": namespace,
                    "plural": PLURAL,
                    "name": name,
                },
                [],
                {"Accept": "application/json", "Content-Type": "application/json-patch+json"},
                body=ops,
                auth_settings=["BearerToken"],
                response_type="object",
                _return_http_data_only=True,
                _preload_content=False,
            )
        )
