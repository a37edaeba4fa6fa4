"""The resync loop's choice at each tick (``resync.Resync.due``): pure, with a fake clock."""

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
    unfinished one: the sync labels it."""
    now = [100.0]
    crs = [
        cr("waiting", "Pending"),
        cr("new"),
        cr("done", "Completed"),
        cr("hooked", "Completed", webhook="https://example.com/hook"),
    ]
    loop = Resync(lambda: crs, sync, deliver, interval=5.0, clock=lambda: now[0])
    first = loop.due()
    assert [(c, n) for c, _, n in first] == [
        (sync, "waiting"), (sync, "new"), (sync, "done"), (deliver, "hooked"),
    ]  # fmt: skip
    now[0] += 1.0
    assert [(c, n) for c, _, n in loop.due()] == [(deliver, "hooked")]
    now[0] += 4.0
    assert [n for _, _, n in loop.due()] == ["waiting", "new", "done", "hooked"]
    # Gone from the index: forgotten.
    crs[:] = [cr("waiting", "Pending")]
    loop.due()
    assert set(loop.last) == {"u-waiting"}
