"""Every refusal of the REST API, with its status code and message, against the real control
plane and MinIO: nothing refused leaves a job or an object behind."""

import io
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client
from minio import Minio

from tests.harness.api import ApiFactory, mp3_song
from tests.harness.audio import sine_wav
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.stemkube import GROUP, PLURAL, VERSION, OperatorFactory
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def objects(s3: Minio, bucket: str) -> list[str]:
    return sorted(o.object_name for o in s3.list_objects(bucket, recursive=True))


def incomplete_uploads(s3: Minio, bucket: str) -> list[str]:
    result = s3._list_multipart_uploads(bucket)
    return [upload.object_name for upload in result.uploads]


def separation_jobs(cluster: Cluster, namespace: str) -> list[str]:
    listed = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )
    return [item["metadata"]["name"] for item in listed["items"]]


def wav_of(size: int) -> Iterator[bytes]:
    """A WAV header then zeros, ``size`` bytes in all, generated as it is sent."""
    head = sine_wav(0.001)
    yield head
    left = size - len(head)
    block = b"\x00" * MB
    while left > 0:
        yield block[: min(left, MB)]
        left -= MB


def test_refusals_leave_nothing_behind(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_api: ApiFactory,
    tmp_path: Path,
) -> None:
    # No operator: a job stays pending, which is what the 409 below needs.
    api = start_api(MAX_FILE_SIZE="10MB")
    s3 = minio_server.client()
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

        # 413: past MAX_FILE_SIZE, and past the first part (so a multipart upload was begun and
        # had to be aborted). The control shows MinIO lists incomplete uploads.
        control = s3._create_multipart_upload(bucket, "inputs/control/input.wav", {})
        assert incomplete_uploads(s3, bucket) == ["inputs/control/input.wav"]
        s3._abort_multipart_upload(bucket, "inputs/control/input.wav", control)
        response = http.post(
            "/upload",
            content=multipart_stream("big.wav", wav_of(12 * MB)),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        assert response.status_code == 413, response.text
        assert "the limit is 10MB (10485760 bytes)" in response.json()["detail"]
        assert incomplete_uploads(s3, bucket) == []

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

    assert objects(s3, bucket) == []
    assert separation_jobs(cluster, stemkube_namespace) == []

    # curl, as a user would, with files on disk: a far-too-large file is refused before it is
    # sent (curl asks "Expect: 100-continue"), a little-too-large one after.
    huge = tmp_path / "huge.wav"
    with huge.open("wb") as out:
        out.write(sine_wav(0.001))
        out.truncate(200 * MB)  # sparse: costs no disk
    little = tmp_path / "little.wav"
    little.write_bytes(b"".join(wav_of(10 * MB + 1)))
    for too_big in (huge, little):
        result = subprocess.run(
            ["curl", "-sS", "-F", f"file=@{too_big}", f"{api.url}/upload"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "the limit is 10MB" in result.stdout, result.stdout
    assert objects(s3, bucket) == []

    # 409: a job that is not finished.
    with api.client() as http:
        job_id = http.post("/upload", files={"file": ("a.mp3", song)}).json()["job_id"]
        response = http.get(f"/download/{job_id}")
        assert response.status_code == 409
        assert f"job {job_id} is pending" in response.json()["detail"]
        assert http.get(f"/download/{job_id}/vocals").status_code == 409
        # Deleting a job the operator never saw still removes its file.
        assert http.delete(f"/job/{job_id}").status_code == 200
    wait_for(lambda: objects(s3, bucket) == [], 30, "the input removed")


BOUNDARY = "stemkube-test-boundary"


def multipart_stream(filename: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    yield from chunks
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def test_a_failed_job_reports_its_error(
    stemkube_namespace: str,
    start_operator: OperatorFactory,
    start_api: ApiFactory,
) -> None:
    start_operator()
    api = start_api()
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


def test_an_upload_streams_with_flat_memory(
    minio_server: MinioServer, bucket: str, start_api: ApiFactory
) -> None:
    api = start_api(MAX_FILE_SIZE="1GB")
    s3 = minio_server.client()

    def peak_rss_mb() -> float:
        status = Path(f"/proc/{api.process.popen.pid}/status").read_text()
        [line] = [x for x in status.splitlines() if x.startswith("VmHWM:")]
        return int(line.split()[1]) / 1024

    with api.client() as http:
        http.get("/jobs")
        before = peak_rss_mb()
        size = 300 * MB
        response = http.post(
            "/upload",
            content=multipart_stream("long.wav", wav_of(size)),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            timeout=httpx.Timeout(120),
        )
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
    after = peak_rss_mb()
    assert s3.stat_object(bucket, f"inputs/{job_id}/input.wav").size == size
    # One part (8 MiB) and one write batch (1 MiB) in flight, plus the HTTP buffers.
    assert after - before < 48, f"peak RSS grew from {before:.0f} to {after:.0f} MiB"
    stored = io.BytesIO(s3.get_object(bucket, f"inputs/{job_id}/input.wav", 0, 64).read())
    assert stored.read(4) == b"RIFF"
