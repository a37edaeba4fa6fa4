"""The chart on a real node: a kubelet with Debian's containerd, runc and CNI bridge
(``hack/node-up.sh``), kube-proxy for the Services, the images built from the repository and
imported into containerd, ``helm install`` (API keys required, the chart's default), the first
key made inside the API's pod with ``kubectl exec`` as the chart's notes say. A song uploaded
with it through the API's Service becomes a SeparationJob of the key's tenant, the operator's
Job runs the separator image in a pod on that node, the CR completes, and the stems ZIP
downloads through the API.

What differs from a cloud cluster, and why: no registry (images are imported, pull policy
Never), no GPU (``separator.gpu.count=0``), no DNS add-on (storage is the test tier's MinIO on
the node's bridge address, an IP), and the model weights are a tiny random HTDemucs on a static
hostPath PersistentVolume, mounted as the chart's model cache claim.

Disk is the tight resource: the 5 GB separator image exists in docker, as layer blobs in
containerd and unpacked. Where the disk cannot hold all three, ``hack/node-images.sh --move``
takes the images out of docker before unpacking, and the blobs always go once unpacked.
(Compressing the blobs on import instead took over 10 minutes on 2 cores.)
"""

import io
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, config

from stemkube_contract.resource import GROUP, PLURAL, TENANT_LABEL, VERSION
from tests.e2e.conftest import (
    CHART,
    E2E_KEY_NAME,
    E2E_TENANT,
    TAG,
    docker,
    image_readable_model_repo,
    run,
    storage_secrets,
)
from tests.harness.api import mp3_song
from tests.harness.controlplane import ControlPlane, start_control_plane
from tests.harness.minio import MinioServer, start_minio
from tests.harness.tools import REPO_ROOT, tool
from tests.harness.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.node]

NODE = "stemkube-node"
NODE_IP = "10.88.0.1"  # hack/node-up.sh's bridge: the node's IP, reachable from its pods
NAMESPACE = "stemkube"
BUCKET = "stemkube"


