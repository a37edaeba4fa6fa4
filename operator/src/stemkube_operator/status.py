"""What a SeparationJob's status should say, from what its Job and pods say. Pure: the caller
reads the objects (plain dicts, as the API returns them) and writes the result.

Level-based: the answer depends only on the objects as they are now, never on which event
arrived, so a missed or repeated event, or a restarted operator, reaches the same status.
"""

import datetime
from dataclasses import dataclass, field
from typing import Any

from stemkube_contract import batch, exitcodes, kueue
from stemkube_contract import options as catalogue
from stemkube_contract.models import Catalog
from stemkube_contract.resource import (
    COMPLETED,
    CONTAINER,
    FAILED,
    PENDING,
    RUNNING,
    TERMINAL,
    bounded_message,
)
from stemkube_contract.timefmt import human_duration, parse_time, rfc3339

__all__ = ["COMPLETED", "FAILED", "PENDING", "RUNNING", "TERMINAL", "human_duration", "parse_time"]

IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")


@dataclass(frozen=True)
class Observed:
    """What the operator saw of a SeparationJob's world."""

    job: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    # None: the job may run (no limit, or a slot is free); n: n separations are ahead of it.
    queued_ahead: int | None = None
    result_size: int | None = None
    # (reason, message) when admission refused the spec: it fails without a Job.
    refused: tuple[str, str] | None = None
    # The Kueue Workload of a Job handed to a Kueue queue (None: none yet, or no queue), and
    # whether the cluster serves Workloads at all.
    workload: dict[str, Any] | None = None
    kueue_absent: bool = False
    # Why the Job controller cannot create the Job's pod (its FailedCreate event), while it has
    # none.
    pod_creation_failure: str | None = None


