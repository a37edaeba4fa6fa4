"""The container images, built from the repository's Dockerfiles on a Python base made from
Debian packages (no registry can be reached here): they run as non-root with their labels;
the API image, on the host's network, serves the tier's control plane and MinIO with API keys
required (a key made by the image's own ``stemkube-api keys create``): ready, and an upload
through it with the key becomes a SeparationJob of the key's tenant; the separator image
separates a song from the tier's MinIO into a stems ZIP there, with a model repo mounted as a
cache volume would be.

The separator is built with the base's own Python (``PYTHON=base``) instead of the CUDA
image and python-build-standalone; the local-mode image's Dockerfile begins word for word
as the separator's, so its build reuses the separator's 4 GB of torch, and it runs here through
docker-compose as the README's "With Docker" says."""

import base64
import io
import json
import os
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
import yaml
from kubernetes import client

from stemkube_contract.resource import GROUP, PLURAL, TENANT_LABEL, VERSION
from stemkube_separator.exitcodes import INVALID_INPUT
from tests.e2e.conftest import (
    BASE,
    BUILT,
    E2E_KEY_NAME,
    E2E_TENANT,
    TAG,
    docker,
    image_readable_model_repo,
)
from tests.harness.api import mp3_song
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.procs import free_port
from tests.harness.tools import REPO_ROOT
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name", BUILT)
def test_an_image_runs_as_non_root_with_its_labels(images: dict[str, str], name: str) -> None:
    [inspected] = json.loads(docker("image", "inspect", images[name]))
    config = inspected["Config"]
    assert config["User"].split(":")[0] == "10001"
    assert config["Labels"]["org.opencontainers.image.title"] == f"stemkube-{name}"
    assert config["Labels"]["org.opencontainers.image.licenses"] == "Apache-2.0"
    usage = docker("run", "--rm", images[name], "--help")
    program = "stemkube-separate" if name == "separator" else f"stemkube-{name}"
    assert usage.startswith(f"usage: {program} ")


def inline_kubeconfig(path: Path) -> dict[str, Any]:
    """The kubeconfig with its certificate files inlined: the container cannot see them."""
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    for section, key in (("clusters", "cluster"), ("users", "user")):
        for entry in config[section]:
            item = entry[key]
            for field in ("certificate-authority", "client-certificate", "client-key"):
                if field in item:
                    data = Path(item.pop(field)).read_bytes()
                    item[f"{field}-data"] = base64.b64encode(data).decode()
    return config


@dataclass
class ApiContainer:
    url: str
    key: str  # of tenant E2E_TENANT

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def api_container(
    images: dict[str, str],
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    tmp_path: Path,
) -> Iterator[ApiContainer]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(inline_kubeconfig(cluster.kubeconfig)))
    kubeconfig.chmod(0o644)  # the image's user is not this one
    # On the host's network: the API's port and its metrics' (Kubernetes mode's default, 9090,
    # may be taken here) are free ones.
    port, metrics_port = free_port(), free_port()
    name = f"stemkube-api-{uuid.uuid4().hex[:8]}"
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network=host",
        "-v",
        f"{kubeconfig}:/etc/stemkube/kubeconfig:ro",
        "-e",
        "KUBECONFIG=/etc/stemkube/kubeconfig",
        "-e",
        f"STEMKUBE_NAMESPACE={stemkube_namespace}",
        "-e",
        f"STEMKUBE_BUCKET={bucket}",
        "-e",
        f"AWS_ENDPOINT_URL={minio_server.url}",
        "-e",
        f"AWS_ACCESS_KEY_ID={minio_server.access_key}",
        "-e",
        f"AWS_SECRET_ACCESS_KEY={minio_server.secret_key}",
        "-e",
        "AWS_REGION=us-east-1",
        images["api"],
        f"--port={port}",
        f"--metrics-port={metrics_port}",
    )
    try:
        # Keys are required (Kubernetes mode's default); the first is made as a container's
        # operator would: the image's own command, with the container's kubeconfig and
        # namespace. It prints the key and nothing else on stdout.
        key = docker(
            "exec", name, "stemkube-api", "keys", "create",
            f"--name={E2E_KEY_NAME}", f"--tenant={E2E_TENANT}",
        ).strip()  # fmt: skip
        assert key.startswith("stk_"), "keys create printed something else than a key"
        yield ApiContainer(f"http://127.0.0.1:{port}", key)
    finally:
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        print(logs.stdout[-2000:], logs.stderr[-2000:])
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def _ready(url: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"{url}/readyz", timeout=5)
    except httpx.TransportError:
        return None
    body: dict[str, Any] = response.json()
    return body if response.status_code == 200 else None


