"""One sync of one SeparationJob: read what is there, create the Job if it may run, and write
the status that follows. Safe to run any number of times, from any trigger, concurrently
(workqueue.py runs one SeparationJob's syncs one at a time; the job link and webhooks write
beside them)."""

import contextlib
import datetime
import logging
import threading
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.rest import ApiException

from stemkube_contract import batch, exitcodes, kueue, refusals, urls, usage
from stemkube_contract import options as catalogue
from stemkube_contract.batch import MEMBERS_ANNOTATION
from stemkube_contract.keys import key_problem
from stemkube_contract.resource import KEEP_INPUT_ANNOTATION
from stemkube_operator import ledger, metrics, settled
from stemkube_operator.admission import refusal
from stemkube_operator.config import OperatorConfig
from stemkube_operator.events import EventPoster, EventQueue
from stemkube_operator.jobspec import build_batch_job, source_url
from stemkube_operator.kube import JobRefusedError, Kube, KueueAbsentError
from stemkube_operator.queue import Entry, companions, line_up, queue_position
from stemkube_operator.resource import UID_LABEL, job_name
from stemkube_operator.status import (
    COMPLETED,
    FAILED,
    RUNNING,
    TERMINAL,
    Observed,
    changed_fields,
    desired_status,
    parse_time,
)
from stemkube_operator.storage import Storage
from stemkube_operator.workqueue import URGENT, WorkQueue

log = logging.getLogger(__name__)

FINISHED_MEMORY = 60.0  # seconds: the index has long caught up by then
POD_CREATION_GRACE = 3.0  # seconds a Job may be without pods before we ask why

WARNING_REASONS = (
    "Unschedulable",
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "KueueNotInstalled",
    "Inadmissible",
    "FailedCreate",
)


@dataclass
class Runtime:
    """What every handler shares: configuration, clients, and the admission bookkeeping."""

    config: OperatorConfig
    kube: Kube
    storage: Storage
    phases: metrics.PhaseCounts = field(default_factory=metrics.PhaseCounts)
    admission: threading.Lock = field(default_factory=threading.Lock)
    # uid -> Job name, for the Jobs this process created whose SeparationJobs' status may not
    # say so yet.
    admitted: dict[str, str] = field(default_factory=dict)
    # uid -> the (phase, reason) last announced (event, log line, metrics): two syncs of one
    # SeparationJob at once (its Job's event and its pod's) both see the old status, and only
    # the first may announce the change.
    announced: dict[str, tuple[str, str]] = field(default_factory=dict)
    announcing: threading.Lock = field(default_factory=threading.Lock)
    # The SeparationJobs that need work (the operator's index, as Kopf's current term has it)
    # and the batch Job naming a uid: set when Kopf starts (handlers.startup).
    view: Callable[[], Iterable[dict[str, Any]]] = field(default=lambda: ())
    batch_of: "BatchLookup" = field(default=lambda uid: None)
    # The SeparationJobs to sync (every trigger adds to it; handlers.py, resync.py).
    queue: WorkQueue = field(default_factory=WorkQueue)
    # uid -> when this process recorded it finished: the index shows it a moment later, and
    # until then the line (with a limit) would still count its slot as taken.
    finished: dict[str, float] = field(default_factory=dict)
    # The transition Events' poster (events.py); None: each sync posts its own.
    events: EventQueue | None = None

    def post_event(self, cr: dict[str, Any], kind: str, reason: str, message: str) -> None:
        (self.events.post if self.events else self.kube.post_event)(cr, kind, reason, message)

    def record_finished(self, uid: str) -> None:
        now = time.monotonic()
        for old in [u for u, at in list(self.finished.items()) if now - at > FINISHED_MEMORY]:
            self.finished.pop(old, None)
        self.finished[uid] = now


def first_to_announce(rt: Runtime, uid: str, phase: str, reason: str) -> bool:
    with rt.announcing:
        if rt.announced.get(uid) == (phase, reason):
            return False
        rt.announced[uid] = (phase, reason)
        return True


# (uid) -> the batch Job that names it as a member, if any (the operator's index of Jobs).
BatchLookup = Callable[[str], str | None]


def _no_batch(uid: str) -> str | None:
    return None


