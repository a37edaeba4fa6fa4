"""A key's job quotas (jobs queued or running at once, bytes stored): the usage each backend
counts from its jobs (SeparationJobs in the watch cache; SQLite rows and their files), and the
refusals at upload through the app, before anything is stored. The integration tier runs the
same on both modes (tests/integration/test_api_auth.py)."""

import dataclasses
import datetime
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from stemkube_api.auth.caller import Caller
from stemkube_api.auth.keys import Quotas
from stemkube_api.auth.limits import Held, Usage, counts_usage, usage_of
from stemkube_api.errors import ApiError
from stemkube_api.form import Event
from stemkube_api.interfaces import NewJob
from stemkube_api.jobs import input_key
from stemkube_api.kubernetes.backend import held_by, manifest, usage_from
from stemkube_api.local import rules
from stemkube_api.local.backend import LocalBackend
from stemkube_api.local.settings import LocalSettings
from stemkube_api.local.store import LocalStore
from stemkube_contract import keys
from stemkube_contract.models import Catalog
from stemkube_contract.resource import INPUT_SIZE_ANNOTATION
from tests.unit.test_api_auth import SONG, Service, serve
from tests.unit.test_api_upload import Upload, song_events

JOB = "0b8f8a3e-6c9d-4d2a-9a57-3f8a9f8f1c11"
KEY = "0123456789ab"
T0 = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)
MODELS = Catalog()


def test_usage_adds_up_what_each_job_holds() -> None:
    assert usage_of([]) == Usage()
    jobs = [Held(True, 100), Held(False, 250), Held(True), Held(False, -5)]
    assert usage_of(jobs) == Usage(active_jobs=2, bytes_stored=350)
    assert not counts_usage(Quotas())
    assert not counts_usage(Quotas(requests_per_minute=5))
    assert counts_usage(Quotas(audio_minutes_per_day=10))
    assert counts_usage(Quotas(active_jobs=1))
    assert counts_usage(Quotas(bytes_stored=1))


def separation_job(
    name: str,
    key_id: str | None = KEY,
    phase: str | None = None,
    input_size: str | None = "1000",
    result_size: int | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {}, "annotations": {}}
    if key_id:
        meta["labels"]["stemkube.io/api-key-id"] = key_id
    if input_size is not None:
        meta["annotations"][INPUT_SIZE_ANNOTATION] = input_size
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T12:00:00Z"
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if result_size is not None:
        status["result"] = {"size": result_size}
    return {"metadata": meta, "status": status}


def test_a_separation_job_records_its_input_size() -> None:
    job = NewJob(JOB, {}, input_key(JOB, "mp3", "acme"), "song.mp3", "acme", KEY, input_size=12345)
    cr = manifest(job, "music", "stems", keys.result_key(JOB, "acme"), MODELS)
    assert cr["metadata"]["annotations"][INPUT_SIZE_ANNOTATION] == "12345"
    assert held_by(cr) == Held(True, 12345)  # no phase yet: the operator has not seen it
    unsized = manifest(
        NewJob(JOB, {}, input_key(JOB, "mp3"), "song.mp3"), "music", "stems", "r.zip", MODELS
    )
    assert INPUT_SIZE_ANNOTATION not in unsized["metadata"]["annotations"]


def test_kubernetes_usage_counts_the_keys_separation_jobs() -> None:
    crs = [
        separation_job("a"),  # no phase yet: pending
        separation_job("b", phase="Pending"),
        separation_job("c", phase="Running", input_size="500"),
        separation_job("d", phase="Completed", result_size=4000),
        separation_job("e", phase="Failed", input_size="junk"),  # unreadable: nothing
        separation_job("f", phase="Running", deleting=True),  # being deleted: let go
        separation_job("g", key_id="ffffffffffff", phase="Running"),  # another key's
        separation_job("h", key_id=None, phase="Running"),  # made with kubectl
        separation_job("i", phase="Completed", input_size=None, result_size=7),  # before sizes
    ]
    assert usage_from(crs, KEY) == Usage(active_jobs=3, bytes_stored=1000 + 1000 + 500 + 5007)
    assert usage_from(crs, "eeeeeeeeeeee") == Usage()


def test_local_usage_counts_the_keys_rows_and_their_files(tmp_path: Path) -> None:
    settings = LocalSettings(data_dir=tmp_path)
    store = LocalStore(settings.objects)
    backend = LocalBackend(settings, store)

    def put(key: str, size: int) -> None:
        writer = store.writer(key, 10**9, "application/octet-stream")
        writer.write(b"x" * size)
        writer.commit()

    try:
        ids = [f"{n}b8f8a3e-6c9d-4d2a-9a57-3f8a9f8f1c11" for n in range(4)]
        for job_id, key_id in zip(ids, (KEY, KEY, KEY, "ffffffffffff"), strict=True):
            key = input_key(job_id, "mp3", "acme")
            put(key, 100)
            backend.table.insert(
                rules.new_row(NewJob(job_id, {}, key, "a.mp3", "acme", key_id), MODELS, T0),
                "acme",
                key_id,
            )
        assert backend.usage(KEY, T0) == Usage(active_jobs=3, bytes_stored=300)
        # One runs, one is done (its result written), one is deleted.
        running = backend.table.get(ids[0])
        assert running is not None
        assert backend.table.save(rules.started(running, 1, T0))
        done = backend.table.get(ids[1])
        assert done is not None
        put(done.result_key, 2000)
        assert backend.table.save(dataclasses.replace(done, status="completed"))
        assert backend.table.delete(ids[2])
        assert backend.usage(KEY, T0) == Usage(active_jobs=1, bytes_stored=100 + 100 + 2000)
        assert backend.usage("eeeeeeeeeeee", T0) == Usage()
    finally:
        backend.table.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from serve(tmp_path)


