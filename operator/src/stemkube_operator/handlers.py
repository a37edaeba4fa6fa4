"""The Kopf handlers: every trigger ends in the same level-based sync (reconcile.py).

A SeparationJob is synced when it is created or the operator resumes, when its Job or one of
its pods changes, and every few seconds while it is unfinished (the safety net for anything
missed, and how a queued job notices a free slot). Finished ones are left to expiry.py, but
for a webhook still to deliver (a timer of its own while it has one: webhooks.py).
"""

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, cast

import kopf

from stemkube_contract import webhooks as contract_webhooks
from stemkube_contract.batch import MEMBERS_ANNOTATION, decode_members
from stemkube_contract.timefmt import parse_time
from stemkube_operator import webhooks
from stemkube_operator.kube import NotLeadingError
from stemkube_operator.reconcile import Runtime, reconcile, remove_objects
from stemkube_operator.resource import GROUP, NAME_ANNOTATION, PLURAL, UID_LABEL, VERSION
from stemkube_operator.status import TERMINAL

log = logging.getLogger(__name__)

FINALIZER = "stemkube.io/cleanup"
RESYNC_SECONDS = 5.0


def _webhook_tick() -> float:
    """How often a finished SeparationJob with a webhook to deliver looks whether an attempt
    is due (the first retry's delay, at most RESYNC_SECONDS); a bad value is the
    configuration's to refuse."""
    try:
        return contract_webhooks.Backoff.from_env(os.environ).tick()
    except ValueError:
        return RESYNC_SECONDS


WEBHOOK_TICK = _webhook_tick()


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = FINALIZER
    # Kopf's own bookkeeping in annotations: our status schema declares only our fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="stemkube.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="stemkube.io", key="last-handled-configuration"
    )
    # A watch that dies silently is Kopf's most reported failure: bound every wait.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 360
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    # Only our own transition events reach the resource; Kopf would otherwise post one for
    # every handler run, a resync timer's included (every few seconds per job).
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 8


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


def _post(cr: dict[str, Any], kind: str, reason: str, message: str) -> None:
    # Kopf posts events for any object with metadata, not only the Body it hands out.
    kopf.event(cast(kopf.Body, cr), type=kind, reason=reason, message=message)


def _everyone(index: Any) -> Iterable[dict[str, Any]]:
    for store in list(index.values()):
        yield from list(store)


def _unfinished(status: Any, **_: Any) -> bool:
    return (status or {}).get("phase") not in TERMINAL


def _webhook_pending(spec: Any, status: Any, **_: Any) -> bool:
    return webhooks.pending(spec, status)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure(settings)


@kopf.index(GROUP, VERSION, PLURAL)
def separation_jobs(body: kopf.Body, memo: Any, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Every SeparationJob's metadata and status, kept current by the watch: the admission
    queue reads it instead of listing the cluster on every sync."""
    cr = {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}
    phase = cr["status"].get("phase")
    if phase:
        created = parse_time(body.metadata.get("creationTimestamp"))
        _runtime(memo).phases.observe(body.metadata["uid"], phase, created)
    return {(body.metadata["namespace"], body.metadata["name"]): cr}


@kopf.index("batch", "v1", "jobs", annotations={MEMBERS_ANNOTATION: kopf.PRESENT})
def batch_jobs(body: kopf.Body, **_: Any) -> dict[str, str]:
    """Member uid -> its batch Job's name: after a restart, a member whose status does not
    name its Job yet still finds it (Kopf fills its indexes before any handler runs)."""
    members = decode_members(body.metadata.annotations.get(MEMBERS_ANNOTATION))
    return {member.uid: body.metadata["name"] for member in members}


def _batch_lookup(kwargs: dict[str, Any]) -> Callable[[str], str | None]:
    index = kwargs["batch_jobs"]

    def batch_of(uid: str) -> str | None:
        return next(iter(list(index.get(uid, []))), None)

    return batch_of


def _acting(memo: Any) -> bool:
    """Whether this replica still leads. Kopf stops within seconds of a lost Lease, but a
    handler already queued would still run: it does nothing instead (the next leader's resume
    handlers and resync timers cover what it leaves)."""
    acting: Callable[[], bool] = memo.acting
    return acting()


def _sync(memo: Any, namespace: str | None, name: str | None, kwargs: dict[str, Any]) -> None:
    # Kopf hands an index to every handler as a keyword named after the index function.
    index = kwargs["separation_jobs"]
    if not (namespace and name and _acting(memo)):
        return
    try:
        reconcile(
            _runtime(memo),
            namespace,
            name,
            lambda: _everyone(index),
            _post,
            _batch_lookup(kwargs),
        )
    except NotLeadingError:
        log.info("%s/%s: left to the replica that leads", namespace, name)


def _names(body: kopf.Body) -> list[str]:
    """The SeparationJobs a Job or pod works for: a batch's members, else its one owner."""
    annotations = body.metadata.annotations
    members = decode_members(annotations.get(MEMBERS_ANNOTATION))
    return [m.name for m in members] or [annotations.get(NAME_ANNOTATION, "")]


@kopf.on.resume(GROUP, VERSION, PLURAL, when=_unfinished)
@kopf.on.create(GROUP, VERSION, PLURAL, when=_unfinished)
def on_separation_job(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    _sync(memo, namespace, name, kwargs)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, when=_unfinished)
def resync(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    _sync(memo, namespace, name, kwargs)


@kopf.timer(GROUP, VERSION, PLURAL, interval=WEBHOOK_TICK, when=_webhook_pending)
def webhook(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """A finished SeparationJob's webhook, while it has one to deliver: an attempt when one is
    due (``webhooks``; the SeparationJob is read afresh first)."""
    if namespace and _acting(memo):
        try:
            webhooks.attempt(_runtime(memo), namespace, name)
        except NotLeadingError:
            log.info("%s/%s: webhook left to the replica that leads", namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={UID_LABEL: kopf.PRESENT})
def on_job(body: kopf.Body, namespace: str | None, memo: Any, **kwargs: Any) -> None:
    for name in _names(body):
        _sync(memo, namespace, name, kwargs)


@kopf.on.event("", "v1", "pods", labels={UID_LABEL: kopf.PRESENT})
def on_pod(body: kopf.Body, namespace: str | None, memo: Any, **kwargs: Any) -> None:
    for name in _names(body):
        _sync(memo, namespace, name, kwargs)


@kopf.on.delete(GROUP, VERSION, PLURAL, retries=10, backoff=3)
def on_delete(body: kopf.Body, memo: Any, **_: Any) -> None:
    """Runs before Kubernetes lets the SeparationJob go (Kopf holds it with FINALIZER). Its Job
    and pods go by the owner reference cascade; its files go here."""
    if not _acting(memo):
        # Not done: Kopf keeps the finalizer, and the replica that leads removes the files.
        raise kopf.TemporaryError("not leading", delay=RESYNC_SECONDS)
    cr = {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}
    remove_objects(_runtime(memo), cr)
