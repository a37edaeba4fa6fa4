"""The operator with a real Kueue (built from sigs.k8s.io/kueue, run against the tier by
``tests.harness.kueue``): a ClusterQueue's GPU quota admits one separation at a time, the
SeparationJob says what Kueue says, and a preempted separation runs again as a new attempt.

Each test makes its own ResourceFlavor, ClusterQueue (and WorkloadPriorityClasses), named
after its namespace, and deletes them after."""

import contextlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from stemkube_contract import kueue as contract
from tests.harness.audio import sine_wav
from tests.harness.fixtures import Cluster, kubectl
from tests.harness.kueue import Kueue
from tests.harness.minio import MinioServer
from tests.harness.stemkube import OperatorFactory
from tests.harness.tools import REPO_ROOT, tool
from tests.harness.waiting import wait_for
from tests.integration.test_operator import (
    create,
    events_of,
    read,
    upload,
    wait_phase,
    wait_reason,
)

pytestmark = pytest.mark.integration

GPU = "nvidia.com/gpu"
QUEUE = "gpus"
EXAMPLE = REPO_ROOT / "charts" / "stemkube" / "examples" / "kueue" / "queues.yaml"


def _objects(cluster: Cluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(cluster.api)


def _cluster_scoped(cluster: Cluster, plural: str, body: dict[str, Any]) -> None:
    _objects(cluster).create_cluster_custom_object(contract.GROUP, contract.VERSION, plural, body)


def _remove(cluster: Cluster, plural: str, name: str) -> None:
    with contextlib.suppress(ApiException):
        _objects(cluster).delete_cluster_custom_object(
            contract.GROUP, contract.VERSION, plural, name
        )


@contextlib.contextmanager
def gpu_queue(
    cluster: Cluster, namespace: str, gpus: int, preempt: bool = False, priorities: int = 0
) -> Iterator[list[str]]:
    """A ResourceFlavor, a ClusterQueue with ``gpus`` GPUs of quota (and room enough of the
    rest), the LocalQueue ``QUEUE`` in ``namespace``; ``priorities`` WorkloadPriorityClasses,
    the first the lowest. Yields their names."""
    name = f"stemkube-{namespace}"
    classes = [f"{name}-p{i}" for i in range(priorities)]
    _cluster_scoped(cluster, "resourceflavors", _kind("ResourceFlavor", name))
    queue = _kind("ClusterQueue", name)
    queue["spec"] = {
        "namespaceSelector": {},
        "resourceGroups": [
            {
                "coveredResources": ["cpu", "memory", GPU],
                "flavors": [
                    {
                        "name": name,
                        "resources": [
                            {"name": "cpu", "nominalQuota": "64"},
                            {"name": "memory", "nominalQuota": "256Gi"},
                            {"name": GPU, "nominalQuota": str(gpus)},
                        ],
                    }
                ],
            }
        ],
    }
    if preempt:
        queue["spec"]["preemption"] = {"withinClusterQueue": "LowerPriority"}
    _cluster_scoped(cluster, "clusterqueues", queue)
    for value, priority in enumerate(classes):
        body = _kind("WorkloadPriorityClass", priority)
        body["value"] = 100 * (value + 1)
        _cluster_scoped(cluster, "workloadpriorityclasses", body)
    local = _kind("LocalQueue", QUEUE)
    local["spec"] = {"clusterQueue": name}
    _objects(cluster).create_namespaced_custom_object(
        contract.GROUP, contract.VERSION, namespace, "localqueues", local
    )
    try:
        yield classes
    finally:
        # The namespace goes with the test (its LocalQueue and Workloads with it).
        _remove(cluster, "clusterqueues", name)
        _remove(cluster, "resourceflavors", name)
        for priority in classes:
            _remove(cluster, "workloadpriorityclasses", priority)


def _kind(kind: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{contract.GROUP}/{contract.VERSION}",
        "kind": kind,
        "metadata": {"name": name},
    }


def blocker(cluster: Cluster, namespace: str) -> str:
    """A Workload of no Job holding the queue's one GPU until it is deleted."""
    body = _kind("Workload", "blocker")
    body["spec"] = {
        "queueName": QUEUE,
        "podSets": [
            {
                "name": "main",
                "count": 1,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "hold",
                                "image": "none",
                                "resources": {"requests": {GPU: "1"}, "limits": {GPU: "1"}},
                            }
                        ],
                    }
                },
            }
        ],
    }
    _objects(cluster).create_namespaced_custom_object(
        contract.GROUP, contract.VERSION, namespace, contract.WORKLOADS, body
    )

    def admitted() -> bool:
        workload = _objects(cluster).get_namespaced_custom_object(
            contract.GROUP, contract.VERSION, namespace, contract.WORKLOADS, "blocker"
        )
        return contract.holds(workload, contract.QUOTA_RESERVED)

    wait_for(admitted, 60, "Kueue admits the blocker")
    return "blocker"


