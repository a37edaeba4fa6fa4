"""Local mode's core: the rules (pure), and its file store and SQLite table on a temporary
folder (milliseconds, no server)."""

import datetime
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from stemkube_api.interfaces import NewJob, ObjectNotFoundError, TooLargeError
from stemkube_api.local import records, rules
from stemkube_api.local.records import JobTable, SchemaError
from stemkube_api.local.store import LocalStore
from stemkube_contract.models import Catalog

T0 = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)
JOB = "0b8f8a3e-6c9d-4d2a-9a57-3f8a9f8f1c11"


MODELS = Catalog()


def row(options: dict[str, object] | None = None, **changes: object) -> rules.JobRow:
    job = NewJob(JOB, options or {}, f"inputs/{JOB}/input.mp3", "song.mp3")  # type: ignore[arg-type]
    return replace(rules.new_row(job, MODELS, T0), **changes)  # type: ignore[arg-type]


# Rules ---------------------------------------------------------------------------------------


def test_a_new_row_takes_the_defaults_the_crd_would() -> None:
    job = NewJob(JOB, {"format": "wav"}, "inputs/x/input.wav", "a.wav")
    wav = rules.new_row(job, MODELS.with_default("htdemucs_6s"), T0)
    assert wav.options == {
        "model": "htdemucs_6s",
        "format": "wav",
        "wav_depth": "16",
        "shifts": 1,
        "overlap": 0.25,
    }
    assert (wav.status, wav.reason, wav.result_key) == ("pending", "Queued", f"results/{JOB}.zip")
    assert (row().options["format"], row().options["bitrate"]) == ("mp3", 320)


def test_a_row_as_the_api_shows_it() -> None:
    done = rules.record_of(
        row(
            {"two_stems": "vocals"},
            status="completed",
            progress=97,
            started_at=T0,
            completed_at=T0 + datetime.timedelta(seconds=83),
        ),
        MODELS,
    )
    assert (done.progress, done.duration, done.stems) == (100, "1m23s", ["vocals", "no_vocals"])
    assert rules.record_of(row({"model": "htdemucs_6s"}), MODELS).stems[-2:] == [
        "guitar",
        "piano",
    ]
    assert rules.record_of(row(), MODELS).error is None
    failed = rules.record_of(
        row(status="failed", reason="InvalidInput", message="not audio"), MODELS
    )
    assert failed.error == "not audio"


def test_the_separator_command_carries_the_options() -> None:
    paths = (Path("/d/in.mp3"), Path("/d/out.zip"), Path("/w/progress"), Path("/w/log"))
    command = rules.separator_command(
        row({"stems": ("vocals", "drums"), "bitrate": 128}),
        ["sep"],
        *paths,
        Path("/models"),
        MODELS,
    )
    assert command == [
        "sep",
        "/d/in.mp3",
        "/d/out.zip",
        "--model=htdemucs",
        "--stems=vocals,drums",
        "--format=mp3",
        "--bitrate=128",
        "--shifts=1",
        "--overlap=0.25",
        "--precision=auto",
        "--progress-file=/w/progress",
        "--termination-log=/w/log",
        f"--job-id={JOB}",
        "--model-repo=/models",
    ]
    flac = rules.separator_command(
        row({"format": "flac", "two_stems": "bass"}), ["sep"], *paths, None, MODELS
    )
    assert "--two-stems=bass" in flac
    assert "--wav-depth=16" in flac
    assert not [a for a in flac if a.startswith(("--bitrate", "--model-repo", "--stems"))]


@pytest.mark.parametrize(
    ("code", "said", "attempts", "expected"),
    [
        (0, "", 1, ("completed", "Completed", "the stems are ready")),
        (3, "input: not audio", 1, ("failed", "InvalidInput", "input: not audio")),
        (3, "", 1, ("failed", "InvalidInput", "the input file could not be read as audio")),
        (
            4,
            "model 'x' is not in the model folder /m",
            1,
            ("failed", "ModelNotFound", "model 'x' is not in the model folder /m"),
        ),
        (2, "usage error: x", 1, ("failed", "InvalidArguments", "usage error: x")),
        (75, "disk\nfull", 1, ("pending", "Retrying", "attempt 1 of 3 failed: disk full")),
        (
            75,
            "disk full",
            3,
            ("failed", "TransientError", "failed 3 time(s); last error: disk full"),
        ),
        (
            -9,
            "",
            3,
            (
                "failed",
                "SeparatorError",
                "failed 3 time(s); last error: killed by SIGKILL (out of memory?)",
            ),
        ),
        (1, "", 2, ("pending", "Retrying", "attempt 2 of 3 failed: exit code 1")),
    ],
)
def test_what_an_exit_means(
    code: int, said: str, attempts: int, expected: tuple[str, str, str]
) -> None:
    result = rules.outcome(code, said, attempts, max_attempts=3)
    assert (result.status, result.reason, result.message) == expected


def test_an_interrupted_job_runs_again_until_its_attempts_are_spent() -> None:
    again = rules.interrupted(row(status="processing", attempts=1), max_attempts=3)
    assert (again.status, again.reason) == ("pending", "Interrupted")
    spent = rules.interrupted(row(status="processing", attempts=3), max_attempts=3)
    assert (spent.status, spent.reason) == ("failed", "Interrupted")
    assert "3 time(s)" in spent.message


