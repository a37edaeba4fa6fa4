"""Direct uploads' pure parts (``uploads``) and local mode's multipart files
(``LocalStore``): part sizes, the part URLs' tokens, the record, the sweep."""

import datetime
import hashlib
from pathlib import Path
from typing import Any

import pytest

from stemkube_api import uploads
from stemkube_api.interfaces import MultipartStore, PartsError, TooLargeError, UploadedPart
from stemkube_api.local.store import LocalStore

MiB = 1024 * 1024
NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


def test_the_part_size_is_the_preferred_one_until_10000_parts_do_not_fit() -> None:
    assert uploads.choose_part_size(1) == uploads.DEFAULT_PART_SIZE
    assert uploads.choose_part_size(2 * 1024**3) == 16 * MiB
    assert uploads.choose_part_size(100, preferred=1) == 5 * MiB  # S3's least
    huge = 500 * 1024**3
    part = uploads.choose_part_size(huge)
    assert part % MiB == 0
    assert uploads.part_count(huge, part) <= uploads.MAX_PARTS


def test_parts_cover_the_file_the_last_holding_the_rest() -> None:
    assert uploads.part_count(11 * MiB, 5 * MiB) == 3
    assert uploads.part_length(11 * MiB, 5 * MiB, 3) == MiB
    assert uploads.part_count(5 * MiB, 5 * MiB) == 1


def test_a_token_is_good_for_its_upload_part_and_time_only() -> None:
    secret = b"s" * 32
    token = uploads.sign(secret, "u1", 2, 1000)
    assert uploads.verify(secret, "u1", 2, 1000, token, now=999)
    assert not uploads.verify(secret, "u1", 2, 1000, token, now=1001)  # expired
    assert not uploads.verify(secret, "u1", 3, 1000, token, now=999)  # another part
    assert not uploads.verify(secret, "u2", 2, 1000, token, now=999)  # another upload
    assert not uploads.verify(secret, "u1", 2, 2000, token, now=999)  # a later expiry
    assert not uploads.verify(b"t" * 32, "u1", 2, 1000, token, now=999)  # another secret


def test_the_stored_extension_comes_from_an_allow_list() -> None:
    assert uploads.extension_of("Song.FLAC") == "flac"
    assert uploads.extension_of("../../etc/passwd") == "bin"
    assert uploads.extension_of("noext") == "bin"


def test_settings_from_the_environment() -> None:
    config = uploads.UploadConfig.from_env(
        {uploads.EXPIRY_ENV: "60", uploads.PART_SIZE_ENV: "5MiB", uploads.SWEEP_ENV: "2"}
    )
    assert config.expiry == datetime.timedelta(seconds=60)
    assert config.part_size == 5 * MiB
    with pytest.raises(uploads.UploadSettingsError):
        uploads.UploadConfig.from_env({uploads.PART_SIZE_ENV: "1MiB"})
    with pytest.raises(uploads.UploadSettingsError):
        uploads.UploadConfig.from_env({uploads.EXPIRY_ENV: "soon"})


def _record(store: LocalStore, upload_id: str, expires: datetime.datetime) -> uploads.UploadRecord:
    key = f"tenants/t/inputs/{upload_id}/input.wav"
    return uploads.UploadRecord(
        upload_id=upload_id,
        tenant="t",
        key_id="0123456789ab",
        object_key=key,
        store_upload_id=store.begin_multipart(key, "application/octet-stream"),
        size=10,
        part_size=5 * MiB,
        filename="song.wav",
        content_type="audio/wav",
        options={"format": "mp3"},
        created_at=NOW,
        expires_at=expires,
    )


def _put(store: LocalStore, upload_id: str, number: int, data: bytes) -> str:
    writer = store.part_writer(upload_id, number, len(data))
    writer.write(data)
    writer.commit()
    return writer.etag


def test_local_parts_become_one_object_named_by_their_etags(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    assert isinstance(store, MultipartStore)
    upload_id = store.begin_multipart("inputs/x/input.wav", "")
    one = _put(store, upload_id, 1, b"hello ")
    _put(store, upload_id, 2, b"WRONG")
    two = _put(store, upload_id, 2, b"world")  # a part sent again replaces the first
    assert one == hashlib.md5(b"hello ").hexdigest()
    with pytest.raises(PartsError):
        store.complete_multipart("inputs/x/input.wav", upload_id, [UploadedPart(1, '"bad"')])
    with pytest.raises(PartsError):  # out of order
        store.complete_multipart(
            "inputs/x/input.wav", upload_id, [UploadedPart(2, two), UploadedPart(1, one)]
        )
    store.complete_multipart(
        "inputs/x/input.wav", upload_id, [UploadedPart(1, f'"{one}"'), UploadedPart(2, two)]
    )
    assert store.path("inputs/x/input.wav").read_bytes() == b"hello world"
    assert not (tmp_path / "objects" / "multipart" / upload_id).exists()


def test_a_local_part_over_its_size_leaves_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    upload_id = store.begin_multipart("inputs/x/input.wav", "")
    writer = store.part_writer(upload_id, 1, 4)
    with pytest.raises(TooLargeError):
        writer.write(b"12345")
    assert list((tmp_path / "objects" / "multipart" / upload_id).iterdir()) == []


def test_the_signing_secret_is_the_data_folders_and_stays(tmp_path: Path) -> None:
    first = LocalStore(tmp_path / "objects").signing_secret()
    assert len(first) == 32
    assert LocalStore(tmp_path / "objects").signing_secret() == first


class Jobs:
    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)

    def get(self, job_id: str) -> Any:
        return object() if job_id in self.ids else None


def test_the_sweep_removes_expired_uploads_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    old = _record(store, "00000000-0000-4000-8000-000000000001", NOW)
    new = _record(store, "00000000-0000-4000-8000-000000000002", NOW + datetime.timedelta(1))
    done = _record(store, "00000000-0000-4000-8000-000000000003", NOW)
    for record in (old, new, done):
        uploads.save(store, record)
        _put(store, record.store_upload_id, 1, b"x")
    store.path(done.object_key).parent.mkdir(parents=True)
    store.path(done.object_key).write_bytes(b"the job's input")
    assert uploads.load(store, old.upload_id) == old
    removed = uploads.sweep(store, Jobs(done.upload_id), NOW)  # type: ignore[arg-type]
    assert removed == 2
    assert uploads.load(store, old.upload_id) is None
    assert uploads.load(store, new.upload_id) == new
    assert uploads.load(store, done.upload_id) is None
    assert store.stat(done.object_key) is not None  # a job's input stays
    assert store.keys("uploads/") == [uploads.record_key(new.upload_id)]
    assert not (tmp_path / "objects" / "multipart" / old.store_upload_id).exists()


def test_an_id_that_is_no_upload_id_has_no_record(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    assert uploads.load(store, "../../keys") is None
    with pytest.raises(ValueError, match="not an upload id"):
        uploads.record_key("../x")


def test_a_name_without_a_known_extension_still_names_an_object() -> None:
    """The fuzzing run found a 500 here: "bin" was not an extension input_key allowed."""
    from stemkube_api.jobs import input_key

    key = input_key("5f0c1e7a-2b3c-4d5e-8f90-a1b2c3d4e5f6", uploads.extension_of("0"), "acme")
    assert key == "tenants/acme/inputs/5f0c1e7a-2b3c-4d5e-8f90-a1b2c3d4e5f6/input.bin"


def test_a_token_of_any_characters_is_refused_not_a_500() -> None:
    assert not uploads.verify(b"secret", "id", 1, 2**40, "été", 0.0)
