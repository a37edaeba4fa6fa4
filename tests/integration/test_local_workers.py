"""Local mode's workers keep the model loaded: each slot's ``stemkube-separate --serve`` process
runs one job after another, marked in its command line as the data folder's; a cancelled job's
worker, or one that dies, is replaced by a fresh one; stopping the service ends them all."""

import os
import signal
from pathlib import Path

import httpx
import pytest

from stemkube_api.local import rules
from stemkube_api.local.worker_process import split_replies
from stemkube_contract import batch
from stemkube_separator import serve
from tests.harness.api import ApiServer, mp3_song
from tests.harness.separator_fixtures import log_lines
from tests.harness.service import LocalService
from tests.harness.waiting import wait_for
from tests.integration.test_local_mode import alive, upload, wait_status

# The pure parts ------------------------------------------------------------------------------


def test_the_worker_command_marks_the_data_folder() -> None:
    command = rules.serve_command(["python", "-m", "stemkube_separator.cli"], "/data")
    assert command == ["python", "-m", "stemkube_separator.cli", "--serve", "--tag=/data"]
    # The separator's own parser takes what local mode gives it.
    parsed = serve.build_parser().parse_args(command[4:])
    assert parsed.tag == "/data"


def test_which_processes_are_ours() -> None:
    job = "0b8f8a3e-6c9d-4d2a-9a57-3f8a9f8f1c11"
    single = [
        b"python",
        b"-m",
        b"stemkube_separator.cli",
        b"in",
        b"out",
        f"--job-id={job}".encode(),
    ]
    worker = [b"python", b"-m", b"stemkube_separator.cli", b"--serve", b"--tag=/data"]
    assert rules.is_our_separator(single, job, "/data")  # a single run that names the job
    assert rules.is_our_separator(worker, job, "/data")  # a worker of this data folder
    assert not rules.is_our_separator([b"python", b"--serve", b"--tag=/else"], job, "/data")
    assert not rules.is_our_separator([b"vim", b"/data"], job, "/data")  # a pid reused since
    assert not rules.is_our_separator([b"python", f"--job-id={job}x".encode()], job, "/data")


def test_replies_are_read_as_whole_lines() -> None:
    assert split_replies(b"") == ([], b"")
    assert split_replies(batch.serve_reply(0).encode() + b'{"exitC') == ([0], b'{"exitC')
    assert split_replies(b'{"exitCode": 3}\n\nnoise\n{"exitCode": 143}\n') == ([3, 143], b"")


# Through the API -----------------------------------------------------------------------------


def job_log(service: LocalService, job_id: str) -> list[dict[str, object]]:
    return log_lines((service.data_dir / "logs" / f"{job_id}.log").read_text())


def separated_by(service: LocalService, job_id: str) -> int:
    """The pid of the process that wrote the job's result, as its log says."""
    [wrote] = [line for line in job_log(service, job_id) if str(line["msg"]).startswith("wrote")]
    assert isinstance(wrote["pid"], int)
    return wrote["pid"]


def reused(service: LocalService, job_id: str) -> list[object]:
    return [line["model_reused"] for line in job_log(service, job_id) if "model_reused" in line]


def cmdline(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


def running_pid(service: LocalService, api: ApiServer, job_id: str) -> int:
    """The pid recorded for a job while it runs: its worker's."""
    wait_status(api, job_id, "processing")
    wait_for(lambda: service.separating(job_id), 60, f"{job_id}'s worker runs it")
    [pid] = service.separator_pids(job_id)
    assert b"--serve" in cmdline(pid)
    return pid


@pytest.mark.integration
def test_jobs_in_a_row_run_in_one_worker_that_keeps_the_model(
    local_service: LocalService,
) -> None:
    api = local_service.start_local(args=("--workers=1",))
    first = upload(api, "first.mp3", mp3_song(1.0))
    wait_status(api, first, "completed")
    second = upload(api, "second.mp3", mp3_song(20.0))
    recorded = running_pid(local_service, api, second)
    wait_status(api, second, "completed", timeout=300)

    worker = separated_by(local_service, first)
    assert recorded == worker == separated_by(local_service, second)
    assert reused(local_service, first) == [False]
    assert reused(local_service, second) == [True]
    # Idle, it keeps running (and holding the model), marked as this data folder's.
    assert alive(worker)
    args = cmdline(worker)
    assert b"--serve" in args
    assert f"--tag={local_service.data_dir}".encode() in args
    assert [r["pid"] for r in local_service.rows()] == [None, None]

    api.stop()
    assert not alive(worker)  # the service's stop ends its idle workers


@pytest.mark.integration
def test_cancelling_a_running_job_replaces_its_worker(local_service: LocalService) -> None:
    api = local_service.start_local(args=("--workers=1",))
    long = upload(api, "long.mp3", mp3_song(60.0))
    worker = running_pid(local_service, api, long)

    deleted = httpx.delete(f"{api.url}/job/{long}", timeout=30)
    assert deleted.status_code == 200
    wait_for(lambda: not alive(worker), 60, "the cancelled job's worker ended")

    short = upload(api, "short.mp3", mp3_song(1.0))
    wait_status(api, short, "completed")
    fresh = separated_by(local_service, short)
    assert fresh != worker
    assert reused(local_service, short) == [False]  # a new process loads the model again
    assert local_service.objects() == [f"inputs/{short}/input.mp3", f"results/{short}.zip"]


@pytest.mark.integration
def test_a_worker_that_dies_under_its_job_is_replaced_and_the_job_retried(
    local_service: LocalService,
) -> None:
    api = local_service.start_local()
    job_id = upload(api, "song.mp3", mp3_song(60.0))
    worker = running_pid(local_service, api, job_id)

    os.kill(worker, signal.SIGKILL)  # no answer: the job's outcome is the worker's exit

    done = wait_status(api, job_id, "completed", timeout=300)
    assert done["progress"] == 100
    [row] = local_service.rows()
    assert row["attempts"] == 2
    assert separated_by(local_service, job_id) != worker
    said = api.process.log_path.read_text()
    assert "attempt 1 of 3 failed: killed by SIGKILL" in said
