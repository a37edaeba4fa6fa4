"""Job and pod state -> SeparationJob status."""

import datetime
from typing import Any

from stemkube_contract.models import Catalog
from stemkube_operator.status import (
    Observed,
    changed_fields,
    desired_status,
    human_duration,
    output_stems,
)

NOW = datetime.datetime(2026, 11, 24, 12, 0, 0, tzinfo=datetime.UTC)


def cr(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "job-1",
            "namespace": "music",
            "uid": "u-1",
            "generation": 1,
            "creationTimestamp": "2026-11-24T11:58:00Z",
        },
        "spec": {
            "input": {"bucket": "b", "key": "inputs/job-1/song.mp3"},
            "output": {"bucket": "b", "key": "results/job-1.zip"},
            "model": "htdemucs",
            **spec,
        },
        "status": status or {},
    }


def job(*conditions: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "job-1"},
        "spec": {"activeDeadlineSeconds": 600},
        "status": {"conditions": list(conditions), **status},
    }


def condition(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


def pod(
    phase: str,
    *,
    created: str = "2026-11-24T11:59:00Z",
    state: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    node: str | None = "gpu-0",
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"job-1-{created[-3:-1]}", "creationTimestamp": created},
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": phase,
            "conditions": conditions or [],
            "containerStatuses": [{"name": "separator", "state": state or {}}],
        },
    }


def failed_pod(
    code: int, message: str = "", reason: str = "Error", created: str = "2026-11-24T11:59:00Z"
) -> dict[str, Any]:
    return pod(
        "Failed",
        created=created,
        state={"terminated": {"exitCode": code, "message": message, "reason": reason}},
    )


def test_queued_while_no_slot() -> None:
    status = desired_status(cr(), Observed(queued_ahead=2), NOW)
    assert (status["phase"], status["reason"]) == ("Pending", "Queued")
    assert "2 separation(s) ahead" in status["message"]
    assert status["progress"] == 0
    admitted = next(c for c in status["conditions"] if c["type"] == "Admitted")
    assert admitted["status"] == "False"
    assert admitted["reason"] == "Queued"


