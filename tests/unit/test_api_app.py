"""The REST API's HTTP behaviour on in-memory stand-ins for the job backend and the object store
(the integration tier runs the same routes on SeparationJobs and MinIO)."""

import dataclasses
import io
import urllib.parse
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from stemkube_api.app import create_app
from stemkube_api.interfaces import NewJob
from stemkube_api.jobs import JobPage, JobRecord, paginate, result_key
from stemkube_api.settings import Settings
from stemkube_contract import options as catalogue
from stemkube_contract.models import Catalog, Model
from tests.harness.audio import sine_wav
from tests.unit.fakes import MODELS, MemoryBackend, MemoryStore


class TenantBackend(MemoryBackend):
    """The in-memory backend keeping each job's tenant as the real backends do: its result
    under the tenant's prefix, the list filtered before the page."""

    def create(self, job: NewJob) -> JobRecord:
        record = dataclasses.replace(
            super().create(job), tenant=job.tenant, result_key=result_key(job.job_id, job.tenant)
        )
        self.jobs[job.job_id] = record
        return record

    def list(
        self,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        tenant: str | None = None,
    ) -> JobPage:
        return paginate(self.jobs.values(), status, limit, cursor, tenant)


@pytest.fixture
def parts() -> tuple[TenantBackend, MemoryStore]:
    return TenantBackend(), MemoryStore()


def make_client(parts: tuple[TenantBackend, MemoryStore], **settings: Any) -> Iterator[TestClient]:
    """The app without keys (auth off): these tests are about the routes; test_api_auth.py
    has the keys."""
    backend, store = parts
    app = create_app(Settings(**{"auth": "off", **settings}), backend, store)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def client(parts: tuple[TenantBackend, MemoryStore]) -> Iterator[TestClient]:
    yield from make_client(parts)


SONG = sine_wav(0.2)


def upload(client: TestClient, data: bytes = SONG, name: str = "song.wav", **fields: str) -> Any:
    return client.post("/upload", files={"file": (name, data, "audio/wav")}, data=fields)


def upload_with(client: TestClient, fields: dict[str, str]) -> Any:
    return upload(client, SONG, "song.wav", **fields)


def test_health(client: TestClient) -> None:
    body = client.get("/").json()
    assert body["service"] == "stemkube"
    assert body["status"] == "ok"
    assert body["version"]
    assert body["ui"] == "/ui/"  # a link to the web page
    assert client.get("/healthz").json() == {"status": "alive"}


def test_upload_stores_under_the_job_id_and_creates_the_job(
    client: TestClient, parts: tuple[TenantBackend, MemoryStore]
) -> None:
    backend, store = parts
    response = upload(client, name="../My Song.wav", format="wav", two_stems="vocals")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"job_id", "status", "filename", "created_at"}
    assert body["status"] == "pending"
    assert body["filename"] == "My Song.wav"
    [job] = backend.created
    assert job.job_id == body["job_id"]
    assert job.input_key == f"inputs/{body['job_id']}/input.wav"
    assert store.objects[job.input_key] == SONG
    assert job.request["two_stems"] == "vocals"
    assert store.open_writers == 0


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000, "PNG"),
        (b"just some words\n" * 100, "text"),
    ],
)
def test_not_audio_is_415_and_nothing_is_stored(
    client: TestClient, parts: tuple[TenantBackend, MemoryStore], data: bytes, words: str
) -> None:
    backend, store = parts
    response = upload(client, data, name="x.png")
    assert response.status_code == 415
    assert words in response.json()["detail"]
    assert "x.png" in response.json()["detail"]
    assert not store.objects
    assert not backend.created


def test_too_large_is_413_with_the_limit_and_nothing_is_stored(
    parts: tuple[TenantBackend, MemoryStore],
) -> None:
    backend, store = parts
    for client in make_client(parts, max_file_size=100_000):
        response = upload(client, sine_wav(2.0))
        assert response.status_code == 413
        assert "97.66KB" in response.json()["detail"]
        assert "100000 bytes" in response.json()["detail"]
        # The limit is on the file alone: a file of exactly the limit is fine.
        exact = SONG + b"\x00" * (100_000 - len(SONG))
        assert upload(client, exact).status_code == 200
    assert len(store.objects) == 1
    assert len(backend.created) == 1
    assert store.open_writers == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": "spleeter"}, "model"),
        ({"format": "ogg"}, "format"),
        ({"bitrate": "128", "format": "flac"}, "bitrate"),
        ({"stems": "vocals", "two_stems": "bass"}, "two_stems"),
        ({"stems": "piano"}, "stems"),
        ({"two_stem": "vocals"}, "two_stem"),
    ],
)
def test_bad_options_are_422_naming_the_field(
    client: TestClient,
    parts: tuple[TenantBackend, MemoryStore],
    fields: dict[str, str],
    field: str,
) -> None:
    backend, store = parts
    response = upload_with(client, fields)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"{field}: ")
    assert not store.objects
    assert not backend.created
    assert store.open_writers == 0


