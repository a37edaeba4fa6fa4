"""Smoke tests of the integration tier itself: the real control plane, scheduler, Job controller,
garbage collector, the pod runner, MinIO and the command-line tools all do their part."""

import io
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness.fixtures import Cluster, kubectl
from tests.harness.minio import MinioServer
from tests.harness.tools import tool
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

KUBE_VERSION = "v1.34.12"
PYTHON_IMAGE = "python:3.11-slim"


def job_manifest(name: str, script: str, **pod_spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": PYTHON_IMAGE,
        "command": ["python3", "-c", textwrap.dedent(script)],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }
    container.update(pod_spec.pop("container", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [container], **pod_spec},
            },
        },
    }


def job_condition(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    job = batch.read_namespaced_job_status(name, namespace)
    for condition in job.status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def job_pods(core: client.CoreV1Api, namespace: str, job: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items)


def test_server_reports_pinned_version(cluster: Cluster) -> None:
    version = client.VersionApi(cluster.api).get_code()
    assert version.git_version == KUBE_VERSION
    assert f"Server Version: {KUBE_VERSION}" in kubectl(cluster, "version")


def test_node_is_ready_and_advertises_a_gpu(cluster: Cluster) -> None:
    node = client.CoreV1Api(cluster.api).read_node(cluster.node.name)
    assert node.status.allocatable["nvidia.com/gpu"] == "1"
    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"
    assert not node.spec.taints


def test_crd_and_custom_resource(cluster: Cluster, namespace: str) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.smoke.stemkube.io"},
        "spec": {
            "group": "smoke.stemkube.io",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump(crd))
    kubectl(cluster, "wait", "--for=condition=Established", "crd/widgets.smoke.stemkube.io")

    objects = client.CustomObjectsApi(cluster.api)
    group = ("smoke.stemkube.io", "v1", namespace, "widgets")
    body = {"apiVersion": "smoke.stemkube.io/v1", "kind": "Widget", "metadata": {"name": "w"}}
    objects.create_namespaced_custom_object(*group, {**body, "spec": {"size": 3}})
    objects.patch_namespaced_custom_object_status(*group, "w", {"status": {"phase": "Done"}})
    stored = objects.get_namespaced_custom_object(*group, "w")
    assert stored["spec"] == {"size": 3}
    assert stored["status"] == {"phase": "Done"}

    # The schema is enforced by the real API server.
    with pytest.raises(ApiException) as refused:
        objects.create_namespaced_custom_object(
            *group, {**body, "metadata": {"name": "bad"}, "spec": {"size": 0}}
        )
    assert refused.value.status == 422
    assert "spec.size" in refused.value.body


def test_gpu_job_is_scheduled_runs_and_completes(cluster: Cluster, namespace: str) -> None:
    core, batch = client.CoreV1Api(cluster.api), client.BatchV1Api(cluster.api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"model": "htdemucs"}}
    )
    env = [
        {"name": "LITERAL", "value": "plain"},
        {"name": "EXPANDED", "value": "$(LITERAL)-too"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "model"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    script = """
        import os
        keys = ["LITERAL", "EXPANDED", "TOKEN", "MODEL", "POD_NAME", "POD_NS"]
        print(" ".join(f"{k}={os.environ[k]}" for k in keys))
    """
    batch.create_namespaced_job(namespace, job_manifest("hello", script, container={"env": env}))

    assert wait_for(lambda: job_condition(batch, namespace, "hello"), 60, "job ends") == "Complete"
    [pod] = job_pods(core, namespace, "hello")
    assert pod.spec.node_name == cluster.node.name
    assert pod.status.phase == "Succeeded"
    [status] = pod.status.container_statuses
    assert status.state.terminated.exit_code == 0
    output = cluster.runner.logs(namespace, pod.metadata.name)
    assert (
        f"LITERAL=plain EXPANDED=plain-too TOKEN=s3cret MODEL=htdemucs "
        f"POD_NAME={pod.metadata.name} POD_NS={namespace}"
    ) in output


def test_failing_job_fails_with_exit_code_and_message(cluster: Cluster, namespace: str) -> None:
    core, batch = client.CoreV1Api(cluster.api), client.BatchV1Api(cluster.api)
    script = """
        import os, sys
        with open(os.environ["TERMINATION_LOG"], "w") as f:
            f.write("the input is not audio")
        sys.exit(3)
    """
    batch.create_namespaced_job(namespace, job_manifest("broken", script))

    assert wait_for(lambda: job_condition(batch, namespace, "broken"), 60, "job ends") == "Failed"
    [pod] = job_pods(core, namespace, "broken")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert terminated.message == "the input is not audio"


def test_pod_asking_for_more_gpus_than_the_node_has_stays_pending(
    cluster: Cluster, namespace: str
) -> None:
    core = client.CoreV1Api(cluster.api)
    pod = {
        "metadata": {"name": "greedy"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": PYTHON_IMAGE,
                    "command": ["python3", "-c", "pass"],
                    "resources": {"limits": {"nvidia.com/gpu": "2"}},
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)

    def unschedulable() -> str | None:
        status = core.read_namespaced_pod_status("greedy", namespace).status
        for condition in status.conditions or []:
            if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                return str(condition.message)
        return None

    assert "nvidia.com/gpu" in wait_for(unschedulable, 30, "scheduler reports Unschedulable")


def test_deleting_a_pod_kills_its_process(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    core = client.CoreV1Api(cluster.api)
    pid_file = tmp_path / "pid"
    script = f"""
        import os, pathlib, time
        pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))
        time.sleep(600)
    """
    pod = {
        "metadata": {"name": "sleeper"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": PYTHON_IMAGE,
                    "command": ["python3", "-c", textwrap.dedent(script)],
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    wait_for(
        lambda: core.read_namespaced_pod("sleeper", namespace).status.phase == "Running",
        30,
        "pod runs",
    )
    pid = int(wait_for(lambda: (pid_file.exists() and pid_file.read_text()) or None, 30, "pid"))

    core.delete_namespaced_pod("sleeper", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("sleeper", namespace)
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    wait_for(gone, 30, "pod deleted")

    def dead() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(dead, 10, "process killed")


def test_deleting_an_owner_deletes_its_dependants(cluster: Cluster, namespace: str) -> None:
    core = client.CoreV1Api(cluster.api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
        "blockOwnerDeletion": True,
    }
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "dependant", "ownerReferences": [reference]}}
    )

    core.delete_namespaced_config_map("owner", namespace)

    def dependant_gone() -> bool:
        names = {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}
        return "dependant" not in names

    wait_for(dependant_gone, 60, "garbage collector deletes the dependant")


def test_minio_put_and_get(minio_server: MinioServer, bucket: str, tmp_path: Path) -> None:
    s3 = minio_server.client()
    payload = os.urandom(256 * 1024)
    s3.put_object(bucket, "inputs/a/song.bin", io.BytesIO(payload), len(payload))
    response = s3.get_object(bucket, "inputs/a/song.bin")
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()

    # The mc client built with the tools sees the same object.
    mc = [str(tool("mc")), f"--config-dir={tmp_path / 'mc'}", "--no-color"]
    subprocess.run(
        [
            *mc,
            "alias",
            "set",
            "t",
            minio_server.url,
            minio_server.access_key,
            minio_server.secret_key,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    listing = subprocess.run(
        [*mc, "ls", "--recursive", f"t/{bucket}"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "inputs/a/song.bin" in listing.stdout


def test_helm_knows_the_kubernetes_version(tmp_path: Path) -> None:
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n"
        "data:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    rendered = subprocess.run(
        [str(tool("helm")), "template", "probe", str(chart)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    minor = KUBE_VERSION.rsplit(".", 1)[0]  # v1.34
    assert f'kube: "{minor}.0"' in rendered
