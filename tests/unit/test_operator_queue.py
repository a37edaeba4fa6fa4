"""Who may start next under the concurrency limit."""

from stemkube_operator.queue import Entry, queue_position


def entry(uid: str, created: str, *, admitted: bool = False, finished: bool = False) -> Entry:
    return Entry(uid, created, uid, "ns", finished=finished, admitted=admitted)


def test_no_limit_admits_everyone() -> None:
    assert queue_position("a", [entry("a", "1")], 0) is None


def test_oldest_first_within_free_slots() -> None:
    entries = [
        entry("running", "0", admitted=True),
        entry("c", "3"),
        entry("a", "1"),
        entry("b", "2"),
        entry("done", "0", admitted=True, finished=True),
    ]
    assert queue_position("a", entries, 2) is None  # one slot free: the oldest waiting gets it
    assert queue_position("b", entries, 2) == 0  # next in line
    assert queue_position("c", entries, 2) == 1
    assert queue_position("running", entries, 2) is None  # already admitted stays admitted


def test_full_slots_queue_everyone() -> None:
    entries = [entry("r1", "0", admitted=True), entry("r2", "0", admitted=True), entry("a", "1")]
    assert queue_position("a", entries, 2) == 0