def test_options_after_the_file_are_checked_too(
    client: TestClient, parts: tuple[TenantBackend, MemoryStore]
) -> None:
    _, store = parts
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    body += (
        SONG + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="format"\r\n\r\n'.encode()
    )
    body += (
        f'wav\r\n--{boundary}\r\nContent-Disposition: form-data; name="bitrate"\r\n\r\n'.encode()
    )
    body += f"128\r\n--{boundary}--\r\n".encode()
    response = client.post(
        "/upload",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("bitrate: ")
    assert not store.objects
    assert store.aborted == 1


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, "multipart/form-data"),
        ({"data": {"format": "wav"}, "files": {"other": ("a", b"x")}}, "other"),
        ({"data": {"file": "text"}, "files": {"x2": ("a", b"")}}, "file: must be a file"),
        (
            {
                "content": b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
                b"mdx\r\n--b--\r\n",
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
            "file: field required",
        ),
        (
            {
                "content": b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"'
                b"\r\n\r\nRIFF",
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
            "ended before",
        ),
    ],
)
def test_malformed_uploads_are_422(client: TestClient, kwargs: dict[str, Any], words: str) -> None:
    response = client.post("/upload", **kwargs)
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]


def test_backend_down_is_503_and_the_input_is_removed(
    client: TestClient, parts: tuple[TenantBackend, MemoryStore]
) -> None:
    backend, store = parts
    backend.down = True
    response = upload(client)
    assert response.status_code == 503
    assert "connection refused" in response.json()["detail"]
    assert not store.objects


def test_status_list_download_delete(
    client: TestClient, parts: tuple[TenantBackend, MemoryStore]
) -> None:
    backend, store = parts
    job_id = upload(client, name="song.wav").json()["job_id"]
    status = client.get(f"/status/{job_id}").json()
    assert status["status"] == "pending"
    assert status["stems"] == ["vocals", "drums", "bass", "other"]
    assert status["error"] is None
    assert status["download_url"] is None

    response = client.get(f"/download/{job_id}")
    assert response.status_code == 409
    assert "pending" in response.json()["detail"]

    backend.finish(job_id, store)
    response = client.get(f"/download/{job_id}")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="song_stems.zip"'
    assert response.headers["content-type"] == "application/zip"
    members = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert sorted(members) == ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]

    stem = client.get(f"/download/{job_id}/vocals")
    assert stem.status_code == 200
    assert stem.content == b"vocals audio" * 100
    assert stem.headers["content-type"] == "audio/mpeg"
    assert stem.headers["content-disposition"] == 'attachment; filename="song_vocals.mp3"'
    assert client.get(f"/download/{job_id}/guitar").status_code == 404

    listed = client.get("/jobs").json()
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]
    assert listed["jobs"][0]["status"] == "completed"
    assert client.get("/jobs", params={"status": "pending"}).json()["jobs"] == []

    deleted = client.delete(f"/job/{job_id}")
    assert deleted.status_code == 200
    assert deleted.json()["deleted"] is True
    assert not store.objects
    assert client.get(f"/status/{job_id}").status_code == 404
    assert client.delete(f"/job/{job_id}").status_code == 404


def test_failed_download_is_409_with_the_error(
    client: TestClient, parts: tuple[TenantBackend, MemoryStore]
) -> None:
    backend, _ = parts
    job_id = upload(client).json()["job_id"]
    backend.jobs[job_id] = dataclasses.replace(
        backend.jobs[job_id], status="failed", reason="InvalidInput", message="not audio at all"
    )
    response = client.get(f"/download/{job_id}")
    assert response.status_code == 409
    assert "not audio at all" in response.json()["detail"]
    assert client.get(f"/status/{job_id}").json()["error"] == "not audio at all"


def test_presigned_downloads_redirect(parts: tuple[TenantBackend, MemoryStore]) -> None:
    backend, store = parts
    for client in make_client(parts, presigned_downloads=True):
        job_id = upload(client).json()["job_id"]
        backend.finish(job_id, store)
        response = client.get(f"/download/{job_id}", follow_redirects=False)
        assert response.status_code == 307
        assert response.headers["location"].startswith("https://s3.example/results/")
        # The object store answers with the same Content-Disposition the API would send.
        job_id = upload(client, name="日本の歌.wav").json()["job_id"]
        backend.finish(job_id, store)
        location = client.get(f"/download/{job_id}", follow_redirects=False).headers["location"]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        assert query["response-content-disposition"] == [
            f'attachment; filename="{job_id}_stems.zip"; '
            f"filename*=UTF-8''{urllib.parse.quote('日本の歌_stems.zip', safe='')}"
        ]


@pytest.mark.parametrize(
    "path",
    ["/status/nope", "/status/..%2F..", "/download/nope", "/download/nope/vocals", "/job/nope"],
)
def test_unknown_jobs_are_404(client: TestClient, path: str) -> None:
    method = client.delete if path.startswith("/job/") else client.get
    response = method(path)
    assert response.status_code == 404
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("cursor=zz", "cursor"),
    ],
)
def test_bad_list_queries_are_422_naming_the_field(
    client: TestClient, query: str, field: str
) -> None:
    response = client.get(f"/jobs?{query}")
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"{field}: ")


