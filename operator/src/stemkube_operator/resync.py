"""The level-based resync of unfinished SeparationJobs, and the webhooks that are due, from one
loop for the whole operator.

Kopf timers did this per object: a task per SeparationJob woken every few seconds and, since
Kopf keeps the last body of every object of a resource that has timers, a copy of every
SeparationJob in memory, finished ones included (issue #18: the operator's memory grew with
the history). This loop goes over the operator's index, which holds only the SeparationJobs
that still need something (``handlers.needs_work``: a finished one until its webhook is
delivered and it is labelled settled, settled.py), with a few threads, and keeps nothing per
finished one. The syncs go to the work queue (workqueue.py) behind what events ask for.

It asks for RESYNC_RATE syncs a second at most, those waited longest first: with 1,000
unfinished, a sync of each every 5 s was 200 syncs a second, several API calls each, on top of
the work itself, and on 2 cores the burst it guards waited minutes for it (issue #18). Each is
resynced every RESYNC_SECONDS, or every n / RESYNC_RATE seconds when there are n > 100. A new
one's first resync is an interval after the loop first sees it: its creation (or the
operator's start) has just synced it.
"""

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from stemkube_contract import webhooks as contract_webhooks
from stemkube_operator import webhooks

log = logging.getLogger(__name__)

RESYNC_SECONDS = 5.0  # how often each unfinished SeparationJob is reconciled, at most
RESYNC_RATE = 20.0  # resyncs a second, at most
WORKERS = 4  # reconciles at once: each is a few API calls, mostly waiting


def webhook_tick() -> float:
    """How often a finished SeparationJob with a webhook to deliver is looked at (the first
    retry's delay, at most RESYNC_SECONDS); a bad value is the configuration's to refuse."""
    try:
        return min(RESYNC_SECONDS, contract_webhooks.Backoff.from_env(os.environ).tick())
    except ValueError:
        return RESYNC_SECONDS


Sync = Callable[[str, str], None]  # (namespace, name)


def _webhook_pending(cr: dict[str, Any]) -> bool:
    return webhooks.pending(cr.get("spec"), cr.get("status"))


class Resync:
    """What to do at each tick (``tick``), apart from the clock and the thread: testable."""

    def __init__(
        self,
        view: Callable[[], Iterable[dict[str, Any]]],
        sync: Sync,
        deliver: Sync,
        interval: float = RESYNC_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        rate: float = RESYNC_RATE,
    ) -> None:
        self.view, self.sync, self.deliver = view, sync, deliver
        self.interval, self.clock, self.rate = interval, clock, rate
        self.last: dict[str, float] = {}  # uid -> when it was last reconciled here (or seen)
        self.previous: float | None = None  # when due() was last called

    def due(self) -> list[tuple[Sync, str, str]]:
        """The calls this tick makes: every unfinished SeparationJob not reconciled here for an
        interval (longer with more of them: RESYNC_RATE), every finished one with a webhook to
        deliver."""
        now = self.clock()
        elapsed = self.interval if self.previous is None else now - self.previous
        self.previous = now
        calls: list[tuple[Sync, str, str]] = []
        seen = set()
        crs = list(self.view())
        interval = max(self.interval, sum(not _webhook_pending(cr) for cr in crs) / self.rate)
        overdue: list[tuple[float, str, str, str]] = []
        for cr in crs:
            meta = cr.get("metadata") or {}
            uid, namespace, name = meta.get("uid"), meta.get("namespace"), meta.get("name")
            if not (uid and namespace and name):
                continue
            seen.add(uid)
            if _webhook_pending(cr):
                calls.append((self.deliver, namespace, name))
                continue
            # Unfinished; or finished but not yet labelled settled, which the sync does.
            last = self.last.setdefault(uid, now)
            if now - last >= interval:
                overdue.append((last, uid, namespace, name))
        overdue.sort()
        for _, uid, namespace, name in overdue[: max(1, round(self.rate * elapsed))]:
            self.last[uid] = now
            calls.append((self.sync, namespace, name))
        for gone in set(self.last) - seen:
            del self.last[gone]
        return calls

    def tick(self, pool: concurrent.futures.Executor) -> None:
        """This tick's calls, a few at once; the next tick waits for them all."""
        futures = {pool.submit(call, ns, name): (ns, name) for call, ns, name in self.due()}
        for future, (namespace, name) in futures.items():
            try:
                future.result()
            except Exception:
                log.exception("resync of %s/%s failed; again at the next interval", namespace, name)


def start(
    resync: Resync,
    stop: threading.Event,
    acting: Callable[[], bool] = lambda: True,
    tick: float | None = None,
) -> threading.Thread:
    """The loop, every ``tick`` seconds (the webhook tick) while ``acting`` (this replica
    leads)."""
    every = webhook_tick() if tick is None else tick

    def loop() -> None:
        with concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="resync") as pool:
            while not stop.wait(every):
                if not acting():
                    continue
                try:
                    resync.tick(pool)
                except Exception:
                    log.exception("resync failed; again at the next tick")

    thread = threading.Thread(target=loop, name="resync", daemon=True)
    thread.start()
    return thread
