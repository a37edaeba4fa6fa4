"""Request batches (``POST /batches``), without a cluster: the aggregate of a batch's jobs, the
song limit, the quotas over every song, the request's parsing through the app on in-memory
backends, the OpenAPI document, and local mode's schema 6 -> 7 migration."""

import dataclasses
import datetime
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stemkube_api import batches
from stemkube_api.app import create_app
from stemkube_api.auth.caller import Caller
from stemkube_api.auth.keys import Quotas
from stemkube_api.auth.limits import Usage
from stemkube_api.interfaces import NewJob
from stemkube_api.jobs import JobPage, JobRecord, paginate, result_key
from stemkube_api.local.records import SCHEMA_VERSION, TABLE, JobTable
from stemkube_api.local.rules import JobRow
from stemkube_api.settings import Settings
from stemkube_contract.resource import BATCH_LABEL
from tests.harness.audio import sine_wav
from tests.unit.fakes import NOW, MemoryBackend, MemoryStore

SONG = sine_wav(0.2)


def record(status: str, progress: int = 0, job_id: str = "j") -> JobRecord:
    return JobRecord(
        job_id=job_id,
        status=status,
        filename="a.mp3",
        created_at=NOW,
        progress=progress,
        options={"model": "htdemucs", "format": "mp3"},
        stems=[],
        input_key="",
        result_key="",
    )


@pytest.mark.parametrize(
    ("states", "status", "progress"),
    [
        ([("pending", 0), ("pending", 0)], "pending", 0),
        ([("pending", 0), ("processing", 40)], "processing", 20),
        ([("completed", 100), ("pending", 0)], "processing", 50),
        ([("completed", 100), ("completed", 100)], "completed", 100),
        # A failed job counts as finished (100), and a batch with one is failed once all end.
        ([("failed", 30), ("completed", 100), ("processing", 50)], "processing", 83),
        ([("failed", 30), ("completed", 100)], "failed", 100),
    ],
)
def test_the_aggregate_of_a_batch(
    states: list[tuple[str, int]], status: str, progress: int
) -> None:
    total = batches.aggregate([record(s, p) for s, p in states])
    assert (total.status, total.progress) == (status, progress)
    assert sum(total.counts.values()) == len(states)
    assert set(total.counts) == {"pending", "processing", "completed", "failed"}


def test_the_song_limit() -> None:
    assert batches.count_problem(1) is None
    assert batches.count_problem(batches.MAX_SONGS) is None
    too_many = batches.count_problem(batches.MAX_SONGS + 1)
    assert too_many is not None
    assert too_many.status == 422
    assert f"at most {batches.MAX_SONGS} songs" in too_many.detail
    none = batches.count_problem(0)
    assert none is not None
    assert none.status == 422


def test_the_quotas_count_every_song_of_the_batch() -> None:
    caller = Caller("acme", "user", "ci", "k1", Quotas(active_jobs=3, bytes_stored=1000))
    usage = Usage(active_jobs=1, bytes_stored=100)
    assert batches.admit_songs(caller, usage, [10, 10]) is None
    # The third song would be the key's fourth job queued.
    index, refusal = batches.admit_songs(caller, usage, [10, 10, 10]) or (None, None)
    assert index == 2
    assert refusal is not None
    assert refusal.status == 429
    error = batches.refused(2, "c.mp3", refusal, 3)
    assert error.detail.startswith("song 3 ('c.mp3'): ")
    assert "nothing was stored" in error.detail
    # Bytes: 100 kept, 400 + 400 fit, the third's 400 does not.
    roomy = dataclasses.replace(caller, quotas=Quotas(bytes_stored=1000))
    over = batches.admit_songs(roomy, usage, [400, 400, 400])
    assert over is not None
    assert over[0] == 2
    assert over[1].status == 403


def test_keyed_ids_are_stable_and_distinct() -> None:
    batch = batches.batch_id_for("k1", "order-1")
    assert batch == batches.batch_id_for("k1", "order-1") != batches.batch_id_for("k2", "order-1")
    ids = {batches.job_id_in(batch, i) for i in range(3)}
    assert len(ids) == 3
    assert batch not in ids
    assert BATCH_LABEL == "stemkube.io/request-batch"


