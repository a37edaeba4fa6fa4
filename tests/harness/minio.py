"""A real MinIO server on loopback, built by ``make tools``."""

import secrets
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from minio import Minio

from tests.harness import procs
from tests.harness.tools import tool


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


def start_minio(workdir: Path, log_dir: Path, listen: str = "127.0.0.1") -> MinioServer:
    """A MinIO server on ``listen`` (e.g. "" for every address, so that pods reach it on a
    bridge); the returned endpoint is always the loopback one."""
    port, console_port = procs.free_port(), procs.free_port()
    access_key, secret_key = "stemkube", secrets.token_hex(16)
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
