"""The audio quota (``--audio-minutes-per-day``): the song's length as the separator reports
it (status.audioSeconds; local mode's progress file), the ledger that outlives a deleted job
(the operator's entries; local mode's table), and each backend's count of a key's day. The
integration tier runs it end to end in both modes (tests/integration/test_api_auth.py)."""

import datetime
import threading
from pathlib import Path
from typing import Any

from stemkube_api.auth.keys import Quotas
from stemkube_api.auth.limits import Heard, Usage, admit_job, usage_of
from stemkube_api.interfaces import NewJob
from stemkube_api.jobs import input_key
from stemkube_api.kubernetes.backend import usage_from
from stemkube_api.local import rules
from stemkube_api.local.backend import LocalBackend
from stemkube_api.local.settings import LocalSettings
from stemkube_api.local.store import LocalStore
from stemkube_contract import usage
from stemkube_contract.models import Catalog
from stemkube_contract.progressfile import Progress, format_progress, parse_progress
from stemkube_operator import ledger
from stemkube_separator import progress
from tests.unit.test_contract import version_schema

KEY = "0123456789ab"
UID = "5f0c1e7a-2b3c-4d5e-8f90-a1b2c3d4e5f6"
T0 = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


def test_the_crd_declares_the_field_the_separator_writes() -> None:
    status = version_schema()["properties"]["status"]["properties"]
    assert status[usage.AUDIO_SECONDS_FIELD] == {
        **status[usage.AUDIO_SECONDS_FIELD],
        "type": "number",
        "minimum": 0,
    }
    written = usage.audio_patch(183.1234567)["status"]
    assert written == {usage.AUDIO_SECONDS_FIELD: 183.123}
    assert usage.audio_seconds_of(written) == 183.123
    for junk in ({}, None, {"audioSeconds": "12"}, {"audioSeconds": True}, {"audioSeconds": -3}):
        assert usage.audio_seconds_of(junk) == 0.0


def test_a_ledger_entry_is_named_by_what_it_counts() -> None:
    entry = usage.Entry(KEY, T0, UID, 183.25)
    key = usage.usage_key(entry)
    assert key == f"usage/{KEY}/{int(T0.timestamp())}-{UID}-183250"
    assert usage.parse_usage_key(key) == entry
    for other in ("usage/0123456789ab/x", f"usage/{KEY}/1-2", "results/a.zip", key + "/x"):
        assert usage.parse_usage_key(other) is None
    for bad_id in ("ABCDEF012345", "0123", "../../etc"):
        assert not usage.valid_key_id(bad_id)
    try:
        usage.usage_prefix("../x")
    except ValueError:
        pass
    else:
        raise AssertionError("a bad key id made a prefix")


def test_the_progress_file_carries_the_songs_length() -> None:
    assert format_progress(Progress(42)) == "42\n"
    assert parse_progress("42\n") == Progress(42)
    assert parse_progress(format_progress(Progress(60, 183.25))) == Progress(60, 183.25)
    for junk in ("", "4x", "audio 3\n", "10\naudio nan\n", "10\naudio -1\n", "10\naudio x\n"):
        assert parse_progress(junk) is None


def test_the_file_reporter_writes_the_length_at_once(tmp_path: Path) -> None:
    path = tmp_path / "progress"
    reporter = progress.FileReporter(str(path), interval=3600)
    reporter.update(5)
    reporter.audio(12.5)  # within the throttle's interval: written all the same
    assert parse_progress(path.read_text()) == Progress(5, 12.5)
    reporter.update(100)
    assert parse_progress(path.read_text()) == Progress(100, 12.5)


class StatusApi:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> None:
        with self.lock:
            self.bodies.append(args[5])


def test_the_cr_reporter_patches_the_length_to_the_status() -> None:
    api = StatusApi()
    reporter = progress.CrReporter("ns", "job", api, interval=3600)
    reporter.update(0)
    reporter.audio(7.5)
    reporter.update(100)
    reporter.close()
    assert {"status": {"audioSeconds": 7.5}} in api.bodies
    assert api.bodies[-1] == {"status": {"progress": 100}}


