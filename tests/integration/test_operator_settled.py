"""Settled SeparationJobs (finished, nothing left to deliver) leave Kopf's watch by a label
(``stemkube_operator.settled``): their deletions still remove their files and let them go,
while the operator runs and after it was away, and one labelled by hand while in play is
given back."""

from functools import partial
from typing import Any

import pytest
from kubernetes import client

from stemkube_contract.resource import GROUP, PLURAL, SETTLED, SETTLED_LABEL, VERSION
from tests.harness.audio import sine_wav
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.stemkube import OperatorFactory
from tests.harness.waiting import wait_for
from tests.integration.test_operator import create, exists, gone, read, upload, wait_phase

pytestmark = pytest.mark.integration

# What the settled watch logs as it lets one go: Kopf's handler would not say it.
FILES_GONE = "deleted; its files are gone"
# Refused at admission: Failed within a second, no Job, no pod.
REFUSED: dict[str, Any] = {"model": "not-served"}


def _settled(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    cr = read(cluster, namespace, name)
    labels = cr["metadata"].get("labels") or {}
    return cr if labels.get(SETTLED_LABEL) == SETTLED else None


def _delete(cluster: Cluster, namespace: str, name: str) -> None:
    client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )


def test_settled_jobs_are_labelled_and_their_deletions_remove_their_files(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    operator = start_operator()
    for name in ("now", "later"):
        upload(s3, bucket, f"inputs/{name}/song.wav", sine_wav(0.5))
        create(cluster, namespace, name, bucket, **REFUSED)
    for name in ("now", "later"):
        cr = wait_for(partial(_settled, cluster, namespace, name), 30, f"{name} settled")
        assert cr["status"]["phase"] == "Failed", cr["status"]
        assert cr["metadata"]["finalizers"] == ["stemkube.io/cleanup"]

    # Deleted while the operator runs: Kopf no longer sees it; the settled watch does.
    _delete(cluster, namespace, "now")
    wait_for(lambda: gone(lambda: read(cluster, namespace, "now")), 20, "now deleted")
    assert not exists(s3, bucket, "inputs/now/song.wav")
    assert f"{namespace}/now {FILES_GONE}" in operator.process.log_path.read_text()

    # Deleted while no operator runs: held by its finalizer until one comes back and lists it.
    operator.kill()
    _delete(cluster, namespace, "later")
    assert read(cluster, namespace, "later")["metadata"]["deletionTimestamp"]
    assert exists(s3, bucket, "inputs/later/song.wav")
    back = start_operator()
    wait_for(lambda: gone(lambda: read(cluster, namespace, "later")), 30, "later deleted")
    assert not exists(s3, bucket, "inputs/later/song.wav")
    assert f"{namespace}/later {FILES_GONE}" in back.process.log_path.read_text()


def test_a_job_labelled_settled_while_in_play_is_given_back_and_runs(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    """Labelled at creation, it would be hidden from Kopf and never run: the label comes off,
    the operator runs it, and it settles for real."""
    namespace, s3 = stemkube_namespace, minio_server.client()
    operator = start_operator()
    upload(s3, bucket, "inputs/hidden/song.wav", sine_wav(0.5))
    hidden = {SETTLED_LABEL: SETTLED}
    create(cluster, namespace, "hidden", bucket, metadata_labels=hidden, **REFUSED)
    status = wait_phase(cluster, namespace, "hidden", ("Completed", "Failed"), 30)["status"]
    assert status["reason"] == "UnknownModel", status
    wait_for(lambda: _settled(cluster, namespace, "hidden"), 30, "hidden settled for real")
    said = operator.process.log_path.read_text()
    assert f"{namespace}/hidden was labelled {SETTLED_LABEL} while still in play" in said