class BatchBackend(MemoryBackend):
    """The in-memory backend keeping each job's tenant and batch, as the real ones do."""

    def create(self, job: NewJob) -> JobRecord:
        made = dataclasses.replace(
            super().create(job),
            tenant=job.tenant,
            batch_id=job.batch_id,
            result_key=result_key(job.job_id, job.tenant),
        )
        self.jobs[job.job_id] = made
        return made

    def list(
        self,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        tenant: str | None = None,
    ) -> JobPage:
        return paginate(self.jobs.values(), status, limit, cursor, tenant)


@pytest.fixture
def parts() -> tuple[BatchBackend, MemoryStore]:
    return BatchBackend(), MemoryStore()


@pytest.fixture
def client(parts: tuple[BatchBackend, MemoryStore]) -> Iterator[TestClient]:
    backend, store = parts
    app = create_app(Settings(auth="off"), backend, store)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def post_files(client: TestClient, *songs: tuple[str, bytes], **fields: str) -> Any:
    files = [("file", (name, data, "application/octet-stream")) for name, data in songs]
    return client.post("/batches", files=files, data=fields)


def test_a_form_of_songs_makes_one_job_each(
    client: TestClient, parts: tuple[BatchBackend, MemoryStore]
) -> None:
    backend, store = parts
    answer = post_files(client, ("a.wav", SONG), ("b.wav", SONG), format="wav")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [job["filename"] for job in body["jobs"]] == ["a.wav", "b.wav"]
    assert {new.batch_id for new in backend.created} == {body["batch_id"]}
    assert all(new.request == {"format": "wav"} for new in backend.created)
    assert len(store.objects) == 2

    status = client.get(f"/batches/{body['batch_id']}").json()
    assert (status["status"], status["progress"]) == ("pending", 0)
    # (In creation order; the fake stamps every job alike.)
    assert sorted(job["job_id"] for job in status["jobs"]) == sorted(
        job["job_id"] for job in body["jobs"]
    )
    backend.finish(body["jobs"][0]["job_id"], store)
    status = client.get(f"/batches/{body['batch_id']}").json()
    assert (status["status"], status["progress"], status["counts"]["completed"]) == (
        "processing",
        50,
        1,
    )

    deleted = client.delete(f"/batches/{body['batch_id']}").json()
    assert deleted["cancelled"] == [body["jobs"][1]["job_id"]]
    assert deleted["kept"] == [body["jobs"][0]["job_id"]]
    assert list(backend.jobs) == [body["jobs"][0]["job_id"]]
    assert client.get(f"/batches/{body['batch_id']}").json()["status"] == "completed"
    assert client.get(f"/batches/{batches.new_batch_id()}").status_code == 404
    assert client.delete("/batches/not-an-id").status_code == 404


def test_a_refused_song_refuses_the_batch_and_stores_nothing(
    client: TestClient, parts: tuple[BatchBackend, MemoryStore]
) -> None:
    backend, store = parts
    answer = post_files(client, ("a.wav", SONG), ("notes.txt", b"just some text\n" * 400))
    assert answer.status_code == 415, answer.text
    assert answer.json()["detail"].startswith("song 2 ('notes.txt'): not an audio file")
    bad_option = post_files(client, ("a.wav", SONG), ("b.wav", SONG), bitrate="7")
    assert bad_option.status_code == 422, bad_option.text
    assert "bitrate" in bad_option.json()["detail"]
    too_many = post_files(client, *[(f"{i}.wav", SONG[:64]) for i in range(batches.MAX_SONGS + 1)])
    assert too_many.status_code == 422
    assert f"at most {batches.MAX_SONGS} songs" in too_many.json()["detail"]
    assert post_files(client).status_code == 422  # no file at all
    assert backend.jobs == {}
    assert store.objects == {}


