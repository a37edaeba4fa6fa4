"""Every refusal of the REST API, with its status code and message, in both modes (the
``service`` fixture, with an API key): nothing refused leaves a job or an object behind. The
refusals of keys and tenants are test_api_auth.py's."""

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.harness.api import MB, mp3_song, post_generated_wav, wav_of
from tests.harness.audio import sine_wav
from tests.harness.service import Service
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration


def test_refusals_leave_nothing_behind(service: Service, tmp_path: Path) -> None:
    api = service.start_api(keyed=True, MAX_FILE_SIZE="10MB")
    song = mp3_song(0.5)
    with api.client() as http:
        # 415: not audio, whatever the name says.
        for name, data, words in (
            ("cover.mp3", b"\x89PNG\r\n\x1a\n" + b"\x00" * 4096, "PNG image"),
            ("notes.wav", b"la la la, this is a lyric sheet\n" * 50, "text"),
            ("empty.mp3", b"", "empty"),
        ):
            response = http.post("/upload", files={"file": (name, data)})
            assert response.status_code == 415, response.text
            detail = response.json()["detail"]
            assert name in detail
            assert words in detail

        # 422: a bad option names its field.
        for fields, field, words in (
            ({"bitrate": "192", "format": "wav"}, "bitrate", "only with format mp3"),
            ({"stems": "guitar"}, "stems", "htdemucs_6s"),
            ({"stems": "vocals", "two_stems": "vocals"}, "two_stems", "not both"),
            ({"model": "spleeter"}, "model", "not one of"),
            ({"format": "ogg"}, "format", "not one of"),
        ):
            response = http.post("/upload", files={"file": ("a.mp3", song)}, data=fields)
            assert response.status_code == 422, response.text
            assert response.json()["detail"].startswith(f"{field}: ")
            assert words in response.json()["detail"]
        response = http.post("/upload", data={"model": "htdemucs"})
        assert response.status_code == 422
        assert response.json()["detail"].startswith("file: ")

        # 413: past MAX_FILE_SIZE, and past the first part (so a multipart upload or a partial
        # file was begun and had to be aborted). The control shows the check sees those.
        abort = service.begin_upload("inputs/control/input.wav")
        assert len(service.incomplete_uploads()) == 1
        abort()
        response = post_generated_wav(http, "big.wav", 12 * MB)
        assert response.status_code == 413, response.text
        assert "the limit is 10MB (10485760 bytes)" in response.json()["detail"]
        assert service.incomplete_uploads() == []

        # 404: unknown ids.
        unknown = str(uuid.uuid4())
        for method, path in (
            ("GET", f"/status/{unknown}"),
            ("GET", f"/download/{unknown}"),
            ("GET", f"/download/{unknown}/vocals"),
            ("DELETE", f"/job/{unknown}"),
            ("GET", "/status/Not_A_Name"),
        ):
            response = http.request(method, path)
            assert response.status_code == 404, (method, path)
            assert "not found" in response.json()["detail"]

    assert service.objects() == []
    assert service.job_ids() == []

    # curl, as a user would, with files on disk: a far-too-large file is refused before it is
    # sent (curl asks "Expect: 100-continue"), a little-too-large one after.
    huge = tmp_path / "huge.wav"
    with huge.open("wb") as out:
        out.write(sine_wav(0.001))
        out.truncate(200 * MB)  # sparse: costs no disk
    little = tmp_path / "little.wav"
    little.write_bytes(b"".join(wav_of(10 * MB + 1)))
    for too_big in (huge, little):
        key = [f"-H{name}: {value}" for name, value in api.auth_headers.items()]
        result = subprocess.run(
            ["curl", "-sS", *key, "-F", f"file=@{too_big}", f"{api.url}/upload"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "the limit is 10MB" in result.stdout, result.stdout
    assert service.objects() == []

    # 409: a job that is not finished (a long song: it is still pending or processing).
    with api.client() as http:
        job_id = http.post("/upload", files={"file": ("a.wav", sine_wav(30.0))}).json()["job_id"]
        response = http.get(f"/download/{job_id}")
        assert response.status_code == 409
        detail = response.json()["detail"]
        assert detail.startswith(f"job {job_id} is "), detail
        assert "download it when its status is completed" in detail
        assert http.get(f"/download/{job_id}/vocals").status_code == 409
        # Deleting an unfinished job removes its file.
        assert http.delete(f"/job/{job_id}").status_code == 200
    wait_for(lambda: service.objects() == [], 30, "the input removed")


def test_oversized_headers_are_refused_and_the_server_goes_on(service: Service) -> None:
    """A request's URL and headers are bounded (``web.MAX_TARGET_BYTES``, ``MAX_HEADER_BYTES``):
    past them a 414 or 431 that says so, with the security headers, before the key is even
    looked at; the next request is served."""
    api = service.start_api(keyed=True)
    with api.client() as http:
        big = http.get("/jobs", headers={"X-Padding": "x" * (20 * 1024)})
        assert big.status_code == 431, big.text
        assert big.json()["detail"].endswith("bytes; at most 16384")
        assert big.headers["x-content-type-options"] == "nosniff"
        assert http.get("/jobs").status_code == 200
        long_url = http.get("/status/" + "a" * (9 * 1024))
        assert long_url.status_code == 414, long_url.text
        assert http.get("/healthz").status_code == 200


def test_a_failed_job_reports_its_error(service: Service) -> None:
    api = service.start_api(keyed=True)
    # Sniffs as WAV, but is not one: the separator refuses it and the job fails for good.
    broken = b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(4000)
    with api.client() as http:
        job_id = http.post("/upload", files={"file": ("broken.wav", broken)}).json()["job_id"]
        status = wait_for(
            lambda: (s := http.get(f"/status/{job_id}").json())["status"] == "failed" and s,
            120,
            "the job fails",
        )
        assert status["reason"] == "InvalidInput"
        assert status["error"]
        response = http.get(f"/download/{job_id}")
        assert response.status_code == 409
        assert response.json()["detail"] == f"job {job_id} failed: {status['error']}"


def test_a_1gb_upload_is_stored_whole_with_flat_memory(service: Service) -> None:
    api = service.start_api(MAX_FILE_SIZE="2GB")
    with api.client() as http:
        http.get("/jobs")  # the routes and the job backend are warm before the baseline
        before = api.peak_rss_mib()
        size = 1024 * MB
        started = time.monotonic()
        # Generous: two shared cores move a GiB through three processes.
        response = post_generated_wav(http, "long.wav", size, timeout=300)
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        after = api.peak_rss_mib()
        key = f"inputs/{job_id}/input.wav"
        assert service.object_head(key, 4) == (size, b"RIFF")
        # Half an hour of silence is not what this test is for.
        assert http.delete(f"/job/{job_id}").status_code == 200
    print(
        f"1 GiB upload in {elapsed:.1f} s ({size / MB / elapsed:.0f} MB/s); API peak RSS "
        f"{before:.1f} -> {after:.1f} MiB"
    )
    # What is in flight does not depend on the size: one S3 part (8 MiB for a 2GB limit) or one
    # file write, one write batch (1 MiB) and the HTTP buffers. A leak proportional to the size
    # would show as hundreds of MiB.
    assert after - before < 48, f"peak RSS grew from {before:.0f} to {after:.0f} MiB"
