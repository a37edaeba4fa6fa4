"""Kueue, as stemkube uses it: the labels that hand a separation's Job to a Kueue LocalQueue,
the Workload that Kueue makes of it, and the settings the chart gives the operator.

A SeparationJob names a LocalQueue (``spec.queueName``) and a WorkloadPriorityClass
(``spec.workloadPriorityClass``), or takes the deployment's (``separator.kueue.queueName``,
``separator.kueue.priorityClass``). Its Job is created suspended with Kueue's labels; Kueue
makes a Workload of it, reserves quota in a ClusterQueue, and admits it by unsuspending the Job.
The operator reads that Workload to say why a separation waits (its conditions) and how often
Kueue evicted it (``status.schedulingStats``): a preempted separation runs again, as another
attempt, rather than failing.

Which WorkloadPriorityClass a SeparationJob may name is the deployment's choice, as for pod
priority classes: a high one would let a tenant preempt everyone else's separations.
"""

from collections.abc import Mapping
from typing import Any, Final

QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
PRIORITY_CLASS_LABEL: Final = "kueue.x-k8s.io/priority-class"
# On a Workload: the uid of the Job it stands for.
JOB_UID_LABEL: Final = "kueue.x-k8s.io/job-uid"

GROUP: Final = "kueue.x-k8s.io"
# Kueue 0.17 serves v1beta1 and v1beta2 and stores v1beta2; the fields read here are in both.
VERSION: Final = "v1beta2"
WORKLOADS: Final = "workloads"

QUEUE_ENV: Final = "STEMKUBE_KUEUE_QUEUE"
PRIORITY_CLASS_ENV: Final = "STEMKUBE_KUEUE_PRIORITY_CLASS"
ALLOWED_PRIORITY_CLASSES_ENV: Final = "STEMKUBE_KUEUE_ALLOWED_PRIORITY_CLASSES"

# Workload condition types and the reasons read here (Kueue's apis/kueue/v1beta2).
QUOTA_RESERVED: Final = "QuotaReserved"
ADMITTED: Final = "Admitted"
EVICTED: Final = "Evicted"
FINISHED: Final = "Finished"
INADMISSIBLE: Final = "Inadmissible"
PREEMPTED: Final = "Preempted"


def condition(workload: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The Workload's condition of type ``kind``, whatever its status."""
    for found in ((workload or {}).get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return dict(found)
    return None


def holds(workload: Mapping[str, Any] | None, kind: str) -> bool:
    return (condition(workload, kind) or {}).get("status") == "True"


def evictions(workload: Mapping[str, Any] | None) -> int:
    """How many times Kueue evicted the Workload (preempted it, or took its quota back): each
    one ended a run of the separation, which runs again once readmitted."""
    stats = ((workload or {}).get("status") or {}).get("schedulingStats") or {}
    return sum(int(e.get("count") or 0) for e in stats.get("evictions") or [])


def cluster_queue(workload: Mapping[str, Any] | None) -> str:
    admission = ((workload or {}).get("status") or {}).get("admission") or {}
    return str(admission.get("clusterQueue") or "")
