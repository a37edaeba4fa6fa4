"""Webhooks: a job's ``webhook_url`` (or the deployment's default) gets one signed POST when
the job ends (completed or failed), retried with exponential backoff until it answers 2xx or
``GIVE_UP_SECONDS`` have passed since the job ended. Sent once, by the operator's leader
(Kubernetes mode) or the worker loop (local mode); at least once: a receiver deduplicates by
``Stemkube-Event-Id`` (the same for every attempt of one event).

Pure: the payload, the signature and its verification, the backoff schedule and the delivery
state as ``status.webhook`` holds it. The sending (with the address check) is
``webhook_sender``.

The signature, as Stripe and Svix do it::

    Stemkube-Signature: t=1700000000,v1=<hex HMAC-SHA256(secret, "1700000000." + body)>

A receiver recomputes it over the raw body with the deployment's secret, compares in constant
time, and refuses a timestamp older than a few minutes (``verify``: replayed requests).
"""

import datetime
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from stemkube_contract import urls
from stemkube_contract.timefmt import parse_time, rfc3339

SIGNATURE_HEADER: Final = "Stemkube-Signature"
EVENT_ID_HEADER: Final = "Stemkube-Event-Id"
SCHEME: Final = "v1"
USER_AGENT: Final = "stemkube-webhooks/1"
CONTENT_TYPE: Final = "application/json"
# A receiver's default tolerance: a signature older (or newer) than this is refused.
TOLERANCE_SECONDS: Final = 300

# The deployment's secret (Kubernetes: the operator's, from a Secret; local mode: the API's,
# else generated in the data folder), its default URL (the API stores it on each job that names
# none) and, for tests, the first retry's delay.
SECRET_ENV: Final = "STEMKUBE_WEBHOOK_SECRET"
DEFAULT_URL_ENV: Final = "STEMKUBE_WEBHOOK_URL"
BACKOFF_ENV: Final = "STEMKUBE_WEBHOOK_BACKOFF_SECONDS"

# Retries: 30 s, doubling to one hour between attempts, for 24 hours after the job ended.
FIRST_DELAY_SECONDS: Final = 30.0
MAX_DELAY_SECONDS: Final = 3600.0
GIVE_UP_SECONDS: Final = 24 * 3600.0
# One attempt's limits: to connect, and for the answer.
TIMEOUT_SECONDS: Final = 10.0
MAX_ERROR_LENGTH: Final = 1000  # status.webhook.lastError (the CRD allows 1024)

# Events: the REST API's status words of the terminal phases.
EVENT_COMPLETED: Final = "job.completed"
EVENT_FAILED: Final = "job.failed"
EVENTS: Final = {"completed": EVENT_COMPLETED, "failed": EVENT_FAILED}

# The delivery's state (status.webhook.state).
PENDING: Final = "Pending"  # not yet delivered; another attempt comes at nextAttemptAt
DELIVERED: Final = "Delivered"  # the receiver answered 2xx
FAILED: Final = "Failed"  # no 2xx within GIVE_UP_SECONDS: no more attempts
REFUSED: Final = "Refused"  # the address check refused the URL: never contacted, not retried
STATES: Final = (PENDING, DELIVERED, FAILED, REFUSED)
FINAL_STATES: Final = (DELIVERED, FAILED, REFUSED)


class SignatureError(ValueError):
    """A request whose signature does not verify: the reason in words."""


def signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}." + body`` under ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The ``Stemkube-Signature`` header's value: ``t=<unix seconds>,v1=<hex>``."""
    return f"t={timestamp},{SCHEME}={signature(secret, timestamp, body)}"


def parse_header(header: str) -> tuple[int, list[str]]:
    """``t=...,v1=...[,v1=...]`` -> (timestamp, the v1 signatures). SignatureError if
    malformed."""
    timestamp: int | None = None
    found: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("the timestamp (t=) is not a number") from None
        elif name == SCHEME and value:
            found.append(value)
    if timestamp is None:
        raise SignatureError("no timestamp (t=) in the signature header")
    if not found:
        raise SignatureError(f"no {SCHEME}= signature in the signature header")
    return timestamp, found


def verify(
    secret: str | bytes,
    header: str,
    body: bytes,
    now: float | None = None,
    tolerance: float = TOLERANCE_SECONDS,
) -> int:
    """Checks a received webhook: the header's timestamp within ``tolerance`` seconds of
    ``now`` and one of its v1 signatures equal (constant time) to ours over the raw ``body``.
    Returns the timestamp; raises SignatureError."""
    timestamp, given = parse_header(header)
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise SignatureError(f"the timestamp is {int(now - timestamp)} s off (limit {tolerance})")
    expected = signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in given):
        raise SignatureError("the signature does not match")
    return timestamp


def event_id(job_uid: str, status: str) -> str:
    """The event's id: the same for every attempt (a receiver's deduplication key), another
    for another job or outcome."""
    return "evt_" + hashlib.sha256(f"{job_uid}:{status}".encode()).hexdigest()[:32]


