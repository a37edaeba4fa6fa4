"""Idempotency-Key on POST /upload: the pure parts (the header's check, the ids and hashes, the
replay decision), the route on in-memory stand-ins (replay, conflict, nothing stored, keys of
other callers, a creation that races another), local mode's table, and the SeparationJob's
label and annotation. The integration tier (test_api_idempotency.py there) runs both modes."""

import dataclasses
import datetime
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from stemkube_api import idempotency
from stemkube_api.app import create_app
from stemkube_api.auth import keys
from stemkube_api.auth.caller import OPEN, Caller
from stemkube_api.errors import ApiError
from stemkube_api.interfaces import IdempotentJob, NewJob
from stemkube_api.jobs import JobRecord
from stemkube_api.kubernetes.backend import manifest
from stemkube_api.local.keys import SqliteKeyStore
from stemkube_api.local.records import SCHEMA_VERSION, JobTable
from stemkube_api.local.rules import new_row
from stemkube_api.settings import Settings
from stemkube_contract.keys import valid_job_id
from stemkube_contract.models import Catalog
from stemkube_contract.resource import IDEMPOTENCY_KEY_LABEL, IDEMPOTENCY_REQUEST_ANNOTATION
from tests.harness.audio import sine_wav
from tests.unit.fakes import MemoryStore
from tests.unit.test_api_app import SONG, TenantBackend

OTHER_SONG = sine_wav(0.3)
NOW = datetime.datetime.now(datetime.UTC)

# -- The pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a", "x" * 255, "3f2c1a9e-0000-4000-8000-000000000000", "a b~!"])
def test_valid_keys(key: str) -> None:
    assert idempotency.validate_key(key) == key


def test_no_header_is_no_key() -> None:
    assert idempotency.validate_key(None) is None


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there", "new\nline", "\x7f"])
def test_bad_keys_are_400(key: str) -> None:
    with pytest.raises(ApiError) as caught:
        idempotency.validate_key(key)
    assert caught.value.status == 400
    assert caught.value.detail.startswith("Idempotency-Key: 1 to 255 printable ASCII characters")


def test_scopes_ids_and_fingerprints() -> None:
    user = Caller("acme", "user", "ci", "k1")
    assert idempotency.scope_of(user) == "k1"
    assert idempotency.scope_of(OPEN) == "open"
    job_id = idempotency.job_id_for("k1", "key")
    assert job_id == idempotency.job_id_for("k1", "key")  # deterministic: every replica's
    assert uuid.UUID(job_id).version == 5
    assert valid_job_id(job_id)
    assert job_id != idempotency.job_id_for("k2", "key")
    assert job_id != idempotency.job_id_for("k1", "key2")
    # No ambiguity between the scope and the key.
    assert idempotency.job_id_for("a", "b\nc") != idempotency.job_id_for("a\nb", "c")
    label = idempotency.key_fingerprint("k1", "key")
    assert len(label) == 63
    assert label.isalnum()
    assert label != idempotency.key_fingerprint("k2", "key")


def hashed(fields: dict[str, str], chunks: list[bytes], path: str = "/upload") -> str:
    hasher = idempotency.RequestHasher("post", path)
    for name, value in fields.items():
        hasher.field(name, value)
    for chunk in chunks:
        hasher.file(chunk)
    return hasher.hexdigest()


def test_the_request_hash() -> None:
    base = hashed({"format": "wav", "model": "htdemucs"}, [b"abc", b"def"])
    # The fields in any order, the file in any chunks: the same request.
    assert base == hashed({"model": "htdemucs", "format": "wav"}, [b"ab", b"cdef"])
    assert base != hashed({"format": "mp3", "model": "htdemucs"}, [b"abc", b"def"])
    assert base != hashed({"format": "wav", "model": "htdemucs"}, [b"abcdeg"])
    assert base != hashed({"format": "wav"}, [b"abcdef"])
    assert base != hashed({"format": "wav", "model": "htdemucs"}, [b"abcdef"], "/jobs")
    assert len(base) == 64


