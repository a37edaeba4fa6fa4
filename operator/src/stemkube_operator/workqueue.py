"""The SeparationJobs waiting for a sync, and the threads that sync them (client-go's workqueue,
with two levels).

Every trigger (a SeparationJob created, its Job or pod changed, the resync's turn) only adds
the SeparationJob's key here. A key is queued at most once, however many events name it while
it waits, and never synced by two threads at once: an event that comes during its sync queues
it once more, for after. So a burst of events for one SeparationJob costs one sync, not one
each (issue #18: 1,000 SeparationJobs at once made tens of thousands of syncs, each a few API
calls).

``URGENT`` keys go first: a SeparationJob that waits for its Job, or whose Job has just ended
(the two moments a person waits for); ``ROUTINE`` ones (a pod's progress, the resync) when no
urgent one waits, and ROUTINE_DELAY after they were first asked for: a pod's first changes
come within a second of each other (created, scheduled, started), and one sync sees them all.
An urgent add of a key queued as routine moves it up.
"""

import collections
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
URGENT, ROUTINE = 0, 1
ROUTINE_DELAY = 1.0  # seconds


class WorkQueue:
    def __init__(
        self, delay: float = ROUTINE_DELAY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._delay, self._clock = delay, clock
        self._ready: dict[Key, float] = {}  # a routine key -> when it may be synced
        self._cond = threading.Condition()
        self._lines: tuple[collections.deque[Key], ...] = (collections.deque(), collections.deque())
        self._queued: dict[Key, int] = {}  # key -> its level, while it waits
        self._processing: set[Key] = set()
        self._again: dict[Key, int] = {}  # added while being synced: queued when that ends
        self._closed = False

    def add(self, key: Key, level: int = ROUTINE) -> None:
        with self._cond:
            if self._closed:
                return
            if key in self._processing:
                self._again[key] = min(level, self._again.get(key, level))
                return
            queued = self._queued.get(key)
            if queued is not None and queued <= level:
                return
            if queued is not None:
                self._lines[queued].remove(key)  # moved up: rare, and the lines are short then
                self._ready.pop(key, None)
            self._queued[key] = level
            self._lines[level].append(key)
            if level == ROUTINE:
                self._ready[key] = self._clock() + self._delay
            self._cond.notify()

    def get(self) -> Key | None:
        """The next key, marked as being synced (``done`` ends that); None once closed."""
        with self._cond:
            while not self._closed:
                urgent, routine = self._lines
                if urgent:
                    key = urgent.popleft()
                    break
                # The routine line is in the order of readiness: all wait the same delay.
                wait = self._ready[routine[0]] - self._clock() if routine else None
                if wait is not None and wait <= 0:
                    key = routine.popleft()
                    del self._ready[key]
                    break
                self._cond.wait(wait)
            else:
                return None
            del self._queued[key]
            self._processing.add(key)
            return key

    def done(self, key: Key) -> None:
        with self._cond:
            self._processing.discard(key)
            level = self._again.pop(key, None)
        if level is not None:
            self.add(key, level)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def depth(self) -> tuple[int, int]:
        """(urgent, routine) keys waiting."""
        with self._cond:
            return len(self._lines[URGENT]), len(self._lines[ROUTINE])


def start_workers(
    queue: WorkQueue, sync: Callable[[str, str], None], count: int
) -> list[threading.Thread]:
    """``count`` threads that sync the queue's keys until it closes."""

    def work() -> None:
        while (key := queue.get()) is not None:
            try:
                sync(*key)
            except Exception:
                log.exception("sync of %s/%s failed; again at its next event or resync", *key)
            finally:
                queue.done(key)

    threads = [threading.Thread(target=work, name=f"sync-{i}", daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads
