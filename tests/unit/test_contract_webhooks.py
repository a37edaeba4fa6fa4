"""Webhooks' contract (``stemkube_contract.webhooks`` and ``webhook_sender``): the signature
against an independent known answer (``openssl dgst -sha256 -hmac``), verification and its
tolerance, the backoff schedule, the payload, the delivery state after each kind of attempt,
the CRD's fields (both copies), the sender's address check and errors on loopback, the API's
status shape, the operator's due rule and local mode's schema 5 -> 6 migration."""

import datetime
import http.server
import ipaddress
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from stemkube_contract import urls, webhooks
from stemkube_contract.addresses import AddressPolicy
from stemkube_contract.webhook_sender import deliver, send
from tests.harness.loopback import http_server
from tests.harness.procs import free_port
from tests.harness.tools import REPO_ROOT
from tests.unit.test_contract import spec_schema, version_schema

SECRET = "whsec-known-answer"
BODY = b'{"id":"evt_1"}'
# printf '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac 'whsec-known-answer'
KNOWN = "65b0f1a17485dc492ab9aa8541f245ee6106efdd7911cd7ec143cc63f33c595b"
T0 = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)
# When the delivered jobs ended: now, as deliver() measures its give-up window against the
# real clock (T0 there failed every delivery a day after it was written).
ENDED = datetime.datetime.now(datetime.UTC)
LOOPBACK = AddressPolicy(allow=(ipaddress.ip_network("127.0.0.0/8"),))


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    assert webhooks.signature(SECRET, 1700000000, BODY) == KNOWN
    assert webhooks.sign(SECRET, 1700000000, BODY) == f"t=1700000000,v1={KNOWN}"
    assert webhooks.signature(SECRET.encode(), 1700000000, BODY) == KNOWN


def test_verify_takes_a_good_signature_within_the_tolerance() -> None:
    header = webhooks.sign(SECRET, 1700000000, BODY)
    assert webhooks.verify(SECRET, header, BODY, now=1700000000 + 299) == 1700000000
    assert webhooks.verify(SECRET, header, BODY, now=1700000000 - 299) == 1700000000
    # Several v1 signatures (a secret being rotated): one that matches is enough.
    assert webhooks.verify(SECRET, f"t=1700000000,v1=00,v1={KNOWN}", BODY, now=1700000000)


@pytest.mark.parametrize(
    ("header", "body", "now", "words"),
    [
        (f"t=1700000000,v1={KNOWN}", BODY, 1700000000 + 301, "s off"),
        (f"t=1700000000,v1={KNOWN}", BODY + b" ", 1700000000, "does not match"),
        (f"t=1700000001,v1={KNOWN}", BODY, 1700000000, "does not match"),
        (f"v1={KNOWN}", BODY, 1700000000, "no timestamp"),
        ("t=1700000000", BODY, 1700000000, "no v1="),
        (f"t=soon,v1={KNOWN}", BODY, 1700000000, "not a number"),
        ("", BODY, 1700000000, "no timestamp"),
    ],
)
def test_verify_refuses(header: str, body: bytes, now: float, words: str) -> None:
    with pytest.raises(webhooks.SignatureError, match=words):
        webhooks.verify(SECRET, header, body, now=now)


def test_a_wrong_secret_does_not_verify() -> None:
    header = webhooks.sign("another", 1700000000, BODY)
    with pytest.raises(webhooks.SignatureError):
        webhooks.verify(SECRET, header, BODY, now=1700000000)


def test_the_backoff_doubles_from_30_s_to_an_hour_for_24_hours() -> None:
    backoff = webhooks.Backoff()
    delays = [backoff.delay(n) for n in range(1, 10)]
    assert delays == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    moment, attempts = T0, 0
    while True:  # attempts until the schedule gives up, each at its due time
        attempts += 1
        following = backoff.next_attempt(attempts, T0, moment)
        if following is None:
            break
        moment = following
    assert (moment - T0).total_seconds() <= webhooks.GIVE_UP_SECONDS
    assert (moment - T0).total_seconds() > 24 * 3600 - 3600
    assert 28 <= attempts <= 32
    assert webhooks.Backoff.from_env({webhooks.BACKOFF_ENV: "1"}).delay(3) == 4
    assert webhooks.Backoff.from_env({}).first == webhooks.FIRST_DELAY_SECONDS
    for bad in ("soon", "0", "-1", "7200"):
        with pytest.raises(ValueError, match=webhooks.BACKOFF_ENV):
            webhooks.Backoff.from_env({webhooks.BACKOFF_ENV: bad})