def test_unschedulable_pod_says_why() -> None:
    unschedulable = pod(
        "Pending",
        node=None,
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
            }
        ],
    )
    status = desired_status(cr(), Observed(job(active=1), [unschedulable]), NOW)
    assert (status["phase"], status["reason"]) == ("Pending", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in status["message"]
    assert status["jobName"] == "job-1"


def test_image_pull_trouble_is_pending_with_the_kubelet_reason() -> None:
    pulling = pod(
        "Pending", state={"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}
    )
    status = desired_status(cr(), Observed(job(active=1), [pulling]), NOW)
    assert (status["phase"], status["reason"], status["message"]) == (
        "Pending",
        "ImagePullBackOff",
        "no such image",
    )


def test_running_leaves_progress_to_the_separator() -> None:
    running = pod("Running", state={"running": {}})
    status = desired_status(
        cr({"phase": "Pending", "progress": 0}),
        Observed(job(active=1, startTime="2026-11-24T11:59:30Z"), [running]),
        NOW,
    )
    assert status["phase"] == "Running"
    assert "progress" not in status
    assert status["startTime"] == "2026-11-24T11:59:30Z"


def test_a_pod_that_succeeded_before_its_job_completes_is_not_a_failed_attempt() -> None:
    """The Job controller marks the Job Complete a moment after its pod exits 0: in between,
    the separation is finishing, not "attempt failed (no message); retrying"."""
    done = pod("Succeeded", state={"terminated": {"exitCode": 0, "reason": "Completed"}})
    status = desired_status(
        cr({"phase": "Running"}), Observed(job(active=0, succeeded=1), [done]), NOW
    )
    assert (status["phase"], status["reason"]) == ("Running", "Finishing")
    assert "failed" not in status["message"]
    retried = desired_status(
        cr({"phase": "Running"}), Observed(job(active=0, failed=1), [failed_pod(75, "hub")]), NOW
    )
    assert (retried["phase"], retried["reason"]) == ("Running", "Retrying")
    assert retried["message"] == "attempt failed (hub); retrying"


def test_completed_reports_the_result() -> None:
    done = job(condition("Complete"), succeeded=1, completionTime="2026-11-24T12:01:10Z")
    status = desired_status(
        cr({"phase": "Running", "startTime": "2026-11-24T12:00:00Z"}),
        Observed(done, [pod("Succeeded")], result_size=1234),
        NOW,
    )
    assert status["phase"] == "Completed"
    assert status["progress"] == 100
    assert status["result"] == {
        "bucket": "b",
        "key": "results/job-1.zip",
        "stems": ["vocals", "drums", "bass", "other"],
        "size": 1234,
    }
    assert status["completionTime"] == "2026-11-24T12:01:10Z"
    assert status["duration"] == "1m10s"
    complete = next(c for c in status["conditions"] if c["type"] == "Complete")
    assert complete["status"] == "True"


def test_invalid_input_fails_with_the_separators_words() -> None:
    failed = job(
        condition("Failed", "PodFailurePolicy", "Container separator for pod ... exited with 3"),
        failed=1,
    )
    pods = [failed_pod(3, "not an audio file: the upload is a PNG image")]
    status = desired_status(cr(), Observed(failed, pods), NOW)
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidInput")
    assert status["message"] == "not an audio file: the upload is a PNG image"


def test_backoff_exceeded_names_the_real_cause() -> None:
    failed = job(
        condition("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
        failed=4,
    )
    pods = [
        failed_pod(75, "storage unreachable: connection refused", created="2026-11-24T11:59:0Z"),
        failed_pod(75, "storage unreachable: timed out", created="2026-11-24T11:59:9Z"),
    ]
    status = desired_status(cr(), Observed(failed, pods), NOW)
    assert status["reason"] == "TransientError"
    assert "BackoffLimitExceeded" not in status["message"]
    assert "failed 4 time(s)" in status["message"]
    assert "storage unreachable: timed out" in status["message"]


def test_crash_takes_the_last_line_of_the_log_fallback() -> None:
    failed = job(condition("Failed", "BackoffLimitExceeded"), failed=1)
    pods = [
        failed_pod(
            1,
            "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA error: out of memory\n",
        )
    ]
    status = desired_status(cr(), Observed(failed, pods), NOW)
    assert status["reason"] == "SeparatorError"
    assert status["message"].endswith("RuntimeError: CUDA error: out of memory")


def test_oom_and_deadline() -> None:
    oom = desired_status(
        cr(),
        Observed(
            job(condition("Failed", "BackoffLimitExceeded"), failed=1),
            [failed_pod(137, reason="OOMKilled")],
        ),
        NOW,
    )
    assert oom["reason"] == "OutOfMemory"
    late = desired_status(
        cr(), Observed(job(condition("Failed", "DeadlineExceeded"), failed=1), []), NOW
    )
    assert late["reason"] == "DeadlineExceeded"
    assert "600s" in late["message"]


def test_suspended_job_waits_for_kueue() -> None:
    suspended = job()
    suspended["spec"]["suspend"] = True
    status = desired_status(cr(queueName="gpu"), Observed(suspended), NOW)
    assert (status["phase"], status["reason"]) == ("Pending", "Queued")
    assert "Kueue" in status["message"]


def queued_job() -> dict[str, Any]:
    suspended = job()
    suspended["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "gpu"}
    suspended["spec"]["suspend"] = True
    return suspended


def workload(*conditions: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "job-job-1-abcde"},
        "status": {"conditions": list(conditions), **status},
    }


def false(kind: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "False", "reason": reason, "message": message}


WAITING = false(
    "QuotaReserved",
    "Pending",
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu "
    "in flavor gpu, 1 more needed",
)


def test_kueue_state_is_the_workloads_conditions() -> None:
    def says(observed: Observed) -> tuple[str, str, str]:
        status = desired_status(cr(queueName="gpu"), observed, NOW)
        return status["phase"], status["reason"], status["message"]

    assert says(Observed(queued_job())) == (
        "Pending", "Queued", "waiting for Kueue to admit the Job (queue 'gpu')",
    )  # fmt: skip
    assert says(Observed(queued_job(), workload=workload())) == (
        "Pending", "Queued", "queued in Kueue (queue 'gpu'); not yet considered",
    )  # fmt: skip
    assert says(Observed(queued_job(), workload=workload(WAITING))) == (
        "Pending", "WaitingForQuota", WAITING["message"],
    )  # fmt: skip
    gone = false("QuotaReserved", "Inadmissible", "LocalQueue gpu doesn't exist")
    assert says(Observed(queued_job(), workload=workload(gone))) == (
        "Pending", "Inadmissible", "Kueue cannot admit the Job: LocalQueue gpu doesn't exist",
    )  # fmt: skip
    admitted = workload(
        condition("QuotaReserved", "QuotaReserved"), admission={"clusterQueue": "gpus"}
    )
    assert says(Observed(queued_job(), workload=admitted)) == (
        "Pending", "Admitted", "admitted by Kueue (gpus); starting",
    )  # fmt: skip
    phase, reason, message = says(Observed(queued_job(), kueue_absent=True))
    assert (phase, reason) == ("Pending", "KueueNotInstalled")
    assert "install Kueue" in message
    assert "separator.kueue.queueName" in message


def test_a_preempted_separation_waits_as_a_new_attempt() -> None:
    evicted = condition("Evicted", "Preempted", "Preempted to accommodate a workload (UID: x)")
    stats = {"evictions": [{"reason": "Preempted", "underlyingCause": "", "count": 1}]}
    preempted = workload(evicted, WAITING, schedulingStats=stats)
    status = desired_status(
        cr({"phase": "Running", "startTime": "2026-11-24T11:59:00Z"}, queueName="gpu"),
        Observed(queued_job(), workload=preempted),
        NOW,
    )
    assert (status["phase"], status["reason"]) == ("Pending", "Preempted")
    assert status["message"].startswith(
        "Kueue stopped the separation (Preempted to accommodate a workload (UID: x)); it runs "
        "again, as a new attempt, once readmitted: couldn't assign flavors"
    )
    assert status["attempts"] == 1  # the run Kueue ended; its pod is gone uncounted
    # Readmitted: the Job runs its next pod, the second attempt.
    running = job(active=1)
    running["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "gpu"}
    readmitted = workload(condition("QuotaReserved"), condition("Admitted"), schedulingStats=stats)
    again = desired_status(
        cr({"phase": "Pending"}, queueName="gpu"),
        Observed(running, [pod("Running", state={"running": {}})], workload=readmitted),
        NOW,
    )
    assert (again["phase"], again["attempts"]) == ("Running", 2)
    assert again["message"] == "separating (attempt 2)"


def test_a_job_that_cannot_create_its_pod_says_why() -> None:
    said = (
        'Error creating: pods "job-1-x7k2q" is forbidden: no PriorityClass with name '
        "batch-low was found"
    )
    status = desired_status(cr(), Observed(job(), pod_creation_failure=said), NOW)
    assert (status["phase"], status["reason"]) == ("Pending", "FailedCreate")
    assert status["message"] == f"the Job cannot create its pod: {said}"
    # Once it has a pod, the pod says how it goes.
    running = Observed(job(active=1), [pod("Running", state={"running": {}})])
    assert desired_status(cr(), running, NOW)["reason"] == "Running"


def test_finished_status_never_changes() -> None:
    final = {"phase": "Completed", "progress": 100}
    assert desired_status(cr(final), Observed(job(condition("Failed"))), NOW) == {}


def test_same_observation_changes_nothing() -> None:
    observed = Observed(job(active=1), [pod("Running", state={"running": {}})])
    first = desired_status(cr({"phase": "Pending"}), observed, NOW)
    later = NOW + datetime.timedelta(minutes=5)
    again = desired_status(cr({"phase": "Pending", **first}), observed, later)
    assert changed_fields({"phase": "Pending", **first}, again) == {}


def test_condition_transition_times_move_only_on_change() -> None:
    pending = desired_status(cr(), Observed(queued_ahead=0), NOW)
    later = NOW + datetime.timedelta(seconds=30)
    running = desired_status(cr(pending), Observed(job(active=1), [pod("Running")]), later)
    by_type = {c["type"]: c for c in running["conditions"]}
    assert by_type["Admitted"]["lastTransitionTime"] == "2026-11-24T12:00:30Z"
    assert by_type["Complete"]["lastTransitionTime"] == "2026-11-24T12:00:00Z"


def test_stems_and_durations() -> None:
    models = Catalog()
    assert output_stems({"twoStems": "vocals"}, models) == ["vocals", "no_vocals"]
    assert output_stems({"model": "htdemucs_6s"}, models)[-2:] == ["guitar", "piano"]
    assert output_stems({"stems": ["drums"]}, models) == ["drums"]
    assert human_duration(45) == "45s"
    assert human_duration(192) == "3m12s"
    assert human_duration(7500) == "2h5m"
