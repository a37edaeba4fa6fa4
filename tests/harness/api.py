"""Fixtures for the REST API on the integration tier: ``stemkube-api`` processes started from
the installed console script, talking to the tier's control plane and MinIO."""

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import procs
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer


@dataclass
class ApiServer:
    process: procs.Process
    port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        with self.client() as http:
            return http.get(path, **kwargs)

    def ready(self) -> bool:
        return self.get("/readyz").status_code == 200

    def stop(self) -> None:
        self.process.stop()


ApiFactory = Callable[..., ApiServer]


@pytest.fixture
def start_api(
    cluster: Cluster,
    minio_server: MinioServer,
    stemkube_namespace: str,
    bucket: str,
    tmp_path: Path,
) -> Iterator[ApiFactory]:
    """Starts ``stemkube-api`` processes serving the test's namespace and bucket; keyword
    arguments are environment variables (e.g. ``MAX_FILE_SIZE="1MB"``)."""
    started: list[ApiServer] = []

    def start(wait_ready: bool = True, **env: str) -> ApiServer:
        port = procs.free_port()
        name = f"api-{len(started)}"
        full_env = {
            "KUBECONFIG": str(cluster.kubeconfig),
            "STEMKUBE_NAMESPACE": stemkube_namespace,
            "STEMKUBE_BUCKET": bucket,
            "AWS_ENDPOINT_URL": minio_server.url,
            "AWS_ACCESS_KEY_ID": minio_server.access_key,
            "AWS_SECRET_ACCESS_KEY": minio_server.secret_key,
            "AWS_REGION": "us-east-1",
            **env,
        }
        process = procs.start(
            name,
            [Path(sys.executable).parent / "stemkube-api", "--host=127.0.0.1", f"--port={port}"],
            tmp_path / "logs",
            env=full_env,
        )
        server = ApiServer(process, port, full_env)
        started.append(server)
        if wait_ready:
            procs.wait_ready(process, server.ready, timeout=60)
        return server

    yield start
    for server in started:
        server.stop()


def mp3_song(seconds: float = 1.5, rate: int = 44100) -> bytes:
    """A real MP3 (LAME through PyAV's FFmpeg): a tone, a different pitch on each channel."""
    import io

    import av
    import numpy as np

    out = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    planar = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)])
    planar = planar.astype(np.float32)
    with av.open(out, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="stereo")
        for start in range(0, planar.shape[1], 1152):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planar[:, start : start + 1152]),
                format="fltp",
                layout="stereo",
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