def _payload(status: str = "completed", **more: object) -> dict[str, object]:
    return webhooks.payload(
        event=webhooks.event_id("uid-1", status),
        job_id="job-1",
        status=status,
        reason="Completed" if status == "completed" else "NotAudio",
        message="stems are ready" if status == "completed" else "not audio",
        stems=["vocals", "drums"],
        size=1234,
        created_at=T0,
        started_at=T0 + datetime.timedelta(seconds=1),
        completed_at=T0 + datetime.timedelta(seconds=9),
        **more,  # type: ignore[arg-type]
    )


def test_the_payload_of_a_completed_and_a_failed_job() -> None:
    done = _payload()
    assert done == {
        "id": webhooks.event_id("uid-1", "completed"),
        "type": "job.completed",
        "job_id": "job-1",
        "status": "completed",
        "reason": "Completed",
        "message": "stems are ready",
        "error": None,
        "stems": ["vocals", "drums"],
        "size": 1234,
        "download_url": "/download/job-1",
        "status_url": "/status/job-1",
        "created_at": "2026-11-28T12:00:00Z",
        "started_at": "2026-11-28T12:00:01Z",
        "completed_at": "2026-11-28T12:00:09Z",
    }
    failed = _payload("failed")
    assert (failed["type"], failed["error"], failed["download_url"], failed["size"]) == (
        "job.failed",
        "not audio",
        None,
        None,
    )
    assert failed["id"] != done["id"]
    public = _payload(public_url="https://stems.example.com/")
    assert public["download_url"] == "https://stems.example.com/download/job-1"
    assert webhooks.encode(done) == json.dumps(done, sort_keys=True, separators=(",", ":")).encode()
    assert webhooks.event_id("uid-1", "completed") == webhooks.event_id("uid-1", "completed")


def test_the_delivery_state_after_each_kind_of_attempt() -> None:
    backoff, event = webhooks.Backoff(), "evt_x"
    now = T0 + datetime.timedelta(seconds=5)
    failed = webhooks.after_attempt(None, webhooks.Attempt(status=500), event, T0, now, backoff)
    assert failed.state == webhooks.PENDING
    assert (failed.attempts, failed.last_status) == (1, 500)
    assert failed.last_error == "the receiver answered HTTP 500"
    assert failed.next_attempt_at == now + datetime.timedelta(seconds=30)
    assert not failed.due(now)
    assert failed.due(now + datetime.timedelta(seconds=30))
    ok = webhooks.after_attempt(failed, webhooks.Attempt(status=204), event, T0, now, backoff)
    assert (ok.state, ok.attempts, ok.delivered_at, ok.last_error) == ("Delivered", 2, now, None)
    assert ok.final
    assert not ok.due(now)
    refused = webhooks.after_attempt(
        None, webhooks.Attempt(error="refused: x", refused=True), event, T0, now, backoff
    )
    assert (refused.state, refused.attempts, refused.next_attempt_at) == ("Refused", 0, None)
    late = T0 + datetime.timedelta(hours=24)
    gave_up = webhooks.after_attempt(
        failed, webhooks.Attempt(error="connection refused"), event, T0, late, backoff
    )
    assert (gave_up.state, gave_up.next_attempt_at) == ("Failed", None)
    long = webhooks.after_attempt(None, webhooks.Attempt(error="x" * 5000), event, T0, now, backoff)
    assert long.last_error is not None
    assert len(long.last_error) == webhooks.MAX_ERROR_LENGTH
    # status.webhook and back.
    assert webhooks.Delivery.from_status(failed.as_status()) == failed
    assert webhooks.Delivery.from_status(ok.as_status()) == ok
    assert webhooks.Delivery.from_status(None) is None


