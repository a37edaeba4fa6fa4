"""A webhook receiver on loopback for the webhook tests: Python's ``http.server`` in a thread
that checks each POST's signature as a user's receiver would (``webhooks.verify`` with the
tier's secret) and answers the statuses it is told to, in turn. The code under test reaches
it through the test-only allow-list (``STEMKUBE_URL_ALLOW_CIDRS=127.0.0.0/8``), and signs with
``TEST_SECRET``, its retries spaced by one second (``WEBHOOK_ENV``, set on the operator and
local mode by the harness)."""

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stemkube_contract import webhooks
from tests.harness.loopback import http_server

TEST_SECRET = "whsec-test-tier-not-a-secret"
WEBHOOK_ENV = {webhooks.SECRET_ENV: TEST_SECRET, webhooks.BACKOFF_ENV: "1"}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: str | None  # None: the signature checks out; else why not

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    base: str  # http://127.0.0.1:PORT
    answers: list[int] = field(default_factory=list)  # statuses to answer in turn; then 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"{self.base}{path}"

    def calls(self) -> list[Received]:
        with self.lock:
            return list(self.received)


def _handler(state: Receiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            problem = None
            try:
                webhooks.verify(
                    TEST_SECRET, self.headers.get(webhooks.SIGNATURE_HEADER) or "", body
                )
            except webhooks.SignatureError as exc:
                problem = str(exc)
            with state.lock:
                state.received.append(Received(self.path, dict(self.headers), body, problem))
                status = state.answers.pop(0) if state.answers else 200
            answer = b"ok\n" if status < 300 else b"not now\n"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler


def serve(answers: list[int] | None = None) -> Iterator[Receiver]:
    state = Receiver("", list(answers or []))
    with http_server(_handler(state), "webhook-receiver") as state.base:
        yield state
