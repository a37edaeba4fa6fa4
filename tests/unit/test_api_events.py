"""GET /jobs/{job_id}/events on in-memory stand-ins: the Server-Sent Events' format, one event
per change with /status's JSON, the end on a terminal status, a deletion or the lifetime, the
ping, tenants, the cap on streams, and the OpenAPI entry. The integration tier
(test_api_events.py there) follows real jobs in both modes."""

import dataclasses
import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from stemkube_api.app import create_app
from stemkube_api.auth import keys
from stemkube_api.auth.caller import OPEN
from stemkube_api.interfaces import NewJob
from stemkube_api.jobs import JobRecord
from stemkube_api.local.keys import SqliteKeyStore
from stemkube_api.routes import events
from stemkube_api.settings import Settings
from tests.unit.fakes import MemoryStore
from tests.unit.test_api_app import SONG, TenantBackend


class ScriptedBackend(TenantBackend):
    """Each ``get`` of a scripted job answers its next state (the last one stays)."""

    def __init__(self) -> None:
        super().__init__()
        self.script: dict[str, list[JobRecord | None]] = {}
        self.gets = 0

    def get(self, job_id: str) -> JobRecord | None:
        self.gets += 1
        states = self.script.get(job_id)
        if not states:
            return super().get(job_id)
        state = states.pop(0) if len(states) > 1 else states[0]
        if state is None:
            self.jobs.pop(job_id, None)
        else:
            self.jobs[job_id] = state
        return state


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "POLL_SECONDS", 0.001)
    monkeypatch.setattr(events, "PING_SECONDS", 3600.0)


def client_of(backend: ScriptedBackend, **settings: Any) -> Iterator[TestClient]:
    app = create_app(Settings(**{"auth": "off", **settings}), backend, MemoryStore())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def client(backend: ScriptedBackend) -> Iterator[TestClient]:
    yield from client_of(backend)


def parse(text: str) -> list[dict[str, str]]:
    """The stream's events and comments, as dicts of their fields (a comment: {": ": ...})."""
    found = []
    for block in text.split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ") if not line.startswith(":") else (": ", "", line)
            fields[name] = value
        found.append(fields)
    return found


def new_job(client: TestClient) -> str:
    response = client.post("/upload", files={"file": ("song.wav", SONG, "audio/wav")})
    assert response.status_code == 200, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def test_a_job_from_pending_to_completed_one_event_per_change(
    client: TestClient, backend: ScriptedBackend
) -> None:
    job_id = new_job(client)
    pending = backend.jobs[job_id]
    running = dataclasses.replace(pending, status="processing", progress=10)
    further = dataclasses.replace(running, progress=60)
    done = dataclasses.replace(further, status="completed", progress=100, result_size=9)
    # Unchanged states in between send nothing.
    backend.script[job_id] = [pending, pending, running, running, further, further, done]

    with client.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        text = response.read().decode()
    blocks = parse(text)
    assert blocks[0] == {"retry": "3000"}
    sent = blocks[1:]
    assert [b["event"] for b in sent] == ["status"] * 4
    assert [b["id"] for b in sent] == ["1", "2", "3", "4"]
    statuses = [json.loads(b["data"]) for b in sent]
    assert [(s["status"], s["progress"]) for s in statuses] == [
        ("pending", 0),
        ("processing", 10),
        ("processing", 60),
        ("completed", 100),
    ]
    # The very JSON of GET /status.
    assert statuses[-1] == client.get(f"/status/{job_id}").json()


def test_a_finished_job_answers_its_status_and_closes(
    client: TestClient, backend: ScriptedBackend
) -> None:
    job_id = new_job(client)
    backend.jobs[job_id] = dataclasses.replace(
        backend.jobs[job_id], status="failed", message="bad input"
    )
    text = client.get(f"/jobs/{job_id}/events").text
    [status] = [b for b in parse(text) if b.get("event")]
    assert json.loads(status["data"])["error"] == "bad input"


def test_a_deleted_job_ends_the_stream_saying_so(
    client: TestClient, backend: ScriptedBackend
) -> None:
    job_id = new_job(client)
    backend.script[job_id] = [backend.jobs[job_id], None]
    blocks = [b for b in parse(client.get(f"/jobs/{job_id}/events").text) if b.get("event")]
    assert [b["event"] for b in blocks] == ["status", "deleted"]
    assert json.loads(blocks[1]["data"]) == {
        "job_id": job_id,
        "deleted": True,
        "detail": f"job {job_id} was deleted",
    }


