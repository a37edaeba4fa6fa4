"""When a SeparationJob has settled, and what the settled watch does with one it sees
(``stemkube_operator.settled``). The Kubernetes calls are a recording fake: only the choice is
tested here; tests/integration/test_operator_settled.py runs them against the tier."""

from typing import Any, cast

from stemkube_contract import webhooks
from stemkube_operator import settled
from stemkube_operator.kube import Kube
from stemkube_operator.resource import FINALIZER, SETTLED, SETTLED_LABEL


class RecordingKube:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def label_settled(self, cr: dict[str, Any], settled: bool = True) -> None:
        self.calls.append(("label", settled))

    def release(self, cr: dict[str, Any], finalizer: str) -> None:
        self.calls.append(("release", finalizer))


def cr(
    phase: str | None = "Completed",
    webhook: dict[str, Any] | None = None,  # its status.webhook; {}: a URL, no attempt yet
    labelled: bool = False,
    deleting: bool = False,
) -> dict[str, Any]:
    hook = webhook is not None
    spec: dict[str, Any] = {"webhook": {"url": "https://example.com/hook"}} if hook else {}
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if webhook:
        status["webhook"] = webhook
    meta: dict[str, Any] = {"name": "song", "namespace": "music", "uid": "u-1"}
    meta["finalizers"] = [FINALIZER]
    if labelled:
        meta["labels"] = {SETTLED_LABEL: SETTLED}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T07:00:00Z"
    return {"metadata": meta, "spec": spec, "status": status}


def test_finished_with_nothing_to_deliver_settles() -> None:
    assert settled.settles(cr("Completed"))
    assert settled.settles(cr("Failed"))
    assert not settled.settles(cr("Running"))
    assert not settled.settles(cr(None))
    # A webhook still to deliver keeps it in play; a final delivery state lets it settle.
    assert not settled.settles(cr("Completed", webhook={}))
    assert not settled.settles(cr("Completed", webhook={"state": webhooks.PENDING}))
    delivered = {"state": webhooks.DELIVERED, "attempts": 1}
    assert settled.settles(cr("Completed", webhook=delivered))


def _settle(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    kube = RecordingKube()
    settled.settle(cast(Kube, kube), doc)
    return kube.calls


def uid(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["uid"])


def _tend(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """The calls in order, the removal of the files among them."""
    kube = RecordingKube()
    settled.tend(
        cast(Kube, kube), doc, lambda c: kube.calls.append(("files", c["metadata"]["uid"]))
    )
    return kube.calls


def test_settle_labels_once_and_never_a_deleting_one() -> None:
    assert _settle(cr("Completed")) == [("label", True)]
    assert _settle(cr("Completed", labelled=True)) == []
    assert _settle(cr("Running")) == []
    assert _settle(cr("Completed", deleting=True)) == []


def test_tend_lets_a_deleted_one_go_after_its_files_and_gives_back_one_in_play() -> None:
    # The files go first: a failure there leaves the finalizer for the next look.
    deleting = cr("Failed", labelled=True, deleting=True)
    assert _tend(deleting) == [("files", "u-1"), ("release", FINALIZER)]
    deleting["metadata"]["finalizers"] = []
    assert _tend(deleting) == []
    assert _tend(cr("Failed", labelled=True)) == []
    assert _tend(cr("Running", labelled=True)) == [("label", False)]