def test_a_json_batch_and_its_refusals(
    client: TestClient, parts: tuple[BatchBackend, MemoryStore]
) -> None:
    backend, _ = parts
    sources = [{"url": "https://example.com/one.mp3?sig=s"}, {"url": "https://example.com/b.ogg"}]
    answer = client.post("/batches", json={"sources": sources, "options": {"format": "flac"}})
    assert answer.status_code == 200, answer.text
    jobs = answer.json()["jobs"]
    assert [j["source"] for j in jobs] == [
        {"url": "https://example.com/one.mp3"},
        {"url": "https://example.com/b.ogg"},
    ]
    assert [new.source_url for new in backend.created] == [s["url"] for s in sources]
    made = len(backend.jobs)

    def refused(body: dict[str, Any]) -> str:
        response = client.post("/batches", json=body)
        assert response.status_code == 422, response.text
        detail: str = response.json()["detail"]
        return detail

    bad_url = [sources[0], {"url": "ftp://example.com/x.mp3"}]
    assert refused({"sources": bad_url}).startswith("song 2 (sources[1]).url: ")
    assert "sources" in refused({"sources": []}) or "one song" in refused({"sources": []})
    many = [sources[0]] * (batches.MAX_SONGS + 1)
    assert f"at most {batches.MAX_SONGS}" in refused({"sources": many})
    assert refused({"sources": sources, "options": {"shifts": "x"}}).startswith("options.")
    assert refused({"sources": [{"upload_id": "nope"}]}).startswith("song 1 (sources[0]).upload")
    assert len(backend.jobs) == made
    wrong = client.post("/batches", content=b"x", headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 422
    assert "Content-Type" in wrong.json()["detail"]


def test_an_idempotency_key_replays_a_batch(
    client: TestClient, parts: tuple[BatchBackend, MemoryStore]
) -> None:
    backend, store = parts
    files = [("file", ("a.wav", SONG, "audio/wav")), ("file", ("b.wav", SONG, "audio/wav"))]
    headers = {"Idempotency-Key": "batch-1"}
    first = client.post("/batches", files=files, headers=headers)
    assert first.status_code == 200, first.text
    again = client.post("/batches", files=files, headers=headers)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(backend.jobs) == 2
    assert len(store.objects) == 2
    other = client.post("/batches", files=files[:1], headers=headers)
    assert other.status_code == 409, other.text
    assert len(backend.jobs) == 2
    assert len(store.objects) == 2
    sources = {"sources": [{"url": "https://example.com/a.mp3"}]}
    url_first = client.post("/batches", json=sources, headers={"Idempotency-Key": "b2"})
    url_again = client.post("/batches", json=sources, headers={"Idempotency-Key": "b2"})
    assert url_again.json() == url_first.json()
    assert len(backend.jobs) == 3


def test_the_openapi_document_describes_batches(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    post = document["paths"]["/batches"]["post"]
    content = post["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"]["properties"]["file"]["maxItems"] == (
        batches.MAX_SONGS
    )
    assert content["application/json"]["example"]["sources"]
    assert {"200", "409", "415", "422", "429"} <= set(post["responses"])
    assert "examples" in document["components"]["schemas"]["BatchStatus"]
    assert "get" in document["paths"]["/batches/{batch_id}"]
    assert "delete" in document["paths"]["/batches/{batch_id}"]

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    schemas = document["components"]["schemas"]
    for ref in refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


def test_local_mode_migrates_schema_6_to_7(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    schema_6 = TABLE.replace(",\n    batch_id TEXT", "")
    assert "batch_id" not in schema_6
    with sqlite3.connect(path) as db:
        db.executescript(schema_6)
        db.execute(
            "INSERT INTO jobs (job_id, created_at, filename, options, input_key, result_key, "
            "status) VALUES ('old', '2026-11-28T12:00:00.000000+00:00', 'a.mp3', "
            "'{\"model\": \"htdemucs\", \"format\": \"mp3\"}', 'i', 'r', 'pending')"
        )
        db.execute("PRAGMA user_version=6")
    table = JobTable(path)
    try:
        assert table._query("PRAGMA user_version")[0][0] == SCHEMA_VERSION == 7
        old = table.get_owned("old")
        assert old is not None
        assert old.batch_id is None
        row = JobRow("new", datetime.datetime.now(datetime.UTC), "b.mp3", old.row.options, "", "")
        table.insert(row, "acme", None, batch_id="b-1")
        new = table.get_owned("new")
        assert new is not None
        assert new.batch_id == "b-1"
        assert json.loads(json.dumps(table.all_owned("acme")[0].batch_id)) == "b-1"
    finally:
        table.close()


def test_the_client_takes_files_and_folders_in_order(tmp_path: Path) -> None:
    from stemkube_client.cli import CliError, songs_of

    folder = tmp_path / "album"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.mp3", "A.FLAC", "notes.txt", "sub/deep.mp3"):
        (folder / name).write_bytes(b"x")
    single = tmp_path / "single.wav"
    single.write_bytes(b"x")
    assert [p.name for p in songs_of([str(single), str(folder)])] == [
        "single.wav",
        "A.FLAC",
        "b.mp3",
    ]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "cover.jpg").write_bytes(b"x")
    with pytest.raises(CliError, match="no audio files in"):
        songs_of([str(single), str(tmp_path / "empty")])
    with pytest.raises(CliError, match="no such file"):
        songs_of([str(tmp_path / "missing.mp3")])


def test_the_client_shows_a_line_or_a_bar_per_song() -> None:
    import io

    from rich.console import Console

    from stemkube_client.progress import Progress

    plain = io.StringIO()
    progress = Progress(False, Console(file=plain, force_terminal=False))
    progress.start_songs(["a.mp3", "b.mp3"])
    progress.update_song(0, 41, "processing")
    progress.update_song(0, 47, "processing")  # the same tenth: no line
    progress.update_song(1, 0, "pending")  # unchanged: no line
    progress.update_song(0, 100, "completed")
    progress.stop()
    assert plain.getvalue().splitlines() == [
        "a.mp3: pending 0%",
        "b.mp3: pending 0%",
        "a.mp3: processing 41%",
        "a.mp3: completed 100%",
    ]

    screen = io.StringIO()
    bars = Progress(False, Console(file=screen, force_terminal=True, width=100))
    bars.start_songs(["a.mp3", "b.mp3"])
    assert bars._bar is not None
    assert [t.description for t in bars._bar.tasks] == ["a.mp3: pending", "b.mp3: pending"]
    bars.update_song(1, 60, "processing")
    assert [t.completed for t in bars._bar.tasks] == [0, 60]
    bars.stop()


def test_the_client_follows_a_batch_and_saves_each_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``separate`` with several songs, one above the direct-upload threshold: every song goes
    by direct upload without its job, then one JSON batch names them; the batch is polled
    until each job ends, and each completed job's ZIP is saved."""
    import functools

    import httpx

    from stemkube_client import cli

    songs = [tmp_path / "a.mp3", tmp_path / "big.flac"]
    songs[0].write_bytes(b"a" * 10)
    songs[1].write_bytes(b"b" * 100)
    direct: list[tuple[str, bool]] = []

    def upload_direct(
        api: Any, path: Path, fields: dict[str, str], progress: Any, create_job: bool = True
    ) -> dict[str, Any]:
        direct.append((path.name, create_job))
        return {"upload_id": f"up-{path.stem}"}

    polls = iter(["processing", "completed"])
    sent: list[Any] = []

    def serve(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/batches":
            sent.append(json.loads(request.content))
            jobs = [{"job_id": "up-a", "filename": "a.mp3"}, {"job_id": "up-big", "filename": "b"}]
            return httpx.Response(200, json={"batch_id": "B", "status": "pending", "jobs": jobs})
        if request.url.path == "/batches/B":
            word = next(polls)
            states: list[dict[str, Any]] = [
                {"job_id": "up-a", "status": word, "progress": 100 if word == "completed" else 5},
                {"job_id": "up-big", "status": "failed", "progress": 0, "error": "bad luck"},
            ]
            return httpx.Response(200, json={"batch_id": "B", "jobs": states})
        if request.url.path == "/download/up-a":
            return httpx.Response(
                200, content=b"PK", headers={"content-disposition": 'attachment; filename="a.zip"'}
            )
        return httpx.Response(404, json={"detail": f"unexpected {request.url.path}"})

    monkeypatch.setattr(cli, "upload_direct", upload_direct)
    monkeypatch.setattr(
        cli, "Api", functools.partial(cli.Api, transport=httpx.MockTransport(serve))
    )
    code = cli.main(
        [
            "separate",
            *map(str, songs),
            "--direct-upload-threshold=50",
            "--poll-interval=0",
            "--format=wav",
            f"--output={tmp_path / 'out'}",
        ]
    )
    out, err = capsys.readouterr()
    assert code == cli.EXIT_FAILED
    assert direct == [("a.mp3", False), ("big.flac", False)]
    assert sent == [
        {"sources": [{"upload_id": "up-a"}, {"upload_id": "up-big"}], "options": {"format": "wav"}}
    ]
    assert out.split() == [str(tmp_path / "out" / "a.zip")]
    assert (tmp_path / "out" / "a.zip").read_bytes() == b"PK"
    assert "job up-big (b) failed: bad luck" in err
