"""The transition Events' own thread (``events.EventQueue``): in order, slim, bounded."""

import threading
import time
from typing import Any

from stemkube_operator.events import EventQueue


def cr(name: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "uid": f"u-{name}", "managedFields": ["big"]}
    return {"metadata": meta, "spec": {"input": "x" * 1000}, "status": {}}


def test_events_are_posted_in_order_by_their_thread_with_what_they_name_only() -> None:
    posted: list[tuple[dict[str, Any], str, str, str]] = []
    done = threading.Event()

    def post(obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        posted.append((obj, kind, reason, message))
        if reason == "Completed":
            done.set()

    events = EventQueue(post).start()
    events.post(cr("a"), "Normal", "Starting", "Pending: the Job is starting")
    events.post(cr("a"), "Normal", "Running", "Running: 1 attempt")
    events.post(cr("a"), "Normal", "Completed", "Completed: stems ready")
    assert done.wait(5)
    assert [p[2] for p in posted] == ["Starting", "Running", "Completed"]
    assert posted[0][0] == {"metadata": {"name": "a", "namespace": "ns", "uid": "u-a"}}


def test_a_full_backlog_drops_the_newest_and_a_failure_stops_nothing() -> None:
    gate = threading.Event()
    posted: list[str] = []

    def post(obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        gate.wait(5)
        if reason == "boom":
            raise RuntimeError("the API server said no")
        posted.append(reason)

    events = EventQueue(post, backlog=2).start()
    events.post(cr("a"), "Normal", "boom", "")  # taken by the thread, which waits at the gate
    time.sleep(0.1)
    for reason in ("one", "two", "three"):
        events.post(cr("a"), "Normal", reason, "")
    gate.set()
    deadline = time.monotonic() + 5
    while len(posted) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert posted == ["one", "two"]
