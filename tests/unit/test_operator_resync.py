"""The resync loop's choice at each tick (``resync.Resync.due``): pure, with a fake clock."""

import itertools
from typing import Any

from stemkube_operator.resync import Resync


def cr(name: str, phase: str | None = None, webhook: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"webhook": {"url": webhook}} if webhook else {}
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}"},
        "spec": spec,
        "status": {"phase": phase} if phase else {},
    }


def sync(namespace: str, name: str) -> None:
    raise AssertionError("not called by due()")


def deliver(namespace: str, name: str) -> None:
    raise AssertionError("not called by due()")


def test_unfinished_ones_once_an_interval_and_due_webhooks_every_tick() -> None:
    """A finished one still in the index (not yet labelled settled) is synced like an
    unfinished one: the sync labels it. A new one is first resynced an interval after it
    was first seen (its creation, or the operator's start, synced it just then)."""
    now = [100.0]
    crs = [
        cr("waiting", "Pending"),
        cr("new"),
        cr("done", "Completed"),
        cr("hooked", "Completed", webhook="https://example.com/hook"),
    ]
    loop = Resync(lambda: crs, sync, deliver, interval=5.0, clock=lambda: now[0])
    assert [(c, n) for c, _, n in loop.due()] == [(deliver, "hooked")]
    now[0] += 1.0
    assert [(c, n) for c, _, n in loop.due()] == [(deliver, "hooked")]
    now[0] += 4.0
    calls = loop.due()
    assert sorted((c is sync, n) for c, _, n in calls) == [
        (False, "hooked"), (True, "done"), (True, "new"), (True, "waiting"),
    ]  # fmt: skip
    now[0] += 1.0
    assert [n for _, _, n in loop.due()] == ["hooked"]
    # Gone from the index: forgotten.
    crs[:] = [cr("waiting", "Pending")]
    loop.due()
    assert set(loop.last) == {"u-waiting"}


def test_many_unfinished_share_a_bounded_rate_the_longest_waiting_first() -> None:
    """300 unfinished at 20 resyncs a second: each every 15 s, never more than 20 a second."""
    now = [0.0]
    crs = [cr(f"j{i:03d}", "Running") for i in range(300)]
    loop = Resync(lambda: crs, sync, deliver, interval=5.0, clock=lambda: now[0], rate=20.0)
    assert loop.due() == []
    synced: dict[str, list[float]] = {}
    for _ in range(60):
        now[0] += 1.0
        calls = loop.due()
        assert len(calls) <= 20
        for _, _, name in calls:
            synced.setdefault(name, []).append(now[0])
    assert len(synced) == 300
    gaps = [b - a for times in synced.values() for a, b in itertools.pairwise(times)]
    assert gaps
    assert min(gaps) >= 15.0
    assert max(gaps) <= 30.0
    # The first ones due went first: by name here, as all were seen at once.
    first = sorted(synced, key=lambda n: synced[n][0])
    assert first[:20] == [f"j{i:03d}" for i in range(20)]