def test_the_crd_declares_the_webhook_as_the_contract_writes_it() -> None:
    crd = REPO_ROOT / "crds" / "separationjobs.stemkube.io.yaml"
    chart = REPO_ROOT / "charts" / "stemkube" / "crds" / "separationjobs.stemkube.io.yaml"
    assert crd.read_bytes() == chart.read_bytes()
    spec = spec_schema()["properties"]["webhook"]
    assert spec["required"] == ["url"]
    url = spec["properties"]["url"]
    assert url["pattern"] == urls.URL_PATTERN
    assert url["maxLength"] == urls.MAX_URL_LENGTH
    status = version_schema()["properties"]["status"]["properties"]["webhook"]["properties"]
    written = webhooks.Delivery(attempts=1, event_id=webhooks.event_id("u", "failed"))
    assert set(status) == set(written.as_status())
    assert tuple(status["state"]["enum"]) == webhooks.STATES
    assert status["lastError"]["maxLength"] >= webhooks.MAX_ERROR_LENGTH
    assert status["eventId"]["maxLength"] >= len(written.event_id or "")


class _Answers(http.server.BaseHTTPRequestHandler):
    statuses: ClassVar[list[int]] = []
    seen: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.path, dict(self.headers), body))
        status = self.statuses.pop(0) if self.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"nope")


@pytest.fixture
def loopback() -> Iterator[tuple[str, type[_Answers]]]:
    handler = type("Handler", (_Answers,), {"statuses": [], "seen": []})
    with http_server(handler, "loopback") as base:
        yield base, handler


def test_send_posts_the_signed_body_to_an_allowed_loopback(
    loopback: tuple[str, type[_Answers]],
) -> None:
    base, handler = loopback
    handler.statuses.append(503)
    body = _payload()
    first = deliver(f"{base}/h?k=v", body, SECRET, None, ENDED, webhooks.Backoff(), LOOPBACK)
    assert (first.state, first.attempts, first.last_status) == ("Pending", 1, 503)
    assert first.last_error is not None
    assert "HTTP 503" in first.last_error
    second = deliver(f"{base}/h?k=v", body, SECRET, first, ENDED, webhooks.Backoff(), LOOPBACK)
    assert (second.state, second.attempts, second.last_status) == ("Delivered", 2, 200)
    [(path, headers, raw), _] = handler.seen
    assert path == "/h?k=v"
    assert raw == webhooks.encode(body)
    assert headers["Content-Type"] == "application/json"
    assert headers[webhooks.EVENT_ID_HEADER] == body["id"]
    webhooks.verify(SECRET, headers[webhooks.SIGNATURE_HEADER], raw)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/h",  # loopback, no allow-list
        "http://localhost:{port}/h",  # this machine by name
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://10.0.0.1/h",
        "http://[::1]:{port}/h",
        "http://2130706433:{port}/h",  # 127.0.0.1 as one number
    ],
)
def test_send_refuses_what_the_address_check_refuses(
    url: str, loopback: tuple[str, type[_Answers]]
) -> None:
    base, handler = loopback
    attempt = send(url.format(port=base.rsplit(":", 1)[1]), b"{}", {})
    assert attempt.refused
    assert attempt.status is None
    assert attempt.error is not None
    assert attempt.error.startswith("refused: ")
    assert handler.seen == []


def test_send_reports_a_closed_port_and_never_shows_the_query() -> None:
    attempt = send(f"http://127.0.0.1:{free_port()}/h?token=topsecret", b"{}", {}, LOOPBACK)
    assert not attempt.refused
    assert attempt.status is None
    assert attempt.error is not None
    assert "connection refused" in attempt.error
    assert "topsecret" not in attempt.error


def test_no_secret_sends_nothing_and_tries_again(loopback: tuple[str, type[_Answers]]) -> None:
    base, handler = loopback
    delivery = deliver(base, _payload(), None, None, ENDED, webhooks.Backoff(), LOOPBACK)
    assert delivery.state == "Pending"
    assert delivery.last_error is not None
    assert "no webhook secret" in delivery.last_error
    assert handler.seen == []


def test_the_api_shows_the_webhook_without_its_query() -> None:
    from stemkube_api.models import WebhookStatus

    delivery = webhooks.Delivery(attempts=2, last_status=500, last_error="the receiver ...")
    shown = WebhookStatus.of("https://hooks.example.com/x?token=s3cret", delivery)
    assert shown.model_dump() == {
        "url": "https://hooks.example.com/x",
        "state": "Pending",
        "attempts": 2,
        "last_status": 500,
        "last_error": "the receiver ...",
        "delivered_at": None,
        "next_attempt_at": None,
        "event_id": None,
    }
    assert WebhookStatus.of("https://h.example.com/", None).attempts == 0


