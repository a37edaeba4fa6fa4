"""Job rows in SQLite (``<data-dir>/jobs.sqlite3``): what survives a restart of local mode.

One connection, shared by the API's threads and the workers' thread under a lock: the table
is small and every statement is short, so a lock costs less than a connection per thread.
"""

import datetime
import json
import sqlite3
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from stemkube_api.jobs import COMPLETED, FAILED, PENDING, PROCESSING
from stemkube_api.local.rules import JobRow
from stemkube_contract import options as catalogue
from stemkube_contract import webhooks
from stemkube_contract.usage import WINDOW

# 1: one column per option; 2: the options as one JSON object (a new option needs no column);
# 3: the job's tenant and the id of the key that created it (NULL: no tenant, as before keys).
# 4: the audio ledger (a new table only: nothing to migrate).
# 5: the idempotency records (a new table only: nothing to migrate).
# 6: the job's webhook: its URL, its delivery state (``webhooks.Delivery`` as JSON, the
#    status.webhook shape) and when its next attempt is due (NULL: none); NULL for the jobs
#    there are (they have none).
# 7: the request batch (POST /batches) a job was created in; NULL for the jobs there are.
SCHEMA_VERSION = 7
TABLE = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    filename TEXT NOT NULL,
    options TEXT NOT NULL,
    input_key TEXT NOT NULL,
    result_key TEXT NOT NULL,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at TEXT,
    completed_at TEXT,
    reason TEXT,
    message TEXT,
    result_size INTEGER,
    pid INTEGER,
    tenant TEXT,
    key_id TEXT,
    webhook_url TEXT,
    webhook TEXT,
    webhook_due TEXT,
    batch_id TEXT
)
"""
INDEX = "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at)"
TENANT_INDEX = "CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, created_at)"
# The audio of the jobs a key created (``stemkube_contract.usage``): a row outlives its job, so
# that deleting a job does not give its minutes back; rows older than the window go.
AUDIO_TABLE = """
CREATE TABLE IF NOT EXISTS audio_usage (
    job_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    seconds REAL NOT NULL
)
"""
AUDIO_INDEX = "CREATE INDEX IF NOT EXISTS audio_by_key ON audio_usage (key_id, created_at)"
# The request that made a job under an Idempotency-Key (``stemkube_api.idempotency``): the job's
# id is derived from the key, so the jobs table's primary key lets one creation through; this
# row keeps the (scope, key) fingerprint and the request's hash beside it. Rows older than the
# window go (their job, if it still exists, is past its replay anyway).
IDEMPOTENCY_TABLE = """
CREATE TABLE IF NOT EXISTS idempotency (
    job_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
)
"""
IDEMPOTENCY_INDEX = "CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_at)"
IDEMPOTENCY_WINDOW = datetime.timedelta(hours=24)
# The webhook's columns, written at insert (the URL) and by the webhook sender (the rest),
# never by a save.
WEBHOOK_COLUMNS = ("webhook_url", "webhook", "webhook_due")
WEBHOOK_INDEX = "CREATE INDEX IF NOT EXISTS jobs_by_webhook_due ON jobs (webhook_due)"
# Written once, at insert; GET and DELETE /batches/{id} find a batch's jobs by it.
BATCH_COLUMN = "batch_id"
BATCH_INDEX = "CREATE INDEX IF NOT EXISTS jobs_by_batch ON jobs (batch_id)"
# The row's own columns, which the workers read and write; the owner's (tenant, key_id) are
# written once, at insert, and never by a save.
COLUMNS = tuple(f.name for f in fields(JobRow))
OWNER_COLUMNS = ("tenant", "key_id")


@dataclass(frozen=True)
class Owned:
    """A row and whose it is, with its webhook (URL and delivery state) if it has one."""

    row: JobRow
    tenant: str | None = None
    key_id: str | None = None
    webhook_url: str | None = None
    webhook: webhooks.Delivery | None = None
    batch_id: str | None = None


TIMES = ("created_at", "started_at", "completed_at")


def _stamp(moment: datetime.datetime) -> str:
    """Fixed width, so that SQLite compares stamps as text correctly."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _to_db(row: JobRow) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(row, name) for name in COLUMNS}
    for name in TIMES:
        moment = values[name]
        values[name] = _stamp(moment) if moment else None
    values["options"] = catalogue.to_json(row.options)
    return values