def entry_of(
    cr: dict[str, Any],
    admitted: dict[str, str],
    batch_of: BatchLookup,
    finished: Container[str] = (),
) -> Entry:
    meta, status = cr["metadata"], cr.get("status") or {}
    uid = meta["uid"]
    return Entry(
        uid=uid,
        created=meta.get("creationTimestamp") or "",
        name=meta["name"],
        namespace=meta["namespace"],
        finished=status.get("phase") in TERMINAL or uid in finished,
        job=status.get("jobName") or admitted.get(uid) or batch_of(uid),
        key=batch.batch_key(meta["namespace"], cr.get("spec") or {}),
    )


def _owned_by(job: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in job["metadata"].get("ownerReferences") or [])


def _refusal(config: OperatorConfig, cr: dict[str, Any]) -> tuple[str, str] | None:
    """``admission.refusal`` with everything this deployment checks, its storage scopes too."""
    return refusal(
        cr["spec"],
        config.models,
        config.limits,
        config.pod_policy,
        namespace=cr["metadata"]["namespace"],
        scopes=config.scopes,
    )


def _joining(rt: Runtime, entries: list[Entry], uid: str) -> list[dict[str, Any]]:
    """The waiting SeparationJobs that join this one's Job, read afresh: one deleted or refused
    since the index saw it stays out."""
    config = rt.config
    found = []
    for entry in companions(uid, entries, config.max_running, config.batch_max_per_job):
        other = rt.kube.read_separation_job(entry.namespace, entry.name)
        if other is None or other["metadata"].get("deletionTimestamp"):
            continue
        if other["metadata"]["uid"] != entry.uid or (other.get("status") or {}).get("jobName"):
            continue
        if _refusal(config, other) is not None:
            continue
        found.append(other)
    return found


def _admit(
    rt: Runtime,
    cr: dict[str, Any],
    everyone: Callable[[], Iterable[dict[str, Any]]],
    batch_of: BatchLookup,
) -> tuple[int | None, dict[str, Any] | None]:
    """(how many are ahead of it, None) while it waits; (None, its new Job) once it may run,
    with the separations that join it when there is a backlog; (None, its batch's Job) when
    another sync gave it one while this one waited for the lock."""
    uid = cr["metadata"]["uid"]
    limited = rt.config.max_running > 0
    # Without a limit nothing waits and nobody joins: no line to keep in order, and the lock
    # would make each Job's creation wait for the one before (an API call at a time: 1,000
    # SeparationJobs at once waited minutes for their Jobs, issue #18).
    with rt.admission if limited else contextlib.nullcontext():
        given = rt.admitted.get(uid)
        joined = rt.kube.read_job(cr["metadata"]["namespace"], given) if given else None
        if joined is not None and _owned_by(joined, uid):
            return None, joined
        members = [cr]
        if limited:
            entries = [entry_of(o, rt.admitted, batch_of, rt.finished) for o in everyone()]
            ahead = queue_position(uid, entries, rt.config.max_running)
            if ahead is not None:
                return ahead, None
            members += _joining(rt, entries, uid)
        job = rt.kube.create_job(build_batch_job(members, rt.config))
        if not _owned_by(job, uid):  # an earlier SeparationJob's, that a 409 answered with
            return None, job
        name = job["metadata"]["name"]
        if uid not in rt.admitted:
            metrics.JOBS_CREATED.inc()
            metrics.BATCH_SIZE.observe(len(members))
            now = datetime.datetime.now(datetime.UTC)
            for member in members:
                created = parse_time(member["metadata"].get("creationTimestamp"))
                if created:
                    waited = max(0.0, (now - created).total_seconds())
                    metrics.JOB_CREATION_SECONDS.observe(waited)
        for member in members:
            rt.admitted[member["metadata"]["uid"]] = name
        if len(members) > 1:
            log.info(
                "job %s/%s runs %d separations: %s",
                cr["metadata"]["namespace"],
                name,
                len(members),
                ", ".join(m["metadata"]["name"] for m in members),
            )
        return None, job


