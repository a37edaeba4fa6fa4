"""The Kopf handlers: every trigger ends in the same level-based sync (reconcile.py).

A SeparationJob is synced when it is created or the operator resumes, when its Job or one of
its pods changes, when a slot it waits for frees, and every few seconds while it is
unfinished (resync.py: the safety net for anything missed; it also delivers a finished one's
webhook while it has one, webhooks.py). Finished ones are left to expiry.py. The handlers only
queue the sync (workqueue.py): a burst of events for one SeparationJob makes one.

Nothing here keeps a finished SeparationJob in memory: the index holds only those that still
need work (``needs_work``), as little of each as the queue reads, and there is no Kopf timer
(Kopf keeps the last body of every object of a resource with timers: issue #18's memory that
grew with the history).
"""

import logging
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
import kopf

from stemkube_contract.batch import MEMBERS_ANNOTATION, decode_members
from stemkube_contract.timefmt import parse_time
from stemkube_operator import settled, webhooks
from stemkube_operator.kube import NotLeadingError
from stemkube_operator.reconcile import BatchLookup, Runtime, reconcile, remove_objects
from stemkube_operator.resource import (
    FINALIZER,
    GROUP,
    NAME_ANNOTATION,
    PLURAL,
    UID_LABEL,
    UNSETTLED_SELECTOR,
    VERSION,
)
from stemkube_operator.resync import RESYNC_SECONDS
from stemkube_operator.status import TERMINAL
from stemkube_operator.workqueue import ROUTINE, URGENT

log = logging.getLogger(__name__)


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
    # Settled SeparationJobs (finished, nothing left to deliver) are settled.py's: Kopf would
    # keep memory for each and list them all at every start.
    settings.watching.label_selectors[GROUP, PLURAL] = UNSETTLED_SELECTOR


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


def _everyone(index: Any) -> Iterable[dict[str, Any]]:
    for store in list(index.values()):
        yield from list(store)


def _unfinished(status: Any, **_: Any) -> bool:
    return (status or {}).get("phase") not in TERMINAL


def needs_work(spec: Any, status: Any, labels: Any, **_: Any) -> bool:
    """Unfinished, finished with a webhook to deliver, or settled but not yet labelled so:
    what the index (and so the queue and the resync loop) holds."""
    cr = {"metadata": {"labels": labels}, "spec": spec, "status": status}
    return not (settled.settles(cr) and settled.labelled(cr))


@kopf.on.login()
async def login(memo: Any, **kwargs: Any) -> kopf.AiohttpSession | None:
    """Kopf's own credentials, in a session whose connection pool is bounded: Kopf's default
    has no limit, and a burst of SeparationJobs (each event's patches and lookups at once) left
    hundreds of TLS connections open, about 0.15 MiB of buffers each, that the process never
    gave back (issue #18: its memory grew with every burst). ``memo.connections`` is the bound:
    its watches' streams hold one each for good, the rest queue for a free one."""
    info = kopf.login_via_client(**kwargs)
    if info is None:
        return None
    connections: int = memo.connections
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        auth=info.as_aiohttp_basic_auth(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        priority=info.priority,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
    )


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    configure(settings)
    # Kopf hands its indexes to every handler as keywords named after the index functions;
    # each term of Kopf's processing has its own, which the resync loop reads from now on.
    rt = _runtime(memo)
    index, batches = kwargs["separation_jobs"], kwargs["batch_jobs"]
    rt.view = lambda: _everyone(index)
    rt.batch_of = _lookup(batches)


@kopf.index(GROUP, VERSION, PLURAL, when=needs_work)
def separation_jobs(body: kopf.Body, memo: Any, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """The SeparationJobs that need work, kept current by the watch, with what the admission
    queue and the resync read (not their managed fields or Kopf's annotations): the queue
    reads it instead of listing the cluster on every sync. One that stops needing work leaves
    it (Kopf purges what no longer matches)."""
    meta = body.metadata
    slim = {
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "creationTimestamp": meta.get("creationTimestamp"),
            "deletionTimestamp": meta.get("deletionTimestamp"),
        },
        "spec": dict(body.spec),
        "status": dict(body.status),
    }
    phase = body.status.get("phase")
    if phase:
        _runtime(memo).phases.observe(meta["uid"], phase, parse_time(meta.get("creationTimestamp")))
    return {(meta["namespace"], meta["name"]): slim}


