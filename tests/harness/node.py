"""A Node object that advertises a GPU and is kept Ready by a heartbeat, as a kubelet would."""

import contextlib
import datetime
import threading
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness.waiting import wait_for

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10.0


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class NodeSpec:
    name: str = "stemkube-gpu-0"
    gpu_resource: str = "nvidia.com/gpu"
    gpus: int = 1
    cpu: str = "8"
    memory: str = "32Gi"
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)


def node_manifest(spec: NodeSpec) -> dict[str, Any]:
    resources = {
        "cpu": spec.cpu,
        "memory": spec.memory,
        "pods": str(spec.pods),
        "ephemeral-storage": "100Gi",
        spec.gpu_resource: str(spec.gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": {
                "kubernetes.io/hostname": spec.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **spec.labels,
            },
        },
        "spec": {},
        "status": {"capacity": resources, "allocatable": resources},
    }


def _ready_conditions() -> list[dict[str, str]]:
    stamp = now_rfc3339()
    healthy = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ("Ready", "True", "KubeletReady"),
    ]
    return [
        {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": "stemkube test pod runner",
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }
        for kind, status, reason in healthy
    ]


class NodeHeartbeat:
    """Registers the Node and renews its Lease and Ready condition until stopped."""

    def __init__(self, api: client.ApiClient, spec: NodeSpec) -> None:
        self.spec = spec
        self._core = client.CoreV1Api(api)
        self._coordination = client.CoordinationV1Api(api)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{spec.name}", daemon=True
        )

    def start(self) -> None:
        manifest = node_manifest(self.spec)
        try:
            self._core.create_node(manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise
        # Status on create is not guaranteed to stick: write it through the status subresource.
        self._core.patch_node_status(
            self.spec.name, {"status": {**manifest["status"], "conditions": _ready_conditions()}}
        )
        self._renew_lease()
        self._thread.start()
        # Admission taints a new Node not-ready; the node-lifecycle controller lifts the taint
        # once it sees the Ready condition. Until then nothing is scheduled here.
        wait_for(self._schedulable, 60, f"node {self.spec.name} untainted")

    def _schedulable(self) -> bool:
        node = self._core.read_node(self.spec.name)
        return not any(t.key.startswith("node.kubernetes.io/") for t in node.spec.taints or [])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_SECONDS + 5)

    def _renew_lease(self) -> None:
        body = {
            "metadata": {"name": self.spec.name, "namespace": LEASE_NAMESPACE},
            "spec": {
                "holderIdentity": self.spec.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": now_micro(),
            },
        }
        try:
            self._coordination.patch_namespaced_lease(self.spec.name, LEASE_NAMESPACE, body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self._coordination.create_namespaced_lease(LEASE_NAMESPACE, body)

    def _run(self) -> None:
        beats = 0
        while not self._stop.wait(HEARTBEAT_SECONDS):
            beats += 1
            # A missed beat is retried on the next tick; the lease outlives several of them.
            with contextlib.suppress(Exception):
                self._renew_lease()
                if beats % 3 == 0:
                    self._core.patch_node_status(
                        self.spec.name, {"status": {"conditions": _ready_conditions()}}
                    )