def reconcile(
    rt: Runtime,
    namespace: str,
    name: str,
    everyone: Callable[[], Iterable[dict[str, Any]]],
    post_event: EventPoster,
    batch_of: BatchLookup = _no_batch,
) -> None:
    cr = rt.kube.read_separation_job(namespace, name)
    if cr is None or cr["metadata"].get("deletionTimestamp"):
        return
    old = dict(cr.get("status") or {})
    if old.get("phase") in TERMINAL:
        # A batch's Job ends after its members recorded their outcomes; an operator may have
        # stopped between a status and the deletion: the Job's events bring it here.
        if old.get("jobName"):
            retire_job(rt, namespace, rt.kube.read_job(namespace, old["jobName"]), old["phase"])
            # The job link may have written the outcome: its slot is free.
            _slot_freed(rt, cr["metadata"]["uid"], everyone, batch_of)
        settled.settle(rt.kube, cr)
        return
    uid = cr["metadata"]["uid"]
    # Its Job: the one its status names, the one this process just gave it, a batch that
    # names it (an operator that died before writing the status), else its own.
    given = old.get("jobName") or rt.admitted.get(uid) or batch_of(uid)
    wanted = given or job_name(name)
    # A new one, with nothing in line before it, has no Job to read: the creation says if one
    # exists (a 409 answers with it). Under a burst that read was a fifth of a new
    # SeparationJob's calls (issue #18). With a limit it is read: a Job of its own that an
    # operator made before it died must count as running, not queue behind the others.
    new = not old and not given and rt.config.max_running <= 0
    job = None if new else rt.kube.read_job(namespace, wanted)
    if job is not None and not _owned_by(job, uid):
        _not_ours(namespace, name)
        return
    queued_ahead = None
    just_created = False
    refused = None
    if job is None:
        refused = _refusal(rt.config, cr)
    if job is None and refused is None:
        try:
            queued_ahead, job = _admit(rt, cr, everyone, batch_of)
        except JobRefusedError as exc:
            refused = _job_refusal(exc, cr["spec"])
        if job is not None and not _owned_by(job, uid):
            _not_ours(namespace, name)
            return
        just_created = job is not None and job["metadata"]["name"] == wanted
    # A Job created a moment ago has no pods yet: spare the API server the list.
    pods = rt.kube.list_pods(namespace, _pods_label(job)) if job and not just_created else []
    result_size = None
    complete = job is not None and any(
        c.get("type") == "Complete" and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )
    outcome = batch.outcome_of(old)
    if complete or (outcome is not None and outcome.exit_code == exitcodes.OK):
        output = cr["spec"]["output"]
        result_size = rt.storage.size(output["bucket"], output["key"])
    workload, kueue_absent = _workload(rt, job) if job and not just_created else (None, False)
    failure = None
    now = datetime.datetime.now(datetime.UTC)
    if job is not None and not pods and _runnable(job) and _podless_for_long(job, now):
        failure = rt.kube.pod_creation_failure(namespace, job["metadata"]["uid"])
    observed = Observed(
        job, pods, queued_ahead, result_size, refused, workload, kueue_absent, failure
    )
    patch = desired_status(cr, observed, now, rt.config.models)
    delta = changed_fields(old, patch)
    if not delta:
        return
    written = rt.kube.patch_status(namespace, name, delta)
    new_phase: str = patch["phase"]
    rt.phases.observe(uid, new_phase, parse_time(cr["metadata"].get("creationTimestamp")))
    if new_phase in TERMINAL:
        rt.admitted.pop(uid, None)
        retire_job(rt, namespace, job, new_phase)
        _slot_freed(rt, uid, everyone, batch_of)
        try:
            settled.settle(rt.kube, written)
        except (ApiException, OSError) as exc:
            # The transition's event still goes out; the resync labels it later.
            log.warning("%s/%s: not labelled settled yet: %s", namespace, name, exc)
    changed = (old.get("phase"), old.get("reason")) != (patch.get("phase"), patch.get("reason"))
    if not changed or not first_to_announce(rt, uid, new_phase, patch["reason"]):
        return
    _observe_transition(cr, old, patch, now, _model(rt, cr))
    kind = "Warning" if new_phase == FAILED or patch["reason"] in WARNING_REASONS else "Normal"
    post_event(cr, kind, patch["reason"], f"{new_phase}: {patch['message']}")
    log.info(
        "separation job %s/%s is %s (%s): %s",
        namespace,
        name,
        new_phase,
        patch["reason"],
        patch["message"],
    )