def test_readyz(client: TestClient, parts: tuple[TenantBackend, MemoryStore]) -> None:
    backend, store = parts
    assert client.get("/readyz").json() == {
        "status": "ready",
        "checks": {"kubernetes": "ok", "storage": "ok"},
    }
    store.down = True
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "storage" in response.json()["detail"]
    store.down, backend.down = False, True
    assert "kubernetes" in client.get("/readyz").json()["detail"]


def test_metrics(client: TestClient) -> None:
    upload(client)
    upload(client, b"not a song")
    client.get("/status/nope")
    # Not on the API's port (an ingress routes it): on their own (test_api_auth.py).
    assert client.get("/metrics").status_code == 404
    registry = client.app.state.services.metrics.registry  # type: ignore[attr-defined]
    text = generate_latest(registry).decode()
    assert 'stemkube_api_requests_total{method="POST",route="/upload",status="200"} 1.0' in text
    assert 'stemkube_api_requests_total{method="POST",route="/upload",status="415"} 1.0' in text
    assert (
        'stemkube_api_requests_total{method="GET",route="/status/{job_id}",status="404"} 1.0'
        in text
    )
    assert f"stemkube_api_upload_bytes_total {float(len(SONG))}" in text
    assert "stemkube_api_jobs_created_total 1.0" in text
    assert 'stemkube_api_uploads_rejected_total{reason="not_audio"} 1.0' in text
    assert "stemkube_api_request_duration_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text


def test_openapi_is_complete(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/",
        "/upload",
        "/status/{job_id}",
        "/download/{job_id}",
        "/download/{job_id}/{stem}",
        "/jobs",
        "/job/{job_id}",
        "/healthz",
        "/readyz",
        "/models",
    ):
        assert path in paths, path
    assert "/metrics" not in paths
    schemas = spec["components"]["schemas"]
    for name in ("ErrorResponse", "UploadResponse", "JobStatus", "JobList", "Deleted", "Health"):
        assert name in schemas
    form = paths["/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    # The form is the catalogue: every option, with its values and bounds.
    assert set(form["properties"]) == {"file", "webhook_url", *catalogue.NAMES}
    assert form["properties"]["bitrate"]["enum"] == list(catalogue.MP3_BITRATES)
    assert form["properties"]["model"]["enum"] == list(MODELS.names)
    assert form["properties"]["shifts"]["maximum"] == catalogue.BY_NAME["shifts"].maximum
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for code in ("413", "415", "422", "503"):
        response = paths["/upload"]["post"]["responses"][code]
        assert response["content"]["application/json"]["schema"] == error_ref
    assert (
        paths["/jobs"]["get"]["responses"]["422"]["content"]["application/json"]["schema"]
        == error_ref
    )
    assert "application/zip" in paths["/download/{job_id}"]["get"]["responses"]["200"]["content"]
    assert client.get("/docs").status_code == 200


def test_models_lists_the_deployments_models_and_the_default(
    parts: tuple[TenantBackend, MemoryStore],
) -> None:
    custom = Catalog((Model("tiny", ("vocals", "rest")), *MODELS.models), "tiny")
    for client in make_client(parts, models=custom):
        body = client.get("/models").json()
        assert body["default"] == "tiny"
        assert body["models"][0] == {
            "name": "tiny",
            "stems": ["vocals", "rest"],
            "default": True,
            "description": "",
        }
        assert [m["name"] for m in body["models"]] == list(custom.names)
        created = upload(client, two_stems="rest")
        assert created.status_code == 200, created.text
        refused = upload(client, two_stems="rest", model="htdemucs")
        assert refused.status_code == 422
        assert "'rest' is not one of model htdemucs's stems" in refused.json()["detail"]


def test_an_upload_for_a_model_without_weights_is_refused_at_once(
    parts: tuple[TenantBackend, MemoryStore],
) -> None:
    backend, store = parts
    backend.no_weights["htdemucs"] = "not in the Demucs cache; give --model-repo"
    for client in make_client(parts):
        response = upload(client)
        assert response.status_code == 503
        assert "--model-repo" in response.json()["detail"]
        assert store.objects == {}
        assert upload(client, model="mdx").status_code == 200


def test_unknown_routes_answer_json(client: TestClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    assert client.put("/upload").status_code == 405


def test_options_before_the_file_are_refused_before_it_is_stored(
    client: TestClient, parts: tuple[TenantBackend, MemoryStore]
) -> None:
    _, store = parts
    response = upload_with(client, {"format": "wav", "bitrate": "128"})
    assert response.status_code == 422
    assert store.open_writers == 0
    assert store.aborted == 0  # no writer was ever opened
    # stems=guitar before the file may still be fixed by a model after it.
    boundary = "B"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="stems"\r\n\r\nguitar\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    ).encode()
    body += SONG
    body += (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nhtdemucs_6s'
        f"\r\n--{boundary}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = client.post("/upload", content=body, headers=headers)
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    assert client.get(f"/status/{job_id}").json()["stems"] == ["guitar"]
