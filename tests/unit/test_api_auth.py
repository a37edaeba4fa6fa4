"""Keys and tenants through the app's routes, on the in-memory backend and store and a real
SQLite key store: who may call what, what each tenant sees, the rate limit on a clock the test
moves, and the metrics on their own port. The integration tier runs the same on both modes
(tests/integration/test_api_auth.py)."""

import dataclasses
import datetime
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from stemkube_api.app import create_app
from stemkube_api.auth import keys
from stemkube_api.auth.caller import CHALLENGE
from stemkube_api.interfaces import UnavailableError
from stemkube_api.local.keys import SqliteKeyStore
from stemkube_api.metrics import MetricsServer
from stemkube_api.settings import AuthMode, Settings
from tests.harness.audio import sine_wav
from tests.unit.fakes import MemoryStore
from tests.unit.test_api_app import TenantBackend

SONG = sine_wav(0.2)
START = datetime.datetime(2026, 11, 28, 12, 0, 30, tzinfo=datetime.UTC)
MISSING = "0b8f8a3e-6c9d-4d2a-9a57-3f8a9f8f1c11"


class Clock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self, start: datetime.datetime = START) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Service:
    http: TestClient
    backend: TenantBackend
    store: MemoryStore
    key_store: SqliteKeyStore
    clock: Clock

    def key(self, name: str, tenant: str, role: keys.Role = "user", **quotas: Any) -> str:
        new = keys.create(
            name,
            tenant,
            role,
            datetime.datetime.fromtimestamp(self.clock(), datetime.UTC),
            quotas=keys.Quotas(**quotas),
        )
        self.key_store.add(new.record)
        return new.plaintext

    def as_key(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def upload(self, key: str | None, name: str = "song.wav") -> Any:
        return self.http.post(
            "/upload", files={"file": (name, SONG, "audio/wav")}, headers=self.as_key(key)
        )

    def get(self, path: str, key: str | None, **kwargs: Any) -> Any:
        return self.http.get(path, headers=self.as_key(key), **kwargs)


def serve(tmp_path: Path, mode: AuthMode = "required", **settings: Any) -> Iterator[Service]:
    backend, store, key_store, clock = (
        TenantBackend(),
        MemoryStore(),
        SqliteKeyStore(tmp_path),
        Clock(),
    )
    app = create_app(Settings(auth=mode, **settings), backend, store, key_store, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Service(http, backend, store, key_store, clock)
    key_store.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from serve(tmp_path)


GUARDED = [
    ("POST", "/upload"),
    ("GET", f"/status/{MISSING}"),
    ("GET", "/jobs"),
    ("GET", f"/download/{MISSING}"),
    ("GET", f"/download/{MISSING}/vocals"),
    ("DELETE", f"/job/{MISSING}"),
    ("GET", "/models"),
]


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_every_route_but_the_open_ones_needs_a_key(
    service: Service, method: str, path: str
) -> None:
    answer = service.http.request(method, path)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == CHALLENGE
    assert "API key is required" in answer.json()["detail"]


def test_the_open_routes_and_the_docs_need_none(service: Service) -> None:
    for path in ("/", "/healthz", "/readyz", "/docs", "/redoc", "/openapi.json"):
        assert service.http.get(path).status_code == 200, path
    assert service.http.get("/readyz").json()["checks"] == {
        "kubernetes": "ok",
        "storage": "ok",
        "keys": "ok",
    }
    spec = service.http.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (stk_...): `Authorization: Bearer <key>`.",
    }
    assert schemes["apiKey"]["name"] == "X-API-Key"
    assert {"bearer": []} in spec["paths"]["/jobs"]["get"]["security"]
    assert "security" not in spec["paths"]["/readyz"]["get"]
    assert "401" in spec["paths"]["/upload"]["post"]["responses"]


def test_bad_keys_are_one_401_and_an_expired_one_says_so(service: Service) -> None:
    good = service.key("ci", "acme")
    revoked = service.key("old", "acme")
    service.key_store.revoke("old")
    key_id, _ = keys.split(good) or ("", "")
    wrong = f"{keys.PREFIX}{key_id}_{'A' * 43}"
    details = set()
    for headers in (
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {wrong}"},
        {"X-API-Key": revoked},
        {"Authorization": f"Basic {good}"},  # a key, but not as a bearer token: no key sent
    ):
        answer = service.http.get("/jobs", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == CHALLENGE
        details.add(answer.json()["detail"])
    assert len(details) == 2  # "not valid", and "required" for the Basic one
    assert service.get("/jobs", good).status_code == 200
    assert service.http.get("/jobs", headers={"X-API-Key": good}).status_code == 200
    expiring = keys.create(
        "brief", "acme", "user", START, expires=START + datetime.timedelta(minutes=5)
    )
    service.key_store.add(expiring.record)
    assert service.get("/jobs", expiring.plaintext).status_code == 200
    service.clock.now += 301
    answer = service.get("/jobs", expiring.plaintext)
    assert answer.status_code == 401
    assert answer.json()["detail"] == "the API key 'brief' expired at 2026-11-28T12:05:30Z"


def test_a_refused_upload_stores_nothing(service: Service) -> None:
    service.key("ci", "acme")
    assert service.upload("stk_000000000000_" + "A" * 43).status_code == 401
    assert service.store.objects == {}
    assert service.backend.created == []


def test_a_job_is_its_tenants_and_another_tenant_finds_nothing(service: Service) -> None:
    acme, globex = service.key("acme-ci", "acme"), service.key("globex-ci", "globex")
    created = service.upload(acme)
    assert created.status_code == 200, created.text
    job_id = created.json()["job_id"]
    [job] = service.backend.created
    assert (job.tenant, job.key_id) == ("acme", keys.split(acme)[0])  # type: ignore[index]
    assert job.input_key == f"tenants/acme/inputs/{job_id}/input.wav"
    service.backend.finish(job_id, service.store)
    assert f"tenants/acme/results/{job_id}.zip" in service.store.objects

    assert service.get(f"/status/{job_id}", acme).json()["status"] == "completed"
    assert service.get(f"/download/{job_id}", acme).status_code == 200
    assert service.get(f"/download/{job_id}/vocals", acme).status_code == 200
    # Another tenant: exactly what a job that does not exist answers.
    for path in ("/status/{}", "/download/{}", "/download/{}/vocals"):
        theirs = service.get(path.format(job_id), globex)
        missing = service.get(path.format(MISSING), globex)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["detail"] == missing.json()["detail"].replace(MISSING, job_id)
    assert service.get("/jobs", globex).json() == {"jobs": [], "count": 0, "next_cursor": None}
    refused = service.http.delete(f"/job/{job_id}", headers=service.as_key(globex))
    assert refused.status_code == 404
    assert refused.json()["detail"] == f"job {job_id} not found"
    assert job_id in service.backend.jobs
    deleted = service.http.delete(f"/job/{job_id}", headers=service.as_key(acme))
    assert deleted.status_code == 200
    assert service.store.objects == {}


def test_presigned_downloads_are_the_tenants_only(tmp_path: Path) -> None:
    for service in serve(tmp_path, presigned_downloads=True):
        acme, globex = service.key("acme-ci", "acme"), service.key("globex-ci", "globex")
        job_id = service.upload(acme).json()["job_id"]
        service.backend.finish(job_id, service.store)
        mine = service.get(f"/download/{job_id}", acme, follow_redirects=False)
        assert mine.status_code == 307
        assert f"/tenants/acme/results/{job_id}.zip" in mine.headers["location"]
        theirs = service.get(f"/download/{job_id}", globex, follow_redirects=False)
        assert theirs.status_code == 404
        assert "location" not in theirs.headers


def test_an_admin_sees_every_tenant_and_filters_by_one(service: Service) -> None:
    acme, globex = service.key("acme-ci", "acme"), service.key("globex-ci", "globex")
    admin = service.key("ops", "ops", "admin")
    mine = [service.upload(acme).json()["job_id"] for _ in range(3)]
    theirs = [service.upload(globex).json()["job_id"] for _ in range(2)]
    # Pages are the tenant's: the filter comes before the limit.
    first = service.get("/jobs", acme, params={"limit": 2}).json()
    second = service.get("/jobs", acme, params={"limit": 2, "cursor": first["next_cursor"]})
    paged = [j["job_id"] for j in first["jobs"] + second.json()["jobs"]]
    assert sorted(paged) == sorted(mine)
    assert second.json()["next_cursor"] is None
    every = service.get("/jobs", admin).json()["jobs"]
    assert sorted(j["job_id"] for j in every) == sorted(mine + theirs)
    assert {j["tenant"] for j in every} == {"acme", "globex"}
    only = service.get("/jobs", admin, params={"tenant": "globex"}).json()["jobs"]
    assert sorted(j["job_id"] for j in only) == sorted(theirs)
    assert service.get(f"/status/{theirs[0]}", admin).json()["tenant"] == "globex"
    # A user's answers name no tenant; it may not ask for one, its own included.
    assert {j["tenant"] for j in service.get("/jobs", acme).json()["jobs"]} == {None}
    for tenant in ("globex", "acme"):
        refused = service.get("/jobs", acme, params={"tenant": tenant})
        assert refused.status_code == 403
        assert refused.json()["detail"] == "only admin keys may filter by tenant"
    # Admin keys reach every tenant's job, a job of no tenant too.
    assert service.get(f"/download/{mine[0]}", admin).status_code == 409  # not done yet
    assert service.http.delete(f"/job/{mine[0]}", headers=service.as_key(admin)).status_code == 200


def test_a_job_of_no_tenant_is_for_admins_only(service: Service) -> None:
    """A SeparationJob made with kubectl, or a job from before keys."""
    user, admin = service.key("ci", "acme"), service.key("ops", "ops", "admin")
    job_id = service.upload(user).json()["job_id"]
    service.backend.jobs[job_id] = dataclasses.replace(service.backend.jobs[job_id], tenant=None)
    assert service.get(f"/status/{job_id}", user).status_code == 404
    assert service.get(f"/status/{job_id}", admin).json()["tenant"] is None


def test_the_rate_limit_refuses_with_retry_after_and_recovers(service: Service) -> None:
    limited = service.key("ci", "acme", requests_per_minute=2)
    other = service.key("free", "acme")
    for _ in range(2):
        assert service.get("/jobs", limited).status_code == 200
    refused = service.get("/jobs", limited)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "30"  # START is 30 s into its minute
    assert refused.json()["detail"] == (
        "rate limit of key 'ci': 2 requests per minute; the next minute starts in 30 s"
    )
    assert service.upload(limited).status_code == 429
    assert service.store.objects == {}
    assert service.get("/jobs", other).status_code == 200  # per key
    assert service.http.get("/healthz").status_code == 200  # the open routes count for none
    service.clock.now += 29
    assert service.get("/jobs", limited).headers["retry-after"] == "1"
    service.clock.now += 1
    assert service.get("/jobs", limited).status_code == 200


def test_open_until_the_first_key(tmp_path: Path) -> None:
    """Local mode on loopback: the seed's flow without a key, until a key exists."""
    for service in serve(tmp_path, mode="open-until-keys"):
        ready = service.http.get("/readyz").json()
        assert ready["checks"] == {"kubernetes": "ok", "storage": "ok"}  # as before keys
        created = service.upload(None)
        assert created.status_code == 200
        job_id = created.json()["job_id"]
        assert service.backend.created[0].tenant is None
        assert service.backend.created[0].input_key == f"inputs/{job_id}/input.wav"
        assert service.get(f"/status/{job_id}", None).json()["tenant"] is None
        key = service.key("alice", "home")
        assert service.get(f"/status/{job_id}", None).status_code == 401
        assert service.get("/jobs", key).json()["jobs"] == []  # the open job has no tenant
        service.key_store.revoke("alice")
        assert service.get("/jobs", None).status_code == 200


def test_auth_off_lets_everyone_in() -> None:
    app = create_app(Settings(auth="off"), TenantBackend(), MemoryStore())
    with TestClient(app) as http:
        assert http.get("/jobs", headers={"Authorization": "Bearer nonsense"}).status_code == 200
        assert http.get("/readyz").json()["checks"] == {"kubernetes": "ok", "storage": "ok"}


def test_keys_required_without_a_store_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="needs a key store"):
        create_app(Settings(), TenantBackend(), MemoryStore())


class UnsyncedKeys(SqliteKeyStore):
    def check(self) -> None:
        raise UnavailableError("API keys: the Secret watch has not synced (starting)")


def test_a_replica_that_has_not_read_the_keys_answers_503_not_401(tmp_path: Path) -> None:
    app = create_app(Settings(), TenantBackend(), MemoryStore(), UnsyncedKeys(tmp_path))
    with TestClient(app, raise_server_exceptions=False) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert "Secret watch has not synced" in ready.json()["detail"]
        assert http.get("/jobs", headers={"X-API-Key": "whatever"}).status_code == 503


def test_logs_name_the_key_never_show_it(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    key = service.key("ci", "acme", requests_per_minute=1)
    secret = (keys.split(key) or ("", ""))[1]
    with caplog.at_level(logging.DEBUG):
        job_id = service.upload(key).json()["job_id"]
        service.get("/jobs", key)  # over the limit
        service.get("/jobs", key[:-1] + "x")
        service.clock.now += 60
        service.http.delete(f"/job/{job_id}", headers=service.as_key(key))
    text = caplog.text
    assert secret not in text
    assert key not in text
    assert f"job {job_id} created for song.wav" in text
    assert "by key ci (tenant acme)" in text
    assert "refused GET /jobs for key ci (tenant acme): rate limit" in text
    assert "refused GET /jobs: the API key is not valid" in text
    assert f"job {job_id} cancelled and deleted by key ci (tenant acme)" in text


def test_metrics_are_served_on_their_own_port(tmp_path: Path) -> None:
    server = MetricsServer("127.0.0.1", 0)
    backend, store = TenantBackend(), MemoryStore()
    app = create_app(Settings(auth="off"), backend, store, metrics_server=server)
    with TestClient(app) as http:
        http.post("/upload", files={"file": ("song.wav", SONG, "audio/wav")})
        assert http.get("/metrics").status_code == 404
        url = f"http://127.0.0.1:{server.bound_port}/metrics"
        text = httpx.get(url, timeout=10).text
        assert "stemkube_api_jobs_created_total 1.0" in text
    with pytest.raises(httpx.TransportError):  # stopped with the app
        httpx.get(url, timeout=2)