def test_active_jobs_refuse_a_second_upload_with_retry_after(service: Service) -> None:
    busy = service.key("busy", "acme", active_jobs=1)
    first = service.upload(busy)
    assert first.status_code == 200, first.text
    objects = dict(service.store.objects)
    refused = service.upload(busy)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "10"
    assert refused.json()["detail"] == (
        "key 'busy' may have 1 job(s) queued or running at once and has 1; try again when one "
        "finishes; nothing was stored"
    )
    assert service.store.objects == objects
    assert service.store.open_writers == 0
    assert len(service.backend.created) == 1
    assert service.upload(service.key("other", "acme", active_jobs=1)).status_code == 200
    # Finished: the key may upload again.
    service.backend.finish(first.json()["job_id"], service.store)
    assert service.upload(busy).status_code == 200


def test_bytes_stored_refuse_an_upload_that_would_pass_it(service: Service) -> None:
    # Room for one song, not two: the second is refused as its bytes pass the room.
    tight = service.key("tight", "acme", bytes_stored=len(SONG) * 2 - 1)
    first = service.upload(tight)
    assert first.status_code == 200, first.text
    objects = dict(service.store.objects)
    refused = service.upload(tight)
    assert refused.status_code == 403
    assert "retry-after" not in refused.headers
    assert refused.json()["detail"] == (
        f"key 'tight' may keep {len(SONG) * 2 - 1} bytes of uploads and results and keeps "
        f"{len(SONG)}; this upload is at least {len(SONG)}: delete finished jobs (or wait for "
        "them to expire); nothing was stored"
    )
    assert service.store.objects == objects
    assert service.store.open_writers == 0
    # Deleting the job frees its bytes.
    job_id = first.json()["job_id"]
    assert service.http.delete(f"/job/{job_id}", headers=service.as_key(tight)).status_code == 200
    assert service.upload(tight).status_code == 200


def test_a_key_already_at_its_bytes_is_refused_before_the_body_is_stored(
    service: Service,
) -> None:
    full = service.key("full", "acme", bytes_stored=len(SONG))
    assert service.upload(full).status_code == 200
    writes = len(service.store.writes)
    refused = service.upload(full)
    assert refused.status_code == 403
    assert f"keeps {len(SONG)}; this upload is 1:" in refused.json()["detail"]
    assert len(service.store.writes) == writes  # not a byte written
    assert service.store.aborted == 0


def test_keys_without_job_quotas_and_the_open_service_count_nothing(tmp_path: Path) -> None:
    for service in serve(tmp_path, mode="off"):
        for _ in range(3):
            assert service.upload(None).status_code == 200
    for service in serve(tmp_path / "keyed"):
        free = service.key("free", "acme", requests_per_minute=100)
        for _ in range(3):
            assert service.upload(free).status_code == 200


def test_an_upload_is_refused_as_soon_as_it_passes_the_keys_room() -> None:
    """Fed to the receiver in small pieces: refused at the piece that passes the room, the
    rest never read; and a fresh count before the commit (another upload of the key finished
    meanwhile) refuses the file that fitted when it began."""
    room = len(SONG) // 2
    caller = Caller("acme", "user", "tight", KEY, Quotas(bytes_stored=room))
    upload = Upload()
    upload.receiver.caller = caller
    events = song_events(chunk=1000)
    taken = 0

    async def stream() -> AsyncIterator[Event]:
        nonlocal taken
        for event in events:
            taken += 1
            yield event

    async def main() -> None:
        await upload.receiver.consume(stream())

    with pytest.raises(ApiError) as caught:
        anyio.run(main)
    refused = caught.value
    assert (refused.status, refused.reason, refused.headers) == (403, "quota", None)
    passed = (room // 1000 + 1) * 1000
    assert f"keeps 0; this upload is at least {passed}: delete" in refused.detail
    assert taken < len(events)
    assert upload.nothing_stored()

    # The count before the commit: a job of the key appeared meanwhile.
    racing = Upload()
    racing.receiver.caller = Caller("acme", "user", "tight", KEY, Quotas(bytes_stored=len(SONG)))
    counts = iter([Usage(), Usage(bytes_stored=1)])
    racing.backend.usage = lambda key_id, now: next(counts)  # type: ignore[method-assign]
    late = racing.refused(song_events())
    assert late.status == 403
    assert f"keeps 1; this upload is {len(SONG)}: delete" in late.detail
    assert racing.store.aborted == 1
    assert racing.nothing_stored()