def existing(request_hash: str = "h1", age: datetime.timedelta = datetime.timedelta(0)) -> Any:
    record = TenantBackend().create(
        NewJob(job_id="j", request={}, input_key="inputs/j/input.wav", filename="s.wav")
    )
    return IdempotentJob(dataclasses.replace(record, created_at=NOW - age), request_hash)


def test_the_replay_decision() -> None:
    decide = idempotency.decide
    assert decide(None, None, "j", NOW) is None  # no job of the key: go on
    assert decide(None, "h1", "j", NOW) is None
    assert decide(existing(), None, "j", NOW) is None  # found: the body decides
    found = existing()
    assert decide(found, "h1", "j", NOW) == idempotency.Replay(found)
    with pytest.raises(ApiError, match="used for another request") as caught:
        decide(existing(), "h2", "j", NOW)
    assert caught.value.status == 409
    with pytest.raises(ApiError, match="more than 24 hours ago"):
        decide(existing(age=datetime.timedelta(hours=25)), None, "j", NOW)
    with pytest.raises(ApiError, match="being deleted"):
        decide(IdempotentJob(None, "h1"), None, "j", NOW)


# -- The route, on in-memory stand-ins ------------------------------------------------------------


@dataclasses.dataclass
class Parts:
    backend: TenantBackend
    store: MemoryStore
    http: TestClient


@pytest.fixture
def parts() -> Iterator[Parts]:
    backend, store = TenantBackend(), MemoryStore()
    app = create_app(Settings(auth="off"), backend, store)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Parts(backend, store, http)


def post(http: TestClient, key: str | None, data: bytes = SONG, **fields: str) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return http.post(
        "/upload", files={"file": ("song.wav", data, "audio/wav")}, data=fields, headers=headers
    )


def test_the_same_key_and_request_replays_the_first_response(parts: Parts) -> None:
    first = post(parts.http, "k-1", format="wav")
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    job_id = first.json()["job_id"]
    assert job_id == idempotency.job_id_for("open", "k-1")
    stored = dict(parts.store.objects)
    assert len(stored) == 1
    # The input is stored under an id of its own, not the job's.
    [key] = stored
    assert job_id not in key
    assert parts.backend.created[0].input_key == key

    again = post(parts.http, "k-1", format="wav")
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(parts.backend.created) == 1
    assert parts.store.objects == stored  # nothing more stored
    assert parts.store.open_writers == 0


def test_the_same_key_with_another_request_is_409_and_stores_nothing(parts: Parts) -> None:
    first = post(parts.http, "k-1")
    stored = dict(parts.store.objects)
    for other in (
        post(parts.http, "k-1", OTHER_SONG),  # another file
        post(parts.http, "k-1", format="flac"),  # other options
    ):
        assert other.status_code == 409
        assert "used for another request" in other.json()["detail"]
        assert first.json()["job_id"] in other.json()["detail"]
    assert len(parts.backend.created) == 1
    assert parts.store.objects == stored


def test_different_keys_and_no_key_make_jobs_of_their_own(parts: Parts) -> None:
    ids = {post(parts.http, key).json()["job_id"] for key in ("k-1", "k-2", None, None)}
    assert len(ids) == 4
    assert len(parts.backend.created) == 4


def test_a_bad_key_is_400_before_anything(parts: Parts) -> None:
    answer = post(parts.http, "x" * 256)
    assert answer.status_code == 400
    assert "Idempotency-Key" in answer.json()["detail"]
    assert not parts.backend.created
    assert not parts.store.objects


def test_a_key_of_a_deleted_job_is_free_again(parts: Parts) -> None:
    job_id = post(parts.http, "k-1").json()["job_id"]
    assert parts.http.delete(f"/job/{job_id}").status_code == 200
    again = post(parts.http, "k-1", OTHER_SONG)
    assert again.status_code == 200
    assert again.json()["job_id"] == job_id
    assert "idempotent-replayed" not in again.headers


