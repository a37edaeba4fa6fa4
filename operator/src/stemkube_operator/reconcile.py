"""One sync of one SeparationJob: read what is there, create the Job if it may run, and write
the status that follows. Safe to run any number of times, from any trigger, concurrently."""

import datetime
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from stemkube_operator import metrics
from stemkube_operator.admission import refusal
from stemkube_operator.config import OperatorConfig
from stemkube_operator.jobspec import build_job
from stemkube_operator.kube import Kube
from stemkube_operator.queue import Entry, queue_position
from stemkube_operator.resource import job_name
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

log = logging.getLogger(__name__)

# (the SeparationJob, event type "Normal"/"Warning", reason, message)
EventPoster = Callable[[dict[str, Any], str, str, str], None]
WARNING_REASONS = (
    "Unschedulable",
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
)


@dataclass
class Runtime:
    """What every handler shares: configuration, clients, and the admission bookkeeping."""

    config: OperatorConfig
    kube: Kube
    storage: Storage
    phases: metrics.PhaseCounts = field(default_factory=metrics.PhaseCounts)
    admission: threading.Lock = field(default_factory=threading.Lock)
    # Jobs this process created whose SeparationJob's status may not say so yet.
    admitted: set[str] = field(default_factory=set)


def entry_of(cr: dict[str, Any], admitted: set[str]) -> Entry:
    meta, status = cr["metadata"], cr.get("status") or {}
    return Entry(
        uid=meta["uid"],
        created=meta.get("creationTimestamp") or "",
        name=meta["name"],
        namespace=meta["namespace"],
        finished=status.get("phase") in TERMINAL,
        admitted=bool(status.get("jobName")) or meta["uid"] in admitted,
    )


def _owned_by(job: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in job["metadata"].get("ownerReferences") or [])


def reconcile(
    rt: Runtime,
    namespace: str,
    name: str,
    everyone: Callable[[], Iterable[dict[str, Any]]],
    post_event: EventPoster,
) -> None:
    cr = rt.kube.read_separation_job(namespace, name)
    if cr is None or cr["metadata"].get("deletionTimestamp"):
        return
    old = dict(cr.get("status") or {})
    if old.get("phase") in TERMINAL:
        return
    uid = cr["metadata"]["uid"]
    job = rt.kube.read_job(namespace, job_name(name))
    if job is not None and not _owned_by(job, uid):
        # A Job left by an earlier SeparationJob of the same name; the garbage collector is
        # removing it. Ours is created on a later sync.
        log.info("job %s/%s belongs to an earlier SeparationJob; waiting", namespace, name)
        return
    queued_ahead = None
    just_created = False
    refused = None
    if job is None:
        refused = refusal(cr["spec"], rt.config.models, rt.config.limits)
    if job is None and refused is None:
        with rt.admission:
            entries = [entry_of(other, rt.admitted) for other in everyone()]
            queued_ahead = queue_position(uid, entries, rt.config.max_running)
            if queued_ahead is None:
                job = rt.kube.create_job(build_job(cr, rt.config))
                just_created = True
                if uid not in rt.admitted:
                    metrics.JOBS_CREATED.inc()
                rt.admitted.add(uid)
    # A Job created a moment ago has no pods yet: spare the API server the list.
    pods = rt.kube.list_pods(namespace, uid) if job is not None and not just_created else []
    result_size = None
    complete = job is not None and any(
        c.get("type") == "Complete" and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )
    if complete:
        output = cr["spec"]["output"]
        result_size = rt.storage.size(output["bucket"], output["key"])
    now = datetime.datetime.now(datetime.UTC)
    observed = Observed(job, pods, queued_ahead, result_size, refused)
    patch = desired_status(cr, observed, now, rt.config.models)
    delta = changed_fields(old, patch)
    if not delta:
        return
    rt.kube.patch_status(namespace, name, delta)
    new_phase: str = patch["phase"]
    rt.phases.observe(uid, new_phase)
    if new_phase in TERMINAL:
        rt.admitted.discard(uid)
    _observe_transition(cr, old, patch, now)
    if (old.get("phase"), old.get("reason")) != (patch.get("phase"), patch.get("reason")):
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


def _observe_transition(
    cr: dict[str, Any], old: dict[str, Any], patch: dict[str, Any], now: datetime.datetime
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
            metrics.FAILURES.labels(reason=patch.get("reason", "Unknown")).inc()


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
    """The finalizer's work: the job's input and result leave storage with it."""
    spec = cr.get("spec") or {}
    for ref in (spec.get("input"), spec.get("output")):
        if ref and ref.get("bucket") and ref.get("key"):
            rt.storage.delete(ref["bucket"], ref["key"])
    rt.phases.forget(cr["metadata"]["uid"])
    rt.admitted.discard(cr["metadata"]["uid"])
