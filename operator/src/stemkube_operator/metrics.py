"""Prometheus metrics of the operator: what an operations team watches (the chart's Grafana
dashboard and alert rules name only these, and a test checks they do)."""

import datetime
import threading
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from stemkube_contract.resource import PHASES

# Separations take seconds to hours: buckets from 1 s to 4 h.
_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
# Creation to Job: milliseconds with a free slot, the queue's wait without one.
_FAST_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600)
# Seconds of processing per second of audio: 0.02 on a fast GPU, about 1 on a CPU.
_RATIO_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)

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
FAILURES = Counter(
    "stemkube_separation_failures_total",
    "Failed separations by reason and model",
    ["reason", "model"],
)
COMPLETION_SECONDS = Histogram(
    "stemkube_separation_completion_seconds",
    "From a SeparationJob's creation to its Completed phase, by model",
    ["model"],
    buckets=_BUCKETS,
)
JOB_CREATION_SECONDS = Histogram(
    "stemkube_separation_job_creation_seconds",
    "From a SeparationJob's creation to the creation of the Job that runs it (its queue wait)",
    buckets=_FAST_BUCKETS,
)
AUDIO_SECONDS = Counter(
    "stemkube_audio_processed_seconds_total",
    "Seconds of audio of the completed separations, by model (status.audioSeconds)",
    ["model"],
)
REALTIME_FACTOR = Histogram(
    "stemkube_separation_processing_seconds_per_audio_second",
    "A completed separation's running time over its song's length, by model",
    ["model"],
    buckets=_RATIO_BUCKETS,
)
OLDEST_PENDING = Gauge(
    "stemkube_queue_oldest_pending_created_timestamp_seconds",
    "Creation time (Unix seconds) of the oldest Pending SeparationJob; 0 when none waits",
)
LEADING = Gauge("stemkube_operator_leading", "1 while this replica leads (acts), else 0")
JOBS_CREATED = Counter("stemkube_jobs_created_total", "batch/v1 Jobs created for separations")
BATCH_SIZE = Histogram(
    "stemkube_job_separations",
    "SeparationJobs per created Job (more than 1: a batch)",
    buckets=(1, 2, 4, 8, 16, 32),
)


class PhaseCounts:
    """Counts SeparationJobs by phase from what the operator sees, for the JOBS gauge: each
    transition it makes or sees (``observe``), and a whole recount from the expiry sweep's
    listing (``recount``), which brings in the finished ones no handler looks at any more.
    Kept as counts, so that an observation costs the same with 10,000 SeparationJobs."""

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}
        self._counts: dict[str, int] = dict.fromkeys(PHASES, 0)
        self._pending_since: dict[str, float] = {}  # uid -> creation, Unix seconds
        self._lock = threading.Lock()

    def observe(self, uid: str, phase: str, created: datetime.datetime | None = None) -> None:
        with self._lock:
            self._set(uid, phase, created)
            self._publish()

    def forget(self, uid: str) -> None:
        with self._lock:
            self._drop(uid)
            self._publish()

    def recount(self, seen: Iterable[tuple[str, str, datetime.datetime | None]]) -> None:
        """Every SeparationJob there is now, as (uid, phase, created)."""
        with self._lock:
            self._phases, self._pending_since = {}, {}
            self._counts = dict.fromkeys(PHASES, 0)
            for uid, phase, created in seen:
                self._set(uid, phase, created)
            self._publish()

    def _set(self, uid: str, phase: str, created: datetime.datetime | None) -> None:
        self._drop(uid)
        self._phases[uid] = phase
        self._counts[phase] = self._counts.get(phase, 0) + 1
        if phase == "Pending" and created is not None:
            self._pending_since[uid] = created.timestamp()

    def _drop(self, uid: str) -> None:
        old = self._phases.pop(uid, None)
        if old is not None:
            self._counts[old] -= 1
        self._pending_since.pop(uid, None)

    def _publish(self) -> None:
        OLDEST_PENDING.set(min(self._pending_since.values(), default=0))
        for phase, count in self._counts.items():
            JOBS.labels(phase=phase).set(count)