@pytest.mark.timeout(1500)
def test_the_api_image_serves_the_cluster(
    api_container: ApiContainer, cluster: Cluster, stemkube_namespace: str
) -> None:
    url = api_container.url
    ready = wait_for(lambda: _ready(url), 90, "the API container is ready")
    assert ready["checks"] == {"kubernetes": "ok", "storage": "ok", "keys": "ok"}
    song = mp3_song(0.5)
    refused = httpx.post(f"{url}/upload", files={"file": ("song.mp3", song)}, timeout=30)
    assert refused.status_code == 401, refused.text
    with httpx.Client(base_url=url, headers=api_container.auth_headers, timeout=30) as http:
        # The key's Secret was made after the API started: its watch brings it in.
        wait_for(lambda: http.get("/jobs").status_code == 200, 30, "the API knows the key")
        response = http.post("/upload", files={"file": ("song.mp3", song)})
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    cr = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, stemkube_namespace, PLURAL, job_id
    )
    assert cr["spec"]["input"]["filename"] == "song.mp3"
    assert cr["metadata"]["labels"][TENANT_LABEL] == E2E_TENANT


def separator_run(
    image: str, minio_server: MinioServer, work: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """The separator image on the host's network (to reach the tier's MinIO), ``work`` mounted
    at /work as a model cache volume would be."""
    work.chmod(0o777)  # the image's user writes the termination log there
    return subprocess.run(
        [
            "docker", "run", "--rm", "--network=host", "-v", f"{work}:/work",
            "-e", f"AWS_ENDPOINT_URL={minio_server.url}",
            "-e", f"AWS_ACCESS_KEY_ID={minio_server.access_key}",
            "-e", f"AWS_SECRET_ACCESS_KEY={minio_server.secret_key}",
            "-e", "STEMKUBE_TERMINATION_LOG=/work/termination-log",
            image, *args,
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.timeout(1500)
def test_the_separator_image_separates_from_and_to_minio(
    images: dict[str, str], minio_server: MinioServer, bucket: str, tmp_path: Path
) -> None:
    image_readable_model_repo(tmp_path / "models")
    s3 = minio_server.client()
    song = mp3_song(2.0)
    s3.put_object(bucket, "inputs/img/song.mp3", io.BytesIO(song), len(song))

    done = separator_run(
        images["separator"], minio_server, tmp_path,
        f"s3://{bucket}/inputs/img/song.mp3", f"s3://{bucket}/results/img.zip",
        "--model-repo", "/work/models", "--job-id", "img",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    archive = zipfile.ZipFile(io.BytesIO(s3.get_object(bucket, "results/img.zip").read()))
    assert sorted(archive.namelist()) == ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]
    with av.open(io.BytesIO(archive.read("vocals.mp3")), mode="r") as container:
        stream = container.streams.audio[0]
        assert stream.sample_rate == 44100
        assert float(container.duration or 0) / av.time_base == pytest.approx(2.0, abs=0.05)
    # The job id is on every log line (structured logs).
    assert all('"job": "img"' in line for line in done.stderr.splitlines() if line.strip())

    s3.put_object(bucket, "inputs/img/notes.txt", io.BytesIO(b"not audio"), 9)
    failed = separator_run(
        images["separator"], minio_server, tmp_path,
        f"s3://{bucket}/inputs/img/notes.txt", f"s3://{bucket}/results/bad.zip",
        "--model-repo", "/work/models",
    )  # fmt: skip
    assert failed.returncode == INVALID_INPUT, failed.stderr[-3000:]
    assert "audio" in (tmp_path / "termination-log").read_text()
    assert [o.object_name for o in s3.list_objects(bucket, "results/bad")] == []


def _compose_command() -> list[str] | None:
    """``docker compose`` (v2) where the plugin is installed, else ``docker-compose`` (v1.29,
    Debian's, what .ci/run installs); None without either."""
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if v2.returncode == 0:
        return ["docker", "compose"]
    v1 = subprocess.run(["docker-compose", "version"], capture_output=True, check=False)
    return ["docker-compose"] if v1.returncode == 0 else None


def _status(url: str, key: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{url}/status/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.timeout(1500)
def test_docker_compose_runs_local_mode_as_the_readme_says(
    images: dict[str, str], tmp_path: Path
) -> None:
    """docker-compose.yml as README.md's "With Docker" runs it, on the Debian base without
    weights (a model folder mounted, as the README's override file does): the local image shares
    the separator image's layers (torch), so it builds in seconds after ``images``. Without a
    key it refuses to start and names ``keys create``; the first key, made with ``compose run``,
    lets it start; the curl flow gives the 4 stems; ``compose stop`` while a job separates is
    clean and the job runs again on ``compose start``."""
    compose = _compose_command()
    if compose is None:
        # Never a skip: .ci/run installs docker-compose, so CI cannot pass this test unrun.
        pytest.fail(
            "neither `docker compose` nor `docker-compose` is installed "
            "(apt-get install docker-compose)"
        )
    image_readable_model_repo(tmp_path / "models")
    override = tmp_path / "override.yml"
    override.write_text(
        "services:\n  stemkube:\n"
        f'    volumes: ["{tmp_path / "models"}:/models:ro"]\n'
        "    environment: {STEMKUBE_MODEL_REPO: /models}\n"
    )
    port = free_port()
    project = f"stemkube-e2e-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "BASE_IMAGE": BASE, "PYTHON": "base", "MODELS": "",
        "IMAGE_TAG": TAG, "STEMKUBE_PORT": str(port),
    }  # fmt: skip
    base = [
        *compose, "-p", project,
        "-f", str(REPO_ROOT / "docker-compose.yml"), "-f", str(override),
    ]  # fmt: skip

    def run_compose(*args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=timeout, env=env,
            cwd=REPO_ROOT, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"compose {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        return done.stdout

    url = f"http://127.0.0.1:{port}"
    try:
        run_compose("build", timeout=900)
        run_compose("up", "-d")
        wait_for(
            lambda: "keys create --local --data-dir /data" in run_compose("logs", "--no-color"),
            120, "the service refuses to start without a key", interval=2,
        )  # fmt: skip
        key = run_compose(
            "run", "--rm", "-T", "stemkube", "keys", "create", "--local", "--data-dir", "/data",
            "--name", "me", "--tenant", "home", "--role", "admin",
        ).strip()  # fmt: skip
        assert key.startswith("stk_"), "keys create printed something else than a key"
        # Docker's restart policy starts it again: now with a key.
        ready = wait_for(lambda: _ready(url), 180, "the compose service is ready")
        assert ready["checks"]["keys"] == "ok"
        owner = run_compose("exec", "-T", "stemkube", "stat", "-c", "%u", "/data").strip()
        assert owner == "10001"  # the volume, made from the image's /data

        song = mp3_song(20.0)
        refused = httpx.post(f"{url}/upload", files={"file": ("song.mp3", song)}, timeout=30)
        assert refused.status_code == 401, refused.text
        auth = {"Authorization": f"Bearer {key}"}
        response = httpx.post(
            f"{url}/upload", files={"file": ("song.mp3", song)}, headers=auth, timeout=60
        )
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        wait_for(
            lambda: _status(url, key, job_id)["status"] == "processing", 60, "the job separates"
        )
        started = time.monotonic()
        run_compose("stop", timeout=120)
        assert time.monotonic() - started < 40, "the stop waited for Docker's SIGKILL"
        assert "stopped with the service; it runs again on start" in run_compose(
            "logs", "--no-color"
        )
        run_compose("start")
        wait_for(lambda: _ready(url), 180, "the compose service is ready again")

        def finished() -> dict[str, Any] | None:
            status = _status(url, key, job_id)
            return status if status["status"] in ("completed", "failed") else None

        done = wait_for(finished, 300, "the job runs again and completes", interval=1)
        assert done["status"] == "completed", done
        zipped = httpx.get(f"{url}/download/{job_id}", headers=auth, timeout=60)
        assert zipped.status_code == 200, zipped.text
        archive = zipfile.ZipFile(io.BytesIO(zipped.content))
        assert sorted(archive.namelist()) == ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]
    finally:
        logs = subprocess.run(
            [*base, "logs", "--no-color"], capture_output=True, text=True, env=env,
            cwd=REPO_ROOT, check=False,
        )  # fmt: skip
        print(logs.stdout[-3000:], logs.stderr[-2000:])
        subprocess.run(
            [*base, "down", "-v", "--rmi", "all"], capture_output=True, env=env, cwd=REPO_ROOT,
            timeout=120, check=False,
        )  # fmt: skip