@kopf.index("batch", "v1", "jobs", annotations={MEMBERS_ANNOTATION: kopf.PRESENT})
def batch_jobs(body: kopf.Body, **_: Any) -> dict[str, str]:
    """Member uid -> its batch Job's name: after a restart, a member whose status does not
    name its Job yet still finds it (Kopf fills its indexes before any handler runs)."""
    members = decode_members(body.metadata.annotations.get(MEMBERS_ANNOTATION))
    return {member.uid: body.metadata["name"] for member in members}


def _lookup(index: Any) -> BatchLookup:
    def batch_of(uid: str) -> str | None:
        return next(iter(list(index.get(uid, []))), None)

    return batch_of


def _acting(memo: Any) -> bool:
    """Whether this replica still leads. Kopf stops within seconds of a lost Lease, but a
    handler already queued would still run: it does nothing instead (the next leader's resume
    handlers and resync loop cover what it leaves)."""
    acting: Callable[[], bool] = memo.acting
    return acting()


def sync(rt: Runtime, acting: Callable[[], bool], namespace: str, name: str) -> None:
    """One SeparationJob's reconcile while this replica leads: every trigger's, the resync
    loop's too."""
    if not acting():
        return
    try:
        reconcile(rt, namespace, name, rt.view, rt.post_event, rt.batch_of)
    except NotLeadingError:
        log.info("%s/%s: left to the replica that leads", namespace, name)


def deliver(rt: Runtime, acting: Callable[[], bool], namespace: str, name: str) -> None:
    """A finished SeparationJob's webhook: an attempt when one is due (``webhooks``; the
    SeparationJob is read afresh first)."""
    if not acting():
        return
    try:
        webhooks.attempt(rt, namespace, name)
    except NotLeadingError:
        log.info("%s/%s: webhook left to the replica that leads", namespace, name)


def _queue(memo: Any, namespace: str | None, name: str | None, level: int) -> None:
    if namespace and name:
        _runtime(memo).queue.add((namespace, name), level)


def _ended(job: kopf.Body) -> bool:
    """Whether the Job has its outcome (Complete, Failed): what its SeparationJob waits for."""
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
    )


def _names(body: kopf.Body) -> list[str]:
    """The SeparationJobs a Job or pod works for: a batch's members, else its one owner."""
    annotations = body.metadata.annotations
    members = decode_members(annotations.get(MEMBERS_ANNOTATION))
    return [m.name for m in members] or [annotations.get(NAME_ANNOTATION, "")]


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_separation_job(
    event: kopf.RawEvent, status: Any, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    """At first sight: created, or listed as the operator starts (Kopf's type None). A
    creation handler would wait for Kopf's first write (its finalizer) and the event that
    brings it back; under a burst that was seconds a SeparationJob. Later changes are the
    sync's own writes, the job link's and the resync's business."""
    if event.get("type") in (None, "ADDED") and _unfinished(status):
        _queue(memo, namespace, name, URGENT)


@kopf.on.event("batch", "v1", "jobs", labels={UID_LABEL: kopf.PRESENT})
async def on_job(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
    level = URGENT if _ended(body) else ROUTINE
    for name in _names(body):
        _queue(memo, namespace, name, level)


@kopf.on.event("", "v1", "pods", labels={UID_LABEL: kopf.PRESENT})
async def on_pod(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, memo: Any, **_: Any
) -> None:
    if event.get("type") == "DELETED" or body.metadata.get("deletionTimestamp"):
        # A pod on its way out: its Job's own events say what that changes (an eviction, a
        # preemption, a lost node); after the outcome, it is the retired Job's, two syncs
        # a separation for nothing.
        return
    for name in _names(body):
        _queue(memo, namespace, name, ROUTINE)


@kopf.on.delete(GROUP, VERSION, PLURAL, retries=10, backoff=3)
def on_delete(body: kopf.Body, memo: Any, **_: Any) -> None:
    """Runs before Kubernetes lets the SeparationJob go (Kopf holds it with FINALIZER). Its Job
    and pods go by the owner reference cascade; its files go here."""
    if not _acting(memo):
        # Not done: Kopf keeps the finalizer, and the replica that leads removes the files.
        raise kopf.TemporaryError("not leading", delay=RESYNC_SECONDS)
    cr = {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}
    remove_objects(_runtime(memo), cr)
