"""The REST API's pure rules: sizes, format sniffing, option validation, status mapping, keys,
download names, pagination."""

import datetime
import struct
from typing import Any

import pytest

from stemkube_api.jobs import (
    BadCursorError,
    JobRecord,
    clean_filename,
    content_disposition,
    input_key,
    paginate,
    record_from_cr,
    result_key,
    status_of,
    stem_download_name,
    valid_job_id,
    zip_download_name,
)
from stemkube_api.kubernetes.store import MIN_PART_SIZE, part_size_for
from stemkube_api.options import OptionError, check_field, parse_request
from stemkube_api.settings import SettingsError, load_settings
from stemkube_api.sizes import format_size, parse_size
from stemkube_api.sniff import EXTENSIONS, NotAudioError, sniff
from stemkube_contract import options as catalogue
from stemkube_contract.models import Catalog, Model
from tests.harness.audio import sine_wav

# Sizes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("500MB", 500 * 1024**2),
        ("100MB", 100 * 1024**2),
        ("1.5GB", int(1.5 * 1024**3)),
        ("100 MiB", 100 * 1024**2),
        ("64kb", 64 * 1024),
        ("1048576", 1048576),
        ("2G", 2 * 1024**3),
        ("10B", 10),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "-1MB", "0", "12 parsecs", "1.2.3GB", "0.0000001KB"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_format_size_round_trips() -> None:
    for text in ("500MB", "1.5GB", "100KB", "1000B", "2TB"):
        assert format_size(parse_size(text)) == text


# Settings -------------------------------------------------------------------------------------


def test_settings_defaults_and_environment() -> None:
    assert load_settings({}).namespace == "default"
    assert load_settings({"POD_NAMESPACE": "music"}).namespace == "music"
    settings = load_settings(
        {
            "POD_NAMESPACE": "music",
            "STEMKUBE_NAMESPACE": "songs",
            "STEMKUBE_BUCKET": "stems",
            "MAX_FILE_SIZE": "100MB",
            "STEMKUBE_PRESIGNED_DOWNLOADS": "true",
            "AWS_ENDPOINT_URL": "http://minio:9000",
            "KUBECONFIG": "/k",
        }
    )
    assert (settings.namespace, settings.bucket) == ("songs", "stems")
    assert settings.max_file_size == 100 * 1024**2
    assert settings.max_file_size_text == "100MB"
    assert settings.presigned_downloads
    assert settings.s3_endpoint == "http://minio:9000"
    assert settings.kubeconfig == "/k"
    defaults = load_settings({})
    assert defaults.max_file_size == 500 * 1024**2
    assert defaults.bucket == "stemkube"
    assert not defaults.presigned_downloads
    assert defaults.kubeconfig is None


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"MAX_FILE_SIZE": "lots"}, "MAX_FILE_SIZE"),
        ({"STEMKUBE_PRESIGNED_DOWNLOADS": "maybe"}, "STEMKUBE_PRESIGNED_DOWNLOADS"),
    ],
)
def test_settings_errors_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(env)


def test_part_size_fits_s3s_part_count() -> None:
    assert part_size_for(100 * 1024**2) == MIN_PART_SIZE
    assert part_size_for(200 * 1024**3) * 9999 >= 200 * 1024**3


# Sniffing -------------------------------------------------------------------------------------


def _mp3_frame() -> bytes:
    # MPEG-1 layer III, 128 kbit/s, 44.1 kHz.
    return b"\xff\xfb\x90\x64" + b"\x00" * 60