def _from_db(values: sqlite3.Row) -> JobRow:
    data: dict[str, Any] = {
        name: value
        for name, value in zip(values.keys(), tuple(values), strict=True)
        if name in COLUMNS
    }
    for name in TIMES:
        data[name] = datetime.datetime.fromisoformat(data[name]) if data[name] else None
    data["options"] = catalogue.from_json(data["options"])
    return JobRow(**data)


def _delivery(text: str | None) -> webhooks.Delivery | None:
    return webhooks.Delivery.from_status(json.loads(text)) if text else None


def _owned(values: sqlite3.Row) -> Owned:
    return Owned(
        _from_db(values),
        values["tenant"],
        values["key_id"],
        values["webhook_url"],
        _delivery(values["webhook"]),
        values[BATCH_COLUMN],
    )


def _migrate_from_1(db: sqlite3.Connection) -> None:
    """Schema 1 -> 2: the option columns (model, format, stems, two_stems, bitrate) become
    one JSON object, in one transaction."""
    old = [c[1] for c in db.execute("PRAGMA table_info(jobs)").fetchall()]
    if "options" in old:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE jobs RENAME TO jobs_v1")
        db.execute("DROP INDEX IF EXISTS jobs_by_status")
        db.execute(TABLE)
        for row in db.execute("SELECT * FROM jobs_v1").fetchall():
            values = dict(zip(old, tuple(row), strict=True))
            options: dict[str, Any] = {"model": values["model"], "format": values["format"]}
            if values["stems"]:
                options["stems"] = json.loads(values["stems"])
            if values["two_stems"]:
                options["two_stems"] = values["two_stems"]
            if values["bitrate"] is not None:
                options["bitrate"] = values["bitrate"]
            values["options"] = json.dumps(options)
            marks = ", ".join("?" for _ in COLUMNS)
            db.execute(
                f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({marks})",
                [values[n] for n in COLUMNS],
            )
        db.execute("DROP TABLE jobs_v1")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _migrate_from_2(db: sqlite3.Connection) -> None:
    """Schema 2 -> 3: the owner's columns, NULL for the jobs there are (no tenant: only admin
    keys and an open service see them), in one transaction with the version."""
    present = {c[1] for c in db.execute("PRAGMA table_info(jobs)").fetchall()}
    db.execute("BEGIN IMMEDIATE")
    try:
        for name in OWNER_COLUMNS:
            if name not in present:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {name} TEXT")
        db.execute(TENANT_INDEX)
        db.execute("PRAGMA user_version=3")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _migrate_from_5(db: sqlite3.Connection) -> None:
    """Schema 5 -> 6: the webhook's columns, NULL for the jobs there are, in one transaction
    with the version."""
    present = {c[1] for c in db.execute("PRAGMA table_info(jobs)").fetchall()}
    db.execute("BEGIN IMMEDIATE")
    try:
        for name in WEBHOOK_COLUMNS:
            if name not in present:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {name} TEXT")
        db.execute("PRAGMA user_version=6")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _migrate_from_6(db: sqlite3.Connection) -> None:
    """Schema 6 -> 7: the request batch's column, NULL for the jobs there are (made one by
    one), in one transaction with the version."""
    present = {c[1] for c in db.execute("PRAGMA table_info(jobs)").fetchall()}
    db.execute("BEGIN IMMEDIATE")
    try:
        if BATCH_COLUMN not in present:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {BATCH_COLUMN} TEXT")
        db.execute("PRAGMA user_version=7")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class SchemaError(RuntimeError):
    pass


