"""The REST API end to end, in both modes (the ``service`` fixture), with an API key as a
deployment requires: the README's curl flow, each option and cancellation, with the real
separator (tiny model) behind it. Kubernetes mode has the real control plane, MinIO and
operator process; local mode its own worker processes."""

import io
import json
import re
import shlex
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from stemkube_contract.keys import input_key, result_key
from tests.harness.api import HARNESS_TENANT, ApiServer, mp3_song
from tests.harness.audio import sine_wav
from tests.harness.custom_model import CUSTOM_MODEL, CUSTOM_SOURCES
from tests.harness.service import Service
from tests.harness.tools import REPO_ROOT
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

FOUR = ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]


def readme_curl_flow() -> list[str]:
    """The curl commands of api/README.md's flow, as written there."""
    text = (REPO_ROOT / "api" / "README.md").read_text()
    block = text.split("<!-- curl-flow", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def curl(command: str, api: ApiServer, cwd: Path, job_id: str | None = None) -> str:
    """A README command against ``api``, with its key (``-H``) when it has one."""
    command = command.replace("http://localhost:8000", api.url)
    if job_id:
        command = command.replace("JOB_ID", job_id)
    argv = shlex.split(command)
    for name, value in api.auth_headers.items():
        argv[1:1] = ["-H", f"{name}: {value}"]
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result.stdout


def wait_done(api: ApiServer, job_id: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status: dict[str, Any] = api.get(f"/status/{job_id}").json()
        return status if status["status"] in ("completed", "failed") else None

    return wait_for(done, timeout, f"job {job_id} finishes", interval=0.3)


def test_the_readme_curl_flow_end_to_end(service: Service, tmp_path: Path) -> None:
    run_the_readme_curl_flow(service, service.start_api(keyed=True), tmp_path, HARNESS_TENANT)


def run_the_readme_curl_flow(
    service: Service, api: ApiServer, tmp_path: Path, tenant: str | None
) -> None:
    """The README's commands against ``api``: its jobs are ``tenant``'s (None: no tenant, an
    open service)."""
    (tmp_path / "song.mp3").write_bytes(mp3_song(1.5))
    upload_cmd, status_cmd, download_cmd, jobs_cmd, delete_cmd = readme_curl_flow()

    created = json.loads(curl(upload_cmd, api, tmp_path))
    assert set(created) == {"job_id", "status", "filename", "created_at"}
    assert created["status"] == "pending"
    assert created["filename"] == "song.mp3"
    job_id = created["job_id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", job_id)
    # Keys come from the job id and the tenant, never the file's name.
    stored, result = input_key(job_id, "mp3", tenant), result_key(job_id, tenant)
    assert service.objects() in ([stored], sorted([stored, result]))  # or already done
    assert service.job_ids() == [job_id]

    first = json.loads(curl(status_cmd, api, tmp_path, job_id))
    assert first["status"] in ("pending", "processing")
    seen = [first["status"]]

    def completed() -> dict[str, Any] | None:
        status: dict[str, Any] = json.loads(curl(status_cmd, api, tmp_path, job_id))
        seen.append(status["status"])
        return status if status["status"] in ("completed", "failed") else None

    final = wait_for(completed, 120, "the job completes", interval=0.3)
    assert final["status"] == "completed", final
    assert final["progress"] == 100
    assert final["error"] is None
    assert final["started_at"]
    assert final["completed_at"]
    assert final["started_at"] <= final["completed_at"]
    assert final["stems"] == ["vocals", "drums", "bass", "other"]
    assert (final["model"], final["format"]) == ("htdemucs", "mp3")
    assert "processing" in seen or "pending" in seen

    curl(download_cmd, api, tmp_path, job_id)
    saved = tmp_path / "song_stems.zip"
    assert saved.is_file(), sorted(p.name for p in tmp_path.iterdir())
    assert sorted(zipfile.ZipFile(saved).namelist()) == FOUR
    assert final["size"] == saved.stat().st_size

    listed = json.loads(curl(jobs_cmd, api, tmp_path))
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]
    assert listed["jobs"][0]["status"] == "completed"

    deleted = json.loads(curl(delete_cmd, api, tmp_path, job_id))
    assert deleted["deleted"] is True
    assert api.get(f"/status/{job_id}").status_code == 404
    wait_for(lambda: service.job_ids() == [], 60, "the job deleted")
    wait_for(lambda: service.objects() == [], 30, "objects deleted")
    assert json.loads(curl(jobs_cmd, api, tmp_path))["jobs"] == []


def test_options_two_stems_wav_and_six_stems_flac(service: Service) -> None:
    api = service.start_api(keyed=True)
    song = mp3_song(1.0)
    with api.client() as http:
        karaoke = http.post(
            "/upload",
            files={"file": ("Café song.mp3", song)},
            data={"two_stems": "vocals", "format": "wav"},
        ).json()
        six = http.post(
            "/upload",
            files={"file": ("band.mp3", song)},
            data={"model": "htdemucs_6s", "stems": "guitar,piano", "format": "flac"},
        ).json()
        low = http.post(
            "/upload", files={"file": ("low.mp3", song)}, data={"format": "mp3", "bitrate": "64"}
        ).json()

        for job, members in (
            (karaoke, ["no_vocals.wav", "vocals.wav"]),
            (six, ["guitar.flac", "piano.flac"]),
            (low, FOUR),
        ):
            status = wait_done(api, job["job_id"])
            assert status["status"] == "completed", status
            response = http.get(f"/download/{job['job_id']}")
            assert response.status_code == 200
            assert sorted(zipfile.ZipFile(io.BytesIO(response.content)).namelist()) == members

        status = http.get(f"/status/{karaoke['job_id']}").json()
        assert (status["format"], status["two_stems"], status["bitrate"]) == ("wav", "vocals", None)
        assert status["stems"] == ["vocals", "no_vocals"]
        response = http.get(f"/download/{karaoke['job_id']}")
        assert response.headers["content-disposition"] == (
            'attachment; filename="Cafe song_stems.zip"; '
            "filename*=UTF-8''Caf%C3%A9%20song_stems.zip"
        )
        # One stem, read out of the ZIP in storage.
        vocals = http.get(f"/download/{karaoke['job_id']}/vocals")
        assert vocals.status_code == 200
        assert vocals.headers["content-type"] == "audio/wav"
        assert vocals.content[:4] == b"RIFF"
        assert vocals.content[8:12] == b"WAVE"
        archive = zipfile.ZipFile(io.BytesIO(response.content))
        assert vocals.content == archive.read("vocals.wav")
        missing = http.get(f"/download/{karaoke['job_id']}/drums")
        assert missing.status_code == 404
        assert "vocals, no_vocals" in missing.json()["detail"]
        guitar = http.get(f"/download/{six['job_id']}/guitar")
        assert guitar.content[:4] == b"fLaC"
        assert http.get(f"/status/{low['job_id']}").json()["bitrate"] == 64
        # Newest first.
        listed = [j["job_id"] for j in http.get("/jobs").json()["jobs"]]
        assert listed == [low["job_id"], six["job_id"], karaoke["job_id"]]


def test_deleting_a_processing_job_cancels_it(service: Service) -> None:
    api = service.start_api(keyed=True)
    with api.client() as http:
        job_id = http.post("/upload", files={"file": ("long.wav", sine_wav(30.0))}).json()["job_id"]
        wait_for(
            lambda: http.get(f"/status/{job_id}").json()["status"] == "processing",
            60,
            "the job runs",
            interval=0.1,
        )
        wait_for(lambda: service.separating(job_id), 30, "its separator runs")
        deleted = http.delete(f"/job/{job_id}")
        assert deleted.status_code == 200
        assert deleted.json()["message"] == f"job {job_id} cancelled and deleted"
        assert http.get(f"/status/{job_id}").status_code == 404
        assert http.get("/jobs").json()["jobs"] == []
    wait_for(lambda: service.job_ids() == [], 60, "the job deleted")
    wait_for(lambda: not service.separating(job_id), 60, "its separator stopped")
    wait_for(lambda: service.objects() == [], 30, "objects deleted")


def test_health_readiness_and_metrics(service: Service) -> None:
    api = service.start_api(keyed=True)
    with api.client() as http:
        ready = http.get("/readyz")
        assert ready.status_code == 200
        # Keys are checked where they are required from the start (Kubernetes mode: the
        # Secrets' watch); local mode on loopback is open until its first key.
        keys = {"keys": "ok"} if service.kind == "kubernetes" else {}
        assert ready.json() == {
            "status": "ready",
            "checks": {service.kind: "ok", "storage": "ok", **keys},
        }
        assert http.get("/healthz").status_code == 200
        assert http.get("/").json()["service"] == "stemkube"
        http.post("/upload", files={"file": ("a.mp3", mp3_song(0.3))})
        http.post("/upload", files={"file": ("a.txt", b"words " * 100)})
        http.get("/status/0b8f8a3e-6c9d-4d2a-9a57-3f8a9f8f1c11")
        # Not on the API's port, which an ingress routes: on their own.
        assert http.get("/metrics").status_code == 404
        text = api.metrics()
    assert 'stemkube_api_requests_total{method="POST",route="/upload",status="200"} 1.0' in text
    assert 'stemkube_api_requests_total{method="POST",route="/upload",status="415"} 1.0' in text
    assert (
        'stemkube_api_requests_total{method="GET",route="/status/{job_id}",status="404"} 1.0'
        in text
    )
    assert 'stemkube_api_request_duration_seconds_count{method="POST",route="/upload"} 2.0' in text
    assert "stemkube_api_jobs_created_total 1.0" in text
    assert "stemkube_api_upload_bytes_total" in text
    assert 'stemkube_api_uploads_rejected_total{reason="not_audio"} 1.0' in text


def test_a_custom_model_through_rest(service: Service) -> None:
    """A model of the deployment's own (local mode: found in --model-repo; Kubernetes mode:
    declared like the chart's `models` value): listed by GET /models with its stems, chosen by
    an upload, separated into its own stems."""
    api = service.start_api(keyed=True)
    listed = api.get("/models").json()
    assert listed["default"] == "htdemucs"
    [mine] = [m for m in listed["models"] if m["name"] == CUSTOM_MODEL]
    assert mine["stems"] == list(CUSTOM_SOURCES)
    with api.client() as http:
        refused = http.post(
            "/upload",
            files={"file": ("song.mp3", mp3_song(1.0))},
            data={"model": CUSTOM_MODEL, "stems": "drums"},
        )
        assert refused.status_code == 422
        assert f"'drums' is not one of model {CUSTOM_MODEL}'s stems" in refused.json()["detail"]
        job = http.post(
            "/upload",
            files={"file": ("song.mp3", mp3_song(1.0))},
            data={"model": CUSTOM_MODEL, "shifts": "0", "overlap": "0.5", "segment": "2"},
        ).json()
        status = wait_done(api, job["job_id"])
        assert status["status"] == "completed", status
        assert (status["model"], status["stems"]) == (CUSTOM_MODEL, list(CUSTOM_SOURCES))
        options = status["options"]
        assert (options["shifts"], options["overlap"], options["segment"]) == (0, 0.5, 2.0)
        archive = http.get(f"/download/{job['job_id']}").content
        members = sorted(zipfile.ZipFile(io.BytesIO(archive)).namelist())
        assert members == ["accompaniment.mp3", "vocals.mp3"]
