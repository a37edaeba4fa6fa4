"""The optional limit on separation Jobs running at once: who may start next, and who joins
its Job when there is a backlog. Pure."""

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    uid: str
    created: str  # creationTimestamp, RFC 3339: sorts in time order
    name: str
    namespace: str
    finished: bool
    job: str | None = None  # the Job that runs it, once it has one (or was just given one)
    key: str = ""  # the batch key (stemkube_contract.batch.batch_key): equal keys may share

    @property
    def admitted(self) -> bool:
        return self.job is not None


@dataclass(frozen=True)
class Line:
    """The queue as it stands: the slots taken and the separations waiting, oldest first."""

    active_jobs: int
    waiting: list[Entry]

    def free(self, limit: int) -> int:
        return max(0, limit - self.active_jobs)


def line_up(entries: Iterable[Entry]) -> Line:
    """A slot is a Job, not a SeparationJob: the members of a batch take one together."""
    jobs: set[str] = set()
    waiting: list[Entry] = []
    for entry in entries:
        if entry.finished:
            continue
        if entry.job is not None:
            jobs.add(entry.job)
        else:
            waiting.append(entry)
    waiting.sort(key=lambda e: (e.created, e.namespace, e.name))
    return Line(len(jobs), waiting)


def queue_position(uid: str, entries: Iterable[Entry], limit: int) -> int | None:
    """None when ``uid`` may have its Job now; otherwise how many waiting separations are ahead
    of it. Oldest first; ``limit`` 0 means no limit."""
    if limit <= 0:
        return None
    entries = list(entries)
    if any(e.uid == uid and e.admitted and not e.finished for e in entries):
        return None
    line = line_up(entries)
    position = next((i for i, e in enumerate(line.waiting) if e.uid == uid), len(line.waiting))
    free = line.free(limit)
    return None if position < free else position - free


def companions(uid: str, entries: Iterable[Entry], limit: int, max_per_job: int) -> list[Entry]:
    """Who joins ``uid``'s Job as it starts: with a backlog (more separations waiting than free
    slots), up to ``max_per_job - 1`` of those that would still have to wait and share its
    batch key, oldest first. A short queue (everyone has a slot) batches nothing: one Job per
    separation has the lowest latency. Only with a limit: without one nothing waits."""
    if limit <= 0 or max_per_job <= 1:
        return []
    line = line_up(entries)
    free = line.free(limit)
    leader = next((e for e in line.waiting[:free] if e.uid == uid), None)
    if leader is None:  # it has no slot (or a Job already)
        return []
    behind = line.waiting[free:]
    joining = [e for e in behind if e.key == leader.key and e.uid != uid]
    return joining[: max_per_job - 1]
