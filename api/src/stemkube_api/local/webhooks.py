"""Local mode's webhooks: a thread beside the workers' loop POSTs each finished job's outcome
to its webhook (``stemkube_contract.webhooks``), one attempt at a time, and keeps the delivery
state in the job's row, so that a restart continues the retries where they were.

The secret that signs them: ``--webhook-secret-file``, else ``STEMKUBE_WEBHOOK_SECRET``, else
one generated once in the data folder (``webhook-secret``, mode 0600): its path is logged,
never its content."""

import datetime
import logging
import os
import secrets
import threading
from collections.abc import Mapping

from stemkube_api.local import rules
from stemkube_api.local.records import JobTable, Owned
from stemkube_api.local.settings import LocalSettings
from stemkube_contract import webhooks
from stemkube_contract.webhook_sender import deliver

log = logging.getLogger(__name__)


class SecretError(RuntimeError):
    pass


def load_secret(settings: LocalSettings, env: Mapping[str, str]) -> str:
    """The secret, as the module says; a generated one is written once and kept."""
    if settings.webhook_secret_file is not None:
        try:
            secret = settings.webhook_secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"--webhook-secret-file: {exc}") from None
        if not secret:
            raise SecretError(f"--webhook-secret-file {settings.webhook_secret_file}: empty")
        return secret
    if env.get(webhooks.SECRET_ENV):
        return env[webhooks.SECRET_ENV]
    path = settings.webhook_secret_path
    try:
        secret = path.read_text(encoding="utf-8").strip()
        if secret:
            return secret
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(secret + "\n")
    try:
        os.link(partial, path)  # the first writer wins: two processes agree on one secret
    except FileExistsError:
        secret = path.read_text(encoding="utf-8").strip()
    finally:
        partial.unlink(missing_ok=True)
    log.info(
        "webhooks: generated their signing secret in %s (mode 0600); read it with: cat %s",
        path,
        path,
    )
    return secret


def payload_of(owned: Owned, settings: LocalSettings) -> dict[str, object]:
    row = owned.row
    record = rules.record_of(row, settings.models)
    return webhooks.payload(
        event=webhooks.event_id(row.job_id, row.status),
        job_id=row.job_id,
        status=row.status,
        reason=row.reason,
        message=row.message,
        stems=record.stems,
        size=row.result_size,
        created_at=row.created_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        public_url=settings.public_url,
    )


class WebhookSender:
    def __init__(self, settings: LocalSettings, table: JobTable, secret: str) -> None:
        self.settings = settings
        self.table = table
        self._secret = secret
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        tick = min(1.0, self.settings.webhook_backoff.tick())
        while not self._stop.wait(tick):
            try:
                self.send_due()
            except Exception:
                log.exception("webhooks: a pass failed; trying again")

    def send_due(self) -> int:
        """One attempt for each delivery due now; how many were made."""
        made = 0
        for owned in self.table.webhooks_due(_now()):
            if self._stop.is_set():
                break
            self.attempt(owned)
            made += 1
        return made

    def attempt(self, owned: Owned) -> webhooks.Delivery:
        row, url = owned.row, owned.webhook_url or ""
        ended = row.completed_at or _now()
        delivery = deliver(
            url,
            payload_of(owned, self.settings),
            self._secret,
            owned.webhook,
            ended,
            self.settings.webhook_backoff,
            self.settings.url_policy,
        )
        self.table.record_webhook(row.job_id, delivery)
        shown = webhooks.shown(url)
        if delivery.state == webhooks.DELIVERED:
            log.info("job %s: webhook delivered to %s", row.job_id, shown)
        else:
            log.warning(
                "job %s: webhook to %s: %s (attempt %d, %s)",
                row.job_id,
                shown,
                delivery.last_error,
                delivery.attempts,
                delivery.state,
            )
        return delivery


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
