"""The operator against the real control plane: real Job controller and scheduler, the real
separator (tiny model) run by the pod runner, the real MinIO."""

import contextlib
import io
import itertools
import json
import threading
import time
import zipfile
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from minio import Minio
from minio.error import S3Error

from stemkube_contract.models import FOUR_STEMS, Model
from stemkube_contract.resource import GROUP, PLURAL, UID_LABEL, VERSION
from stemkube_operator.resource import job_name
from tests.harness.audio import sine_wav
from tests.harness.custom_model import CUSTOM_MODEL
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.stemkube import TIER_MODELS, OperatorFactory
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration


def upload(s3: Minio, bucket: str, key: str, data: bytes) -> None:
    s3.put_object(bucket, key, io.BytesIO(data), len(data))


def exists(s3: Minio, bucket: str, key: str) -> bool:
    try:
        s3.stat_object(bucket, key)
    except S3Error as exc:
        if exc.code == "NoSuchKey":
            return False
        raise
    return True


def create(
    cluster: Cluster,
    namespace: str,
    name: str,
    bucket: str,
    metadata_labels: dict[str, str] | None = None,  # spec.labels are the pod's: a spec kwarg
    **spec: Any,
) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SeparationJob",
        "metadata": {"name": name, "labels": metadata_labels or {}},
        "spec": {
            "input": {"bucket": bucket, "key": f"inputs/{name}/song.wav", "filename": "song.wav"},
            "output": {"bucket": bucket, "key": f"results/{name}.zip"},
            **spec,
        },
    }
    created: dict[str, Any] = client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )
    return created