def _time(moment: datetime.datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


def payload(
    *,
    event: str,
    job_id: str,
    status: str,
    reason: str | None,
    message: str | None,
    stems: list[str],
    size: int | None,
    created_at: datetime.datetime | None,
    started_at: datetime.datetime | None,
    completed_at: datetime.datetime | None,
    public_url: str | None = None,
) -> dict[str, Any]:
    """The JSON body of a job's event. ``download_url`` (completed jobs only) is the API's
    path, absolute when the deployment names its public address (``public_url``)."""
    done = status == "completed"
    download = f"/download/{job_id}"
    if public_url:
        download = public_url.rstrip("/") + download
    return {
        "id": event,
        "type": EVENTS.get(status, f"job.{status}"),
        "job_id": job_id,
        "status": status,
        "reason": reason,
        "message": message,
        "error": None if done else (message or reason),
        "stems": list(stems),
        "size": size if done else None,
        "download_url": download if done else None,
        "status_url": f"/status/{job_id}",
        "created_at": _time(created_at),
        "started_at": _time(started_at),
        "completed_at": _time(completed_at),
    }


def encode(body: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys sorted."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def headers(secret: str | bytes, body: bytes, event: str, timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": CONTENT_TYPE,
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        EVENT_ID_HEADER: event,
    }


# Backoff ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    first: float = FIRST_DELAY_SECONDS
    cap: float = MAX_DELAY_SECONDS
    give_up: float = GIVE_UP_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Backoff":
        """``STEMKUBE_WEBHOOK_BACKOFF_SECONDS``: the first delay (tests: 1); the rest as
        always. ValueError naming the variable."""
        raw = env.get(BACKOFF_ENV, "").strip()
        if not raw:
            return cls()
        try:
            first = float(raw)
        except ValueError:
            raise ValueError(f"{BACKOFF_ENV} must be a number of seconds, not {raw!r}") from None
        if not 0 < first <= MAX_DELAY_SECONDS:
            raise ValueError(f"{BACKOFF_ENV} must be above 0 and at most {MAX_DELAY_SECONDS:g}")
        return cls(first=first)

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt: first, doubling, capped."""
        return float(min(self.cap, self.first * 2 ** max(0, attempts - 1)))

    def next_attempt(
        self, attempts: int, ended: datetime.datetime, now: datetime.datetime
    ) -> datetime.datetime | None:
        """When to try again after ``attempts`` failed ones (the last one ``now``); None once
        that would be past ``give_up`` seconds after the job ``ended``."""
        moment = now + datetime.timedelta(seconds=self.delay(attempts))
        if (moment - ended).total_seconds() > self.give_up:
            return None
        return moment

    def tick(self) -> float:
        """How often a sender looks for due deliveries."""
        return min(5.0, self.first)


# Delivery state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """``status.webhook`` (camelCase there; ``as_status`` / ``from_status``)."""

    state: str = PENDING
    attempts: int = 0
    last_status: int | None = None  # the last answer's HTTP status; None: no answer
    last_error: str | None = None
    delivered_at: datetime.datetime | None = None
    next_attempt_at: datetime.datetime | None = None
    event_id: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def due(self, now: datetime.datetime) -> bool:
        return not self.final and (self.next_attempt_at is None or self.next_attempt_at <= now)

    def as_status(self) -> dict[str, Any]:
        """For status.webhook: every field, None where unknown (a merge patch removes it)."""
        return {
            "state": self.state,
            "attempts": self.attempts,
            "lastStatus": self.last_status,
            "lastError": self.last_error,
            "deliveredAt": _time(self.delivered_at),
            "nextAttemptAt": _time(self.next_attempt_at),
            "eventId": self.event_id,
        }

    @classmethod
    def from_status(cls, data: Mapping[str, Any] | None) -> "Delivery | None":
        if not data:
            return None
        state = data.get("state")
        return cls(
            state=state if state in STATES else PENDING,
            attempts=int(data.get("attempts") or 0),
            last_status=data.get("lastStatus"),
            last_error=data.get("lastError"),
            delivered_at=parse_time(data.get("deliveredAt")),
            next_attempt_at=parse_time(data.get("nextAttemptAt")),
            event_id=data.get("eventId"),
        )


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to (``webhook_sender.send``)."""

    status: int | None = None  # the HTTP status of the answer; None: none came
    error: str | None = None  # why it failed, in words (no secret, no URL query)
    refused: bool = False  # the address check refused it: nothing was sent

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def after_attempt(
    previous: Delivery | None,
    attempt: Attempt,
    event: str,
    ended: datetime.datetime,
    now: datetime.datetime,
    backoff: Backoff,
) -> Delivery:
    """The delivery state after one attempt: delivered on a 2xx; refused (for good) when the
    address check said no; else pending until the next attempt, or failed past the give-up
    time."""
    attempts = (previous.attempts if previous else 0) + (0 if attempt.refused else 1)
    error = attempt.error
    if attempt.status is not None and not attempt.ok and error is None:
        error = f"the receiver answered HTTP {attempt.status}"
    if error is not None:
        error = error[:MAX_ERROR_LENGTH]
    if attempt.ok:
        return Delivery(DELIVERED, attempts, attempt.status, None, now, None, event)
    if attempt.refused:
        return Delivery(REFUSED, attempts, None, error, None, None, event)
    following = backoff.next_attempt(attempts, ended, now)
    state = PENDING if following is not None else FAILED
    return Delivery(state, attempts, attempt.status, error, None, following, event)


def url_problem(url: str) -> str | None:
    """A webhook URL's form: a source URL's rules (http(s), no user:password@, at most
    ``urls.MAX_URL_LENGTH`` characters)."""
    return urls.url_problem(url)


def shown(url: str) -> str:
    """A webhook URL as answers and logs show it: without its query (it may hold a token)."""
    return urls.redact(url)
