"""pytest fixtures of the integration tier (loaded by tests/conftest.py).

Session scope: one control plane, one GPU node with its pod runner, one MinIO server for the
whole run. Function scope: a fresh namespace and a fresh bucket per test.
"""

import contextlib
import secrets
import subprocess
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config
from minio import Minio

from tests.harness.controlplane import ControlPlane, start_control_plane
from tests.harness.kueue import Kueue, start_kueue
from tests.harness.minio import MinioServer, start_minio
from tests.harness.node import NodeHeartbeat, NodeSpec
from tests.harness.podrunner import PodRunner
from tests.harness.tools import tool


@dataclass
class Cluster:
    plane: ControlPlane
    api: client.ApiClient
    node: NodeSpec
    runner: PodRunner

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig


def kubectl(cluster: Cluster, *args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [str(tool("kubectl")), f"--kubeconfig={cluster.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout + result.stderr


_PLANES: list[ControlPlane] = []  # for the failure report hook below
_KUEUES: list[Kueue] = []


@pytest.fixture(scope="session")
def tier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tier")


@pytest.fixture(scope="session")
def control_plane(tier_dir: Path) -> Iterator[ControlPlane]:
    plane = start_control_plane(tier_dir / "control-plane", tier_dir / "logs")
    _PLANES.append(plane)
    try:
        yield plane
    finally:
        _PLANES.remove(plane)
        plane.stop()


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def cluster(
    control_plane: ControlPlane, kube_api: client.ApiClient, tier_dir: Path
) -> Iterator[Cluster]:
    """The control plane plus one Ready node advertising ``nvidia.com/gpu: 1``, whose pods the
    pod runner executes."""
    spec = NodeSpec()
    heartbeat = NodeHeartbeat(kube_api, spec)
    heartbeat.start()
    runner = PodRunner(kube_api, spec.name, tier_dir / "pods")
    runner.start()
    try:
        yield Cluster(control_plane, kube_api, spec, runner)
    finally:
        runner.stop()
        heartbeat.stop()


@pytest.fixture(scope="module")
def kueue(
    control_plane: ControlPlane, kube_api: client.ApiClient, tier_dir: Path
) -> Iterator[Kueue]:
    """A real Kueue controller on the control plane (see :mod:`tests.harness.kueue`) for the
    tests of one module: the rest of the session meets no Kueue controller (nor its webhooks),
    as on a cluster without one. Its CRDs stay once applied."""
    started = start_kueue(control_plane, kube_api, tier_dir / "kueue", tier_dir / "logs")
    _KUEUES.append(started)
    try:
        yield started
    finally:
        _KUEUES.remove(started)
        started.stop()


@contextlib.contextmanager
def temporary_namespace(cluster: Cluster, prefix: str = "test") -> Iterator[str]:
    core = client.CoreV1Api(cluster.api)
    name = f"{prefix}-{secrets.token_hex(4)}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        # The namespace controller removes what is left; nothing waits for it.
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(name)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    with temporary_namespace(cluster) as name:
        yield name


@pytest.fixture(scope="session")
def minio_server(tier_dir: Path) -> Iterator[MinioServer]:
    server = start_minio(tier_dir / "minio", tier_dir / "logs")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(minio_server: MinioServer) -> Iterator[str]:
    s3: Minio = minio_server.client()
    name = f"test-{secrets.token_hex(4)}"
    s3.make_bucket(name)
    try:
        yield name
    finally:
        for item in s3.list_objects(name, recursive=True):
            s3.remove_object(name, item.object_name)
        s3.remove_bucket(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _PLANES:
        report.sections.append(("control plane log tails", _PLANES[-1].log_tails()))
    if report.failed and _KUEUES:
        report.sections.append(("kueue log tail", _KUEUES[-1].log_tail()))
    return report
