"""Direct uploads (``POST /uploads``, the parts PUT by the client, ``/complete``) end to end in
both modes (the ``service`` fixture): Kubernetes mode's part URLs are MinIO's presigned
UploadPart URLs, local mode's the API's own signed ``PUT /uploads/{id}/parts/{n}``; the test
client PUTs to whichever it is given, with no API key, as any client does. A small part size
(S3's least, 5 MiB) is forced so that a song of a few MB has two parts."""

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.api import HARNESS_TENANT, ApiServer, mp3_song
from tests.harness.audio import sine_wav
from tests.harness.service import KubernetesService, Service
from tests.harness.waiting import wait_for
from tests.integration.test_api_client import stemkube
from tests.integration.test_api_url_jobs import FOUR, wait_done

pytestmark = pytest.mark.integration


MiB = 1024 * 1024
SONG = mp3_song(1.0)


@pytest.fixture(scope="module")
def song() -> bytes:
    """33 s of stereo 44.1 kHz WAV: about 5.6 MiB, two parts of 5 MiB."""
    return sine_wav(33)


def begin(api: ApiServer, filename: str, size: int, **options: Any) -> dict[str, Any]:
    with api.client() as http:
        answer = http.post(
            "/uploads", json={"filename": filename, "size": size, "options": options}
        )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def put_parts(upload: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    """PUTs the parts as a client does: no API key, the URL is the authorization."""
    done = []
    size = upload["part_size"]
    for part in upload["parts"]:
        chunk = data[(part["number"] - 1) * size : part["number"] * size]
        answer = httpx.put(part["url"], content=chunk, timeout=60)
        assert answer.status_code == 200, answer.text
        done.append({"number": part["number"], "etag": answer.headers["etag"]})
    return done


def complete(api: ApiServer, upload_id: str, parts: list[dict[str, Any]]) -> httpx.Response:
    with api.client() as http:
        return http.post(f"/uploads/{upload_id}/complete", json={"parts": parts})


def leftovers(service: Service) -> list[str]:
    """What a direct upload may leave: an input, a record, parts begun."""
    stored = [k for k in service.objects() if "inputs/" in k or k.startswith("uploads/")]
    return stored + service.incomplete_uploads()


def test_a_direct_upload_completes_with_four_stems(service: Service, song: bytes) -> None:
    api = service.start_api(keyed=True, STEMKUBE_UPLOAD_PART_SIZE="5MiB")
    upload = begin(api, "song.wav", len(song), format="mp3")
    assert upload["part_size"] == 5 * MiB
    assert [p["number"] for p in upload["parts"]] == [1, 2]
    parts = put_parts(upload, song)
    # The object is not there before /complete; its record is.
    assert not [k for k in service.objects() if "inputs/" in k]
    answer = complete(api, upload["upload_id"], parts)
    assert answer.status_code == 200, answer.text
    created = answer.json()
    assert created["job_id"] == upload["upload_id"]
    assert created["filename"] == "song.wav"
    assert created["source"] == {"upload_id": upload["upload_id"]}
    # Completing again answers the same job.
    again = complete(api, upload["upload_id"], parts)
    assert again.status_code == 200, again.text
    assert again.json()["job_id"] == created["job_id"]
    assert again.headers.get("idempotent-replayed") == "true"
    status = wait_done(api, created["job_id"])
    assert status["status"] == "completed", status
    download = api.get(f"/download/{created['job_id']}")
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        assert sorted(zf.namelist()) == FOUR
    # The input is the job's (under the tenant's prefix); no record, no parts left.
    assert not [k for k in service.objects() if k.startswith("uploads/")]
    assert service.incomplete_uploads() == []
    assert 'route="/upload",' not in api.metrics()


def test_a_size_other_than_declared_is_a_422_and_nothing_is_left(
    service: Service, song: bytes
) -> None:
    api = service.start_api(keyed=True, STEMKUBE_UPLOAD_PART_SIZE="5MiB")
    upload = begin(api, "song.wav", len(song) + 1000)
    parts = put_parts(upload, song)
    answer = complete(api, upload["upload_id"], parts)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(f"size: the parts hold {len(song)} bytes")
    assert leftovers(service) == []
    assert service.job_ids() == []
    assert complete(api, upload["upload_id"], parts).status_code == 404


def test_not_audio_is_a_415_and_nothing_is_left(service: Service) -> None:
    api = service.start_api(keyed=True, STEMKUBE_UPLOAD_PART_SIZE="5MiB")
    data = b"%PDF-1.7\n" + b"\x00" * 100_000
    upload = begin(api, "song.mp3", len(data))
    answer = complete(api, upload["upload_id"], put_parts(upload, data))
    assert answer.status_code == 415, answer.text
    assert "a PDF document" in answer.json()["detail"]
    assert leftovers(service) == []
    assert service.job_ids() == []


def test_another_tenants_upload_is_not_found(service: Service, song: bytes) -> None:
    api = service.start_api(keyed=True, STEMKUBE_UPLOAD_PART_SIZE="5MiB")
    upload = begin(api, "song.wav", len(song))
    parts = put_parts(upload, song)
    other = api.as_key(service.create_key("other", f"not-{HARNESS_TENANT}"))
    with other.client() as http:
        assert (
            http.post(f"/uploads/{upload['upload_id']}/complete", json={"parts": parts}).status_code
            == 404
        )
        assert http.delete(f"/uploads/{upload['upload_id']}").status_code == 404
    # The owner may still abort it: then nothing is left.
    with api.client() as http:
        assert http.delete(f"/uploads/{upload['upload_id']}").status_code == 204
    assert leftovers(service) == []
    assert service.job_ids() == []


def test_a_file_over_the_limit_is_refused_before_any_upload(service: Service) -> None:
    api = service.start_api(keyed=True, MAX_FILE_SIZE="1MB")
    with api.client() as http:
        answer = http.post("/uploads", json={"filename": "big.wav", "size": 2_000_000})
    assert answer.status_code == 413, answer.text
    assert leftovers(service) == []


def test_an_expired_upload_is_aborted_and_removed(service: Service, song: bytes) -> None:
    api = service.start_api(
        keyed=True,
        STEMKUBE_UPLOAD_EXPIRY_SECONDS="3",
        STEMKUBE_UPLOAD_SWEEP_SECONDS="0.5",
        STEMKUBE_UPLOAD_PART_SIZE="5MiB",
    )
    upload = begin(api, "song.wav", len(song))
    parts = put_parts(upload, song)[:1]  # one part of two, then the client goes away
    assert service.incomplete_uploads() != []
    wait_for(lambda: leftovers(service) == [], 30, "the expired upload is removed", interval=0.3)
    assert complete(api, upload["upload_id"], parts).status_code == 404


def test_the_client_uses_direct_upload_above_its_threshold(
    service: Service, song: bytes, tmp_path: Path
) -> None:
    api = service.start_api(keyed=True, STEMKUBE_UPLOAD_PART_SIZE="5MiB")
    path = tmp_path / "song.wav"
    path.write_bytes(song)
    result = stemkube(
        "separate",
        str(path),
        "--direct-upload-threshold=1MiB",
        "--poll-interval=0.3",
        api=api,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(zipfile.ZipFile(tmp_path / "song_stems.zip").namelist()) == FOUR
    metrics = api.metrics()
    assert 'route="/uploads/{upload_id}/complete"' in metrics
    assert 'route="/upload",' not in metrics
    assert service.incomplete_uploads() == []


def test_jobs_from_a_completed_upload_and_from_a_stored_object(service: Service) -> None:
    """The other sources of ``POST /jobs``: a direct upload completed without its job (both
    modes), and an object already in the bucket (Kubernetes mode; a 422 in local mode), which
    must lie under the caller's own prefix, exist and be audio, and outlives its job."""
    api = service.start_api(keyed=True)
    upload = begin(api, "live.mp3", len(SONG))
    upload_id = upload["upload_id"]
    with api.client() as http:
        ready = http.post(
            f"/uploads/{upload_id}/complete",
            json={"parts": put_parts(upload, SONG), "create_job": False},
        )
        assert ready.status_code == 200, ready.text
        made = http.post("/jobs", json={"source": {"upload_id": upload_id}})
        assert made.status_code == 200, made.text
        assert made.json()["job_id"] == upload_id
        again = http.post("/jobs", json={"source": {"upload_id": upload_id}})
        assert again.status_code == 422, again.text  # one upload, one job
        assert "waits for its job" in again.json()["detail"]

        if not isinstance(service, KubernetesService):
            local = http.post("/jobs", json={"source": {"s3": "s3://stemkube/a/song.mp3"}})
            assert local.status_code == 422, local.text
            assert "Kubernetes mode only" in local.json()["detail"]
            assert wait_done(api, upload_id)["status"] == "completed"
            return

        s3, bucket = service.s3, service.bucket
        home = f"tenants/{HARNESS_TENANT}/library/"  # the harness runs unconfined: no root
        for key, data in (
            (f"{home}song.mp3", SONG),
            (f"{home}notes.txt", b"not a song\n" * 100),
            ("tenants/someone-else/library/song.mp3", SONG),
        ):
            s3.put_object(bucket, key, io.BytesIO(data), len(data))
        for uri, code, words in (
            (f"s3://{bucket}/tenants/someone-else/library/song.mp3", 403, "not yours to read"),
            (f"s3://other-bucket/{home}song.mp3", 403, f"s3://{bucket}/tenants/{HARNESS_TENANT}/"),
            (f"s3://{bucket}/{home}notes.txt", 415, "not an audio file"),
            (f"s3://{bucket}/{home}missing.mp3", 422, "no object"),
            (f"s3://{bucket}/{home}../x.mp3", 422, "plain segments"),
            (f"{bucket}/{home}song.mp3", 422, "expected s3://BUCKET/KEY"),
        ):
            refused = http.post("/jobs", json={"source": {"s3": uri}})
            assert refused.status_code == code, (uri, refused.text)
            assert words in refused.json()["detail"], (uri, refused.text)
        stored = http.post("/jobs", json={"source": {"s3": f"s3://{bucket}/{home}song.mp3"}})
        assert stored.status_code == 200, stored.text
        assert stored.json()["source"] == {"s3": f"s3://{bucket}/{home}song.mp3"}
        assert stored.json()["filename"] == "song.mp3"
        job_id = stored.json()["job_id"]
        assert wait_done(api, job_id)["status"] == "completed"
        archive = http.get(f"/download/{job_id}")
        assert sorted(zipfile.ZipFile(io.BytesIO(archive.content)).namelist()) == FOUR
        assert http.delete(f"/job/{job_id}").status_code == 200
    wait_for(lambda: job_id not in service.job_ids(), 30, "the job and its result gone")
    # The caller's object was read where it is and is not the job's to remove.
    assert f"{home}song.mp3" in service.objects()
    assert not [k for k in service.objects() if job_id in k]


def test_a_start_aborts_what_a_killed_upload_left(service: Service) -> None:
    """A process killed mid-upload leaves an incomplete multipart upload (S3) or a partial
    file (local): the next start removes it (local: every partial file; S3: what is older than
    twice a direct upload's expiry, at start and every sweep, under the API's prefixes only)."""
    service.begin_upload("inputs/crashed/input.mp3")
    elsewhere = "other-app/video.mp4"  # not the API's: a shared bucket's other uploads stay
    if isinstance(service, KubernetesService):
        service.begin_upload(elsewhere)
    assert len(service.incomplete_uploads()) == (2 if isinstance(service, KubernetesService) else 1)
    time.sleep(1.5)  # older than twice the expiry below
    service.start_api(STEMKUBE_UPLOAD_EXPIRY_SECONDS="0.5", STEMKUBE_UPLOAD_SWEEP_SECONDS="0.5")
    left = [elsewhere] if isinstance(service, KubernetesService) else []
    wait_for(lambda: service.incomplete_uploads() == left, 15, "the stale upload removed")
