"""Web hygiene: security headers on every response, CORS only for allowed origins."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from stemkube_api.settings import SettingsError, load_settings, parse_origins
from tests.unit.fakes import MemoryStore
from tests.unit.test_api_app import TenantBackend, make_client

ALLOWED = "https://app.example.com"


@pytest.fixture
def client() -> Iterator[TestClient]:
    yield from make_client((TenantBackend(), MemoryStore()))


@pytest.fixture
def cors_client() -> Iterator[TestClient]:
    yield from make_client((TenantBackend(), MemoryStore()), cors_origins=(ALLOWED,))


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    for response in (client.get("/"), client.get("/status/nope"), client.post("/upload")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert (
            response.headers["content-security-policy"]
            == "default-src 'none'; frame-ancestors 'none'"
        )
    docs = client.get("/docs")
    assert docs.headers["content-security-policy"] == "frame-ancestors 'none'"


def test_no_cors_unless_configured(client: TestClient) -> None:
    response = client.get("/", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/upload", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_allowed_origins_only(cors_client: TestClient) -> None:
    response = cors_client.get("/", headers={"Origin": ALLOWED})
    assert response.headers["access-control-allow-origin"] == ALLOWED
    preflight = cors_client.options(
        "/upload",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert preflight.headers["x-content-type-options"] == "nosniff"
    other = cors_client.get("/", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_origins_are_checked() -> None:
    assert parse_origins(" https://a.example , http://localhost:5173") == (
        "https://a.example",
        "http://localhost:5173",
    )
    for bad in ("https://a.example/", "a.example", "https://a.example/path", "ftp://a"):
        with pytest.raises(SettingsError, match="not an origin"):
            load_settings({"STEMKUBE_CORS_ORIGINS": bad})
