"""``POST /jobs`` (routes/sources.py): a job from a URL, on the in-memory backend; how each
backend records a URL job (the SeparationJob's ``spec.input.url``, local mode's row and its
separator command line)."""

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stemkube_api.interfaces import NewJob
from stemkube_api.kubernetes.backend import manifest
from stemkube_api.local import rules
from stemkube_contract import exitcodes
from stemkube_contract import options as catalogue
from stemkube_contract.models import Catalog
from tests.unit.fakes import MemoryStore
from tests.unit.test_api_app import TenantBackend, make_client
from tests.unit.test_api_auth import Service, serve

URL = "https://cdn.example.com/music/My%20Song.mp3?X-Amz-Signature=topsecret&X-Amz-Expires=60"
SHOWN = "https://cdn.example.com/music/My%20Song.mp3"
JOB = "0b8f8a3e-6c9d-4d2a-9a57-3f8a9f8f1c11"


@pytest.fixture
def parts() -> tuple[TenantBackend, MemoryStore]:
    return TenantBackend(), MemoryStore()


@pytest.fixture
def client(parts: tuple[TenantBackend, MemoryStore]) -> Iterator[TestClient]:
    yield from make_client(parts)


def create(client: TestClient, body: Any, **headers: str) -> Any:
    return client.post("/jobs", json=body, headers=headers)


def test_a_job_from_a_url(
    client: TestClient, parts: tuple[TenantBackend, MemoryStore], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    answer = create(client, {"source": {"url": URL}, "options": {"format": "wav"}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "pending"
    assert body["filename"] == "My Song.mp3"
    assert body["source"] == {"url": SHOWN}
    assert "topsecret" not in answer.text
    assert "topsecret" not in caplog.text
    backend, store = parts
    new = backend.created[-1]
    assert new.job_id == body["job_id"]
    assert new.source_url == URL  # the separator needs all of it
    assert new.input_key == ""
    assert new.input_size is None
    assert new.request == {"format": "wav"}
    assert store.objects == {}  # the API fetched and stored nothing
    status = client.get(f"/status/{body['job_id']}").json()
    assert status["filename"] == "My Song.mp3"
    assert "topsecret" not in str(status)


def test_options_are_the_upload_forms(
    client: TestClient, parts: tuple[TenantBackend, MemoryStore]
) -> None:
    body = {
        "source": {"url": "http://example.com/a.flac"},
        "options": {"stems": ["vocals", "drums"], "format": "mp3", "bitrate": 192, "overlap": 0.5},
    }
    assert create(client, body).status_code == 200
    assert parts[0].created[-1].request == {
        "stems": ("vocals", "drums"),
        "format": "mp3",
        "bitrate": 192,
        "overlap": 0.5,
    }


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"source": {"url": "ftp://example.com/a.mp3"}}, "source.url: the scheme must be http"),
        ({"source": {"url": "https://u:p@example.com/a"}}, "source.url: the URL must not hold"),
        ({"source": {"url": "https:///a.mp3"}}, "source.url: the URL has no host"),
        ({"source": {"url": "https://e.com/" + "a" * 2048}}, "source.url: the URL is 2062"),
        ({"source": {}}, "source: give exactly one of url"),
        ({"source": {"bucket": "x"}}, "bucket"),
        ({}, "source"),
        ({"source": {"url": "https://e.com/a"}, "options": {"colour": "red"}}, "options.colour"),
        ({"source": {"url": "https://e.com/a"}, "options": {"format": "ogg"}}, "options.format"),
        ({"source": {"url": "https://e.com/a"}, "options": {"shifts": True}}, "options.shifts"),
        (
            {"source": {"url": "https://e.com/a"}, "options": {"bitrate": 192, "format": "wav"}},
            "options.bitrate",
        ),
    ],
)
def test_bad_requests_name_the_field(
    client: TestClient, parts: tuple[TenantBackend, MemoryStore], body: Any, words: str
) -> None:
    answer = create(client, body)
    assert answer.status_code == 422, answer.text
    assert words in answer.json()["detail"]
    assert parts[0].created == []


def test_a_model_without_weights_is_503(
    client: TestClient, parts: tuple[TenantBackend, MemoryStore]
) -> None:
    parts[0].no_weights["htdemucs"] = "not in the model folder"
    answer = create(client, {"source": {"url": "https://e.com/a.mp3"}})
    assert answer.status_code == 503
    assert "not in the model folder" in answer.json()["detail"]


