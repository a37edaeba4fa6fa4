"""Prometheus metrics of the operator."""

from prometheus_client import Counter, Gauge, Histogram

# Separations take seconds to hours: buckets from 1 s to 4 h.
_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)

JOBS = Gauge("stemkube_separation_jobs", "SeparationJobs by phase", ["phase"])
QUEUED_SECONDS = Histogram(
    "stemkube_separation_queued_seconds",
    "From a SeparationJob's creation to its separation starting to run",
    buckets=_BUCKETS,
)
RUNNING_SECONDS = Histogram(
    "stemkube_separation_running_seconds",
    "From a separation starting to run to its end, success or failure",
    buckets=_BUCKETS,
)
FAILURES = Counter("stemkube_separation_failures_total", "Failed separations by reason", ["reason"])
JOBS_CREATED = Counter("stemkube_jobs_created_total", "batch/v1 Jobs created for separations")
BATCH_SIZE = Histogram(
    "stemkube_job_separations",
    "SeparationJobs per created Job (more than 1: a batch)",
    buckets=(1, 2, 4, 8, 16, 32),
)


class PhaseCounts:
    """Counts SeparationJobs by phase from what the operator sees, for the JOBS gauge."""

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}

    def observe(self, uid: str, phase: str) -> None:
        self._phases[uid] = phase
        self._publish()

    def forget(self, uid: str) -> None:
        self._phases.pop(uid, None)
        self._publish()

    def _publish(self) -> None:
        counts: dict[str, int] = dict.fromkeys(("Pending", "Running", "Completed", "Failed"), 0)
        for phase in list(self._phases.values()):
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            JOBS.labels(phase=phase).set(count)
