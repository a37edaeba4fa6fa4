"""A real MinIO server on loopback, built by ``make tools``."""

import os
import secrets
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from minio import Minio

from tests.harness import procs
from tests.harness.tools import REPO_ROOT, tool


@dataclass
class MinioServer:
    endpoint: str  # host:port
    access_key: str
    secret_key: str
    process: procs.Process

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self) -> Minio:
        return Minio(self.endpoint, self.access_key, self.secret_key, secure=False)

    def stop(self) -> None:
        self.process.stop()


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/minio/health/ready", timeout=5) as response:
        return bool(response.status == 200)


def start_minio(
    workdir: Path, log_dir: Path, listen: str = "127.0.0.1", like: MinioServer | None = None
) -> MinioServer:
    """A MinIO server on ``listen`` (e.g. "" for every address, so that pods reach it on a
    bridge); the returned endpoint is always the loopback one. ``like``: a stopped server to
    start again, on its port with its credentials and (``workdir``) its data."""
    console_port = procs.free_port()
    if like is None:
        port, access_key, secret_key = procs.free_port(), "stemkube", secrets.token_hex(16)
    else:
        port = int(like.endpoint.rsplit(":", 1)[1])
        access_key, secret_key = like.access_key, like.secret_key
    process = procs.start(
        "minio",
        [
            tool("minio"),
            "server",
            workdir / "minio-data",
            f"--address={listen}:{port}",
            f"--console-address=127.0.0.1:{console_port}",
            "--quiet",
        ],
        log_dir,
        env={
            "MINIO_ROOT_USER": access_key,
            "MINIO_ROOT_PASSWORD": secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "HOME": str(workdir),  # its config directory, instead of the user's ~/.minio
        },
    )
    server = MinioServer(f"127.0.0.1:{port}", access_key, secret_key, process)
    try:
        procs.wait_ready(process, lambda: _ready(server.url), timeout=60)
    except BaseException:
        process.stop()
        raise
    return server


# The components holding storage credentials (the chart's "stemkube.storageComponents"): the
# separator pods hold none, the operator presigns their URLs.
COMPONENTS = ("api", "operator")
CHART_FILES = REPO_ROOT / "charts" / "stemkube" / "files"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


def provision_users(
    server: MinioServer,
    url: str,
    bucket: str,
    workdir: Path,
    users: dict[str, Credentials] | None = None,
) -> dict[str, Credentials]:
    """The chart's own set-up of a MinIO (``files/minio-setup.sh`` with the policies of
    ``files/s3-policies/``, the bucket written in, as its hook renders them), run with this
    machine's ``mc`` against ``server`` at ``url``: the bucket and one least-privilege user per
    component, as a platform team makes them for an external store (``users``: given keys, to
    run it again). Returns their keys."""
    setup = workdir / "minio-setup"
    setup.mkdir(parents=True, exist_ok=True)
    for component in COMPONENTS:
        policy = (CHART_FILES / "s3-policies" / f"{component}.json").read_text()
        (setup / f"{component}.json").write_text(
            policy.replace("arn:aws:s3:::BUCKET", f"arn:aws:s3:::{bucket}")
        )
    users = users or {
        c: Credentials(f"stemkube-{c}-{secrets.token_hex(4)}", secrets.token_hex(20))
        for c in COMPONENTS
    }
    env = {
        **os.environ,
        "PATH": f"{tool('mc').parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MC_CONFIG_DIR": str(workdir / "mc"),
        "MINIO_URL": url,
        "BUCKET": bucket,
        "SETUP_DIR": str(setup),
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
    }
    for component, user in users.items():
        env[f"{component.upper()}_ACCESS_KEY"] = user.access_key
        env[f"{component.upper()}_SECRET_KEY"] = user.secret_key
    result = subprocess.run(
        ["sh", str(CHART_FILES / "minio-setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"minio-setup.sh: {result.stdout}{result.stderr}"
    return users