def test_the_openapi_document_shows_the_body_and_an_example(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/jobs"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema = spec["components"]["schemas"][ref]
    assert schema["examples"][0]["source"]["url"].startswith("https://")
    assert "get" in spec["paths"]["/jobs"]  # the list is still there


# Keys, tenants, quotas -----------------------------------------------------------------------


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[Service]:
    yield from serve(tmp_path)


def test_keys_tenants_and_quotas_apply(keyed: Service) -> None:
    body = {"source": {"url": "https://e.com/a.mp3"}}
    assert keyed.http.post("/jobs", json=body).status_code == 401
    busy = keyed.key("busy", "acme", active_jobs=1)
    first = keyed.http.post("/jobs", json=body, headers=keyed.as_key(busy))
    assert first.status_code == 200
    assert keyed.backend.jobs[first.json()["job_id"]].tenant == "acme"
    second = keyed.http.post("/jobs", json=body, headers=keyed.as_key(busy))
    assert second.status_code == 429
    assert second.headers["retry-after"] == "10"
    assert "1 job(s) queued or running" in second.json()["detail"]
    # The bytes quota counts the result only: a URL job stores nothing at creation.
    small = keyed.key("small", "acme", bytes_stored=1)
    assert keyed.http.post("/jobs", json=body, headers=keyed.as_key(small)).status_code == 200


# The backends' records -----------------------------------------------------------------------


def new_job(**changes: Any) -> NewJob:
    fields: dict[str, Any] = {
        "job_id": JOB,
        "request": {"format": "wav"},
        "input_key": "",
        "filename": "My Song.mp3",
        "source_url": URL,
    }
    return NewJob(**{**fields, **changes})


def test_the_separation_job_names_the_url_instead_of_an_object() -> None:
    cr = manifest(new_job(), "ns", "stemkube", f"results/{JOB}.zip", Catalog())
    assert cr["spec"]["input"] == {"url": URL, "filename": "My Song.mp3"}
    assert cr["spec"]["output"] == {"bucket": "stemkube", "key": f"results/{JOB}.zip"}
    upload = manifest(
        new_job(source_url=None, input_key=f"inputs/{JOB}/input.mp3"),
        "ns",
        "stemkube",
        f"results/{JOB}.zip",
        Catalog(),
    )
    assert upload["spec"]["input"] == {
        "bucket": "stemkube",
        "key": f"inputs/{JOB}/input.mp3",
        "filename": "My Song.mp3",
    }


def test_local_mode_keeps_the_url_beside_the_options_and_hands_it_to_the_worker() -> None:
    now = datetime.datetime(2026, 11, 28, tzinfo=datetime.UTC)
    row = rules.new_row(new_job(), Catalog(), now)
    assert rules.source_url(row) == URL
    # Stored as the row's options JSON, read back whole.
    again = catalogue.from_json(catalogue.to_json(row.options))
    assert again[catalogue.SOURCE_URL_KEY] == URL
    # Never an option that is shown.
    record = rules.record_of(row, Catalog())
    assert catalogue.SOURCE_URL_KEY not in record.options
    argv = rules.separator_command(
        row, [], URL, Path("/o.zip"), Path("/p"), Path("/t"), None, Catalog()
    )
    assert argv[0] == URL
    assert catalogue.SOURCE_URL_KEY not in " ".join(argv[1:])
    upload = rules.new_row(new_job(source_url=None, input_key="inputs/x/input.mp3"), Catalog(), now)
    assert rules.source_url(upload) is None


def test_local_mode_retries_a_source_timeout_and_fails_the_rest_at_once() -> None:
    said = "fetching https://e.com/a.mp3: HTTP 503 Service Unavailable"
    first = rules.outcome(exitcodes.SOURCE_UNAVAILABLE, said, 1, 3)
    assert (first.status, first.reason) == ("pending", "Retrying")
    last = rules.outcome(exitcodes.SOURCE_UNAVAILABLE, said, 3, 3)
    assert (last.status, last.reason) == ("failed", "SourceUnreachable")
    assert last.message == f"failed 3 time(s); last error: {said}"
    for code, reason in [
        (exitcodes.NOT_AUDIO, "NotAudio"),
        (exitcodes.SOURCE_FORBIDDEN, "SourceForbidden"),
        (exitcodes.SOURCE_TOO_LARGE, "SourceTooLarge"),
        (exitcodes.SOURCE_UNREACHABLE, "SourceUnreachable"),
    ]:
        once = rules.outcome(code, "why", 1, 3)
        assert (once.status, once.reason, once.message) == ("failed", reason, "why")


def test_an_idempotency_key_makes_one_job_of_a_repeated_request(
    client: TestClient, parts: tuple[TenantBackend, MemoryStore]
) -> None:
    """As on /upload: the same key and body answer the first job again and create nothing;
    another body under the key is a 409; a bad key a 400."""
    body = {"source": {"url": URL}, "options": {"format": "wav"}}
    first = create(client, body, **{"Idempotency-Key": "order-42"})
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    again = create(client, body, **{"Idempotency-Key": "order-42"})
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    backend, _ = parts
    assert [n.job_id for n in backend.created] == [first.json()["job_id"]]
    other = create(
        client, {**body, "options": {"format": "flac"}}, **{"Idempotency-Key": "order-42"}
    )
    assert other.status_code == 409, other.text
    assert "Idempotency-Key" in other.json()["detail"]
    assert create(client, body, **{"Idempotency-Key": "x" * 256}).status_code == 400
    assert create(client, body).json()["job_id"] != first.json()["job_id"]  # no key: a new job
    assert len(backend.created) == 2