def test_the_lifetime_ends_the_stream_with_a_reconnect_event(
    backend: ScriptedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(events.LIFETIME_ENV, "0.05")
    for client in client_of(backend):
        job_id = new_job(client)  # stays pending
        blocks = [b for b in parse(client.get(f"/jobs/{job_id}/events").text) if b.get("event")]
        assert [b["event"] for b in blocks] == ["status", "reconnect"]
        assert "reconnect" in json.loads(blocks[1]["data"])["detail"]


def test_a_ping_goes_out_when_nothing_changes() -> None:
    job_id = "a" * 8
    new = NewJob(job_id=job_id, request={}, input_key=f"inputs/{job_id}/in.wav", filename="s")
    record = dataclasses.replace(TenantBackend().create(new), status="processing", progress=5)
    ticks = iter(range(100))
    limits = events.StreamLimits(poll=0, ping=2, lifetime=7, max_streams=1)

    async def collect() -> list[bytes]:
        stream = events.job_events(
            record, lambda _: record, OPEN, limits, clock=lambda: float(next(ticks))
        )
        return [chunk async for chunk in stream]

    chunks = anyio.run(collect)
    assert chunks[0] == b"retry: 3000\n\n"
    assert chunks[1].startswith(b"id: 1\nevent: status\ndata: {")
    # Clock 0: the status; 2, 4, 6: a ping each; 8: the lifetime (7) is over.
    assert chunks[2:-1] == [events.PING] * 3
    assert chunks[-1].startswith(b"id: 2\nevent: reconnect\n")


def test_unknown_job_is_404_and_the_cap_is_429(
    backend: ScriptedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(events.MAX_STREAMS_ENV, "0")
    for client in client_of(backend):
        missing = client.get("/jobs/00000000-0000-4000-8000-000000000000/events")
        assert missing.status_code == 404
        assert missing.json()["detail"] == "job 00000000-0000-4000-8000-000000000000 not found"
        job_id = new_job(client)
        refused = client.get(f"/jobs/{job_id}/events")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "5"
        assert "0 event streams" in refused.json()["detail"]


def test_slots_are_given_back_when_streams_end(
    backend: ScriptedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(events.MAX_STREAMS_ENV, "1")
    for client in client_of(backend):
        job_id = new_job(client)
        backend.jobs[job_id] = dataclasses.replace(backend.jobs[job_id], status="completed")
        for _ in range(3):
            assert client.get(f"/jobs/{job_id}/events").status_code == 200


def test_stream_slots_count() -> None:
    slots = events.StreamSlots(2)
    assert slots.take()
    assert slots.take()
    assert not slots.take()
    slots.give()
    assert slots.take()


def test_limits_from_the_environment() -> None:
    limits = events.StreamLimits.from_env({})
    assert (limits.max_streams, limits.lifetime) == (200, 3600.0)
    limits = events.StreamLimits.from_env({events.MAX_STREAMS_ENV: "3", events.LIFETIME_ENV: "60"})
    assert (limits.max_streams, limits.lifetime) == (3, 60.0)
    with pytest.raises(ValueError, match=events.MAX_STREAMS_ENV):
        events.StreamLimits.from_env({events.MAX_STREAMS_ENV: "many"})


def test_format_event() -> None:
    assert (
        events.format_event('{"a": 1}', "status", "7")
        == b'id: 7\nevent: status\ndata: {"a": 1}\n\n'
    )
    assert events.format_event("x\ny") == b"data: x\ndata: y\n\n"


def test_the_openapi_document_shows_the_stream(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    answer = spec["paths"]["/jobs/{job_id}/events"]["get"]["responses"]
    example = answer["200"]["content"]["text/event-stream"]["example"]
    assert "event: status" in example
    assert ": ping" in example
    assert set(answer) >= {"200", "401", "404", "429"}


def test_another_tenants_job_is_404_before_streaming(tmp_path: Path) -> None:
    backend, store, key_store = ScriptedBackend(), MemoryStore(), SqliteKeyStore(tmp_path)
    now = datetime.datetime.now(datetime.UTC)
    mine, theirs = (keys.create(n, n, "user", now) for n in ("acme", "globex"))
    key_store.add(mine.record)
    key_store.add(theirs.record)
    app = create_app(Settings(auth="required"), backend, store, key_store)
    with TestClient(app, raise_server_exceptions=False) as client:
        own = {"Authorization": f"Bearer {mine.plaintext}"}
        other = {"Authorization": f"Bearer {theirs.plaintext}"}
        created = client.post("/upload", files={"file": ("s.wav", SONG)}, headers=own)
        job_id = created.json()["job_id"]
        backend.jobs[job_id] = dataclasses.replace(backend.jobs[job_id], status="completed")
        assert client.get(f"/jobs/{job_id}/events").status_code == 401
        refused = client.get(f"/jobs/{job_id}/events", headers=other)
        assert refused.status_code == 404
        assert refused.json()["detail"] == f"job {job_id} not found"
        assert client.get(f"/jobs/{job_id}/events", headers=own).status_code == 200
    key_store.close()
