"""The job backend on Kubernetes: one SeparationJob custom resource per job, named by its id.

Reads come from the watch cache (``watch``): status requests read it instead of the API server;
an id the cache does not know yet (a job just created through another replica) is read once
from the API server.
"""

import datetime
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from stemkube_api.auth.limits import Heard, Held, Usage, usage_of
from stemkube_api.interfaces import IdempotentJob, JobExistsError, NewJob, UnavailableError
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
from stemkube_api.kubernetes.watch import REQUEST_TIMEOUT, WatchCache, explain
from stemkube_api.settings import Settings
from stemkube_contract import options as catalogue
from stemkube_contract import usage
from stemkube_contract.models import Catalog
from stemkube_contract.resource import (
    API_CREATOR,
    API_KEY_ID_LABEL,
    API_VERSION,
    APP_NAME,
    APP_NAME_LABEL,
    BATCH_LABEL,
    CREATED_BY_LABEL,
    GROUP,
    IDEMPOTENCY_KEY_LABEL,
    IDEMPOTENCY_REQUEST_ANNOTATION,
    INPUT_SIZE_ANNOTATION,
    KEEP_INPUT_ANNOTATION,
    KIND,
    PLURAL,
    TENANT_LABEL,
    TERMINAL,
    VERSION,
)

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
    deployment's default is the API's to apply); the CRD's defaults apply to the rest. Its
    labels name its tenant and the key that created it (a job of no tenant has neither)."""
    options = {"model": models.default, **job.request}
    labels = {APP_NAME_LABEL: APP_NAME, CREATED_BY_LABEL: API_CREATOR}
    if job.tenant is not None:
        labels[TENANT_LABEL] = job.tenant
    if job.key_id:
        labels[API_KEY_ID_LABEL] = job.key_id
    if job.batch_id:
        labels[BATCH_LABEL] = job.batch_id
    annotations = {CREATED_AT_ANNOTATION: created_stamp(datetime.datetime.now(datetime.UTC))}
    if job.input_size is not None:
        annotations[INPUT_SIZE_ANNOTATION] = str(job.input_size)
    if job.keep_input:
        annotations[KEEP_INPUT_ANNOTATION] = "true"
    if job.idempotency_key is not None:
        labels[IDEMPOTENCY_KEY_LABEL] = job.idempotency_key
        annotations[IDEMPOTENCY_REQUEST_ANNOTATION] = job.request_hash or ""
    # A job from a URL names it instead of an object (the CRD: exactly one of the two forms);
    # the operator gives it to the Job in its environment. The URL is readable by whoever may
    # read SeparationJobs (the API's answers and logs show it without its query).
    source: dict[str, Any] = (
        {"url": job.source_url, "filename": job.filename}
        if job.source_url
        else {"bucket": bucket, "key": job.input_key, "filename": job.filename}
    )
    spec: dict[str, Any] = {
        "input": source,
        "output": {"bucket": bucket, "key": output_key},
        **catalogue.to_spec(options),
    }
    if job.webhook_url:  # sent by the operator's leader when the job ends
        spec["webhook"] = {"url": job.webhook_url}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": job.job_id,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def _visible(cr: dict[str, Any]) -> bool:
    """A SeparationJob being deleted (held by the operator's finalizer while its files go) is
    already gone for the API."""
    return not (cr.get("metadata") or {}).get("deletionTimestamp")


def _size(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def held_by(cr: dict[str, Any]) -> Held:
    """What a SeparationJob holds: queued or running until its phase is Completed or Failed;
    its input's size (the API's annotation) and its result's (status.result.size)."""
    meta = cr.get("metadata") or {}
    status = cr.get("status") or {}
    result = status.get("result") or {}
    stored = _size((meta.get("annotations") or {}).get(INPUT_SIZE_ANNOTATION))
    return Held(status.get("phase") not in TERMINAL, stored + _size(result.get("size")))


def _created(cr: dict[str, Any]) -> datetime.datetime | None:
    stamp = (cr.get("metadata") or {}).get("creationTimestamp")
    try:
        return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None


def heard_from(crs: list[dict[str, Any]], ledger: list[str]) -> list[Heard]:
    """The songs of a key's SeparationJobs (those being deleted too) and of its ledger (the
    operator's entries for the deleted ones), each job once."""
    heard: dict[str, Heard] = {}
    for key in ledger:
        entry = usage.parse_usage_key(key)
        if entry is not None:
            heard[entry.uid] = Heard(entry.created, entry.seconds)
    for cr in crs:
        seconds = usage.audio_seconds_of(cr.get("status"))
        created = _created(cr)
        uid = str((cr.get("metadata") or {}).get("uid") or "")
        if seconds > 0 and created is not None:
            heard[uid or f"unnamed-{id(cr)}"] = Heard(created, seconds)
    return list(heard.values())


