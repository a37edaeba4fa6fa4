"""The transition Events, posted by a thread of their own: a sync does not wait for them.

Under a burst every API call waits its turn at a busy API server, and a sync that posted its
Event itself spent a seventh of its time on it (issue #18's profile of 1,000 at once), time
the next SeparationJob waited for its Job. The status is the record; an Event is best effort
(``Kube.post_event``), so one thread posts them in the order they came, and a backlog beyond
EVENT_BACKLOG drops the newest with a log line rather than grow without bound. What waits
when the process stops is not posted (this replica no longer leads: Kube.post_event would
refuse it).
"""

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# (the SeparationJob, event type "Normal"/"Warning", reason, message)
EventPoster = Callable[[dict[str, Any], str, str, str], None]
EVENT_BACKLOG = 10_000
Item = tuple[dict[str, Any], str, str, str]


class EventQueue:
    def __init__(self, post: EventPoster, backlog: int = EVENT_BACKLOG) -> None:
        self._post = post
        self._queue: queue.Queue[Item] = queue.Queue(backlog)
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)

    def start(self) -> "EventQueue":
        self._thread.start()
        return self

    def post(self, cr: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = cr["metadata"]
        # What the Event names, not the whole SeparationJob: the backlog stays small.
        slim = {"metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")}}
        try:
            self._queue.put_nowait((slim, kind, reason, message))
        except queue.Full:
            log.warning(
                "event %s on %s/%s dropped: %d events wait to be posted",
                reason,
                meta.get("namespace"),
                meta.get("name"),
                self._queue.maxsize,
            )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                self._post(*item)
            except Exception:  # best effort: Kube.post_event logs its own failures
                log.exception("posting event %s failed", item[2])