CASES = {
    "wav": (sine_wav(0.01), "wav"),
    "mp3-id3": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + _mp3_frame(), "mp3"),
    "mp3-frame": (_mp3_frame(), "mp3"),
    "adts": (b"\xff\xf1\x50\x80\x02\x1f\xfc" + b"\x00" * 20, "aac"),
    "flac": (b"fLaC\x00\x00\x00\x22" + b"\x00" * 40, "flac"),
    "opus": (b"OggS\x00\x02" + b"\x00" * 22 + b"OpusHead\x01\x02", "opus"),
    "vorbis": (b"OggS\x00\x02" + b"\x00" * 22 + b"\x01vorbis", "ogg"),
    "m4a": (struct.pack(">I", 32) + b"ftypM4A \x00\x00\x00\x00isom", "m4a"),
    "mp4": (struct.pack(">I", 32) + b"ftypisom\x00\x00\x02\x00", "mp4"),
    "aiff": (b"FORM\x00\x00\x10\x00AIFFCOMM", "aiff"),
    "webm": (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "webm"),
    "mka": (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska", "mka"),
    "caf": (b"caff\x00\x01\x00\x00desc", "caf"),
    "wma": (bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c") + b"\x00" * 8, "wma"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sniff_audio(case: str) -> None:
    head, extension = CASES[case]
    detected = sniff(head[:512])
    assert detected.extension == extension
    assert detected.extension in EXTENSIONS


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"),
        (b"%PDF-1.7\n", "PDF"),
        (b"PK\x03\x04\x14\x00", "ZIP"),
        (b"hello, this is not a song\n" * 10, "text"),
        ("Grüße, kein Lied\n".encode(), "text"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "not WAVE"),
        (bytes(range(0, 256, 7)) * 4, "match no audio format"),
        (b"\xff\xff\xff\xff\xff\xff", "match no audio format"),
    ],
)
def test_sniff_refuses_with_a_reason(head: bytes, words: str) -> None:
    with pytest.raises(NotAudioError, match=words):
        sniff(head)


# Options --------------------------------------------------------------------------------------


MODELS = Catalog()


def _stems(request: catalogue.Options) -> list[str]:
    return catalogue.stems_of(request, MODELS)


def test_no_options_means_the_defaults() -> None:
    request = parse_request({})
    assert request == {}
    full = catalogue.effective(request, MODELS)
    assert (full["model"], full["format"], full["bitrate"]) == ("htdemucs", "mp3", 320)
    assert _stems(request) == ["vocals", "drums", "bass", "other"]


def test_options_parse() -> None:
    request = parse_request(
        {"model": "htdemucs_6s", "stems": "vocals, guitar", "format": "MP3", "bitrate": "192"}
    )
    assert request == {
        "model": "htdemucs_6s",
        "stems": ("vocals", "guitar"),
        "format": "mp3",
        "bitrate": 192,
    }
    two = parse_request({"two_stems": "vocals", "format": "wav", "bitrate": ""})
    assert _stems(two) == ["vocals", "no_vocals"]
    assert "bitrate" not in catalogue.effective(two, MODELS)
    assert _stems(parse_request({"model": "htdemucs_6s"}))[-2:] == ["guitar", "piano"]
    costly = parse_request({"shifts": "2", "overlap": "0.5", "format": "flac", "wav_depth": "24"})
    assert costly == {"shifts": 2, "overlap": 0.5, "format": "flac", "wav_depth": "24"}


def test_a_deployments_models_and_limits_apply() -> None:
    custom = Catalog((Model("tiny", ("vocals", "accompaniment")),), "tiny")
    assert _stems_of(parse_request({}, custom), custom) == ["vocals", "accompaniment"]
    assert parse_request({"stems": "accompaniment"}, custom) == {"stems": ("accompaniment",)}
    with pytest.raises(OptionError, match="not one of the models this deployment serves: tiny"):
        parse_request({"model": "htdemucs"}, custom)
    limits = catalogue.parse_limits('{"shifts": 2}')
    assert parse_request({"shifts": "2"}, None, limits) == {"shifts": 2}
    with pytest.raises(OptionError, match="more than this deployment allows"):
        parse_request({"shifts": "3"}, None, limits)


