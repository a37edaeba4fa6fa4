"""The optional limit on separations running at once: who may start next. Pure."""

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    uid: str
    created: str  # creationTimestamp, RFC 3339: sorts in time order
    name: str
    namespace: str
    finished: bool
    admitted: bool  # its Job exists (or was just created)


def queue_position(uid: str, entries: Iterable[Entry], limit: int) -> int | None:
    """None when ``uid`` may have its Job now; otherwise how many waiting separations are ahead
    of it. Oldest first; ``limit`` 0 means no limit."""
    if limit <= 0:
        return None
    active = 0
    waiting: list[Entry] = []
    for entry in entries:
        if entry.finished:
            continue
        if entry.admitted:
            if entry.uid == uid:
                return None
            active += 1
        else:
            waiting.append(entry)
    waiting.sort(key=lambda e: (e.created, e.namespace, e.name))
    position = next((i for i, e in enumerate(waiting) if e.uid == uid), len(waiting))
    free = max(0, limit - active)
    return None if position < free else position - free