def output_stems(spec: dict[str, Any], models: Catalog) -> list[str]:
    return catalogue.stems_of(catalogue.from_spec(spec, lenient=True), models)


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def _newest(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not pods:
        return None
    return max(
        pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"])
    )


def _container_status(pod: dict[str, Any]) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return dict(status)
    return {}


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    state = _container_status(pod).get("state") or {}
    terminated = state.get("terminated")
    return dict(terminated) if terminated else None


def _last_failure(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    failed = [p for p in pods if (_terminated(p) or {}).get("exitCode", 0) != 0]
    newest = _newest(failed)
    return _terminated(newest) if newest else None


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _attempts(
    job: dict[str, Any], pods: list[dict[str, Any]], workload: dict[str, Any] | None = None
) -> int:
    """Pods the Job ran: its counters, or the pods themselves while the Job controller has yet
    to count a finished one (it tracks them as uncounted for a moment); plus the runs Kueue
    ended by evicting the Workload, whose pods the Job controller removes without counting."""
    status = job.get("status") or {}
    counted = sum(int(status.get(k) or 0) for k in ("failed", "succeeded", "active"))
    return max(counted, len(pods)) + kueue.evictions(workload)


def failure(
    job: dict[str, Any],
    pods: list[dict[str, Any]],
    spec: dict[str, Any],
    workload: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """(reason, message) for a failed Job: the separator's own words where it left any."""
    job_failed = _condition(job, "Failed") or {}
    job_reason = job_failed.get("reason") or "JobFailed"
    terminated = _last_failure(pods)
    attempts = _attempts(job, pods, workload)
    said = _one_line(terminated.get("message", "")) if terminated else ""
    if job_reason == "DeadlineExceeded":
        limit = (job.get("spec") or {}).get("activeDeadlineSeconds")
        message = f"the separation did not finish within activeDeadlineSeconds ({limit}s)"
        return "DeadlineExceeded", f"{message}; last error: {said}" if said else message
    if terminated is None:
        return job_reason, job_failed.get("message") or "the separation Job failed"
    code = int(terminated.get("exitCode") or 0)
    meaning = exitcodes.meaning(code)
    if terminated.get("reason") == "OOMKilled" and meaning.retryable:
        return "OutOfMemory", (
            f"the separator ran out of memory after {attempts} attempt(s); "
            "raise the separator's memory limit or use a shorter --segment"
        )
    failed = exitcodes.failure(code, said, attempts)
    return failed.reason, failed.message


def _pending_reason(pod: dict[str, Any]) -> tuple[str, str]:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            return reason, condition.get("message") or "waiting for a node with a free GPU"
    waiting = (_container_status(pod).get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    if reason in IMAGE_PULL_REASONS:
        return reason, waiting.get("message") or "cannot pull the separator image"
    if reason == "CreateContainerConfigError":
        return reason, waiting.get(
            "message"
        ) or "the pod's configuration refers to something missing"
    if reason in ("ContainerCreating", "PodInitializing"):
        return "ContainerCreating", "pulling the separator image and starting the container"
    if (pod.get("spec") or {}).get("nodeName"):
        return "ContainerCreating", "starting on its node"
    return "Scheduling", "waiting for the scheduler"


def batch_size(job: dict[str, Any] | None) -> int:
    """How many SeparationJobs the Job runs (1: it is not a batch)."""
    if job is None:
        return 0
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    return max(1, len(batch.decode_members(annotations.get(batch.MEMBERS_ANNOTATION))))


def _batch_member_end(
    cr: dict[str, Any], job: dict[str, Any], observed: Observed
) -> tuple[str, str, str] | None:
    """A member of a batch ends by its own outcome (its separator's words), not the Job's: the
    Job goes on with the others. A Job that completed without a member's outcome (the write
    was lost) still has its result in storage, or the member failed."""
    outcome = batch.outcome_of(cr.get("status"))
    if outcome is not None:
        if outcome.exit_code == exitcodes.OK:
            return COMPLETED, "Completed", "stems are ready"
        attempts = _attempts(job, observed.pods, observed.workload)
        failed = exitcodes.failure(outcome.exit_code, outcome.message, attempts)
        return FAILED, failed.reason, failed.message
    if _condition(job, "Complete"):
        if observed.result_size is not None:
            return COMPLETED, "Completed", "stems are ready"
        lost = "the batch Job ended without this separation's result"
        return FAILED, exitcodes.OTHER.reason, lost
    return None


def _phase_reason_message(cr: dict[str, Any], observed: Observed) -> tuple[str, str, str]:
    job = observed.job
    if job is None and observed.refused is not None:
        return FAILED, *observed.refused
    if job is None:
        if observed.queued_ahead is not None:
            ahead = observed.queued_ahead
            return (
                PENDING,
                "Queued",
                (
                    "waiting for a free slot (the next to start)"
                    if ahead == 0
                    else f"waiting for a free slot; {ahead} separation(s) ahead"
                ),
            )
        return PENDING, "Creating", "creating the separation Job"
    members = batch_size(job)
    if members > 1:
        ended = _batch_member_end(cr, job, observed)
        if ended is not None:
            return ended
    if _condition(job, "Complete"):
        return COMPLETED, "Completed", "stems are ready"
    if _condition(job, "Failed"):
        reason, message = failure(job, observed.pods, cr["spec"], observed.workload)
        return FAILED, reason, message
    if (job.get("spec") or {}).get("suspend"):
        return _kueue_wait(job, observed)
    pod = _newest(observed.pods)
    if pod is None and observed.pod_creation_failure:
        said = _one_line(observed.pod_creation_failure)
        return PENDING, "FailedCreate", f"the Job cannot create its pod: {said}"
    if pod is None:
        return PENDING, "Starting", "the Job is creating its pod"
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Running":
        attempt = _attempts(job, observed.pods, observed.workload)
        doing = "separating" if members <= 1 else f"separating in a batch of {members}"
        return RUNNING, "Running", doing if attempt <= 1 else f"{doing} (attempt {attempt})"
    if phase == "Pending":
        reason, message = _pending_reason(pod)
        return PENDING, reason, message
    if phase == "Succeeded":
        # It exited 0 and the Job controller has not marked the Job Complete yet (it lags by
        # a moment): not a failed attempt.
        return RUNNING, "Finishing", "the separation ended; waiting for its Job to complete"
    # The newest pod failed but the Job has not concluded: the Job controller is about to retry.
    said = _one_line((_terminated(pod) or {}).get("message", ""))
    return RUNNING, "Retrying", f"attempt failed ({said or 'no message'}); retrying"


def _kueue_wait(job: dict[str, Any], observed: Observed) -> tuple[str, str, str]:
    """Why a suspended Job waits, in Kueue's words: its Workload's conditions."""
    queue = ((job.get("metadata") or {}).get("labels") or {}).get(kueue.QUEUE_LABEL, "")
    if observed.kueue_absent:
        return (
            PENDING,
            "KueueNotInstalled",
            (
                f"the Job waits for Kueue to admit it (queue {queue!r}), but this cluster "
                f"serves no Kueue Workloads: install Kueue, or run without a queue "
                f"(spec.queueName, the chart's separator.kueue.queueName)"
            ),
        )
    workload = observed.workload
    if workload is None:
        return PENDING, "Queued", f"waiting for Kueue to admit the Job (queue {queue!r})"
    if kueue.holds(workload, kueue.QUOTA_RESERVED):
        where = kueue.cluster_queue(workload) or "its cluster queue"
        return PENDING, "Admitted", f"admitted by Kueue ({where}); starting"
    reserved = kueue.condition(workload, kueue.QUOTA_RESERVED) or {}
    said = _one_line(reserved.get("message") or "")
    evicted = kueue.condition(workload, kueue.EVICTED) or {}
    if evicted.get("status") == "True":
        reason = "Preempted" if evicted.get("reason") == kueue.PREEMPTED else "Evicted"
        why = _one_line(evicted.get("message") or "") or reason.lower()
        return (
            PENDING,
            reason,
            (
                f"Kueue stopped the separation ({why}); it runs again, as a new attempt, once "
                f"readmitted" + (f": {said}" if said else "")
            ),
        )
    if reserved.get("reason") == kueue.INADMISSIBLE:
        return PENDING, "Inadmissible", f"Kueue cannot admit the Job: {said or 'no reason given'}"
    if not reserved:
        # Kueue made the Workload but its scheduler has not tried it yet: there is no
        # shortage to name, so it is still only queued.
        return PENDING, "Queued", f"queued in Kueue (queue {queue!r}); not yet considered"
    return PENDING, "WaitingForQuota", said or f"waiting for quota in Kueue (queue {queue!r})"


def _conditions(
    old: list[dict[str, Any]],
    phase: str,
    reason: str,
    message: str,
    job_exists: bool,
    now: str,
    generation: int,
) -> list[dict[str, Any]]:
    wanted = {
        "Admitted": (job_exists, "JobCreated" if job_exists else reason),
        "Running": (phase == RUNNING, reason),
        "Complete": (phase == COMPLETED, reason),
        "Failed": (phase == FAILED, reason),
    }
    previous = {c["type"]: c for c in old}
    result = []
    for kind, (is_true, why) in wanted.items():
        status = "True" if is_true else "False"
        before = previous.get(kind)
        changed = before is None or before.get("status") != status
        result.append(
            {
                "type": kind,
                "status": status,
                "reason": why,
                "message": message if is_true or kind == "Admitted" else "",
                "lastTransitionTime": now
                if changed or before is None
                else before["lastTransitionTime"],
                "observedGeneration": generation,
            }
        )
    return result


def desired_status(
    cr: dict[str, Any], observed: Observed, now: datetime.datetime, models: Catalog | None = None
) -> dict[str, Any]:
    """The status fields the operator owns, as a merge patch. ``progress`` while running belongs
    to the separator and is left out; a finished status never changes again."""
    old: dict[str, Any] = dict(cr.get("status") or {})
    if old.get("phase") in TERMINAL:
        return {}
    stamp = rfc3339(now)
    generation = int(cr["metadata"].get("generation") or 1)
    phase, reason, message = _phase_reason_message(cr, observed)
    message = bounded_message(message)
    job = observed.job
    status: dict[str, Any] = {
        "phase": phase,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "conditions": _conditions(
            old.get("conditions") or [], phase, reason, message, job is not None, stamp, generation
        ),
    }
    if job is not None:
        status["jobName"] = job["metadata"]["name"]
        status["attempts"] = _attempts(job, observed.pods, observed.workload)
    if phase == PENDING and "progress" not in old:
        status["progress"] = 0
    start = old.get("startTime")
    if phase in (RUNNING, *TERMINAL) and not start:
        start = (job or {}).get("status", {}).get("startTime") or stamp
        status["startTime"] = start
    if phase in TERMINAL:
        # A member of a batch ends before its Job does.
        job_end = ((job or {}).get("status") or {}).get("completionTime")
        finished = (job_end if batch_size(job) <= 1 else None) or stamp
        status["completionTime"] = finished
        began = parse_time(start) or parse_time(cr["metadata"].get("creationTimestamp"))
        ended = parse_time(finished)
        if began and ended:
            status["duration"] = human_duration((ended - began).total_seconds())
    if phase == COMPLETED:
        spec = cr["spec"]
        status["progress"] = 100
        status["result"] = {
            "bucket": spec["output"]["bucket"],
            "key": spec["output"]["key"],
            "stems": output_stems(spec, models or Catalog()),
        }
        if observed.result_size is not None:
            status["result"]["size"] = observed.result_size
    return status


def changed_fields(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The part of ``patch`` that differs from ``old``: nothing to write when it is empty."""
    return {k: v for k, v in patch.items() if old.get(k) != v}
