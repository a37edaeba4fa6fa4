"""Several SeparationJobs in one Job, against the real control plane: the real Job controller
and garbage collector, the real separator's batch mode (tiny model) run by the pod runner, the
real MinIO. Batching happens only with a backlog: the operator's limit is 1 and the jobs exist
before it starts, so all but the first would wait."""

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from minio import Minio

from stemkube_contract import batch
from stemkube_contract.batch import MAX_PER_JOB_ENV
from tests.harness.audio import sine_wav
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.stemkube import OperatorFactory
from tests.harness.waiting import wait_for
from tests.integration.test_operator import (
    create,
    events_of,
    exists,
    gone,
    read,
    upload,
    wait_phase,
)

pytestmark = pytest.mark.integration

NOT_AUDIO = b"this is a text file, not a song\n" * 100


def batch_jobs(cluster: Cluster, namespace: str) -> list[client.V1Job]:
    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items
    return [j for j in jobs if batch.MEMBERS_ANNOTATION in (j.metadata.annotations or {})]


def members_of(job: client.V1Job) -> list[str]:
    return [
        m.name for m in batch.decode_members(job.metadata.annotations[batch.MEMBERS_ANNOTATION])
    ]


def queue_up(
    cluster: Cluster,
    namespace: str,
    s3: Minio,
    bucket: str,
    songs: dict[str, bytes],
    **spec: Any,
) -> None:
    """The jobs, created a second apart (the queue orders by creation time)."""
    for name, data in songs.items():
        upload(s3, bucket, f"inputs/{name}/song.wav", data)
        create(cluster, namespace, name, bucket, **spec)
        time.sleep(1.05)


def separator_pids(namespace: str, name: str) -> list[int]:
    """The pod runner's separator processes working on ``name`` (its --item names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{namespace}/{name}".encode() in argv and batch.ITEM_FLAG.encode() in argv:
            found.append(int(entry.name))
    return found


def test_a_backlog_shares_one_job_and_a_bad_input_fails_only_itself(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    songs = {"m1": sine_wav(2.0), "m2": sine_wav(2.0), "m3": NOT_AUDIO, "m4": sine_wav(2.0)}
    queue_up(cluster, namespace, s3, bucket, songs, format="flac")
    operator = start_operator(STEMKUBE_MAX_RUNNING="1", **{MAX_PER_JOB_ENV: "3"})

    finals = {
        n: wait_phase(cluster, namespace, n, ("Completed", "Failed"))["status"] for n in songs
    }
    assert {n: s["phase"] for n, s in finals.items()} == {
        "m1": "Completed",
        "m2": "Completed",
        "m3": "Failed",
        "m4": "Completed",
    }
    assert finals["m3"]["reason"] == "InvalidInput"
    assert finals["m3"]["message"]
    assert not exists(s3, bucket, "results/m3.zip")
    for name in ("m1", "m2", "m4"):
        assert finals[name]["result"]["size"] > 0
        assert exists(s3, bucket, f"results/{name}.zip")
    # m1 led a batch of three (m1 had the slot; m2 and m3 would have waited); m4 came after.
    [shared] = batch_jobs(cluster, namespace)
    assert members_of(shared) == ["m1", "m2", "m3"]
    assert {finals[n]["jobName"] for n in ("m1", "m2", "m3")} == {shared.metadata.name}
    assert finals["m4"]["jobName"] == "m4"
    # The bad input failed its member, not the Job.
    wait_for(lambda: _succeeded(cluster, namespace, shared), 60, "the batch Job succeeds")
    wait_for(lambda: "InvalidInput" in events_of(cluster, namespace, "m3"), 10, "m3's event")
    assert "Completed" in events_of(cluster, namespace, "m2")
    code, metrics = operator.get("/metrics")
    assert code == 200
    assert "stemkube_jobs_created_total 2.0" in metrics


def test_deleting_one_member_stops_only_its_work(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    songs = {"d1": sine_wav(12.0), "d2": sine_wav(12.0), "d3": sine_wav(2.0)}
    queue_up(cluster, namespace, s3, bucket, songs, format="wav", shifts=2)
    start_operator(STEMKUBE_MAX_RUNNING="1", **{MAX_PER_JOB_ENV: "4"})

    wait_for(
        lambda: (read(cluster, namespace, "d2").get("status") or {}).get("progress", 0) > 5,
        120,
        "d2 separating",
    )
    client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object(
        "stemkube.io", "v1alpha1", namespace, "separationjobs", "d2"
    )
    wait_for(lambda: gone(lambda: read(cluster, namespace, "d2")), 60, "d2 deleted")
    for name in ("d1", "d3"):
        status = wait_phase(cluster, namespace, name, ("Completed", "Failed"), 180)["status"]
        assert status["phase"] == "Completed", (name, status)
    [shared] = batch_jobs(cluster, namespace)
    assert members_of(shared) == ["d1", "d2", "d3"]
    wait_for(lambda: _succeeded(cluster, namespace, shared), 60, "the batch Job succeeds")
    assert not exists(s3, bucket, "results/d2.zip")  # its work stopped, its files removed
    assert not exists(s3, bucket, "inputs/d2/song.wav")


def _succeeded(cluster: Cluster, namespace: str, job: client.V1Job) -> bool:
    now = client.BatchV1Api(cluster.api).read_namespaced_job(job.metadata.name, namespace)
    return bool(now.status.succeeded)


def test_a_job_killed_mid_batch_retries_only_the_unfinished(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    # k2 long enough to be caught mid-separation: the tiny model takes about 3 s for 30 s of
    # audio with two shifts on an idle machine.
    songs = {"k1": sine_wav(2.0), "k2": sine_wav(90.0), "k3": sine_wav(2.0)}
    queue_up(cluster, namespace, s3, bucket, songs, format="wav", shifts=2)
    start_operator(STEMKUBE_MAX_RUNNING="1", **{MAX_PER_JOB_ENV: "4"})

    # k1's end as its separator writes it (the operator's phase may come a moment later, when
    # k2 has moved on).
    def k1_ended() -> bool:
        status = read(cluster, namespace, "k1").get("status") or {}
        return bool(status.get(batch.OUTCOME_FIELD)) or status.get("phase") == "Completed"

    wait_for(k1_ended, 120, "k1's outcome")
    first_result = s3.stat_object(bucket, "results/k1.zip")
    wait_for(
        lambda: (read(cluster, namespace, "k2").get("status") or {}).get("progress", 0) > 5,
        120,
        "k2 separating",
    )
    wait_for(lambda: separator_pids(namespace, "k2"), 30, "the batch's separator")
    for pid in separator_pids(namespace, "k2"):
        os.kill(pid, signal.SIGKILL)  # as an OOM kill or a node failure would

    first = wait_phase(cluster, namespace, "k1", ("Completed", "Failed"))["status"]
    assert first["phase"] == "Completed", first

    finals = {
        n: wait_phase(cluster, namespace, n, ("Completed", "Failed"), 180)["status"]
        for n in ("k2", "k3")
    }
    assert [s["phase"] for s in finals.values()] == ["Completed", "Completed"], finals
    assert finals["k2"]["attempts"] >= 2
    # k1 was not separated again: its result is the first attempt's.
    assert s3.stat_object(bucket, "results/k1.zip").etag == first_result.etag
    assert s3.stat_object(bucket, "results/k1.zip").last_modified == first_result.last_modified
    assert read(cluster, namespace, "k1")["status"]["completionTime"] == first["completionTime"]
