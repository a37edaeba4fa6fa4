"""What only local mode has: jobs that survive a restart of the service, a queue behind its
workers, removal after the TTL, and ``make run`` on a fresh checkout. The rest of the API is
checked in both modes by the shared suite (the ``service`` fixture)."""

import contextlib
import datetime
import io
import os
import shutil
import signal
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.api import ApiServer, mp3_song
from tests.harness.audio import sine_wav
from tests.harness.procs import free_port
from tests.harness.service import LocalService
from tests.harness.tools import REPO_ROOT
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

FOUR = ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]


def upload(api: ApiServer, name: str, data: bytes) -> str:
    response = httpx.post(f"{api.url}/upload", files={"file": (name, data)}, timeout=30)
    assert response.status_code == 200, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def status(api: ApiServer, job_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = api.get(f"/status/{job_id}").json()
    return answer


def wait_status(api: ApiServer, job_id: str, word: str, timeout: float = 120) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        now = status(api, job_id)
        assert now["status"] != "failed" or word == "failed", now
        return now if now["status"] == word else None

    return wait_for(reached, timeout, f"job {job_id} {word}", interval=0.1)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text(
        errors="replace"
    )


def test_a_job_running_when_the_service_stops_runs_again(local_service: LocalService) -> None:
    api = local_service.start_api()
    job_id = upload(api, "long.wav", sine_wav(120.0))
    wait_status(api, job_id, "processing")
    wait_for(lambda: local_service.separating(job_id), 30, "its separator runs")

    # A clean stop (Ctrl-C, docker stop): the separator is stopped with the service and the
    # job waits for the next start, its attempt not counted.
    api.stop()
    assert not local_service.separating(job_id)
    [row] = local_service.rows()
    assert (row["status"], row["reason"], row["attempts"]) == ("pending", "Interrupted", 0)

    api = local_service.start_api()
    wait_status(api, job_id, "processing")
    wait_for(lambda: local_service.separating(job_id), 30, "its separator runs again")

    # A hard stop (kill -9, power loss): the separator is orphaned. The next start kills it,
    # then runs the job again; nothing is left processing forever.
    os.kill(api.process.popen.pid, signal.SIGKILL)
    api.process.popen.wait()
    orphans = local_service.separator_pids(job_id)
    assert orphans
    assert all(alive(pid) for pid in orphans)
    api = local_service.start_api()
    wait_for(lambda: not any(alive(pid) for pid in orphans), 30, "the orphan killed")
    final = wait_status(api, job_id, "completed", timeout=300)
    assert final["progress"] == 100
    [row] = local_service.rows()
    assert row["attempts"] == 2  # the killed run and the last one
    zipped = httpx.get(f"{api.url}/download/{job_id}", timeout=30)
    assert sorted(zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()) == FOUR
    assert local_service.incomplete_uploads() == []


def test_jobs_queue_behind_one_worker(local_service: LocalService) -> None:
    api = local_service.start_local(args=("--workers=1",))
    first = upload(api, "first.wav", sine_wav(30.0))
    second = upload(api, "second.mp3", mp3_song(1.0))
    wait_status(api, first, "processing")
    waiting = status(api, second)
    assert (waiting["status"], waiting["reason"]) == ("pending", "Queued")
    assert not local_service.separating(second)
    done_first = wait_status(api, first, "completed", timeout=300)
    done_second = wait_status(api, second, "completed", timeout=300)
    assert done_second["started_at"] >= done_first["completed_at"]


def test_finished_jobs_are_removed_after_the_ttl(local_service: LocalService) -> None:
    api = local_service.start_local(args=("--ttl=3",), STEMKUBE_EXPIRY_INTERVAL_SECONDS="0.2")
    job_id = upload(api, "song.mp3", mp3_song(1.0))
    done = wait_status(api, job_id, "completed")
    assert local_service.objects() == [f"inputs/{job_id}/input.mp3", f"results/{job_id}.zip"]
    log = local_service.data_dir / "logs" / f"{job_id}.log"
    assert "progress 100%" in log.read_text()
    wait_for(lambda: api.get(f"/status/{job_id}").status_code == 404, 30, "the job removed")
    removed = datetime.datetime.now(datetime.UTC)
    completed = datetime.datetime.fromisoformat(done["completed_at"].replace("Z", "+00:00"))
    assert (removed - completed).total_seconds() >= 3  # not before its TTL
    assert local_service.job_ids() == []
    # The row goes first (no job is ever shown without its files), its files a moment after.
    wait_for(
        lambda: local_service.objects() == [] and not log.exists(), 10, "the job's files removed"
    )


def _checkout(target: Path) -> None:
    """The working tree as git would check it out: tracked and new files, nothing ignored
    (no .venv, no built tools)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.timeout(1500)
def test_make_run_on_a_fresh_checkout(tmp_path: Path, model_repo: Path) -> None:
    checkout = tmp_path / "checkout"
    _checkout(checkout)
    assert not (checkout / ".venv").exists()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    venv_bin = str(REPO_ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    run_args = f"--port={port} --data-dir={tmp_path / 'data'} --model-repo={model_repo}"
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        make = subprocess.Popen(
            ["make", "run", f"RUN_ARGS={run_args}"],
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def answer() -> dict[str, Any] | None:
        assert make.poll() is None, log.read_text()[-3000:]
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        except httpx.TransportError:
            return None
        body: dict[str, Any] = response.json()
        return body

    try:
        body = wait_for(answer, 1400, "make run answers GET /", interval=1)
        assert body["service"] == "stemkube"
        assert body["status"] == "ok"
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()
        assert ready["checks"] == {"local": "ok", "storage": "ok"}
        assert (checkout / ".venv" / "bin" / "stemkube-api").exists()
    finally:
        with contextlib.suppress(ProcessLookupError):  # make already exited (its log says why)
            os.killpg(make.pid, signal.SIGTERM)
        make.wait(60)
        # A second torch venv is ~6 GB; the image and real-node tests after this one need the disk.
        shutil.rmtree(checkout / ".venv", ignore_errors=True)


def test_without_weights_it_says_so_and_refuses_uploads_at_once(
    local_service: LocalService, tmp_path: Path
) -> None:
    """No model folder and weights the hub cannot give: the start says so, /readyz says so,
    and an upload is refused before anything is stored, naming --model-repo."""
    declared = tmp_path / "models.json"
    declared.write_text('{"models": [{"name": "mine", "sources": ["vocals", "rest"]}]}')
    api = local_service.start_local(
        wait_ready=False, args=(f"--models={declared}",), with_model_repo=False
    )

    def answers() -> bool:
        try:
            return api.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(answers, 60, "the API answers")

    ready = api.get("/readyz")
    assert ready.status_code == 503
    assert "weights: model 'mine' is not a pretrained Demucs model" in ready.json()["detail"]
    assert "--model-repo" in ready.json()["detail"]
    assert api.get("/models").json()["default"] == "mine"
    refused = api.client().post("/upload", files={"file": ("song.wav", sine_wav(0.5))})
    assert refused.status_code == 503
    assert "--model-repo" in refused.json()["detail"]
    assert local_service.objects() == []
    assert local_service.job_ids() == []
    said = api.process.log_path.read_text()
    assert "stemkube is up on http://127.0.0.1:" in said  # the start's ready line, and why not
    assert "but it cannot separate yet: model 'mine' is not a pretrained Demucs model" in said