def _slot_freed(
    rt: Runtime,
    uid: str,
    everyone: Callable[[], Iterable[dict[str, Any]]],
    batch_of: BatchLookup,
) -> None:
    """``uid`` finished and its slot is free: the SeparationJobs first in line sync now, not
    at their resync (up to a minute away with a long line, resync.py). Only with a limit:
    without one nothing waits, and nothing need be remembered."""
    limit = rt.config.max_running
    if limit <= 0:
        return
    rt.record_finished(uid)
    line = line_up(entry_of(o, rt.admitted, batch_of, rt.finished) for o in everyone())
    for entry in line.waiting[: line.free(limit)]:
        rt.queue.add((entry.namespace, entry.name), URGENT)


def job_finished(job: dict[str, Any] | None) -> bool:
    return job is not None and any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def retire_job(rt: Runtime, namespace: str, job: dict[str, Any] | None, phase: str) -> None:
    """A finished Job goes once every SeparationJob it ran has recorded its outcome (a batch's
    last one deletes it): the SeparationJob is the record, and a finished Job and its pods
    would only fill etcd and the watches until their TTL. A failed one (or any) stays when the
    deployment keeps them (``keep_finished_jobs``: then their TTL removes them)."""
    if job is None or not job_finished(job):
        return
    keep = rt.config.keep_finished_jobs
    if keep == "all" or (keep == "failed" and phase == FAILED):
        return
    meta = job["metadata"]
    for member in batch.decode_members((meta.get("annotations") or {}).get(MEMBERS_ANNOTATION)):
        cr = rt.kube.read_separation_job(namespace, member.name)
        same = cr is not None and cr["metadata"].get("uid") == member.uid
        if same and cr is not None and (cr.get("status") or {}).get("phase") not in TERMINAL:
            return  # it records its outcome first, then deletes the Job
    rt.kube.delete_job(namespace, meta["name"], meta["uid"])
    log.info("job %s/%s deleted: its separations recorded their outcome", namespace, meta["name"])


def _job_refusal(exc: JobRefusedError, spec: dict[str, Any]) -> tuple[str, str]:
    """A Job the API server will never create fails its SeparationJob (a cluster's own
    admission policy on Jobs, a pod the checks above did not foresee) instead of a creation
    retried on every sync."""
    reason = refusals.FORBIDDEN if exc.status == 403 else refusals.INVALID_ARGUMENTS
    message = exc.message
    url = source_url(spec)
    if url:  # the server may quote the pod's environment: no query (a signature) in a status
        message = message.replace(url, urls.redact(url))
    return reason, f"the API server refused the separation's Job ({exc.status}): {message}"


