"""Tenants in the backends' own terms: object keys under a tenant's prefix (and the CRD's key
rule still holding), the SeparationJob's labels, local mode's SQLite columns and their
migration from schema 2."""

import datetime
import sqlite3
from pathlib import Path

import pytest

from stemkube_api.interfaces import NewJob
from stemkube_api.jobs import input_key, record_from_cr
from stemkube_api.kubernetes.backend import manifest
from stemkube_api.local import rules
from stemkube_api.local.backend import LocalBackend
from stemkube_api.local.records import SCHEMA_VERSION, JobTable
from stemkube_api.local.settings import LocalSettings
from stemkube_api.local.store import LocalStore
from stemkube_contract import keys
from stemkube_contract.models import Catalog
from stemkube_contract.resource import API_KEY_ID_LABEL, TENANT_LABEL

JOB = "0b8f8a3e-6c9d-4d2a-9a57-3f8a9f8f1c11"
T0 = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)
MODELS = Catalog()


def test_a_tenants_objects_live_under_its_prefix() -> None:
    assert keys.input_key(JOB, "mp3") == f"inputs/{JOB}/input.mp3"
    assert keys.result_key(JOB) == f"results/{JOB}.zip"
    assert input_key(JOB, "flac", "acme") == f"tenants/acme/inputs/{JOB}/input.flac"
    assert keys.result_key(JOB, "acme") == f"tenants/acme/results/{JOB}.zip"
    for key in (input_key(JOB, "mp3", "a-1"), keys.result_key(JOB, "a" * 63)):
        assert keys.key_problem(key) is None  # the CRD's rule (test_contract.py)
    for bad in ("", "..", "a/b", "Acme", "-a", "a" * 64, "a b"):
        with pytest.raises(ValueError, match="not a tenant"):
            keys.result_key(JOB, bad)


def test_a_separation_job_carries_its_tenant_and_key_in_labels() -> None:
    job = NewJob(JOB, {}, input_key(JOB, "mp3", "acme"), "song.mp3", "acme", "0123456789ab")
    cr = manifest(job, "music", "stems", keys.result_key(JOB, "acme"), MODELS)
    labels = cr["metadata"]["labels"]
    assert (labels[TENANT_LABEL], labels[API_KEY_ID_LABEL]) == ("acme", "0123456789ab")
    assert cr["spec"]["output"]["key"] == f"tenants/acme/results/{JOB}.zip"
    assert record_from_cr(cr).tenant == "acme"
    open_job = NewJob(JOB, {}, input_key(JOB, "mp3"), "song.mp3")
    plain = manifest(open_job, "music", "stems", keys.result_key(JOB), MODELS)
    assert TENANT_LABEL not in plain["metadata"]["labels"]
    assert API_KEY_ID_LABEL not in plain["metadata"]["labels"]
    # Made with kubectl, or before keys: no tenant (only admin keys see it).
    assert record_from_cr(plain).tenant is None


def test_local_mode_keeps_the_owner_beside_the_row(tmp_path: Path) -> None:
    settings = LocalSettings(data_dir=tmp_path)
    backend = LocalBackend(settings, LocalStore(settings.objects))
    try:
        mine = backend.create(
            NewJob(JOB, {}, input_key(JOB, "mp3", "acme"), "a.mp3", "acme", "0123456789ab")
        )
        other = "1b8f8a3e-6c9d-4d2a-9a57-3f8a9f8f1c11"
        backend.create(NewJob(other, {}, input_key(other, "mp3"), "b.mp3"))
        assert (mine.tenant, mine.result_key) == ("acme", f"tenants/acme/results/{JOB}.zip")
        got = backend.get(JOB)
        assert got is not None
        assert got.tenant == "acme"
        assert [r.job_id for r in backend.list(tenant="acme").jobs] == [JOB]
        assert {r.job_id for r in backend.list().jobs} == {JOB, other}
        assert backend.list(tenant="globex").jobs == []
        # The workers' saves write the row's own columns: the owner stays.
        row = backend.table.get(JOB)
        assert row is not None
        assert backend.table.save(rules.started(row, 1, T0))
        owned = backend.table.get_owned(JOB)
        assert owned is not None
        assert (owned.tenant, owned.key_id, owned.row.status) == (
            "acme",
            "0123456789ab",
            "processing",
        )
    finally:
        backend.table.close()


def test_a_schema_2_database_is_migrated_and_its_jobs_have_no_tenant(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_2)
        db.execute(
            "INSERT INTO jobs (job_id, created_at, filename, options, input_key, result_key, "
            "status, progress, attempts) VALUES (?, '2026-11-24T10:00:00.000000+00:00', "
            '\'a.mp3\', \'{"model": "htdemucs", "format": "mp3"}\', ?, ?, \'completed\', 100, 1)',
            (JOB, f"inputs/{JOB}/input.mp3", f"results/{JOB}.zip"),
        )
        db.execute("PRAGMA user_version=2")
    table = JobTable(path)
    owned = table.get_owned(JOB)
    assert owned is not None
    assert (owned.tenant, owned.key_id) == (None, None)
    assert owned.row.options == {"model": "htdemucs", "format": "mp3"}
    assert [o.row.job_id for o in table.all_owned()] == [JOB]
    assert table.all_owned("acme") == []
    table.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
        columns = [c[1] for c in db.execute("PRAGMA table_info(jobs)")]
        assert columns[-6:-4] == ["tenant", "key_id"]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "audio_usage" in tables  # schema 4: the audio ledger
    JobTable(path).close()  # opening it again changes nothing


def test_a_failed_migration_leaves_schema_2_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_2)
        # What the migration's index would need is taken: it fails half-way.
        db.execute("CREATE TABLE jobs_by_tenant (x)")
        db.execute("PRAGMA user_version=2")
    with pytest.raises(sqlite3.Error):
        JobTable(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        columns = [c[1] for c in db.execute("PRAGMA table_info(jobs)")]
        assert "tenant" not in columns


SCHEMA_2 = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, filename TEXT NOT NULL,
    options TEXT NOT NULL, input_key TEXT NOT NULL, result_key TEXT NOT NULL,
    status TEXT NOT NULL, progress INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, started_at TEXT, completed_at TEXT, reason TEXT,
    message TEXT, result_size INTEGER, pid INTEGER
);
CREATE INDEX jobs_by_status ON jobs (status, created_at);
"""
