"""What each Kopf handler queues (``handlers``): a sync of which SeparationJob, how urgent."""

import asyncio
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any, cast

import kopf

from stemkube_contract.batch import MEMBERS_ANNOTATION
from stemkube_operator import handlers
from stemkube_operator.resource import NAME_ANNOTATION
from stemkube_operator.workqueue import WorkQueue


def memo() -> Any:
    return SimpleNamespace(runtime=SimpleNamespace(queue=WorkQueue(delay=0)))


def run(handler: object, **kwargs: Any) -> None:
    """A handler called as Kopf calls it (Kopf's decorators type it loosely)."""
    asyncio.run(cast(Callable[..., Coroutine[Any, Any, None]], handler)(**kwargs))


def queued(m: Any) -> tuple[int, int]:
    depth: tuple[int, int] = m.runtime.queue.depth()
    return depth


def owned(name: str, **extra: Any) -> kopf.Body:
    meta = {"name": f"{name}-x", "namespace": "ns", "annotations": {NAME_ANNOTATION: name}}
    raw = {"metadata": {**meta, **extra.pop("metadata", {})}, **extra}
    return kopf.Body(cast(kopf.RawBody, raw))


def test_a_separation_job_is_queued_at_first_sight_only_while_unfinished() -> None:
    for kind, status, expected in [
        ("ADDED", {}, (1, 0)),
        (None, {"phase": "Running"}, (1, 0)),  # listed as the operator starts
        ("MODIFIED", {"phase": "Running"}, (0, 0)),  # its syncs' own writes
        (None, {"phase": "Completed"}, (0, 0)),
    ]:
        m = memo()
        run(
            handlers.on_separation_job,
            event={"type": kind},
            status=status,
            namespace="ns",
            name="a",
            memo=m,
        )
        assert queued(m) == expected, (kind, status)


def test_a_jobs_end_is_urgent_and_its_other_changes_routine() -> None:
    m = memo()
    run(handlers.on_job, body=owned("a", status={"active": 1}), namespace="ns", memo=m)
    done = {"conditions": [{"type": "Complete", "status": "True"}]}
    run(handlers.on_job, body=owned("b", status=done), namespace="ns", memo=m)
    assert queued(m) == (1, 1)
    assert m.runtime.queue.get() == ("ns", "b")


def test_a_batch_jobs_event_queues_every_member() -> None:
    m = memo()
    members = '[{"name": "a", "uid": "u-a"}, {"name": "b", "uid": "u-b"}]'
    raw = {"metadata": {"name": "j", "annotations": {MEMBERS_ANNOTATION: members}}}
    body = kopf.Body(cast(kopf.RawBody, raw))
    run(handlers.on_job, body=body, namespace="ns", memo=m)
    assert queued(m) == (0, 2)


def test_a_pod_on_its_way_out_queues_nothing() -> None:
    m = memo()
    running = owned("a", status={"phase": "Running"})
    run(handlers.on_pod, event={"type": "MODIFIED"}, body=running, namespace="ns", memo=m)
    assert queued(m) == (0, 1)
    m = memo()
    going = owned("a", metadata={"deletionTimestamp": "2026-11-29T10:00:00Z"})
    run(handlers.on_pod, event={"type": "MODIFIED"}, body=going, namespace="ns", memo=m)
    run(handlers.on_pod, event={"type": "DELETED"}, body=running, namespace="ns", memo=m)
    assert queued(m) == (0, 0)
