"""The job backend of local mode: jobs are rows in SQLite, run by local worker processes. A
row's owner (tenant, key) is kept beside it (``records.Owned``)."""

import datetime
import os
import sqlite3
from dataclasses import replace

from stemkube_api.auth.limits import Heard, Held, Usage, usage_of
from stemkube_api.interfaces import IdempotentJob, JobExistsError, NewJob, UnavailableError
from stemkube_api.jobs import (
    PENDING,
    PROCESSING,
    JobPage,
    JobRecord,
    paginate,
    result_key,
    valid_job_id,
)
from stemkube_api.local import rules
from stemkube_api.local.records import JobTable, Owned
from stemkube_api.local.settings import LocalSettings
from stemkube_api.local.store import LocalStore
from stemkube_api.local.webhooks import WebhookSender, load_secret
from stemkube_api.local.weights import Weights
from stemkube_api.local.workers import Workers, remove_files
from stemkube_contract.usage import WINDOW


class LocalBackend:
    name = "local"

    def __init__(self, settings: LocalSettings, store: LocalStore) -> None:
        self.settings = settings
        self.store = store
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.objects.mkdir(parents=True, exist_ok=True)
        self.table = JobTable(settings.database)
        self.workers = Workers(settings, self.table, store)
        self.weights = Weights(settings.models, settings.model_repo)
        # Before anything starts: a bad --webhook-secret-file stops the start.
        self.webhooks = WebhookSender(settings, self.table, load_secret(settings, os.environ))

    def start(self) -> None:
        self.workers.recover()
        self.workers.start()
        self.webhooks.start()
        # What it serves and whether it can: the start's ready line (``startup``) says it.

    def model_problem(self, model: str) -> str | None:
        return self.weights.problem(model)

    def stop(self) -> None:
        self.webhooks.stop()
        self.workers.stop()
        self.table.close()

    def _record(self, owned: Owned) -> JobRecord:
        return replace(
            rules.record_of(owned.row, self.settings.models),
            tenant=owned.tenant,
            webhook_url=owned.webhook_url,
            webhook=owned.webhook,
            batch_id=owned.batch_id,
        )

    def create(self, job: NewJob) -> JobRecord:
        row = rules.new_row(job, self.settings.models, datetime.datetime.now(datetime.UTC))
        # The result goes under the tenant's prefix, as its input did.
        row = replace(row, result_key=result_key(job.job_id, job.tenant))
        idempotency = None
        if job.idempotency_key is not None:
            idempotency = (job.idempotency_key, job.request_hash or "")
        try:
            self.table.insert(
                row, job.tenant, job.key_id, idempotency, job.webhook_url, job.batch_id
            )
        except sqlite3.IntegrityError as exc:  # its idempotency key's job, made already
            raise JobExistsError(job.job_id) from exc
        self.workers.wake()
        return self._record(
            Owned(row, job.tenant, job.key_id, job.webhook_url, batch_id=job.batch_id)
        )

    def get(self, job_id: str) -> JobRecord | None:
        if not valid_job_id(job_id):
            return None
        owned = self.table.get_owned(job_id)
        return self._record(owned) if owned else None

    def idempotent(self, job_id: str) -> IdempotentJob | None:
        record = self.get(job_id)
        if record is None:
            return None
        return IdempotentJob(record, self.table.request_hash(job_id) or "")

    def list(
        self,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        tenant: str | None = None,
    ) -> JobPage:
        return paginate(
            [self._record(o) for o in self.table.all_owned(tenant)], status, limit, cursor
        )

    def usage(self, key_id: str, now: datetime.datetime) -> Usage:
        """From SQLite (every API of a data folder shares it): the key's rows, queued or
        running, and the bytes of their files as they are on disk (an input a worker removed
        counts for nothing; a result before it is written neither); its songs of the day from
        the audio ledger, which outlives the rows."""

        def held(row: rules.JobRow) -> Held:
            stored = sum(
                info.size
                for info in (self.store.stat(k) for k in (row.input_key, row.result_key) if k)
                if info is not None
            )
            return Held(row.status in (PENDING, PROCESSING), stored)

        heard = [Heard(c, s) for c, s in self.table.audio_since(key_id, now - WINDOW)]
        return usage_of((held(row) for row in self.table.created_with(key_id)), heard, now)

    def delete(self, job_id: str) -> bool:
        if not valid_job_id(job_id):
            return False
        row = self.table.get(job_id)
        if row is None or not self.table.delete(job_id):
            return False
        self.workers.cancel(job_id)
        remove_files(self.settings, self.store, row)
        return True

    def check(self) -> None:
        try:
            self.table.ping()
        except Exception as exc:
            raise UnavailableError(f"local: the job database does not answer: {exc}") from exc
        if not self.workers.alive():
            raise UnavailableError("local: the workers' loop is not running")
        problem = self.weights.problem(self.settings.models.default)
        if problem:
            raise UnavailableError(f"weights: {problem}")
