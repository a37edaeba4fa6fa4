"""Finished Jobs go as soon as their SeparationJobs recorded the outcome (issue #18 item 3): the
SeparationJob is the record; a finished Job and its pods would only fill etcd and every watch
until their TTL. The real Job controller and garbage collector do the rest (the pods go with
their Job). The tier's other tests run the operator keeping every Job (the harness's
``STEMKUBE_KEEP_FINISHED_JOBS=all``) to look at them; these run what the chart sets."""

from typing import Any

import pytest
from kubernetes import client

from stemkube_contract.batch import MAX_PER_JOB_ENV
from tests.harness.audio import sine_wav
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.stemkube import OperatorFactory
from tests.harness.waiting import wait_for
from tests.integration.test_operator import create, upload, wait_phase
from tests.integration.test_operator_batch import NOT_AUDIO, queue_up

pytestmark = pytest.mark.integration


def job_names(cluster: Cluster, namespace: str) -> set[str]:
    batch = client.BatchV1Api(cluster.api)
    return {j.metadata.name for j in batch.list_namespaced_job(namespace).items}


def pod_count(cluster: Cluster, namespace: str) -> int:
    return len(client.CoreV1Api(cluster.api).list_namespaced_pod(namespace).items)


def test_a_recorded_jobs_job_and_pods_go_and_a_failed_one_may_stay(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    start_operator(STEMKUBE_KEEP_FINISHED_JOBS="failed")
    upload(s3, bucket, "inputs/fine/song.wav", sine_wav(1.0))
    upload(s3, bucket, "inputs/broken/song.wav", NOT_AUDIO)
    create(cluster, namespace, "fine", bucket)
    create(cluster, namespace, "broken", bucket)
    fine = wait_phase(cluster, namespace, "fine", ("Completed", "Failed"))["status"]
    broken = wait_phase(cluster, namespace, "broken", ("Completed", "Failed"))["status"]
    assert fine["phase"] == "Completed", fine
    assert broken["phase"] == "Failed", broken
    # The record is whole: the result, its size, the conditions; the Job and its pod go.
    assert fine["result"]["size"] > 0
    assert fine["jobName"] == "fine"
    wait_for(lambda: "fine" not in job_names(cluster, namespace), 30, "fine's Job deleted")
    wait_for(lambda: pod_count(cluster, namespace) <= 1, 60, "fine's pod deleted")
    # A failed one stays for its pods' logs ("failed"), until its TTL.
    assert "broken" in job_names(cluster, namespace)
    assert broken["reason"] == "InvalidInput"


def test_a_batch_job_goes_when_its_last_member_is_recorded(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    songs = {"b1": sine_wav(1.5), "b2": sine_wav(1.5), "b3": NOT_AUDIO}
    queue_up(cluster, namespace, s3, bucket, songs)
    start_operator(
        STEMKUBE_MAX_RUNNING="1", STEMKUBE_KEEP_FINISHED_JOBS="none", **{MAX_PER_JOB_ENV: "3"}
    )
    finals: dict[str, Any] = {
        n: wait_phase(cluster, namespace, n, ("Completed", "Failed"))["status"] for n in songs
    }
    assert [finals[n]["phase"] for n in ("b1", "b2", "b3")] == ["Completed", "Completed", "Failed"]
    assert {finals[n]["jobName"] for n in songs} == {"b1"}  # one Job ran the three
    wait_for(lambda: not job_names(cluster, namespace), 30, "the batch's Job deleted")
    wait_for(lambda: pod_count(cluster, namespace) == 0, 60, "its pod deleted")
    # Each record is kept: the failed member's reason and words, the others' results.
    assert finals["b3"]["reason"] == "InvalidInput"
    assert finals["b1"]["result"]["size"] > 0
    assert finals["b2"]["result"]["size"] > 0
