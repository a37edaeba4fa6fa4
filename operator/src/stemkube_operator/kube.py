"""The Kubernetes API calls the operator makes, on plain dicts (camelCase, as the API speaks)."""

import json
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from stemkube_operator.resource import GROUP, PLURAL, UID_LABEL, VERSION

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


class Kube:
    def __init__(self, api: client.ApiClient, acting: Callable[[], bool] = lambda: True) -> None:
        self.api = api
        self._acting = acting
        self._objects = client.CustomObjectsApi(api)
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)

    def read_separation_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            cr: dict[str, Any] = self._objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cr

    def _writing(self) -> None:
        if not self._acting():
            raise NotLeadingError("not leading: the write is left to the replica that leads")

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._writing()
        self._objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
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