def test_starting_counts_an_attempt_and_keeps_the_first_start() -> None:
    first = rules.started(row(progress=40), 123, T0)
    assert (first.status, first.attempts, first.pid, first.progress) == ("processing", 1, 123, 0)
    later = T0 + datetime.timedelta(minutes=5)
    second = rules.started(replace(first, status="pending"), 456, later)
    assert (second.attempts, second.started_at) == (2, T0)


# Store ---------------------------------------------------------------------------------------


def test_an_object_appears_whole_on_commit_or_not_at_all(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    key = f"inputs/{JOB}/input.mp3"
    writer = store.writer(key, 10, "audio/mpeg")
    writer.write(b"12345")
    assert store.stat(key) is None
    assert writer.commit() == 5
    assert store.stat(key) is not None
    assert b"".join(store.open(key, 1, 3)) == b"234"
    assert store.open(key, 3).size == 2
    too_big = store.writer("results/x.zip", 4, "application/zip")
    with pytest.raises(TooLargeError):
        too_big.write(b"12345")
    aborted = store.writer("results/y.zip", 10, "application/zip")
    aborted.write(b"1")
    aborted.abort()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["input.mp3"]
    store.delete(key)
    store.delete(key)  # what is not there is success
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["inputs", "results"]
    with pytest.raises(ObjectNotFoundError):
        store.open(key)


def test_keys_stay_inside_the_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for key in ("../escape", "/etc/passwd", "inputs/../../x", ""):
        with pytest.raises(ValueError, match="not an object key"):
            store.path(key)


def test_partials_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.writer("results/a.zip", 10, "application/zip").write(b"half")
    (tmp_path / "results" / "b.zip").write_bytes(b"whole")
    assert store.remove_partials() == 1
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["b.zip"]


# Table ---------------------------------------------------------------------------------------


def test_rows_survive_a_reopen_and_writes_respect_the_status(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    table = JobTable(path)
    table.insert(row({"stems": ("vocals",)}))
    table.insert(row(job_id="b", created_at=T0 + datetime.timedelta(seconds=1)))
    table.close()
    table = JobTable(path)
    assert table.get(JOB) == row({"stems": ("vocals",)})
    assert [r.job_id for r in table.with_status("pending")] == [JOB, "b"]
    assert table.next_pending() == row({"stems": ("vocals",)})
    running = rules.started(row(), 99, T0)
    assert table.save(running, only_if_status="pending")
    assert not table.save(replace(running, status="failed"), only_if_status="pending")
    table.set_progress(JOB, 40)
    table.set_progress(JOB, 30)  # progress never goes back
    assert table.get(JOB).progress == 40  # type: ignore[union-attr]
    assert table.next_pending().job_id == "b"  # type: ignore[union-attr]
    done = replace(running, status="completed", completed_at=T0)
    assert table.save(done)
    assert [r.job_id for r in table.finished_before(T0)] == [JOB]
    assert table.finished_before(T0 - datetime.timedelta(microseconds=1)) == []
    assert table.delete(JOB)
    assert not table.delete(JOB)
    table.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(SchemaError, match="newer stemkube"):
        JobTable(path)


def test_a_schema_1_database_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    """A jobs.sqlite3 written before the options became one JSON column keeps working."""
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_1)
        db.execute(
            "INSERT INTO jobs (job_id, created_at, filename, model, format, input_key, "
            "result_key, status, stems, two_stems, bitrate, progress, attempts) VALUES "
            "(?, ?, 'a.mp3', 'htdemucs_6s', 'mp3', 'inputs/a/input.mp3', 'results/a.zip', "
            "'completed', '[\"vocals\", \"guitar\"]', NULL, 192, 100, 1)",
            ("a", "2026-11-24T10:00:00.000000+00:00"),
        )
        db.execute(
            "INSERT INTO jobs (job_id, created_at, filename, model, format, input_key, "
            "result_key, status, two_stems, progress, attempts) VALUES "
            "('b', '2026-11-24T10:00:01.000000+00:00', 'b.wav', 'htdemucs', 'wav', "
            "'inputs/b/input.wav', 'results/b.zip', 'pending', 'drums', 0, 0)"
        )
        db.execute("PRAGMA user_version=1")
    table = JobTable(path)
    a, b = table.get("a"), table.get("b")
    assert a is not None
    assert b is not None
    assert a.options == {
        "model": "htdemucs_6s",
        "format": "mp3",
        "stems": ("vocals", "guitar"),
        "bitrate": 192,
    }
    assert rules.record_of(a, MODELS).stems == ["vocals", "guitar"]
    assert b.options == {"model": "htdemucs", "format": "wav", "two_stems": "drums"}
    assert [r.job_id for r in table.with_status("pending")] == ["b"]
    table.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == records.SCHEMA_VERSION


SCHEMA_1 = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, filename TEXT NOT NULL,
    model TEXT NOT NULL, format TEXT NOT NULL, input_key TEXT NOT NULL,
    result_key TEXT NOT NULL, status TEXT NOT NULL, stems TEXT, two_stems TEXT,
    bitrate INTEGER, progress INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    started_at TEXT, completed_at TEXT, reason TEXT, message TEXT, result_size INTEGER,
    pid INTEGER
);
CREATE INDEX jobs_by_status ON jobs (status, created_at);
"""
