"""The e2e tier here: the Helm chart installed with ``helm install`` into the integration
tier's real control plane. The operator and the API run as the chart's Deployments, as their
chart's ServiceAccounts (tokens from the real API server, so RBAC is enforced), their pods and
the separation pods run by the pod runner. Storage is the tier's MinIO, as external storage.
API keys are on (the chart's default): the release's key is made as an operator makes one.

(kind cannot run on CI's machine: no registry, no privileged containers. `make kind-e2e` runs
the same tests against kind where Docker can.)
"""

import base64
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from tests.harness import procs
from tests.harness.api import create_key
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer, provision_users
from tests.harness.tiny_model import build_repo
from tests.harness.tools import REPO_ROOT, tool
from tests.harness.waiting import wait_for


def storage_secrets(
    core: client.CoreV1Api,
    namespace: str,
    server: MinioServer,
    bucket: str,
    workdir: Path,
) -> list[str]:
    """One least-privilege MinIO user per component, made with the chart's own set-up and
    policies (``provision_users``), each in a Secret of its own, as a platform team gives them
    to an external store; the helm flags that name them."""
    users = provision_users(server, server.url, bucket, workdir)
    flags = []
    for component, user in users.items():
        name = f"s3-{component}"
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": name},
                "data": {
                    key: base64.b64encode(value.encode()).decode()
                    for key, value in (
                        ("AWS_ACCESS_KEY_ID", user.access_key),
                        ("AWS_SECRET_ACCESS_KEY", user.secret_key),
                    )
                },
            },
        )
        flags.append(f"--set=storage.external.{component}Secret={name}")
    return flags


CHART = REPO_ROOT / "charts" / "stemkube"
RELEASE = "stemkube"
# The key the e2e tests call the API with: a user of its own tenant.
E2E_KEY_NAME = "e2e"
E2E_TENANT = "e2e"


@dataclass
class Release:
    namespace: str
    bucket: str
    api_port: int
    metrics_port: int
    key: str  # an API key of tenant E2E_TENANT, from `stemkube-api keys create`

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def run(*argv: str | Path, timeout: float = 300, cwd: Path | None = None) -> str:
    """A command that must succeed; its stdout (both streams' tails in the failure)."""
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, cwd=cwd,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"{' '.join(map(str, argv))}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def _helm(cluster: Cluster, *args: str) -> str:
    return run(tool("helm"), f"--kubeconfig={cluster.kubeconfig}", *args)


@pytest.fixture(scope="module")
def release(
    cluster: Cluster,
    minio_server: MinioServer,
    model_repo: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    core = client.CoreV1Api(cluster.api)
    namespace = "stemkube-e2e"
    bucket = "stemkube-e2e"
    s3 = minio_server.client()
    if not s3.bucket_exists(bucket):
        s3.make_bucket(bucket)
    core.create_namespace({"metadata": {"name": namespace}})
    scratch = tmp_path_factory.mktemp("s3")
    credentials = storage_secrets(core, namespace, minio_server, bucket, scratch)
    # The pod runner runs the API's and the operator's containers as processes of this
    # machine: their ports are free ones here (the chart's metrics port, 9090, may be taken).
    # No kube-proxy either: the separator pods reach the operator's job link on this machine's
    # loopback, not through its Service's cluster IP (test_real_node.py takes that way).
    api_port, metrics_port, link_port = procs.free_port(), procs.free_port(), procs.free_port()
    out = _helm(
        cluster,
        "install",
        RELEASE,
        str(CHART),
        f"--namespace={namespace}",
        "--set=minio.enabled=false",
        f"--set=storage.external.endpoint={minio_server.url}",
        *credentials,
        f"--set=storage.bucket={bucket}",
        "--set=api.replicas=1",
        f"--set=api.containerPort={api_port}",
        f"--set=api.metrics.port={metrics_port}",
        f"--set=operator.link.port={link_port}",
        f"--set=operator.link.url=http://127.0.0.1:{link_port}",
        # The tests look at the separator's pod after its job ends (test_operator_cleanup.py
        # tests the default, which deletes it).
        "--set=separator.keepFinishedJobs=all",
        "--set=separator.resources.requests.cpu=100m",
        "--set=separator.resources.requests.memory=256Mi",
        f"--set=separator.modelRepo={model_repo}",
        "--wait",
        "--timeout=3m",
    )
    assert "STATUS: deployed" in out
    try:
        # The first key, as NOTES.txt says. The pod runner cannot `kubectl exec` into the API's
        # pod, so the same command runs here with the tier's kubeconfig on the release's
        # namespace (what api.auth.manageKeysFromPod=false documents), not inside the pod.
        key = create_key(
            [f"--namespace={namespace}"],
            {"KUBECONFIG": str(cluster.kubeconfig)},
            E2E_KEY_NAME,
            E2E_TENANT,
        )
        yield Release(namespace, bucket, api_port, metrics_port, key)
    finally:
        subprocess.run(
            [
                str(tool("helm")),
                f"--kubeconfig={cluster.kubeconfig}",
                "uninstall",
                RELEASE,
                f"--namespace={namespace}",
                "--wait",
                "--timeout=60s",
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )


def running_pod(cluster: Cluster, namespace: str, component: str) -> client.V1Pod:
    core = client.CoreV1Api(cluster.api)

    def find() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(
            namespace, label_selector=f"app.kubernetes.io/component={component}"
        ).items
        return next((p for p in pods if p.status.phase == "Running"), None)

    pod: client.V1Pod = wait_for(find, 60, f"{component} pod running")
    return pod


TAG = "e2e"
BASE = "stemkube/python-base:3.11-bookworm"
BUILT = ("api", "operator", "separator")


def docker(*args: str, timeout: float = 120) -> str:
    return run("docker", *args, timeout=timeout)


def image_readable_model_repo(repo: Path) -> Path:
    """The tiny model repo at ``repo``, readable by the images' non-root user (uid 10001),
    which a bind mount or hostPath volume shows with the host's modes."""
    build_repo(repo)
    for path in (repo, *repo.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return repo


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """``make base-image images``: the engine started if needed, the Debian base, the images."""
    run(
        "make", "-s", "base-image", "images", f"IMAGES={' '.join(BUILT)}",
        f"BASE_IMAGE={BASE}", f"SEPARATOR_BASE_IMAGE={BASE}", "SEPARATOR_PYTHON=base",
        f"IMAGE_TAG={TAG}",
        cwd=REPO_ROOT, timeout=1200,
    )  # fmt: skip
    return {name: f"stemkube/{name}:{TAG}" for name in BUILT}