def _status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(read(cluster, namespace, name).get("status") or {})


def test_a_gpu_quota_of_one_admits_one_separation_at_a_time(
    cluster: Cluster,
    kueue: Kueue,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    """The deployment's queue (separator.kueue.queueName) takes every SeparationJob; while
    the quota is held each says why it waits in Kueue's words, then they run one by one."""
    namespace, s3 = stemkube_namespace, minio_server.client()
    start_operator(**{contract.QUEUE_ENV: QUEUE})
    names = ("first", "second")
    with gpu_queue(cluster, namespace, gpus=1):
        held = blocker(cluster, namespace)
        for name in names:
            upload(s3, bucket, f"inputs/{name}/song.wav", sine_wav(2.0))
            create(cluster, namespace, name, bucket)

        def both_wait() -> list[dict[str, Any]] | None:
            statuses = [_status(cluster, namespace, name) for name in names]
            waiting = all(s.get("reason") == "WaitingForQuota" for s in statuses)
            return statuses if waiting else None

        for status in wait_for(both_wait, 60, "both wait for quota"):
            assert status["phase"] == "Pending"
            # Kueue's own words: which resource is short.
            assert GPU in status["message"], status
            assert "quota" in status["message"], status
        jobs = client.BatchV1Api(cluster.api)
        for name in names:
            assert jobs.read_namespaced_job(name, namespace).spec.suspend is True
        _objects(cluster).delete_namespaced_custom_object(
            contract.GROUP, contract.VERSION, namespace, contract.WORKLOADS, held
        )

        # One GPU of quota: never both running, and both done in the end.
        def done() -> bool:
            phases = [_status(cluster, namespace, name).get("phase") for name in names]
            assert phases.count("Running") <= 1, phases
            return all(p == "Completed" for p in phases)

        wait_for(done, 180, "both separations complete, one at a time")
        for name in names:
            assert "WaitingForQuota" in events_of(cluster, namespace, name)
            assert _status(cluster, namespace, name)["attempts"] == 1


def test_a_queue_that_does_not_exist_is_a_reasoned_wait_and_a_warning(
    cluster: Cluster,
    kueue: Kueue,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    """A LocalQueue missing from the namespace: the SeparationJob waits saying so, in Kueue's
    words, with one Warning event, and nothing runs."""
    namespace, s3 = stemkube_namespace, minio_server.client()
    start_operator()
    upload(s3, bucket, "inputs/lost/song.wav", sine_wav(1.0))
    create(cluster, namespace, "lost", bucket, queueName="no-such-queue")

    status = wait_reason(cluster, namespace, "lost", "Inadmissible")
    assert status["phase"] == "Pending"
    assert status["message"] == (
        "Kueue cannot admit the Job: LocalQueue no-such-queue doesn't exist"
    )
    assert client.BatchV1Api(cluster.api).read_namespaced_job("lost", namespace).spec.suspend
    wait_for(
        lambda: events_of(cluster, namespace, "lost").count("Inadmissible") == 1, 10, "its event"
    )


def test_a_higher_priority_preempts_and_the_preempted_one_runs_again(
    cluster: Cluster,
    kueue: Kueue,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    """Kueue preempts a running separation for a higher WorkloadPriorityClass: it waits
    (reason Preempted), runs again as its second attempt, and completes; nothing fails."""
    namespace, s3 = stemkube_namespace, minio_server.client()
    with gpu_queue(cluster, namespace, gpus=1, preempt=True, priorities=2) as (low, high):
        start_operator(**{contract.ALLOWED_PRIORITY_CLASSES_ENV: f"{low},{high}"})
        # Long enough to be running still when the urgent one arrives.
        upload(s3, bucket, "inputs/batch/song.wav", sine_wav(120.0))
        upload(s3, bucket, "inputs/urgent/song.wav", sine_wav(1.0))
        create(cluster, namespace, "batch", bucket, queueName=QUEUE, workloadPriorityClass=low)
        wait_phase(cluster, namespace, "batch", ("Running",), timeout=90)
        create(cluster, namespace, "urgent", bucket, queueName=QUEUE, workloadPriorityClass=high)

        def preempted() -> dict[str, Any] | None:
            status = _status(cluster, namespace, "batch")
            assert status.get("phase") not in ("Failed", "Completed"), status
            return status if status.get("reason") == "Preempted" else None

        status = wait_for(preempted, 60, "the batch separation is preempted")
        assert status["phase"] == "Pending"
        assert "runs again, as a new attempt" in status["message"]
        urgent = wait_phase(cluster, namespace, "urgent", ("Completed", "Failed"), timeout=120)
        assert urgent["status"]["phase"] == "Completed", urgent["status"]
        final = wait_phase(cluster, namespace, "batch", ("Completed", "Failed"), timeout=240)
        assert final["status"]["phase"] == "Completed", final["status"]
        assert final["status"]["attempts"] == 2, final["status"]

        def ended() -> list[str] | None:
            # The event follows the status by a moment.
            reasons = events_of(cluster, namespace, "batch")
            return reasons if reasons and reasons[-1] == "Completed" else None

        reasons = wait_for(ended, 10, "the Completed event")
        assert "Preempted" in reasons, reasons


def test_the_charts_kueue_example_is_what_kueue_accepts(cluster: Cluster, kueue: Kueue) -> None:
    """The README's set-up, checked by the API server against Kueue's CRDs and webhooks."""
    said = kubectl(cluster, "apply", "--dry-run=server", "-f", str(EXAMPLE))
    for made in (
        "resourceflavor.kueue.x-k8s.io/gpu-nodes",
        "clusterqueue.kueue.x-k8s.io/stemkube-gpus",
        "workloadpriorityclass.kueue.x-k8s.io/stemkube-interactive",
    ):
        assert made in said, said


def _render(*values: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool("helm")), "template", "stemkube", str(REPO_ROOT / "charts" / "stemkube"),
         "--namespace=music", *values],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_chart_makes_the_local_queue_only_where_kueue_is() -> None:
    wanted = [
        "--set=separator.kueue.queueName=stemkube",
        "--set=separator.kueue.localQueue.create=true",
        "--set=separator.kueue.localQueue.clusterQueue=stemkube-gpus",
        '--set-json=operator.watchNamespaces=["music","film"]',
    ]
    missing = _render(*wanted)
    assert missing.returncode != 0
    assert "serves no kueue.x-k8s.io/v1beta2 LocalQueue; install Kueue" in missing.stderr
    rendered = _render(*wanted, "--api-versions=kueue.x-k8s.io/v1beta2/LocalQueue")
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    queues = [d for d in docs if d["kind"] == "LocalQueue"]
    assert sorted(q["metadata"]["namespace"] for q in queues) == ["film", "music"]
    assert {q["spec"]["clusterQueue"] for q in queues} == {"stemkube-gpus"}
    assert {q["metadata"]["name"] for q in queues} == {"stemkube"}
    [operator] = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("operator")
    ]
    env = {
        e["name"]: e.get("value")
        for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env[contract.QUEUE_ENV] == "stemkube"
    no_cluster_queue = _render(*wanted[:2], "--api-versions=kueue.x-k8s.io/v1beta2/LocalQueue")
    assert "set separator.kueue.localQueue.clusterQueue" in no_cluster_queue.stderr