@dataclass
class RealCluster:
    plane: ControlPlane
    api: client.ApiClient
    node_dir: Path
    storage: MinioServer


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    work = tmp_path_factory.mktemp("real-node")
    logs = work / "logs"
    plane = start_control_plane(work / "control-plane", logs, advertise=NODE_IP)
    node_dir = work / "node"
    storage: MinioServer | None = None
    try:
        run(
            REPO_ROOT / "hack" / "node-up.sh", "start", "--dir", node_dir,
            "--kubeconfig", plane.kubeconfig, "--name", NODE,
            "--ca-cert", plane.pki.ca_cert, "--ca-key", plane.pki.ca_key, "--proxy",
        )  # fmt: skip
        storage = start_minio(work / "minio", logs, listen="")
        storage.client().make_bucket(BUCKET)
        api = config.new_client_from_config(str(plane.kubeconfig))
        yield RealCluster(plane, api, node_dir, storage)
    finally:
        for name in ("kubelet", "kube-proxy", "containerd"):
            log = node_dir / f"{name}.log"
            if log.exists():
                print(f"--- {name} log tail ---\n{log.read_text()[-3000:]}")
        subprocess.run(
            [REPO_ROOT / "hack" / "node-up.sh", "stop", "--dir", node_dir, "--purge"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if storage is not None:
            storage.stop()
        plane.stop()


def model_claim(core: client.CoreV1Api, models: Path) -> str:
    """A static hostPath PersistentVolume holding the tiny model, bound to a claim."""
    core.create_persistent_volume(
        {
            "metadata": {"name": "stemkube-models"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "hostPath": {"path": str(models), "type": "Directory"},
                "claimRef": {"namespace": NAMESPACE, "name": "models"},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        NAMESPACE,
        {
            "metadata": {"name": "models"},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": "stemkube-models",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    wait_for(
        lambda: (
            core.read_namespaced_persistent_volume_claim("models", NAMESPACE).status.phase
            == "Bound"
        ),
        60,
        "the model claim is bound",
    )
    return "models"


def _short_of_disk(images: list[str], node_dir: Path) -> bool:
    """Whether the disk cannot hold three copies of the images (docker's, the layer blobs, the
    unpacked snapshots) at once. Then they are moved out of docker, and the next ``make images``
    builds them again instead of reusing its layer cache: this module runs after every other
    user of the ``images`` fixture (pytest's file order)."""
    sizes = docker("image", "inspect", "--format", "{{.Size}}", *images, timeout=60)
    total = sum(int(line) for line in sizes.split())
    return shutil.disk_usage(node_dir).free < 3 * total + 2 * 1024**3


@dataclass
class Installed:
    url: str  # the API's Service: its cluster IP, through kube-proxy
    key: str  # of tenant E2E_TENANT

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
def installed(
    real_cluster: RealCluster, images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    """The images in the node's containerd, the chart installed (API keys required, its
    default), its first key made in the API's pod."""
    move = ["--move"] if _short_of_disk(list(images.values()), real_cluster.node_dir) else []
    run(REPO_ROOT / "hack" / "node-images.sh", *move, *images.values(), timeout=1200)
    core = client.CoreV1Api(real_cluster.api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    storage = real_cluster.storage
    credentials = storage_secrets(core, NAMESPACE, storage, BUCKET, tmp_path_factory.mktemp("s3"))
    models = image_readable_model_repo(tmp_path_factory.mktemp("models"))
    claim = model_claim(core, models)
    port = storage.endpoint.rsplit(":", 1)[1]
    helm: list[str | Path] = [tool("helm"), f"--kubeconfig={real_cluster.plane.kubeconfig}"]
    run(
        *helm, "install", "stemkube", CHART, f"--namespace={NAMESPACE}",
        f"--set=image.tag={TAG}", "--set=image.pullPolicy=Never",
        "--set=minio.enabled=false",
        f"--set=storage.external.endpoint=http://{NODE_IP}:{port}",
        *credentials,
        f"--set=storage.bucket={BUCKET}",
        "--set=api.replicas=1",
        "--set=separator.gpu.count=0",
        "--set=separator.resources.requests.cpu=100m",
        "--set=separator.resources.requests.memory=256Mi",
        "--set=separator.shmSize=64Mi",
        # The test looks at the separator's pod after its job ends.
        "--set=separator.keepFinishedJobs=all",
        f"--set=separator.modelCache.existingClaim={claim}",
        "--wait", "--timeout=5m",
        timeout=400,
    )  # fmt: skip
    try:
        service = core.read_namespaced_service("stemkube-api", NAMESPACE)
        url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"
        # As NOTES.txt says: the image's own command in the API's pod, as its ServiceAccount
        # (api.auth.manageKeysFromPod). Only the key is on stdout.
        key = run(
            tool("kubectl"), f"--kubeconfig={real_cluster.plane.kubeconfig}", "-n", NAMESPACE,
            "exec", "deploy/stemkube-api", "--",
            "stemkube-api", "keys", "create", f"--name={E2E_KEY_NAME}", f"--tenant={E2E_TENANT}",
            timeout=120,
        ).strip()  # fmt: skip
        assert key.startswith("stk_"), "keys create printed something else than a key"
        yield Installed(url, key)
    finally:
        for pod in core.list_namespaced_pod(NAMESPACE).items:
            print(f"--- pod {pod.metadata.name} on {pod.spec.node_name}: {pod.status.phase}")
        subprocess.run(
            [*helm, "uninstall", "stemkube", f"--namespace={NAMESPACE}", "--wait"],
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.mark.timeout(1800)
def test_every_pod_of_the_release_runs_on_the_real_node(
    real_cluster: RealCluster, installed: Installed
) -> None:
    core = client.CoreV1Api(real_cluster.api)
    pods = core.list_namespaced_pod(NAMESPACE).items
    components = {p.metadata.labels.get("app.kubernetes.io/component") for p in pods}
    assert {"api", "operator"} <= components
    for pod in pods:
        assert pod.spec.node_name == NODE
        assert pod.status.phase == "Running", pod.status
        assert pod.status.pod_ip.startswith("10.88.0.")


@pytest.mark.timeout(300)
def test_helm_test_reaches_the_api_through_its_service(
    real_cluster: RealCluster, installed: Installed
) -> None:
    """``helm test``, as NOTES.txt says: the chart's test Pod, in the API's image under Pod
    Security ``restricted``, gets 200 from /readyz through the API's Service. There is no DNS
    add-on here, so the Pod takes the Service's cluster IP from the variable the kubelet sets
    (and says so in its log), through kube-proxy."""
    kubeconfig = f"--kubeconfig={real_cluster.plane.kubeconfig}"
    result = subprocess.run(
        [str(tool("helm")), kubeconfig, "test", "stemkube", f"--namespace={NAMESPACE}",
         "--timeout=3m"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    if result.returncode != 0:  # a failed test Pod is kept (hook-delete-policy): its log
        log = subprocess.run(
            [str(tool("kubectl")), kubeconfig, "-n", NAMESPACE, "logs", "stemkube-test-api"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        pytest.fail(
            f"helm test:\n{result.stdout}\n{result.stderr}\npod log:\n{log.stdout}{log.stderr}"
        )
    assert re.search(r"Phase:\s+Succeeded", result.stdout), result.stdout


def answers(http: httpx.Client, path: str) -> bool:
    try:
        return http.get(path).status_code == 200
    except httpx.TransportError:  # kube-proxy's rules for the new Service are not in yet
        return False


@pytest.mark.timeout(900)
def test_a_song_uploaded_through_the_service_comes_back_as_stems(
    real_cluster: RealCluster, installed: Installed
) -> None:
    with httpx.Client(base_url=installed.url, timeout=30) as http:
        wait_for(lambda: answers(http, "/readyz"), 60, "the API answers ready through its Service")
        song = mp3_song(2.0)
        refused = http.post("/upload", files={"file": ("song.mp3", song)})
        assert refused.status_code == 401, refused.text
        http.headers.update(installed.auth_headers)
        # The key's Secret was made after the API started: its watch brings it in.
        wait_for(lambda: answers(http, "/jobs"), 30, "the API knows the key")
        response = http.post("/upload", files={"file": ("song.mp3", song)})
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]

        def finished() -> dict[str, Any] | None:
            status: dict[str, Any] = http.get(f"/status/{job_id}").json()
            return status if status["status"] in ("completed", "failed") else None

        status = wait_for(finished, 600, f"job {job_id} finishes", interval=1)
        assert status["status"] == "completed", status
        download = http.get(f"/download/{job_id}")
        assert download.status_code == 200
        archive = zipfile.ZipFile(io.BytesIO(download.content))
        assert sorted(archive.namelist()) == ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]

    # The separation ran as a pod of the operator's Job on the real node, and wrote its
    # progress and result to the CR.
    cr = client.CustomObjectsApi(real_cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, job_id
    )
    assert cr["status"]["phase"] == "Completed"
    assert cr["status"]["progress"] == 100
    assert cr["metadata"]["labels"][TENANT_LABEL] == E2E_TENANT
    core = client.CoreV1Api(real_cluster.api)
    [pod] = core.list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/component=separator"
    ).items
    assert pod.spec.node_name == NODE
    assert pod.status.phase == "Succeeded"
