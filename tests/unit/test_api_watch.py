"""The SeparationJob watch cache's bookkeeping, on a scripted stand-in for the Kubernetes API:
list, follow the watch, list again after 410 Gone or a broken connection."""

import json
import threading
from collections.abc import Iterator
from typing import Any

from kubernetes import client

from stemkube_api.interfaces import NewJob
from stemkube_api.jobs import CREATED_AT_ANNOTATION
from stemkube_api.kubernetes.backend import manifest
from stemkube_api.kubernetes.watch import WatchCache
from stemkube_contract.models import Catalog
from tests.harness.waiting import wait_for


def cr(name: str, rv: int, phase: str | None = None, uid: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": uid or f"uid-{name}",
            "resourceVersion": str(rv),
            "creationTimestamp": "2026-11-24T10:00:00Z",
        },
        "spec": {"input": {"key": f"inputs/{name}/input.mp3"}, "output": {"key": "r"}},
        "status": {"phase": phase} if phase else {},
    }


class FakeWatchResponse:
    def __init__(self, events: list[dict[str, Any]], hang: threading.Event | None) -> None:
        self.lines = [json.dumps(e).encode() + b"\n" for e in events]
        self.hang = hang
        self.connection = None

    def stream(self, amt: int, decode_content: bool = True) -> Iterator[bytes]:
        for line in self.lines:
            # Split a line across chunks, as the network may.
            yield line[:5]
            yield line[5:]
        if self.hang is not None:
            self.hang.wait(5)

    def release_conn(self) -> None:
        pass


class ScriptedApi:
    """Answers lists and watches from a script; records the versions watches start from."""

    def __init__(self, lists: list[Any], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.watched_from: list[str] = []
        self.hang = threading.Event()

    def list_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            self.watched_from.append(kwargs["resource_version"])
            script = self.watches.pop(0) if self.watches else []
            if isinstance(script, Exception):
                raise script
            return FakeWatchResponse(script, self.hang if not self.watches else None)
        script = self.lists.pop(0)
        if isinstance(script, Exception):
            raise script
        return script


def listing(rv: int, *items: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": str(rv)}, "items": list(items)}


def run(api: ScriptedApi) -> WatchCache:
    cache = WatchCache(client.ApiClient(), "ns")
    cache._objects = api
    cache.start()
    return cache


def test_list_then_watch_events_then_relist_after_410() -> None:
    api = ScriptedApi(
        lists=[
            listing(10, cr("a", 9), cr("b", 10)),
            # After the 410: "b" was deleted meanwhile (an event we never saw), "c" is new.
            listing(30, cr("a", 25, "Completed"), cr("c", 30)),
        ],
        watches=[
            [
                {"type": "MODIFIED", "object": cr("a", 11, "Running")},
                {"type": "ADDED", "object": cr("d", 12)},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
                {"type": "DELETED", "object": cr("d", 16)},
                {"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}},
            ],
            [{"type": "MODIFIED", "object": cr("c", 31, "Running")}],
        ],
    )
    cache = run(api)
    try:
        wait_for(lambda: len(api.watched_from) == 2, 5, "the second watch")
        wait_for(lambda: (cache.get("c") or {}).get("status") == {"phase": "Running"}, 5, "c")
        assert api.watched_from == ["10", "30"]
        assert sorted(x["metadata"]["name"] for x in cache.all()) == ["a", "c"]
        assert cache.get("a")["status"] == {"phase": "Completed"}  # type: ignore[index]
        assert cache.synced.is_set()
    finally:
        api.hang.set()
        cache.stop()


def test_a_failing_list_is_retried_and_an_ended_watch_resumes_from_its_version() -> None:
    api = ScriptedApi(
        lists=[ConnectionRefusedError("refused"), listing(5, cr("a", 5))],
        watches=[
            [{"type": "MODIFIED", "object": cr("a", 7, "Running")}],  # ends: server timeout
            [{"type": "MODIFIED", "object": cr("a", 8, "Completed")}],
        ],
    )
    cache = run(api)
    try:
        wait_for(lambda: len(api.watched_from) >= 2, 5, "the second watch")
        assert api.watched_from[:2] == ["5", "7"]
        wait_for(
            lambda: (cache.get("a") or {}).get("status") == {"phase": "Completed"}, 5, "a done"
        )
    finally:
        api.hang.set()
        cache.stop()


def test_put_keeps_the_newer_version() -> None:
    cache = WatchCache(client.ApiClient(), "ns")
    cache._objects = ScriptedApi([], [])
    cache.put(cr("a", 10, "Running"))
    cache.put(cr("a", 9, "Pending"))  # a direct read that lost the race
    assert cache.get("a")["status"] == {"phase": "Running"}  # type: ignore[index]
    cache.put(cr("a", 3, None, uid="new"))  # deleted and made again: another object
    assert cache.get("a")["metadata"]["uid"] == "new"  # type: ignore[index]
    cache.mark_deleted("a")
    assert cache.get("a")["metadata"]["deletionTimestamp"]  # type: ignore[index]
    cache.remove("a", uid="someone-else")
    assert cache.get("a") is not None
    cache.remove("a", uid="new")
    assert cache.get("a") is None


def test_manifest_leaves_defaults_to_the_crd_but_names_the_deployments_model() -> None:
    job = NewJob("j-1", {}, "inputs/j-1/input.mp3", "song.mp3")
    body = manifest(job, "music", "stems", "results/j-1.zip", Catalog())
    assert body["spec"] == {
        "input": {"bucket": "stems", "key": "inputs/j-1/input.mp3", "filename": "song.mp3"},
        "output": {"bucket": "stems", "key": "results/j-1.zip"},
        "model": "htdemucs",
    }
    other_default = manifest(job, "music", "stems", "r.zip", Catalog().with_default("mdx"))
    assert other_default["spec"]["model"] == "mdx"
    assert body["metadata"]["name"] == "j-1"
    assert body["metadata"]["namespace"] == "music"
    assert CREATED_AT_ANNOTATION in body["metadata"]["annotations"]
    full = NewJob(
        "j-2",
        {"model": "htdemucs_6s", "stems": ("vocals", "guitar"), "format": "mp3", "bitrate": 128},
        "inputs/j-2/input.wav",
        "a.wav",
    )
    spec = manifest(full, "music", "stems", "results/j-2.zip", Catalog())["spec"]
    assert (spec["model"], spec["stems"], spec["format"], spec["bitrate"]) == (
        "htdemucs_6s",
        ["vocals", "guitar"],
        "mp3",
        128,
    )
    two = NewJob("j-3", {"two_stems": "vocals", "format": "wav"}, "k", "a.wav")
    spec = manifest(two, "music", "stems", "results/j-3.zip", Catalog())["spec"]
    assert spec["twoStems"] == "vocals"
    assert "bitrate" not in spec
