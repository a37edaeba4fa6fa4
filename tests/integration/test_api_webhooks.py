"""Webhooks end to end in both modes (the ``service`` fixture): a job's outcome is POSTed,
signed, to a receiver on loopback (``webhook_receiver``) that checks the signature as a
user's would; Kubernetes mode's by the operator's leader, local mode's by its worker loop.
A receiver that answers 500 gets the same event again a second later (the tier's backoff);
an unreachable one is tried again and again, each attempt and its error visible on
``GET /status``; a refused address is never contacted; a failed job is delivered too."""

import time
from collections.abc import Iterator
from typing import Any

import pytest

from stemkube_contract import webhooks
from tests.harness.api import ApiServer, mp3_song
from tests.harness.procs import free_port
from tests.harness.service import Service
from tests.harness.urlserver import UrlServer
from tests.harness.waiting import wait_for
from tests.harness.webhook_receiver import Receiver, serve

pytestmark = pytest.mark.integration

FIELDS = {
    "id",
    "type",
    "job_id",
    "status",
    "reason",
    "message",
    "error",
    "stems",
    "size",
    "download_url",
    "status_url",
    "created_at",
    "started_at",
    "completed_at",
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve()


@pytest.fixture
def flaky_receiver() -> Iterator[Receiver]:
    yield from serve([500])


def create(api: ApiServer, url: str, webhook_url: str) -> str:
    with api.client() as http:
        answer = http.post("/jobs", json={"source": {"url": url}, "webhook_url": webhook_url})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["job_id"])


def webhook_of(api: ApiServer, job_id: str, done: Any) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        status: dict[str, Any] = api.get(f"/status/{job_id}").json()
        hook = status.get("webhook")
        return status if hook and done(hook) else None

    return wait_for(look, 180, f"job {job_id}'s webhook", interval=0.3)


def test_a_completed_job_is_delivered_signed_and_retried_after_a_500(
    service: Service, url_server: UrlServer, flaky_receiver: Receiver
) -> None:
    api = service.start_api(keyed=True)
    # An upload, its webhook a form field (with a query: never shown).
    with api.client() as http:
        answer = http.post(
            "/upload",
            files={"file": ("song.mp3", mp3_song())},
            data={"webhook_url": flaky_receiver.url("/hook?token=topsecret")},
        )
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["job_id"]
    status = webhook_of(api, job_id, lambda h: h["state"] == "Delivered")
    assert status["status"] == "completed"
    hook = status["webhook"]
    assert hook["url"] == flaky_receiver.url("/hook")
    assert hook["attempts"] == 2
    assert hook["last_status"] == 200
    assert hook["delivered_at"] is not None
    assert "topsecret" not in str(status)
    calls = flaky_receiver.calls()
    assert len(calls) == 2  # the 500, then the retry
    first, second = calls
    assert [c.verified for c in calls] == [None, None]  # both signed with the secret
    assert first.path == "/hook?token=topsecret"
    assert first.body == second.body  # the same event, signed afresh
    event = second.headers[webhooks.EVENT_ID_HEADER]
    assert event == first.headers[webhooks.EVENT_ID_HEADER] == hook["event_id"]
    body = second.json()
    assert set(body) == FIELDS
    assert body["id"] == event
    assert body["type"] == "job.completed"
    assert body["job_id"] == job_id
    assert body["status"] == "completed"
    assert body["error"] is None
    assert body["download_url"] == f"/download/{job_id}"
    assert sorted(body["stems"]) == sorted(status["stems"])
    assert body["size"] == status["size"]
    assert body["completed_at"] is not None
    time.sleep(2)
    assert len(flaky_receiver.calls()) == 2  # delivered: nothing more


def test_a_failed_job_is_delivered_with_its_reason(
    service: Service, url_server: UrlServer, receiver: Receiver
) -> None:
    api = service.start_api(keyed=True)
    job_id = create(api, url_server.url("/page.html"), receiver.url())
    status = webhook_of(api, job_id, lambda h: h["state"] == "Delivered")
    assert status["status"] == "failed"
    [call] = receiver.calls()
    assert call.verified is None
    body = call.json()
    assert body["type"] == "job.failed"
    assert body["status"] == "failed"
    assert body["reason"] == "NotAudio"
    assert body["error"] == status["error"]
    assert body["download_url"] is None


def test_an_unreachable_receiver_is_retried_and_a_refused_one_never_contacted(
    service: Service, url_server: UrlServer, receiver: Receiver
) -> None:
    api = service.start_api(keyed=True)
    closed = f"http://127.0.0.1:{free_port()}/hook"
    unreachable = create(api, url_server.url("/song.wav"), closed)
    # "localhost" is this machine: refused by name before any lookup, whatever the allow-list
    # says (the receiver listens there and would answer).
    port = receiver.base.rsplit(":", 1)[1]
    refused = create(api, url_server.url("/song.wav"), f"http://localhost:{port}/hook")

    status = webhook_of(api, unreachable, lambda h: h["attempts"] >= 2)
    hook = status["webhook"]
    assert hook["state"] == "Pending"
    assert hook["last_status"] is None
    assert "connection refused" in hook["last_error"]
    assert hook["next_attempt_at"] is not None
    assert hook["delivered_at"] is None

    status = webhook_of(api, refused, lambda h: h["state"] != "Pending")
    hook = status["webhook"]
    assert hook["state"] == "Refused"
    assert hook["attempts"] == 0
    assert "loopback" in hook["last_error"]
    time.sleep(2)
    assert receiver.calls() == []
    assert api.get(f"/status/{refused}").json()["webhook"]["state"] == "Refused"


def test_a_bad_webhook_url_is_refused_before_any_job(service: Service) -> None:
    api = service.start_api(keyed=True)
    with api.client() as http:
        answer = http.post(
            "/jobs",
            json={
                "source": {"url": "https://example.com/song.mp3"},
                "webhook_url": "https://user:pass@example.com/hook",
            },
        )
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith("webhook_url: the URL must not hold a user")
        answer = http.post(
            "/upload",
            files={"file": ("song.mp3", b"ID3")},
            data={"webhook_url": "ftp://example.com/hook"},
        )
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith("webhook_url: the scheme must be http")
    assert service.job_ids() == []
