"""helm install, then a SeparationJob from kubectl runs to the end through the chart's own
operator, ServiceAccounts and RBAC."""

import io
import zipfile

import httpx
import pytest
from kubernetes import client

from stemkube_contract.resource import GROUP, PLURAL, TENANT_LABEL, VERSION
from tests.e2e.conftest import E2E_TENANT, Release, running_pod
from tests.harness.audio import sine_wav
from tests.harness.fixtures import Cluster, kubectl
from tests.harness.minio import MinioServer
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_operator_runs_as_its_service_account(cluster: Cluster, release: Release) -> None:
    pod = running_pod(cluster, release.namespace, "operator")
    assert pod.spec.service_account_name == "stemkube-operator"
    log = cluster.runner.logs(release.namespace, pod.metadata.name)
    assert "Forbidden" not in log


def test_separation_job_from_kubectl_completes(
    cluster: Cluster, release: Release, minio_server: MinioServer
) -> None:
    s3 = minio_server.client()
    song = sine_wav(1.5)
    # Under the release namespace's prefix: the chart's default storage scope.
    input_key, output_key = (
        f"{release.namespace}/inputs/e2e-1/input.wav",
        f"{release.namespace}/results/e2e-1.zip",
    )
    s3.put_object(release.bucket, input_key, io.BytesIO(song), len(song))
    manifest = f"""
apiVersion: stemkube.io/v1alpha1
kind: SeparationJob
metadata:
  name: e2e-1
spec:
  input: {{bucket: {release.bucket}, key: {input_key}, filename: song.wav}}
  output: {{bucket: {release.bucket}, key: {output_key}}}
"""
    kubectl(cluster, "apply", "-n", release.namespace, "-f", "-", stdin=manifest)
    objects = client.CustomObjectsApi(cluster.api)

    def finished() -> dict[str, object] | None:
        cr = objects.get_namespaced_custom_object(
            GROUP, VERSION, release.namespace, PLURAL, "e2e-1"
        )
        status = cr.get("status") or {}
        return status if status.get("phase") in ("Completed", "Failed") else None

    status = wait_for(finished, 180, "e2e-1 finishes")
    assert status["phase"] == "Completed", status
    archive = s3.get_object(release.bucket, output_key).read()
    names = sorted(zipfile.ZipFile(io.BytesIO(archive)).namelist())
    assert names == ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]
    assert status["progress"] == 100
    # The separation pod ran as the chart's separator ServiceAccount, with no storage
    # credentials and no API-server token: its input, output and progress went through the
    # operator's job link.
    core = client.CoreV1Api(cluster.api)
    [pod] = core.list_namespaced_pod(
        release.namespace, label_selector="app.kubernetes.io/component=separator"
    ).items
    assert pod.spec.service_account_name == "stemkube-separator"
    assert pod.spec.automount_service_account_token is False
    [container] = pod.spec.containers
    assert not [e.name for e in container.env if e.name.startswith("AWS_")]
    assert "could not write progress" not in cluster.runner.logs(
        release.namespace, pod.metadata.name
    )


def test_a_separation_job_outside_its_namespaces_storage_is_refused_at_creation(
    cluster: Cluster, release: Release
) -> None:
    """The chart's ValidatingAdmissionPolicy (storageScopes.admissionPolicy, on by default)."""
    manifest = f"""
apiVersion: stemkube.io/v1alpha1
kind: SeparationJob
metadata:
  name: e2e-stolen
spec:
  input: {{bucket: {release.bucket}, key: {release.namespace}/inputs/e2e-1/input.wav}}
  output: {{bucket: {release.bucket}, key: stolen/stems.zip}}
"""
    result = kubectl(
        cluster, "apply", "-n", release.namespace, "-f", "-", stdin=manifest, check=False
    )
    assert "is outside the storage of namespace" in result, result
    assert f"s3://{release.bucket}/{release.namespace}/" in result, result


def service_url(cluster: Cluster, namespace: str, service: str, port: str = "http") -> str:
    """The address a client reaches the Service's ``port`` at: its ready endpoint (no
    kube-proxy here)."""
    discovery = client.DiscoveryV1Api(cluster.api)

    def endpoint() -> str | None:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}"
        ).items
        for piece in slices:
            ports = {p.name: p.port for p in piece.ports or []}
            for address in piece.endpoints or []:
                if address.conditions.ready and port in ports:
                    return f"http://{address.addresses[0]}:{ports[port]}"
        return None

    url: str = wait_for(endpoint, 60, f"service {service} has a ready endpoint")
    return cluster.runner.local_url(url)


def test_upload_through_the_api_service_and_download_the_stems(
    cluster: Cluster, release: Release
) -> None:
    pod = running_pod(cluster, release.namespace, "api")
    assert pod.spec.service_account_name == "stemkube-api"
    url = service_url(cluster, release.namespace, "stemkube-api")

    def ready() -> dict[str, object] | None:
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
        except httpx.TransportError:  # the runner's pod is Running before it listens
            return None
        body: dict[str, object] = response.json()
        return body if response.status_code == 200 else None

    # Keys are required (the chart's default): readiness waits for the keys' Secrets too.
    assert wait_for(ready, 60, "API ready")["checks"] == {
        "kubernetes": "ok",
        "storage": "ok",
        "keys": "ok",
    }
    refused = httpx.get(f"{url}/jobs", timeout=10)
    assert refused.status_code == 401, refused.text
    assert refused.headers["www-authenticate"].startswith("Bearer")

    with httpx.Client(base_url=url, headers=release.auth_headers, timeout=60) as http:
        # The key's Secret was made after the API started: its watch brings it in.
        wait_for(lambda: http.get("/jobs").status_code == 200, 30, "the API knows the key")
        song = sine_wav(1.5)
        created = http.post("/upload", files={"file": ("song.wav", song, "audio/wav")})
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        assert created.json()["status"] == "pending"
        cr = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
            GROUP, VERSION, release.namespace, PLURAL, job_id
        )
        assert cr["metadata"]["labels"][TENANT_LABEL] == E2E_TENANT

        def finished() -> dict[str, object] | None:
            status: dict[str, object] = http.get(f"/status/{job_id}", timeout=10).json()
            return status if status["status"] in ("completed", "failed") else None

        status = wait_for(finished, 180, "job finishes")
        assert status["status"] == "completed", status
        download = http.get(f"/download/{job_id}")
        assert download.status_code == 200
        assert 'filename="song_stems.zip"' in download.headers["content-disposition"]
        names = sorted(zipfile.ZipFile(io.BytesIO(download.content)).namelist())
        assert names == ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]
        assert http.delete(f"/job/{job_id}", timeout=30).status_code in (200, 204)


def test_metrics_have_their_own_service_and_port(cluster: Cluster, release: Release) -> None:
    """The chart's metrics port (here a free one: the pod runner's pods share this machine's
    network) is its own Service's, and the API's port does not serve them."""
    metrics = service_url(cluster, release.namespace, "stemkube-api-metrics", "metrics")
    assert metrics.endswith(f":{release.metrics_port}")

    def scrape() -> httpx.Response | None:
        try:
            return httpx.get(f"{metrics}/metrics", timeout=10)
        except httpx.TransportError:
            return None

    scraped = wait_for(scrape, 30, "the metrics port answers")
    assert scraped.status_code == 200
    assert "# TYPE" in scraped.text
    api = service_url(cluster, release.namespace, "stemkube-api")
    assert httpx.get(f"{api}/metrics", headers=release.auth_headers, timeout=10).status_code == 404