class JobTable:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"{path} was written by a newer stemkube (schema {version}); "
                    "upgrade stemkube or use another --data-dir"
                )
            if version == 1:
                _migrate_from_1(self._db)
            if version in (1, 2):
                _migrate_from_2(self._db)
            if 1 <= version <= 5:
                _migrate_from_5(self._db)
            if 1 <= version <= 6:
                _migrate_from_6(self._db)
            self._db.execute(TABLE)
            self._db.execute(INDEX)
            self._db.execute(TENANT_INDEX)
            self._db.execute(WEBHOOK_INDEX)
            self._db.execute(BATCH_INDEX)
            self._db.execute(AUDIO_TABLE)
            self._db.execute(AUDIO_INDEX)
            self._db.execute(IDEMPOTENCY_TABLE)
            self._db.execute(IDEMPOTENCY_INDEX)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _change(self, sql: str, *args: Any) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def ping(self) -> None:
        self._query("SELECT 1")

    def insert(
        self,
        row: JobRow,
        tenant: str | None = None,
        key_id: str | None = None,
        idempotency: tuple[str, str] | None = None,
        webhook_url: str | None = None,
        batch_id: str | None = None,
    ) -> None:
        """Raises sqlite3.IntegrityError when a job of that id exists. ``idempotency``: the
        (key fingerprint, request hash) it was made under, written with it; older records
        are forgotten. ``webhook_url``: where its outcome goes when it ends. ``batch_id``: the
        request batch it was created in."""
        values = {
            **_to_db(row),
            "tenant": tenant,
            "key_id": key_id,
            "webhook_url": webhook_url,
            BATCH_COLUMN: batch_id,
        }
        written = (*COLUMNS, *OWNER_COLUMNS, "webhook_url", BATCH_COLUMN)
        names = ", ".join(written)
        marks = ", ".join(f":{name}" for name in written)
        with self._lock:
            if idempotency is None:
                self._db.execute(f"INSERT INTO jobs ({names}) VALUES ({marks})", values)
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(f"INSERT INTO jobs ({names}) VALUES ({marks})", values)
                self._db.execute(
                    "INSERT OR REPLACE INTO idempotency (job_id, key_hash, request_hash, "
                    "created_at) VALUES (?, ?, ?, ?)",
                    (row.job_id, *idempotency, values["created_at"]),
                )
                self._db.execute(
                    "DELETE FROM idempotency WHERE created_at < ?",
                    (_stamp(row.created_at - IDEMPOTENCY_WINDOW),),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def request_hash(self, job_id: str) -> str | None:
        """The hash of the request that made the job under an idempotency key, if kept."""
        rows = self._query("SELECT request_hash FROM idempotency WHERE job_id = ?", job_id)
        return str(rows[0][0]) if rows else None

    def get(self, job_id: str) -> JobRow | None:
        rows = self._query("SELECT * FROM jobs WHERE job_id = ?", job_id)
        return _from_db(rows[0]) if rows else None

    def get_owned(self, job_id: str) -> Owned | None:
        rows = self._query("SELECT * FROM jobs WHERE job_id = ?", job_id)
        return _owned(rows[0]) if rows else None

    def all(self) -> list[JobRow]:
        return [_from_db(r) for r in self._query("SELECT * FROM jobs")]

    def all_owned(self, tenant: str | None = None) -> list[Owned]:
        """Every job, or (``tenant``) that tenant's only."""
        if tenant is None:
            rows = self._query("SELECT * FROM jobs")
        else:
            rows = self._query("SELECT * FROM jobs WHERE tenant = ?", tenant)
        return [_owned(r) for r in rows]

    def created_with(self, key_id: str) -> list[JobRow]:
        """The jobs the key ``key_id`` created."""
        return [_from_db(r) for r in self._query("SELECT * FROM jobs WHERE key_id = ?", key_id)]

    def with_status(self, *statuses: str) -> list[JobRow]:
        marks = ", ".join("?" for _ in statuses)
        rows = self._query(
            f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created_at, job_id", *statuses
        )
        return [_from_db(r) for r in rows]

    def next_pending(self) -> JobRow | None:
        rows = self._query(
            "SELECT * FROM jobs WHERE status = ? ORDER BY created_at, job_id LIMIT 1", PENDING
        )
        return _from_db(rows[0]) if rows else None

    def delete(self, job_id: str) -> bool:
        return self._change("DELETE FROM jobs WHERE job_id = ?", job_id) > 0

    def save(self, row: JobRow, only_if_status: str | None = None) -> bool:
        """Writes every field of ``row``; with ``only_if_status``, only while the stored row
        still has that status (a job deleted or finished meanwhile is left alone)."""
        values = _to_db(row)
        assignments = ", ".join(f"{name} = :{name}" for name in COLUMNS if name != "job_id")
        sql = f"UPDATE jobs SET {assignments} WHERE job_id = :job_id"
        if only_if_status is not None:
            sql += " AND status = :expected"
            values["expected"] = only_if_status
        with self._lock:
            return self._db.execute(sql, values).rowcount > 0

    def set_progress(self, job_id: str, percent: int) -> None:
        self._change(
            "UPDATE jobs SET progress = ? WHERE job_id = ? AND status = ? AND progress < ?",
            percent,
            job_id,
            PROCESSING,
            percent,
        )

    def record_audio(self, job_id: str, seconds: float, now: datetime.datetime) -> None:
        """The song's length, for the audio quota of the key that created the job (none: no
        row); forgets what has left the window."""
        with self._lock:
            self._db.execute(
                "INSERT INTO audio_usage (job_id, key_id, created_at, seconds) "
                "SELECT job_id, key_id, created_at, ? FROM jobs "
                "WHERE job_id = ? AND key_id IS NOT NULL "
                "ON CONFLICT (job_id) DO UPDATE SET seconds = excluded.seconds",
                (seconds, job_id),
            )
            self._db.execute(
                "DELETE FROM audio_usage WHERE created_at < ?", (_stamp(now - WINDOW),)
            )

    def audio_since(
        self, key_id: str, moment: datetime.datetime
    ) -> list[tuple[datetime.datetime, float]]:
        """(created, seconds) of the jobs ``key_id`` created after ``moment``, deleted or not."""
        rows = self._query(
            "SELECT created_at, seconds FROM audio_usage WHERE key_id = ? AND created_at > ?",
            key_id,
            _stamp(moment),
        )
        return [(datetime.datetime.fromisoformat(r[0]), float(r[1])) for r in rows]

    def webhooks_due(self, now: datetime.datetime) -> list[Owned]:
        """Finished jobs with a webhook to deliver now: never tried, or their next attempt
        due."""
        rows = self._query(
            "SELECT * FROM jobs WHERE webhook_url IS NOT NULL AND status IN (?, ?) AND "
            "((webhook IS NULL) OR (webhook_due IS NOT NULL AND webhook_due <= ?)) "
            "ORDER BY completed_at, job_id",
            COMPLETED,
            FAILED,
            _stamp(now),
        )
        return [_owned(r) for r in rows]

    def record_webhook(self, job_id: str, delivery: webhooks.Delivery) -> None:
        """The delivery state after an attempt, and when the next one is due (none: final)."""
        due = delivery.next_attempt_at if not delivery.final else None
        self._change(
            "UPDATE jobs SET webhook = ?, webhook_due = ? WHERE job_id = ?",
            json.dumps(delivery.as_status()),
            _stamp(due) if due is not None else None,
            job_id,
        )

    def finished_before(self, moment: datetime.datetime) -> list[JobRow]:
        rows = self._query(
            "SELECT * FROM jobs WHERE status IN (?, ?) AND completed_at <= ?",
            COMPLETED,
            FAILED,
            _stamp(moment),
        )
        return [_from_db(r) for r in rows]
