"""Who may start next under the concurrency limit."""

from stemkube_operator.queue import Entry, companions, queue_position


def entry(
    uid: str,
    created: str,
    *,
    admitted: bool = False,
    finished: bool = False,
    job: str | None = None,
    key: str = "k",
) -> Entry:
    job = job or (f"job-{uid}" if admitted else None)
    return Entry(uid, created, uid, "ns", finished=finished, job=job, key=key)


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


def test_a_batch_takes_one_slot() -> None:
    entries = [
        entry("m1", "0", job="batch"),
        entry("m2", "0", job="batch"),
        entry("m3", "0", job="batch"),
        entry("a", "1"),
    ]
    assert queue_position("a", entries, 2) is None  # three members, one Job: a slot is free
    assert queue_position("a", entries, 1) == 0


def test_a_short_queue_batches_nothing() -> None:
    entries = [entry("a", "1"), entry("b", "2")]
    assert companions("a", entries, 2, 4) == []  # both have a slot: one Job each
    assert companions("a", entries, 0, 4) == []  # no limit: nothing ever waits


def test_with_a_backlog_the_leader_takes_those_that_would_wait() -> None:
    entries = [
        entry("run", "0", admitted=True),
        entry("a", "1"),
        entry("b", "2"),
        entry("other", "3", key="other-options"),
        entry("c", "4"),
        entry("d", "5"),
        entry("e", "6"),
    ]
    # Limit 3, one running: a and b start; the rest would wait. Same key only, oldest first,
    # at most max_per_job - 1.
    assert [e.uid for e in companions("a", entries, 3, 3)] == ["c", "d"]
    assert [e.uid for e in companions("b", entries, 3, 8)] == ["c", "d", "e"]
    assert companions("a", entries, 3, 1) == []  # 1 turns batching off
    assert companions("c", entries, 3, 4) == []  # c has no slot: it leads nothing


def test_admitted_and_finished_ones_never_join() -> None:
    entries = [
        entry("a", "1"),
        entry("b", "2", admitted=True),
        entry("c", "3", finished=True),
        entry("d", "4"),
    ]
    assert [e.uid for e in companions("a", entries, 1, 4)] == []  # b holds the slot
    assert queue_position("a", entries, 2) is None
    assert [e.uid for e in companions("a", entries, 2, 4)] == ["d"]