def _workload(rt: Runtime, job: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """(the Kueue Workload of a Job handed to a Kueue queue, whether Kueue is absent); a
    finished Job's too: its evictions are attempts the final status counts."""
    meta = job["metadata"]
    if kueue.QUEUE_LABEL not in (meta.get("labels") or {}):
        return None, False
    try:
        return rt.kube.find_workload(meta["namespace"], meta["uid"]), False
    except KueueAbsentError:
        return None, True


def _not_ours(namespace: str, name: str) -> None:
    # A Job left by an earlier SeparationJob of the same name; the garbage collector is
    # removing it. Ours is created on a later sync.
    log.info("job %s/%s belongs to an earlier SeparationJob; waiting", namespace, name)


def _podless_for_long(job: dict[str, Any], now: datetime.datetime) -> bool:
    """Whether a Job without pods is old enough to ask the Job controller why (its
    FailedCreate events): it makes the pod within a second or two, and under a burst the
    question was a seventh of the API calls of a Job's first syncs (issue #18)."""
    created = parse_time(job["metadata"].get("creationTimestamp"))
    return created is None or (now - created).total_seconds() >= POD_CREATION_GRACE


def _runnable(job: dict[str, Any]) -> bool:
    """A Job that should have a pod: neither suspended (for Kueue) nor finished."""
    return not (job.get("spec") or {}).get("suspend") and not job_finished(job)


def _pods_label(job: dict[str, Any]) -> str:
    """The pods of a Job carry its leader's uid (a single Job's leader is its only one)."""
    return str((job["metadata"].get("labels") or {}).get(UID_LABEL, ""))


def _model(rt: Runtime, cr: dict[str, Any]) -> str:
    """The model a SeparationJob runs (its own, or the deployment's default) as a metric label:
    one the deployment serves, else "other" (a spec may name anything: the label's values
    stay bounded)."""
    options = catalogue.effective(catalogue.from_spec(cr.get("spec") or {}), rt.config.models)
    model = str(options.get("model") or "")
    return model if model in rt.config.models.names else "other"


def _observe_transition(
    cr: dict[str, Any],
    old: dict[str, Any],
    patch: dict[str, Any],
    now: datetime.datetime,
    model: str = "unknown",
) -> None:
    before, after = old.get("phase"), patch.get("phase")
    if before == after:
        return
    created = parse_time(cr["metadata"].get("creationTimestamp"))
    started = parse_time(patch.get("startTime") or old.get("startTime"))
    if after == RUNNING and created:
        metrics.QUEUED_SECONDS.observe((now - created).total_seconds())
    if after in (COMPLETED, FAILED):
        if before != RUNNING and created and started:
            metrics.QUEUED_SECONDS.observe(max(0.0, (started - created).total_seconds()))
        if started:
            metrics.RUNNING_SECONDS.observe(max(0.0, (now - started).total_seconds()))
        if after == FAILED:
            metrics.FAILURES.labels(reason=patch.get("reason", "Unknown"), model=model).inc()
        if after == COMPLETED and created:
            metrics.COMPLETION_SECONDS.labels(model=model).observe(
                max(0.0, (now - created).total_seconds())
            )
            audio = usage.audio_seconds_of(cr.get("status"))
            if audio > 0:
                metrics.AUDIO_SECONDS.labels(model=model).inc(audio)
                if started:
                    running = max(0.0, (now - started).total_seconds())
                    metrics.REALTIME_FACTOR.labels(model=model).observe(running / audio)


def expire(rt: Runtime, cr: dict[str, Any], now: datetime.datetime) -> bool:
    """Deletes a finished SeparationJob past its time to live; True if it did."""
    status = cr.get("status") or {}
    finished = parse_time(status.get("completionTime"))
    if status.get("phase") not in TERMINAL or finished is None:
        return False
    ttl = cr["spec"].get("ttlSecondsAfterFinished", rt.config.ttl_seconds_after_finished)
    if (now - finished).total_seconds() < ttl:
        return False
    meta = cr["metadata"]
    rt.kube.delete_separation_job(meta["namespace"], meta["name"], meta["uid"])
    return True


def remove_objects(rt: Runtime, cr: dict[str, Any]) -> None:
    """The finalizer's work: the job's input and result leave storage with it; the song it
    separated stays counted for its key's day (the ledger entry goes first: a failed write
    is retried with the rest, never skipped). Nothing outside the namespace's storage scope
    is written or deleted, whatever the SeparationJob names (it may have been refused for
    naming it)."""
    now = datetime.datetime.now(datetime.UTC)
    namespace = str(cr["metadata"].get("namespace") or "")
    scope = rt.config.scopes.of(namespace)
    entry = ledger.entry_for(cr, now, scope.prefix)
    if entry is not None and scope.allows(*entry):
        bucket, key = entry
        rt.storage.put_empty(bucket, key)
        prefix = key.rsplit("/", 1)[0] + "/"
        for old in ledger.expired(rt.storage.keys(bucket, prefix), now, scope.prefix):
            rt.storage.delete(bucket, old)
    spec = cr.get("spec") or {}
    annotations = cr["metadata"].get("annotations") or {}
    # An input the job was given rather than made (the API's s3 source) is not the job's own.
    kept = annotations.get(KEEP_INPUT_ANNOTATION) == "true"
    output = spec.get("output")
    for ref in (None if kept else spec.get("input"), output):
        if not (ref and ref.get("bucket") and ref.get("key")):
            continue
        bucket, key = str(ref["bucket"]), str(ref["key"])
        if key_problem(key) is None and scope.allows(bucket, key):
            if ref is output:
                # A separator still uploading through the job link: its parts go too (the
                # link never completes the upload of a SeparationJob that is gone).
                rt.storage.abort_uploads(bucket, key)
            rt.storage.delete(bucket, key)
        else:
            log.info(
                "cleanup of %s/%s leaves s3://%s/%s: outside the namespace's storage (%s)",
                namespace,
                cr["metadata"].get("name"),
                bucket,
                key,
                scope.describe(),
            )
    rt.phases.forget(cr["metadata"]["uid"])
    rt.admitted.pop(cr["metadata"]["uid"], None)
    rt.announced.pop(cr["metadata"]["uid"], None)
