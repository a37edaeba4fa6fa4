"""The work queue (``workqueue``): each key queued once, never synced twice at once, urgent
ones first, routine ones after a delay."""

import threading
import time

from stemkube_operator.workqueue import ROUTINE, URGENT, WorkQueue, start_workers


def test_a_key_waits_once_however_often_it_is_added() -> None:
    queue = WorkQueue(delay=0)
    for _ in range(5):
        queue.add(("ns", "a"))
    queue.add(("ns", "b"))
    assert queue.depth() == (0, 2)
    assert queue.get() == ("ns", "a")
    assert queue.get() == ("ns", "b")
    assert queue.depth() == (0, 0)


def test_urgent_keys_go_first_and_an_urgent_add_moves_a_key_up() -> None:
    queue = WorkQueue(delay=0)
    queue.add(("ns", "progress"), ROUTINE)
    queue.add(("ns", "moved"), ROUTINE)
    queue.add(("ns", "new"), URGENT)
    queue.add(("ns", "moved"), URGENT)
    queue.add(("ns", "new"), ROUTINE)  # already urgent: stays so
    assert queue.depth() == (2, 1)
    assert [queue.get() for _ in range(3)] == [("ns", "new"), ("ns", "moved"), ("ns", "progress")]


def test_a_key_added_during_its_sync_is_synced_again_after_it() -> None:
    queue = WorkQueue(delay=0)
    queue.add(("ns", "a"))
    key = queue.get()
    assert key == ("ns", "a")
    queue.add(("ns", "a"), URGENT)
    queue.add(("ns", "a"), ROUTINE)
    assert queue.depth() == (0, 0)  # not while it is being synced
    queue.done(key)
    assert queue.depth() == (1, 0)  # once after, at the highest level asked for
    assert queue.get() == ("ns", "a")


def test_workers_never_sync_one_key_twice_at_once_and_stop_when_closed() -> None:
    queue = WorkQueue(delay=0)
    running: set[tuple[str, str]] = set()
    overlaps: list[tuple[str, str]] = []
    synced: list[tuple[str, str]] = []
    lock = threading.Lock()

    def sync(namespace: str, name: str) -> None:
        key = (namespace, name)
        with lock:
            if key in running:
                overlaps.append(key)
            running.add(key)
        time.sleep(0.01)
        if name == "boom":
            raise RuntimeError("logged, and the worker goes on")
        with lock:
            running.discard(key)
            synced.append(key)

    threads = start_workers(queue, sync, 4)
    queue.add(("ns", "boom"))
    for _ in range(50):
        for name in ("a", "b"):
            queue.add(("ns", name))
        time.sleep(0.002)
    deadline = time.monotonic() + 5
    while queue.depth() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    queue.close()
    for thread in threads:
        thread.join(timeout=5)
    assert not any(t.is_alive() for t in threads)
    assert overlaps == []
    assert {("ns", "a"), ("ns", "b")} <= set(synced)
    # 50 adds each, mostly while one was being synced: far fewer syncs than adds.
    assert synced.count(("ns", "a")) < 50


def test_a_routine_key_waits_its_delay_and_an_urgent_one_does_not() -> None:
    queue = WorkQueue(delay=0.2)
    start = time.monotonic()
    queue.add(("ns", "progress"), ROUTINE)
    queue.add(("ns", "progress"), ROUTINE)  # within the delay: the same sync
    threading.Timer(0.05, lambda: queue.add(("ns", "new"), URGENT)).start()
    assert queue.get() == ("ns", "new")
    assert time.monotonic() - start < 0.2
    assert queue.get() == ("ns", "progress")
    assert time.monotonic() - start >= 0.2
    assert queue.depth() == (0, 0)
