"""Kubernetes mode's API keys: one Secret per key in the release namespace, labelled for
stemkube, holding the key's record (its hash, never the key). Every API replica follows them
with list + watch, so a revocation (the Secret deleted) takes effect within seconds on all."""

import base64
import json
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from stemkube_api.auth.keys import KeyRecord
from stemkube_api.auth.store import from_json, to_json
from stemkube_api.interfaces import UnavailableError
from stemkube_api.kubernetes.watch import WatchCache
from stemkube_contract.resource import APP_NAME, APP_NAME_LABEL, COMPONENT_LABEL

KEY_LABEL = "stemkube.io/api-key"
SELECTOR = f"{KEY_LABEL}=true"
SECRET_PREFIX = "stemkube-api-key-"
RECORD = "record"


def secret_name(key_id: str) -> str:
    return f"{SECRET_PREFIX}{key_id}"


def manifest(record: KeyRecord) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(record.key_id),
            "labels": {
                KEY_LABEL: "true",
                APP_NAME_LABEL: APP_NAME,
                COMPONENT_LABEL: "api-key",
            },
            "annotations": {
                "stemkube.io/key-name": record.name,
                "stemkube.io/tenant": record.tenant,
            },
        },
        "data": {RECORD: base64.b64encode(to_json(record).encode()).decode()},
    }


def record_of(secret: dict[str, Any]) -> KeyRecord | None:
    raw = (secret.get("data") or {}).get(RECORD)
    if not isinstance(raw, str):
        return None
    try:
        text = base64.b64decode(raw, validate=True).decode()
    except ValueError:
        return None
    record = from_json(text)
    # The name is the id's home: a Secret copied under another name is not that key.
    if record is None or secret_name(record.key_id) != (secret.get("metadata") or {}).get("name"):
        return None
    return record


class SecretKeyStore:
    def __init__(self, api: client.ApiClient, namespace: str, watch: bool = True) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.cache: WatchCache | None = None
        if watch:
            self.cache = WatchCache(api, namespace, self._list, what="api-key")

    def _list(self, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            return self.core.list_namespaced_secret(
                self.namespace, label_selector=SELECTOR, **kwargs
            )
        response = self.core.list_namespaced_secret(
            self.namespace, label_selector=SELECTOR, _preload_content=False, **kwargs
        )
        return json.loads(response.data)

    def start(self) -> None:
        if self.cache is not None:
            self.cache.start()

    def stop(self) -> None:
        if self.cache is not None:
            self.cache.stop()

    def wait_synced(self, timeout: float) -> bool:
        return self.cache is None or self.cache.wait_synced(timeout)

    def check(self) -> None:
        if self.cache is not None and not self.cache.synced.is_set():
            why = self.cache.last_error or "starting"
            raise UnavailableError(f"API keys: the Secret watch has not synced ({why})")

    # Reading: the watched copy on the request path, the API server for the command line.
    def _secrets(self) -> list[dict[str, Any]]:
        if self.cache is not None:
            return self.cache.all()
        items: list[dict[str, Any]] = self._list().get("items", [])
        return items

    def lookup(self, key_id: str) -> KeyRecord | None:
        if self.cache is not None:
            secret = self.cache.get(secret_name(key_id))
            return record_of(secret) if secret else None
        return next((r for r in self.records() if r.key_id == key_id), None)

    def any_keys(self) -> bool:
        return any(record_of(s) for s in self._secrets())

    def records(self) -> list[KeyRecord]:
        found = [r for r in (record_of(s) for s in self._secrets()) if r is not None]
        return sorted(found, key=lambda r: (r.name, r.key_id))

    def add(self, record: KeyRecord) -> None:
        self.core.create_namespaced_secret(self.namespace, manifest(record))

    def revoke(self, name_or_id: str) -> list[KeyRecord]:
        gone = [r for r in self.records() if name_or_id in (r.name, r.key_id)]
        for record in gone:
            try:
                self.core.delete_namespaced_secret(secret_name(record.key_id), self.namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return gone