def read(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    cr: dict[str, Any] = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return cr


def wait_phase(
    cluster: Cluster, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 120
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        cr = read(cluster, namespace, name)
        return cr if (cr.get("status") or {}).get("phase") in phases else None

    try:
        return wait_for(reached, timeout, f"{name} reaches {phases}")
    except TimeoutError as exc:
        # What the operator saw, to tell a slow machine from a stuck operator.
        cr = read(cluster, namespace, name)
        pods = pods_of(cluster, namespace, cr["metadata"]["uid"])
        seen = [(p.metadata.name, p.status.phase) for p in pods]
        raise AssertionError(f"{exc}; status {cr.get('status')}; pods {seen}") from None


def wait_reason(
    cluster: Cluster, namespace: str, name: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    """The status once its reason is ``reason``."""

    def reached() -> dict[str, Any] | None:
        status = read(cluster, namespace, name).get("status") or {}
        return status if status.get("reason") == reason else None

    return wait_for(reached, timeout, f"{name}: reason {reason}")


def jobs_of(cluster: Cluster, namespace: str, uid: str) -> list[client.V1Job]:
    batch = client.BatchV1Api(cluster.api)
    return list(batch.list_namespaced_job(namespace, label_selector=f"{UID_LABEL}={uid}").items)


def pods_of(cluster: Cluster, namespace: str, uid: str) -> list[client.V1Pod]:
    core = client.CoreV1Api(cluster.api)
    return list(core.list_namespaced_pod(namespace, label_selector=f"{UID_LABEL}={uid}").items)


def events_of(cluster: Cluster, namespace: str, name: str) -> list[str]:
    core = client.CoreV1Api(cluster.api)
    events = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=SeparationJob"
    ).items

    # Creation times have whole seconds; the store's revision orders events within one.
    def order(event: Any) -> tuple[Any, int]:
        return event.metadata.creation_timestamp, int(event.metadata.resource_version)

    return [e.reason for e in sorted(events, key=order)]


class ProgressWatch:
    """Records every status.progress value seen while a job runs."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._args = (cluster, namespace, name)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(ApiException):
                value = (read(*self._args).get("status") or {}).get("progress")
                if value is not None and (not self.seen or self.seen[-1] != value):
                    self.seen.append(value)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def gone(read_fn: Any) -> bool:
    try:
        read_fn()
    except ApiException as exc:
        return bool(exc.status == 404)
    return False


def test_separation_job_completes_with_stems_in_storage(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    operator = start_operator()
    # Long enough that the separator reports progress between 0 and 100 (at most once a second).
    upload(s3, bucket, "inputs/song-1/song.wav", sine_wav(30.0))
    created = create(cluster, namespace, "song-1", bucket, shifts=2)
    progress = ProgressWatch(cluster, namespace, "song-1")

    cr = wait_phase(cluster, namespace, "song-1", ("Completed", "Failed"))
    progress.stop()
    status = cr["status"]
    assert status["phase"] == "Completed", status
    assert status["progress"] == 100
    assert status["jobName"] == "song-1"
    assert status["attempts"] == 1
    assert status["observedGeneration"] == 1
    assert status["startTime"] <= status["completionTime"]
    result = status["result"]
    assert (result["bucket"], result["key"]) == (bucket, "results/song-1.zip")
    assert result["stems"] == ["vocals", "drums", "bass", "other"]
    archive = s3.get_object(bucket, "results/song-1.zip").read()
    assert result["size"] == len(archive)
    members = sorted(zipfile.ZipFile(io.BytesIO(archive)).namelist())
    assert members == ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "Admitted": "True",
        "Running": "False",
        "Complete": "True",
        "Failed": "False",
    }

    [job] = jobs_of(cluster, namespace, created["metadata"]["uid"])
    assert job.metadata.owner_references[0].uid == created["metadata"]["uid"]
    [pod] = pods_of(cluster, namespace, created["metadata"]["uid"])
    assert pod.spec.node_name == cluster.node.name
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    # The separator wrote progress through its own ServiceAccount (RBAC of the chart's shape).
    assert "could not write progress" not in cluster.runner.logs(namespace, pod.metadata.name)
    assert any(0 < p < 100 for p in progress.seen), progress.seen
    reasons = wait_for(
        lambda: (
            [r for r in events_of(cluster, namespace, "song-1") if r == "Completed"]
            and (events_of(cluster, namespace, "song-1"))
        ),
        10,
        "events",
    )
    assert reasons[-1] == "Completed"
    assert "Running" in reasons
    # Each transition once (its Job's and its pod's events sync it at once); a pod that exited
    # 0 is not a failed attempt.
    assert all(a != b for a, b in itertools.pairwise(reasons)), reasons
    assert "Retrying" not in reasons
    code, metrics = operator.get("/metrics")
    assert code == 200
    assert 'stemkube_separation_jobs{phase="Completed"} 1.0' in metrics
    assert "stemkube_jobs_created_total 1.0" in metrics
    assert 'stemkube_separation_completion_seconds_count{model="htdemucs"} 1.0' in metrics
    assert 'stemkube_audio_processed_seconds_total{model="htdemucs"}' in metrics
    assert "stemkube_separation_job_creation_seconds_count 1.0" in metrics
    assert "stemkube_operator_leading 1.0" in metrics


def test_invalid_audio_fails_at_once_with_the_separators_message(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    start_operator()
    upload(s3, bucket, "inputs/bad/song.wav", b"this is a text file, not a song\n" * 100)
    created = create(cluster, namespace, "bad", bucket)

    status = wait_phase(cluster, namespace, "bad", ("Completed", "Failed"))["status"]
    assert status["phase"] == "Failed"
    assert status["reason"] == "InvalidInput"
    assert status["message"]
    assert "BackoffLimitExceeded" not in status["message"]
    assert len(pods_of(cluster, namespace, created["metadata"]["uid"])) == 1  # never retried
    assert not exists(s3, bucket, "results/bad.zip")
    wait_for(lambda: "InvalidInput" in events_of(cluster, namespace, "bad"), 10, "warning event")


def test_transient_failure_is_retried_then_succeeds(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    """The input's bucket does not exist yet when the first attempt runs (storage still being
    set up): a transient storage error, retried. (A missing object in a bucket that exists is
    bad input, never retried: tests/integration/test_separator_errors.py.)"""
    namespace, s3 = stemkube_namespace, minio_server.client()
    late_bucket = f"{bucket}-late"
    start_operator()
    created = create(cluster, namespace, "late", late_bucket)
    uid = created["metadata"]["uid"]

    def first_attempt_failed() -> bool:
        pods = pods_of(cluster, namespace, uid)
        return any(p.status.phase == "Failed" for p in pods)

    try:
        wait_for(first_attempt_failed, 90, "first attempt fails")
        failed = next(p for p in pods_of(cluster, namespace, uid) if p.status.phase == "Failed")
        assert failed.status.container_statuses[0].state.terminated.exit_code == 75
        s3.make_bucket(late_bucket)
        upload(s3, late_bucket, "inputs/late/song.wav", sine_wav(1.0))

        status = wait_phase(cluster, namespace, "late", ("Completed", "Failed"), timeout=180)
        assert status["status"]["phase"] == "Completed", status["status"]
        [job] = jobs_of(cluster, namespace, uid)
        assert status["status"]["attempts"] >= 2, (status["status"], job.status)
    finally:
        client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "late"
        )
        if s3.bucket_exists(late_bucket):
            wait_for(lambda: not list(s3.list_objects(late_bucket, recursive=True)), 30, "cleanup")
            s3.remove_bucket(late_bucket)


def test_deleting_a_running_job_cancels_it_and_removes_its_files(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    start_operator()
    # Long enough to be running when deleted: the most shifts the CRD allows, a longer song.
    upload(s3, bucket, "inputs/long/song.wav", sine_wav(60.0))
    created = create(cluster, namespace, "long", bucket, shifts=10)
    uid = created["metadata"]["uid"]
    wait_phase(cluster, namespace, "long", ("Running",))
    [pod] = pods_of(cluster, namespace, uid)

    client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "long"
    )

    wait_for(lambda: gone(lambda: read(cluster, namespace, "long")), 60, "CR deleted")
    batch, core = client.BatchV1Api(cluster.api), client.CoreV1Api(cluster.api)
    wait_for(lambda: gone(lambda: batch.read_namespaced_job("long", namespace)), 60, "Job deleted")
    wait_for(
        lambda: gone(lambda: core.read_namespaced_pod(pod.metadata.name, namespace)),
        60,
        "pod deleted",
    )
    assert not exists(s3, bucket, "inputs/long/song.wav")
    assert not exists(s3, bucket, "results/long.zip")


def test_operator_killed_mid_job_leaves_one_job_and_a_correct_status(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    first = start_operator()
    upload(s3, bucket, "inputs/restart/song.wav", sine_wav(10.0))
    created = create(cluster, namespace, "restart", bucket, shifts=4)
    uid = created["metadata"]["uid"]
    wait_phase(cluster, namespace, "restart", ("Running",))
    first.kill()

    # The lease of the killed leader must expire before a new one leads: a real takeover.
    start_operator(wait_ready=False)
    status = wait_phase(cluster, namespace, "restart", ("Completed", "Failed"), timeout=180)[
        "status"
    ]
    assert status["phase"] == "Completed", status
    assert len(jobs_of(cluster, namespace, uid)) == 1
    assert len(pods_of(cluster, namespace, uid)) == 1
    assert exists(s3, bucket, "results/restart.zip")


def test_a_job_left_by_an_earlier_separation_job_of_that_name_is_waited_out(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    """A SeparationJob deleted and made again under its name while the garbage collector has
    yet to remove its Job: the new one neither takes that Job nor fails; it gets its own once
    the old one is gone. (The first sync of a new one creates its Job without reading first,
    and learns of the old one from the 409.)"""
    namespace, s3 = stemkube_namespace, minio_server.client()
    operator = start_operator()
    upload(s3, bucket, "inputs/again/song.wav", sine_wav(2.0))
    batch = client.BatchV1Api(cluster.api)
    old_uid = "00000000-0000-0000-0000-000000000001"
    batch.create_namespaced_job(
        namespace,
        {
            "metadata": {"name": job_name("again"), "labels": {UID_LABEL: old_uid}},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "old", "image": "stemkube/noop"}],
                    }
                },
            },
        },
    )
    uid = create(cluster, namespace, "again", bucket)["metadata"]["uid"]
    wait_for(
        lambda: (
            "again belongs to an earlier SeparationJob" in operator.process.log_path.read_text()
        ),
        30,
        "the operator to see the old Job",
    )
    assert (read(cluster, namespace, "again").get("status") or {}).get("phase") != "Failed"
    batch.delete_namespaced_job(job_name("again"), namespace, propagation_policy="Background")
    status = wait_phase(cluster, namespace, "again", ("Completed", "Failed"), timeout=120)["status"]
    assert status["phase"] == "Completed", status
    [job] = jobs_of(cluster, namespace, uid)
    assert [ref.uid for ref in job.metadata.owner_references] == [uid]


def test_concurrency_limit_queues_the_rest_oldest_first(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    for name in ("q1", "q2", "q3"):
        upload(s3, bucket, f"inputs/{name}/song.wav", sine_wav(1.0))
        create(cluster, namespace, name, bucket)
        time.sleep(1.1)  # distinct creation times: the queue is ordered by them
    start_operator(STEMKUBE_MAX_RUNNING="1")

    def queued_behind_one() -> bool:
        reasons = [
            (read(cluster, namespace, n).get("status") or {}).get("reason") for n in ("q2", "q3")
        ]
        return reasons == ["Queued", "Queued"]

    wait_for(queued_behind_one, 30, "q2 and q3 queued")
    q3 = read(cluster, namespace, "q3")["status"]
    assert "jobName" not in q3
    assert "1 separation(s) ahead" in q3["message"]

    finals = [
        wait_phase(cluster, namespace, n, ("Completed", "Failed"), 180)["status"]
        for n in ("q1", "q2", "q3")
    ]
    assert [s["phase"] for s in finals] == ["Completed"] * 3
    starts = [s["startTime"] for s in finals]
    assert starts == sorted(starts)
    # One at a time: each started after the one before it finished.
    for before, after in itertools.pairwise(finals):
        assert after["startTime"] >= before["completionTime"]


def test_finished_job_past_its_ttl_is_deleted_with_its_files(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    start_operator()
    upload(s3, bucket, "inputs/brief/song.wav", sine_wav(1.0))
    create(cluster, namespace, "brief", bucket, ttlSecondsAfterFinished=1)
    wait_phase(cluster, namespace, "brief", ("Completed",))
    wait_for(lambda: gone(lambda: read(cluster, namespace, "brief")), 60, "expired CR deleted")
    assert not exists(s3, bucket, "results/brief.zip")
    assert not exists(s3, bucket, "inputs/brief/song.wav")


def test_no_free_gpu_shows_pending_unschedulable(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    start_operator(STEMKUBE_GPU_COUNT="2")  # the node has one
    upload(s3, bucket, "inputs/big/song.wav", sine_wav(1.0))
    create(cluster, namespace, "big", bucket)

    status = wait_reason(cluster, namespace, "big", "Unschedulable")
    assert status["phase"] == "Pending"
    assert "nvidia.com/gpu" in status["message"]


def test_two_replicas_one_leads(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    leader = start_operator()
    standby = start_operator(wait_ready=False)
    time.sleep(3)
    assert standby.get("/healthz")[0] == 200  # alive, so its liveness probe passes
    assert standby.get("/readyz")[0] == 503
    assert leader.ready()
    upload(s3, bucket, "inputs/pair/song.wav", sine_wav(1.0))
    created = create(cluster, namespace, "pair", bucket)
    status = wait_phase(cluster, namespace, "pair", ("Completed", "Failed"))["status"]
    assert status["phase"] == "Completed"
    assert len(jobs_of(cluster, namespace, created["metadata"]["uid"])) == 1


def test_unpullable_image_shows_pending_with_the_kubelet_reason(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace = stemkube_namespace
    start_operator(STEMKUBE_SEPARATOR_IMAGE="registry.example/no-such/image:1")
    create(cluster, namespace, "pull", bucket)

    def pull_error() -> dict[str, Any] | None:
        status = read(cluster, namespace, "pull").get("status") or {}
        return status if status.get("reason") == "ErrImagePull" else None

    status = wait_for(pull_error, 60, "ErrImagePull")
    assert status["phase"] == "Pending"
    assert "registry.example/no-such/image:1" in status["message"]


def test_a_queue_without_kueue_says_so_and_runs_once_admitted(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    """A queue name on a cluster without Kueue waits with a reason that says so, not a generic
    "Queued" forever; whoever admits the Job by unsuspending it (Kueue's part, played here)
    lets it run. Where an earlier test left Kueue's CRDs (test_operator_kueue.py runs after
    this file, so not in a whole run), no Kueue controller runs: the wait is "Queued"."""
    namespace, s3 = stemkube_namespace, minio_server.client()
    served = "kueue.x-k8s.io" in {
        g.name for g in client.ApisApi(cluster.api).get_api_versions().groups
    }
    reason = "Queued" if served else "KueueNotInstalled"
    start_operator()
    upload(s3, bucket, "inputs/kueued/song.wav", sine_wav(1.0))
    created = create(cluster, namespace, "kueued", bucket, queueName="gpu-queue")

    status = wait_reason(cluster, namespace, "kueued", reason)
    assert (status["phase"], status["jobName"]) == ("Pending", "kueued")
    assert ("install Kueue" if reason == "KueueNotInstalled" else "Kueue") in status["message"]
    assert reason in events_of(cluster, namespace, "kueued")
    batch = client.BatchV1Api(cluster.api)
    job = batch.read_namespaced_job("kueued", namespace)
    assert job.spec.suspend is True
    assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert not pods_of(cluster, namespace, created["metadata"]["uid"])

    batch.patch_namespaced_job("kueued", namespace, {"spec": {"suspend": False}})
    final = wait_phase(cluster, namespace, "kueued", ("Completed", "Failed"))["status"]
    assert final["phase"] == "Completed", final


def test_a_pod_the_job_cannot_create_is_a_reasoned_wait_with_a_warning(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    """The deployment's priority class was never created: the Job exists but the Job
    controller cannot create its pod. The SeparationJob says so within seconds, in the API
    server's words, instead of "Starting" for good."""
    namespace, s3 = stemkube_namespace, minio_server.client()
    start_operator(STEMKUBE_PRIORITY_CLASS="stemkube-never-created")
    upload(s3, bucket, "inputs/orphan/song.wav", sine_wav(1.0))
    create(cluster, namespace, "orphan", bucket)

    status = wait_reason(cluster, namespace, "orphan", "FailedCreate", timeout=30)
    assert status["phase"] == "Pending"
    assert status["message"].startswith("the Job cannot create its pod: "), status
    assert "no PriorityClass with name stemkube-never-created was found" in status["message"]
    wait_for(
        lambda: events_of(cluster, namespace, "orphan").count("FailedCreate") == 1, 10, "its event"
    )


def test_a_declared_model_of_the_deployments_own_runs_from_kubectl(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    """kubectl apply of a SeparationJob naming the deployment's own model (declared with its
    stems in STEMKUBE_MODELS, weights in the model folder)."""
    namespace, s3 = stemkube_namespace, minio_server.client()
    start_operator()
    upload(s3, bucket, "inputs/mine/song.wav", sine_wav(2.0))
    create(cluster, namespace, "mine", bucket, model=CUSTOM_MODEL, twoStems="accompaniment")

    status = wait_phase(cluster, namespace, "mine", ("Completed", "Failed"))["status"]
    assert status["phase"] == "Completed", status
    assert status["result"]["stems"] == ["accompaniment", "no_accompaniment"]
    archive = s3.get_object(bucket, "results/mine.zip").read()
    members = sorted(zipfile.ZipFile(io.BytesIO(archive)).namelist())
    assert members == ["accompaniment.mp3", "no_accompaniment.mp3"]


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        ({"model": "not-served"}, "UnknownModel", "spec.model: 'not-served' is not one of"),
        ({"stems": ["guitar"]}, "InvalidArguments", "model htdemucs_6s has it"),
        ({"shifts": 3}, "InvalidArguments", "spec.shifts: 3 is more than this deployment allows"),
    ],
)
def test_a_spec_this_deployment_cannot_run_fails_before_any_job(
    cluster: Cluster,
    stemkube_namespace: str,
    bucket: str,
    start_operator: OperatorFactory,
    spec: dict[str, Any],
    reason: str,
    words: str,
) -> None:
    """Checked at admission: no Job, no GPU time, a Failed phase that says why."""
    namespace = stemkube_namespace
    start_operator(STEMKUBE_LIMITS='{"shifts": 2}')
    created = create(cluster, namespace, "refused", bucket, **spec)

    status = wait_phase(cluster, namespace, "refused", ("Completed", "Failed"), 30)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", reason)
    assert words in status["message"]
    assert jobs_of(cluster, namespace, created["metadata"]["uid"]) == []


def test_a_declared_model_missing_from_the_weights_folder_fails_as_such(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    """Declared (the chart's `models`) but not in the weights folder: the separator says so
    with its own exit code, and the job fails at once with reason ModelNotFound (not the
    InvalidInput of bad audio), never retried."""
    namespace, s3 = stemkube_namespace, minio_server.client()
    declared = TIER_MODELS.plus([Model("declared_only", FOUR_STEMS)])
    start_operator(STEMKUBE_MODELS=json.dumps(declared.to_json()))
    upload(s3, bucket, "inputs/absent/song.wav", sine_wav(1.0))
    created = create(cluster, namespace, "absent", bucket, model="declared_only")

    status = wait_phase(cluster, namespace, "absent", ("Completed", "Failed"))["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ModelNotFound"), status
    assert "model 'declared_only' is not in the model folder" in status["message"]
    assert len(pods_of(cluster, namespace, created["metadata"]["uid"])) == 1