class RacingBackend(TenantBackend):
    """Another replica creates the key's job between this request's look and its creation."""

    def __init__(self, rival: bytes) -> None:
        super().__init__()
        self.rival = rival
        self.looks = 0

    def idempotent(self, job_id: str) -> IdempotentJob | None:
        self.looks += 1
        return super().idempotent(job_id)

    def create(self, job: NewJob) -> JobRecord:
        if job.job_id not in self.jobs and job.idempotency_key is not None:
            hasher = idempotency.RequestHasher("POST", "/upload")
            hasher.file(self.rival)
            rival = dataclasses.replace(
                job, input_key="inputs/rival/input.wav", request_hash=hasher.hexdigest()
            )
            super().create(rival)
        return super().create(job)  # JobExistsError


@pytest.mark.parametrize(("rival", "status"), [(SONG, 200), (OTHER_SONG, 409)])
def test_a_creation_racing_another_replays_or_refuses_and_leaves_nothing(
    rival: bytes, status: int
) -> None:
    backend, store = RacingBackend(rival), MemoryStore()
    app = create_app(Settings(auth="off"), backend, store)
    with TestClient(app, raise_server_exceptions=False) as http:
        answer = post(http, "k-1")
    assert answer.status_code == status, answer.text
    assert backend.looks == 3  # before the body, before the commit, after the 409
    assert store.objects == {}  # its own input deleted: the rival's job holds its own
    assert len(backend.jobs) == 1
    if status == 200:
        assert answer.headers["idempotent-replayed"] == "true"
    else:
        assert "used for another request" in answer.json()["detail"]


def test_keys_are_per_api_key(tmp_path: Path) -> None:
    backend, store, key_store = TenantBackend(), MemoryStore(), SqliteKeyStore(tmp_path)
    made = [keys.create(name, name, "user", NOW) for name in ("acme", "globex")]
    for new in made:
        key_store.add(new.record)
    app = create_app(Settings(auth="required"), backend, store, key_store)
    with TestClient(app, raise_server_exceptions=False) as http:
        answers = [
            http.post(
                "/upload",
                files={"file": ("song.wav", SONG, "audio/wav")},
                headers={"Authorization": f"Bearer {new.plaintext}", "Idempotency-Key": "same"},
            )
            for new in made
        ]
    key_store.close()
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["job_id"] != answers[1].json()["job_id"]
    assert "idempotent-replayed" not in answers[1].headers
    assert [job.tenant for job in backend.created] == ["acme", "globex"]