def usage_from(
    crs: list[dict[str, Any]],
    key_id: str,
    ledger: list[str] | None = None,
    now: datetime.datetime | None = None,
) -> Usage:
    """A key's usage from the SeparationJobs labelled with its id; one being deleted holds
    nothing (its owner let it go; the operator's finalizer removes its files) but its song
    still counts for its day, as does the ``ledger``'s (object keys under the key's prefix)."""
    mine = [
        cr
        for cr in crs
        if ((cr.get("metadata") or {}).get("labels") or {}).get(API_KEY_ID_LABEL) == key_id
    ]
    return usage_of(
        (held_by(cr) for cr in mine if _visible(cr)), heard_from(mine, ledger or []), now
    )


class KubernetesBackend:
    name = "kubernetes"

    def __init__(
        self,
        api: client.ApiClient,
        watch_api: client.ApiClient,
        namespace: str,
        bucket: str,
        models: Catalog | None = None,
        ledger: Callable[[str], list[str]] | None = None,
        root: str = "",
    ) -> None:
        """``ledger``: the object keys under a prefix (``S3Store.keys``), for the audio
        quota's entries of deleted jobs (``stemkube_contract.usage``). ``root``: the prefix of
        the keys of this namespace's jobs (``Settings.key_root``)."""
        self.models = models or Catalog()
        self.ledger = ledger
        self.root = root
        self._objects = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.bucket = bucket
        self.cache = WatchCache(watch_api, namespace)

    @classmethod
    def from_settings(
        cls, settings: Settings, ledger: Callable[[str], list[str]] | None = None
    ) -> "KubernetesBackend":
        return cls(
            api_client(settings),
            api_client(settings),
            settings.namespace,
            settings.bucket,
            settings.models,
            ledger,
            settings.key_root,
        )

    def start(self) -> None:
        self.cache.start()

    def stop(self) -> None:
        self.cache.stop()

    def create(self, job: NewJob) -> JobRecord:
        output = result_key(job.job_id, job.tenant, self.root)
        body = manifest(job, self.namespace, self.bucket, output, self.models)
        try:
            created: dict[str, Any] = self._objects.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 409:  # AlreadyExists: its idempotency key's job, made already
                raise JobExistsError(job.job_id) from exc
            raise UnavailableError(f"cannot create the SeparationJob: {explain(exc)}") from exc
        except KUBE_ERRORS as exc:
            raise UnavailableError(f"cannot create the SeparationJob: {explain(exc)}") from exc
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
            raise UnavailableError(f"cannot read the SeparationJob: {explain(exc)}") from exc
        except KUBE_ERRORS as exc:
            raise UnavailableError(f"cannot read the SeparationJob: {explain(exc)}") from exc
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

    def idempotent(self, job_id: str) -> IdempotentJob | None:
        """From the watch cache, else one read (made a moment ago through another replica);
        a SeparationJob being deleted still holds its name (the key is not free yet)."""
        if not valid_job_id(job_id):
            return None
        cr = self.cache.get(job_id) or self._read(job_id)
        if cr is None:
            return None
        annotations = (cr.get("metadata") or {}).get("annotations") or {}
        record = record_from_cr(cr, self.models) if _visible(cr) else None
        return IdempotentJob(record, annotations.get(IDEMPOTENCY_REQUEST_ANNOTATION, ""))

    def list(
        self,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        tenant: str | None = None,
    ) -> JobPage:
        if not self.cache.wait_synced(10):
            raise UnavailableError(
                f"the SeparationJob watch has not synced ({self.cache.last_error or 'starting'})"
            )
        records = [record_from_cr(cr, self.models) for cr in self.cache.all() if _visible(cr)]
        return paginate(records, status, limit, cursor, tenant)

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
            raise UnavailableError(f"cannot delete the SeparationJob: {explain(exc)}") from exc
        except KUBE_ERRORS as exc:
            raise UnavailableError(f"cannot delete the SeparationJob: {explain(exc)}") from exc
        self.cache.mark_deleted(job_id)
        return True

    def usage(self, key_id: str, now: datetime.datetime) -> Usage:
        """From the watch cache: every replica watches the same SeparationJobs, and a job
        this replica created is in its cache at once (another replica's within the watch's
        delay, typically milliseconds)."""
        if not self.cache.wait_synced(10):
            raise UnavailableError(
                f"the SeparationJob watch has not synced ({self.cache.last_error or 'starting'})"
            )
        # The operator writes a job's entry under its namespace's scope, this API's root.
        listed = self.ledger(usage.usage_prefix(key_id, self.root)) if self.ledger else []
        ledger = [key.removeprefix(self.root) for key in listed]
        return usage_from(self.cache.all(), key_id, ledger, now)

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
            raise UnavailableError(f"kubernetes: {explain(exc)}") from exc