def separation_job(
    key_id: str | None = KEY,
    seconds: float | None = 60.0,
    created: datetime.datetime = T0,
    uid: str = UID,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "job",
        "uid": uid,
        "labels": {"stemkube.io/api-key-id": key_id} if key_id else {},
        "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T13:00:00Z"
    status: dict[str, Any] = {"phase": "Completed"}
    if seconds is not None:
        status["audioSeconds"] = seconds
    return {
        "metadata": meta,
        "spec": {"output": {"bucket": "stems", "key": "r.zip"}},
        "status": status,
    }


def test_the_operator_leaves_an_entry_for_a_keys_decoded_job_of_the_day() -> None:
    now = T0 + HOUR
    bucket, key = ledger.entry_for(separation_job(), now) or ("", "")
    assert bucket == "stems"
    assert usage.parse_usage_key(key) == usage.Entry(KEY, T0, UID, 60.0)
    assert ledger.entry_for(separation_job(key_id=None), now) is None  # made with kubectl
    assert ledger.entry_for(separation_job(key_id="../x"), now) is None  # a forged label
    assert ledger.entry_for(separation_job(seconds=None), now) is None  # never decoded
    assert ledger.entry_for(separation_job(), T0 + 25 * HOUR) is None  # out of the window
    old = usage.usage_key(usage.Entry(KEY, T0 - 25 * HOUR, UID, 1.0))
    assert ledger.expired([key, old, "usage/x"], now) == [old]


def test_usage_counts_the_songs_of_the_last_day() -> None:
    now = T0 + HOUR
    heard = [Heard(T0, 60.0), Heard(T0 + HOUR / 2, 30.0), Heard(T0 - 22 * HOUR, 10.0)]
    heard.append(Heard(T0 - 30 * HOUR, 500.0))  # yesterday's: no longer counted
    counted = usage_of([], heard, now)
    assert counted.audio_seconds_today == 100.0
    assert counted.day_frees_in == HOUR.total_seconds()  # when T0 - 22 h leaves the window
    refusal = admit_job("ci", Quotas(audio_minutes_per_day=1.5), counted, 1)
    assert refusal is not None
    assert refusal.status == 429
    assert refusal.retry_after == 3600
    assert refusal.message == (
        "key 'ci' may separate 1.5 minute(s) of audio in 24 hours and separated 1.7; "
        "the oldest of them leaves the window in 3600 s"
    )
    assert admit_job("ci", Quotas(audio_minutes_per_day=2), counted, 1) is None


def test_kubernetes_counts_live_jobs_and_the_ledger_once_each() -> None:
    now = T0 + HOUR
    other_uid = "00000000-0000-0000-0000-000000000001"
    crs = [
        separation_job(),  # 60 s
        separation_job(seconds=30.0, uid=other_uid, deleting=True),  # its entry is written too
        separation_job(key_id="ffffffffffff", uid="x"),  # another key's
        separation_job(seconds=None, uid="y"),  # not decoded yet
    ]
    gone = "00000000-0000-0000-0000-000000000002"
    entries = [
        usage.usage_key(usage.Entry(KEY, T0, other_uid, 30.0)),
        usage.usage_key(usage.Entry(KEY, T0 - 2 * HOUR, gone, 15.0)),  # deleted, still counts
        f"usage/{KEY}/junk",
    ]
    counted = usage_from(crs, KEY, entries, now)
    assert counted.audio_seconds_today == 105.0
    assert counted.active_jobs == 0
    assert usage_from(crs, KEY, [], T0 + 30 * HOUR).audio_seconds_today == 0.0


def test_local_mode_keeps_a_deleted_jobs_song_for_its_day(tmp_path: Path) -> None:
    settings = LocalSettings(data_dir=tmp_path)
    backend = LocalBackend(settings, LocalStore(settings.objects))
    try:
        ids = [f"{n}b8f8a3e-6c9d-4d2a-9a57-3f8a9f8f1c11" for n in range(3)]
        for job_id, key_id in zip(ids, (KEY, KEY, None), strict=True):
            job = NewJob(job_id, {}, input_key(job_id, "mp3"), "a.mp3", "acme", key_id)
            backend.table.insert(rules.new_row(job, Catalog(), T0), "acme", key_id)
        backend.table.record_audio(ids[0], 60.0, T0)
        backend.table.record_audio(ids[0], 61.0, T0)  # a retried attempt: once
        backend.table.record_audio(ids[1], 30.0, T0)
        backend.table.record_audio(ids[2], 99.0, T0)  # no key: nothing to count
        assert backend.table.delete(ids[1])
        counted = backend.usage(KEY, T0 + HOUR)
        assert counted == Usage(
            active_jobs=1, audio_seconds_today=91.0, day_frees_in=23 * HOUR.total_seconds()
        )
        assert backend.usage(KEY, T0 + 25 * HOUR).audio_seconds_today == 0.0
    finally:
        backend.table.close()