def test_the_openapi_document_names_the_header(parts: Parts) -> None:
    upload = parts.http.get("/openapi.json").json()["paths"]["/upload"]["post"]
    [header] = [p for p in upload["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header"
    assert {"400", "409"} <= set(upload["responses"])
    assert "multipart/form-data" in upload["requestBody"]["content"]


# -- Where the record is kept ---------------------------------------------------------------------


def new_job(job_id: str, request_hash: str | None = "h1") -> NewJob:
    return NewJob(
        job_id=job_id,
        request={},
        input_key=f"inputs/{uuid.uuid4()}/input.wav",
        filename="s.wav",
        idempotency_key="f" * 63 if request_hash else None,
        request_hash=request_hash,
    )


def test_local_mode_keeps_the_request_hash_and_refuses_a_second_creation(
    tmp_path: Path,
) -> None:
    table = JobTable(tmp_path / "jobs.sqlite3")
    try:
        job = new_job(idempotency.job_id_for("open", "k"))
        row = new_row(job, Catalog(), NOW)
        table.insert(row, None, None, ("f" * 63, "h1"))
        assert table.request_hash(job.job_id) == "h1"
        with pytest.raises(sqlite3.IntegrityError):
            table.insert(row, None, None, ("f" * 63, "h2"))
        assert table.request_hash(job.job_id) == "h1"  # rolled back
        # A record older than a day goes with the next one.
        old = new_job(str(uuid.uuid4()))
        two_days_ago = NOW - datetime.timedelta(days=2)
        table.insert(new_row(old, Catalog(), two_days_ago), None, None, ("a", "h"))
        assert table.request_hash(old.job_id) == "h"
        newer = new_job(str(uuid.uuid4()))
        table.insert(new_row(newer, Catalog(), NOW), None, None, ("b", "h"))
        assert table.request_hash(old.job_id) is None
        assert table.request_hash(job.job_id) == "h1"
        plain = new_job(str(uuid.uuid4()), None)
        table.insert(new_row(plain, Catalog(), NOW))
        assert table.request_hash(plain.job_id) is None
        assert table._query("PRAGMA user_version")[0][0] == SCHEMA_VERSION == 7
    finally:
        table.close()


def test_a_version_4_database_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    JobTable(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE idempotency")
    db.execute("PRAGMA user_version=4")
    db.commit()
    db.close()
    table = JobTable(path)
    try:
        assert table.request_hash("x") is None
        assert table._query("PRAGMA user_version")[0][0] == SCHEMA_VERSION == 7
    finally:
        table.close()


def test_the_separationjob_carries_the_label_and_annotation() -> None:
    job = new_job(idempotency.job_id_for("k1", "key"))
    body = manifest(job, "ns", "bucket", "results/x.zip", Catalog())
    assert body["metadata"]["name"] == job.job_id
    assert body["metadata"]["labels"][IDEMPOTENCY_KEY_LABEL] == "f" * 63
    assert body["metadata"]["annotations"][IDEMPOTENCY_REQUEST_ANNOTATION] == "h1"
    plain = manifest(new_job("plain", None), "ns", "bucket", "results/x.zip", Catalog())
    assert IDEMPOTENCY_KEY_LABEL not in plain["metadata"]["labels"]
    assert IDEMPOTENCY_REQUEST_ANNOTATION not in plain["metadata"]["annotations"]


# -- create_once: the one call of a JSON route -----------------------------------------------------


def test_create_once_creates_replays_and_refuses() -> None:
    backend = TenantBackend()
    caller = Caller("acme", "user", "ci", "k1")
    made: list[idempotency.Keyed | None] = []

    async def make(keyed: idempotency.Keyed | None) -> JobRecord:
        made.append(keyed)
        job_id = keyed.job_id if keyed else str(uuid.uuid4())
        return backend.create(
            NewJob(
                job_id=job_id,
                request={},
                input_key=f"inputs/{job_id}/input.wav",
                filename="s.wav",
                idempotency_key=keyed.key_hash if keyed else None,
                request_hash=keyed.request_hash if keyed else None,
            )
        )

    def once(header: str | None, request: str) -> tuple[JobRecord, bool]:
        async def run() -> tuple[JobRecord, bool]:
            return await idempotency.create_once(backend, caller, header, request, make)

        return anyio.run(run)

    first, replayed = once("k", "h1")
    assert not replayed
    assert first.job_id == idempotency.job_id_for("k1", "k")
    again, replayed = once("k", "h1")
    assert replayed
    assert again == first
    assert len(made) == 1
    with pytest.raises(ApiError) as caught:
        once("k", "h2")
    assert caught.value.status == 409
    assert not once(None, "h1")[1]
    with pytest.raises(ApiError) as bad:
        once("", "h1")
    assert bad.value.status == 400
    # Made by another request between the look and the creation: a replay.
    racing = idempotency.job_id_for("k1", "race")
    real_make = make

    async def late_make(keyed: idempotency.Keyed | None) -> JobRecord:
        await real_make(keyed)  # "the other request"
        return await real_make(keyed)  # JobExistsError

    async def run_race() -> tuple[JobRecord, bool]:
        return await idempotency.create_once(backend, caller, "race", "h1", late_make)

    record, replayed = anyio.run(run_race)
    assert replayed
    assert record.job_id == racing