def _stems_of(request: catalogue.Options, models: Catalog) -> list[str]:
    return catalogue.stems_of(request, models)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"model": "spleeter"}, "model", "not one of"),
        ({"format": "ogg"}, "format", "not one of"),
        ({"bitrate": "fast"}, "bitrate", "whole number"),
        ({"bitrate": "100"}, "bitrate", "not one of"),
        ({"bitrate": "192", "format": "wav"}, "bitrate", "only with format mp3"),
        ({"stems": "vocals", "two_stems": "drums"}, "two_stems", "not both"),
        ({"stems": "guitar"}, "stems", "htdemucs_6s"),
        ({"two_stems": "piano", "model": "htdemucs_ft"}, "two_stems", "htdemucs_6s"),
        ({"stems": "vocals,vocals"}, "stems", "twice"),
        ({"stems": "vocals,kazoo"}, "stems", "not one of"),
        ({"stems": " , "}, "stems", "comma-separated"),
        ({"speed": "2"}, "speed", "unknown field"),
        ({"shifts": "11"}, "shifts", "between 0 and 10"),
        ({"overlap": "0.99"}, "overlap", "between 0 and 0.9"),
        ({"overlap": "nan"}, "overlap", "finite"),
        ({"wav_depth": "24"}, "wav_depth", "only with format wav or flac"),
        ({"wav_depth": "32f", "format": "flac"}, "wav_depth", "FLAC stores integers"),
    ],
)
def test_bad_options_name_the_field(fields: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(OptionError, match=words) as caught:
        parse_request(fields)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_a_field_alone_is_checked_on_arrival() -> None:
    check_field("stems", "guitar")  # fine alone: the model may come later
    with pytest.raises(OptionError, match="format"):
        check_field("format", "aiff")


# Status mapping and records -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "word"),
    [
        (None, "pending"),
        ("Pending", "pending"),
        ("Running", "processing"),
        ("Completed", "completed"),
        ("Failed", "failed"),
    ],
)
def test_status_words(phase: str | None, word: str) -> None:
    assert status_of(phase) == word


def cr(name: str = "j-1", created: str = "2026-11-24T10:00:00Z", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created, "resourceVersion": "7"},
        "spec": {
            "input": {"bucket": "b", "key": f"inputs/{name}/input.mp3", "filename": "My Song.mp3"},
            "output": {"bucket": "b", "key": f"results/{name}.zip"},
            "model": "htdemucs",
            "format": "mp3",
        },
        "status": status,
    }


def test_record_of_a_new_job() -> None:
    record = record_from_cr(cr())
    assert record.status == "pending"
    assert record.progress == 0
    assert record.filename == "My Song.mp3"
    assert record.created_at == datetime.datetime(2026, 11, 24, 10, tzinfo=datetime.UTC)
    assert record.stems == ["vocals", "drums", "bass", "other"]
    assert record.bitrate == 320
    assert record.error is None
    assert record.result_key == "results/j-1.zip"


def test_record_of_a_running_completed_and_failed_job() -> None:
    running = record_from_cr(cr(phase="Running", progress=42, startTime="2026-11-24T10:00:05Z"))
    assert (running.status, running.progress) == ("processing", 42)
    assert running.started_at is not None
    done = record_from_cr(
        cr(
            phase="Completed",
            progress=100,
            completionTime="2026-11-24T10:01:00Z",
            result={"bucket": "b", "key": "results/j-1.zip", "size": 1234, "stems": ["vocals"]},
        )
    )
    assert (done.status, done.result_size, done.stems) == ("completed", 1234, ["vocals"])
    failed = record_from_cr(cr(phase="Failed", reason="InvalidInput", message="not audio"))
    assert failed.status == "failed"
    assert failed.error == "not audio"
    assert failed.reason == "InvalidInput"


# Keys and names -------------------------------------------------------------------------------


def test_keys_come_from_the_job_id_only() -> None:
    job = "0b8f8a3e-6c9d-4d2a-9a57-3f8a9f8f1c11"
    assert input_key(job, "flac") == f"inputs/{job}/input.flac"
    assert result_key(job) == f"results/{job}.zip"
    with pytest.raises(ValueError, match="extension"):
        input_key(job, "mp3/../../etc")
    with pytest.raises(ValueError, match="job id"):
        input_key("../evil", "mp3")
    with pytest.raises(ValueError, match="job id"):
        result_key("Has Spaces")


