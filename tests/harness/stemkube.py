"""Fixtures for stemkube on the integration tier: the real CRD, a namespace set up as the Helm
chart sets one up (storage Secret, the separator's ServiceAccount and its RBAC), a tiny model
repository, and operator processes started from the installed ``stemkube-operator``."""

import json
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from stemkube_contract import joblink
from stemkube_contract.models import DEFAULT_MODEL, MODELS_ENV, PRETRAINED, Catalog, Model
from stemkube_contract.resource import GROUP, PLURAL
from stemkube_contract.scopes import STORAGE_SCOPES_ENV, UNCONFINED
from tests.harness import procs
from tests.harness.custom_model import CUSTOM_MODEL, CUSTOM_SOURCES
from tests.harness.fixtures import Cluster, kubectl
from tests.harness.linkservice import LinkService
from tests.harness.minio import MinioServer
from tests.harness.tools import REPO_ROOT
from tests.harness.urlserver import ALLOW_LOOPBACK
from tests.harness.webhook_receiver import WEBHOOK_ENV

CRD_PATH = REPO_ROOT / "crds" / "separationjobs.stemkube.io.yaml"
SEPARATOR_IMAGE = "stemkube/separator:dev"
SEPARATOR_ACCOUNT = "stemkube-separator"


@pytest.fixture(scope="session")
def separation_crd(cluster: Cluster) -> None:
    """The repository's CRD file, applied as a user would."""
    kubectl(cluster, "apply", "-f", str(CRD_PATH))
    kubectl(cluster, "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}")


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random-weight models under the real names, in Demucs's local-repo format."""
    from tests.harness.tiny_model import build_repo  # torch is slow to import: only when needed

    names = ("htdemucs", "htdemucs_6s", CUSTOM_MODEL)
    return build_repo(tmp_path_factory.mktemp("models"), names=names)


# What the Kubernetes tier serves (the chart's `models` value): the pretrained names, whose
# tiny stand-ins are in the model repo, and a model of the deployment's own.
TIER_MODELS = Catalog((*PRETRAINED, Model(CUSTOM_MODEL, CUSTOM_SOURCES)), DEFAULT_MODEL)


@pytest.fixture
def stemkube_namespace(cluster: Cluster, namespace: str, separation_crd: None) -> str:
    """A namespace ready for SeparationJobs, as the chart leaves one: the separator's
    ServiceAccount, with no permission and no storage credentials (its pods reach their own
    job through the operator's job link only)."""
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": SEPARATOR_ACCOUNT}})
    return namespace


@dataclass
class Operator:
    process: procs.Process
    port: int
    link_url: str  # the job link as separator pods reach it (``linkservice``)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to tidy up, as when its node dies."""
        self.process.popen.kill()
        self.process.popen.wait(timeout=10)


OperatorFactory = Callable[..., Operator]


@pytest.fixture
def start_operator(
    cluster: Cluster,
    minio_server: MinioServer,
    model_repo: Path,
    stemkube_namespace: str,
    tmp_path: Path,
) -> Iterator[OperatorFactory]:
    """Starts ``stemkube-operator`` processes watching the test's namespace, their job-link
    servers behind one address (``linkservice``)."""
    started: list[Operator] = []
    link = LinkService()

    def start(wait_ready: bool = True, **env: str) -> Operator:
        port, link_port = procs.free_port(), procs.free_port()
        name = f"operator-{len(started)}"
        process = procs.start(
            name,
            [
                Path(sys.executable).parent / "stemkube-operator",
                f"--namespace={stemkube_namespace}",
                f"--port={port}",
                f"--lease-namespace={stemkube_namespace}",
                f"--identity={name}",
                "--log-format=plain",
            ],
            tmp_path / "logs",
            env={
                "KUBECONFIG": str(cluster.kubeconfig),
                "AWS_ENDPOINT_URL": minio_server.url,
                "AWS_ACCESS_KEY_ID": minio_server.access_key,
                "AWS_SECRET_ACCESS_KEY": minio_server.secret_key,
                "STEMKUBE_SEPARATOR_IMAGE": SEPARATOR_IMAGE,
                "STEMKUBE_MODEL_REPO": str(model_repo),
                MODELS_ENV: json.dumps(TIER_MODELS.to_json()),
                "STEMKUBE_EXPIRY_INTERVAL_SECONDS": "1",
                "STEMKUBE_CPU_REQUEST": "100m",
                "STEMKUBE_MEMORY_REQUEST": "256Mi",
                # Test only: URL jobs may fetch from the tier's loopback server (urlserver).
                **ALLOW_LOOPBACK,
                # Webhooks signed with the test secret, retried a second apart.
                **WEBHOOK_ENV,
                # Storage confinement off: the tests name keys of their own choosing.
                # test_storage_scopes.py runs the operator and the API with the default scopes.
                STORAGE_SCOPES_ENV: UNCONFINED.to_json(),
                # Finished Jobs stay (until their TTL) so tests can look at them and their pods;
                # test_operator_cleanup.py runs the default, which deletes them at once.
                "STEMKUBE_KEEP_FINISHED_JOBS": "all",
                # Its own link server's port; the separator pods get the one "Service" URL.
                "STEMKUBE_LINK_PORT": str(link_port),
                joblink.URL_ENV: link.url,
                **env,
            },
        )
        link.add(link_port)
        operator = Operator(process, port, link.url)
        started.append(operator)
        if wait_ready:
            procs.wait_ready(process, operator.ready, timeout=60)
        return operator

    yield start
    for operator in started:
        operator.process.stop()
    link.close()