def test_the_operator_delivers_only_finished_jobs_with_a_webhook_not_yet_final() -> None:
    from stemkube_operator.webhooks import pending

    spec = {"webhook": {"url": "https://h.example.com/"}}
    assert pending(spec, {"phase": "Completed"})
    assert pending(spec, {"phase": "Failed", "webhook": {"state": "Pending", "attempts": 3}})
    assert not pending(spec, {"phase": "Running"})
    assert not pending({}, {"phase": "Completed"})
    for final in webhooks.FINAL_STATES:
        assert not pending(spec, {"phase": "Completed", "webhook": {"state": final}})


def test_the_operator_reads_its_webhook_settings() -> None:
    from stemkube_operator.config import ConfigError, load_config

    config = load_config({webhooks.SECRET_ENV: "s3cret", webhooks.BACKOFF_ENV: "2"})
    assert config.webhook_secret == "s3cret"
    assert "s3cret" not in repr(config)
    assert config.webhook_backoff.first == 2
    assert load_config({}).webhook_secret is None
    with pytest.raises(ConfigError, match=webhooks.BACKOFF_ENV):
        load_config({webhooks.BACKOFF_ENV: "never"})


def test_local_mode_migrates_schema_5_and_keeps_the_delivery(tmp_path: Path) -> None:
    from stemkube_api.local.records import SCHEMA_VERSION, TABLE, JobTable

    path = tmp_path / "jobs.sqlite3"
    schema_5 = TABLE.replace(
        ",\n    webhook_url TEXT,\n    webhook TEXT,\n    webhook_due TEXT", ""
    )
    assert "webhook" not in schema_5
    with sqlite3.connect(path) as db:
        db.executescript(schema_5)
        db.execute(
            "INSERT INTO jobs (job_id, created_at, filename, options, input_key, result_key, "
            "status, completed_at) VALUES ('j', '2026-11-28T12:00:00.000000+00:00', 'a.mp3', "
            "'{\"model\": \"htdemucs\", \"format\": \"mp3\"}', 'i', 'r', 'completed', "
            "'2026-11-28T12:00:09.000000+00:00')"
        )
        db.execute("PRAGMA user_version=5")
    table = JobTable(path)
    try:
        assert table._query("PRAGMA user_version")[0][0] == SCHEMA_VERSION == 7
        owned = table.get_owned("j")
        assert owned is not None
        assert (owned.webhook_url, owned.webhook) == (None, None)
        assert table.webhooks_due(T0) == []  # a job without a webhook has nothing due
        table._change("UPDATE jobs SET webhook_url = 'https://h.example.com/' WHERE job_id='j'")
        [_due] = table.webhooks_due(T0)
        pending = webhooks.Delivery(
            attempts=1, last_status=500, next_attempt_at=T0 + datetime.timedelta(seconds=30)
        )
        table.record_webhook("j", pending)
        assert table.webhooks_due(T0) == []
        assert [o.row.job_id for o in table.webhooks_due(T0 + datetime.timedelta(minutes=1))]
        owned = table.get_owned("j")
        assert owned is not None
        assert owned.webhook == pending
        table.record_webhook("j", webhooks.Delivery(state="Delivered", attempts=2))
        assert table.webhooks_due(T0 + datetime.timedelta(days=2)) == []
    finally:
        table.close()


def test_local_mode_generates_its_secret_once_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    from stemkube_api.local.settings import LocalSettings
    from stemkube_api.local.webhooks import SecretError, load_secret

    settings = LocalSettings(data_dir=tmp_path)
    secret = load_secret(settings, {})
    assert len(secret) >= 32
    assert settings.webhook_secret_path.stat().st_mode & 0o777 == 0o600
    assert load_secret(settings, {}) == secret
    assert load_secret(settings, {webhooks.SECRET_ENV: "from-env"}) == "from-env"
    given = tmp_path / "given"
    given.write_text("from-file\n")
    assert load_secret(LocalSettings(data_dir=tmp_path, webhook_secret_file=given), {}) == (
        "from-file"
    )
    with pytest.raises(SecretError):
        load_secret(LocalSettings(data_dir=tmp_path, webhook_secret_file=tmp_path / "no"), {})
