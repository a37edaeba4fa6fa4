"""``POST /jobs`` with a URL, end to end in both modes (the ``service`` fixture): the song is
fetched by the separator (Kubernetes mode: the Job's pod, the URL in its environment; local
mode: the worker, the URL on its standard input) from the tier's loopback server, which the
harness lets through with the test-only allow-list (``STEMKUBE_URL_ALLOW_CIDRS=127.0.0.0/8``
on the operator and the local API). A completed job has the four stems; an HTML page fails
as ``NotAudio``; the URL's query is never shown."""

import io
import zipfile
from typing import Any

import pytest

from tests.harness.api import ApiServer
from tests.harness.service import Service
from tests.harness.urlserver import UrlServer
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

FOUR = ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]


def wait_done(api: ApiServer, job_id: str, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status: dict[str, Any] = api.get(f"/status/{job_id}").json()
        return status if status["status"] in ("completed", "failed") else None

    return wait_for(done, timeout, f"job {job_id} finishes", interval=0.3)


def create(api: ApiServer, url: str, **options: Any) -> dict[str, Any]:
    with api.client() as http:
        answer = http.post("/jobs", json={"source": {"url": url}, "options": options})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_a_job_from_a_url_completes_with_four_stems(
    service: Service, url_server: UrlServer
) -> None:
    api = service.start_api(keyed=True)
    created = create(api, url_server.url("/music/song.wav?X-Amz-Signature=topsecret"))
    assert created["status"] == "pending"
    assert created["filename"] == "song.wav"
    assert created["source"] == {"url": url_server.url("/music/song.wav")}
    status = wait_done(api, created["job_id"])
    assert status["status"] == "completed", status
    assert (
        status["stems"] == ["vocals", "drums", "bass", "other"]
        or sorted(f"{s}.mp3" for s in status["stems"]) == FOUR
    )
    assert "topsecret" not in str(status)
    download = api.get(f"/download/{created['job_id']}")
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        assert sorted(zf.namelist()) == FOUR
    assert url_server.requests == ["/music/song.wav?X-Amz-Signature=topsecret"]
    # Only the result is stored: the API never held the song.
    assert all("results/" in key for key in service.objects())


def test_an_html_page_fails_as_not_audio(service: Service, url_server: UrlServer) -> None:
    api = service.start_api(keyed=True)
    created = create(api, url_server.url("/page.html?token=topsecret"))
    status = wait_done(api, created["job_id"])
    assert status["status"] == "failed", status
    assert status["reason"] == "NotAudio"
    assert "is not audio" in status["error"]
    assert "topsecret" not in status["error"]
    assert url_server.requests == ["/page.html?token=topsecret"]  # fetched once: not retried


def test_a_bad_url_is_refused_before_any_job(service: Service, url_server: UrlServer) -> None:
    api = service.start_api(keyed=True)
    with api.client() as http:
        answer = http.post("/jobs", json={"source": {"url": "file:///etc/passwd"}})
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("source.url: the scheme must be http or https")
    assert service.job_ids() == []