def test_job_ids() -> None:
    assert valid_job_id("0b8f8a3e-6c9d-4d2a-9a57-3f8a9f8f1c11")
    assert valid_job_id("song-1")
    for bad in ("", "UPPER", "-x", "a/b", "a b", "x" * 254, "../x"):
        assert not valid_job_id(bad)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("song.mp3", "song.mp3"),
        ("C:\\Music\\song.mp3", "song.mp3"),
        ("../../etc/passwd", "passwd"),
        ("bad\x00name\n.wav", "badname.wav"),
        ("", "upload"),
        ("..", "upload"),
        (None, "upload"),
    ],
)
def test_clean_filename(raw: str | None, clean: str) -> None:
    assert clean_filename(raw) == clean


def test_clean_filename_keeps_a_long_names_extension() -> None:
    cleaned = clean_filename("a" * 300 + ".flac")
    assert len(cleaned) == 255
    assert cleaned.endswith(".flac")


def test_download_names() -> None:
    assert zip_download_name("song.mp3") == "song_stems.zip"
    assert zip_download_name("my.song.flac") == "my.song_stems.zip"
    assert zip_download_name("noext") == "noext_stems.zip"
    assert stem_download_name("song.mp3", "vocals", "wav") == "song_vocals.wav"


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("song_stems.zip", 'attachment; filename="song_stems.zip"'),
        (
            "Beyoncé_stems.zip",
            "attachment; filename=\"Beyonce_stems.zip\"; filename*=UTF-8''Beyonc%C3%A9_stems.zip",
        ),
        (
            'a"b;c_stems.zip',
            "attachment; filename=\"a_b_c_stems.zip\"; filename*=UTF-8''a%22b%3Bc_stems.zip",
        ),
        (
            "日本_stems.zip",
            "attachment; filename=\"_stems.zip\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC_stems.zip",
        ),
    ],
)
def test_content_disposition(name: str, header: str) -> None:
    assert content_disposition(name) == header


# Pagination -----------------------------------------------------------------------------------


def _records() -> list[JobRecord]:
    out = []
    for i in range(7):
        status = {"phase": "Completed"} if i % 2 else {}
        out.append(record_from_cr(cr(f"job-{i}", f"2026-11-24T10:00:0{i}Z", **status)))
    out.append(record_from_cr(cr("job-7b", "2026-11-24T10:00:06Z")))  # same second as job-6
    return out


def test_list_is_newest_first_and_pages_through() -> None:
    records = _records()
    whole = paginate(records)
    assert [r.job_id for r in whole.jobs] == [
        "job-7b",
        "job-6",
        "job-5",
        "job-4",
        "job-3",
        "job-2",
        "job-1",
        "job-0",
    ]
    assert whole.next_cursor is None
    seen: list[str] = []
    cursor = None
    while True:
        page = paginate(records, limit=3, cursor=cursor)
        seen += [r.job_id for r in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [r.job_id for r in whole.jobs]
    completed = paginate(records, status="completed")
    assert [r.job_id for r in completed.jobs] == ["job-5", "job-3", "job-1"]


def test_a_bad_cursor_is_refused() -> None:
    with pytest.raises(BadCursorError, match="cursor"):
        paginate(_records(), cursor="not-a-cursor")


def test_the_apis_precise_stamp_orders_jobs_of_one_second() -> None:
    first = cr("zzz", "2026-11-24T10:00:00Z")
    second = cr("aaa", "2026-11-24T10:00:00Z")
    first["metadata"]["annotations"] = {"stemkube.io/created-at": "2026-11-24T10:00:00.100000Z"}
    second["metadata"]["annotations"] = {"stemkube.io/created-at": "2026-11-24T10:00:00.200000Z"}
    records = [record_from_cr(first), record_from_cr(second)]
    assert [r.job_id for r in paginate(records).jobs] == ["aaa", "zzz"]
    page = paginate(records, limit=1)
    assert page.next_cursor is not None
    assert [r.job_id for r in paginate(records, limit=1, cursor=page.next_cursor).jobs] == ["zzz"]
    # Mixed with jobs that have only creationTimestamp (made by kubectl, say).
    records.append(record_from_cr(cr("kubectl-made", "2026-11-24T10:00:01Z")))
    assert [r.job_id for r in paginate(records).jobs] == ["kubectl-made", "aaa", "zzz"]
