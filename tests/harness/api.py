"""Fixtures for the REST API on the integration tier: ``stemkube-api`` processes started from
the installed console script, talking to the tier's control plane and MinIO, and their API keys
(made with ``stemkube-api keys``, as an operator would)."""

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from stemkube_contract.models import MODELS_ENV
from stemkube_contract.scopes import STORAGE_SCOPES_ENV, UNCONFINED
from tests.harness import procs
from tests.harness.audio import sine_wav
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.stemkube import TIER_MODELS

MB = 1024 * 1024
BOUNDARY = "stemkube-test-boundary"
STEMKUBE_API = Path(sys.executable).parent / "stemkube-api"
# The key the harness makes for a keyed service (``start_api(keyed=True)``): a user of its
# own tenant, so a keyed suite's objects live under tenants/harness/.
HARNESS_KEY_NAME = "harness"
HARNESS_TENANT = "harness"


@dataclass
class ApiServer:
    process: procs.Process
    port: int
    env: dict[str, str]
    key: str | None = None  # sent with every request of client() and get()
    metrics_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def as_key(self, key: str | None) -> "ApiServer":
        """The same process, called with another key (None: none)."""
        return replace(self, key=key)

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {**self.auth_headers, **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers, **kwargs)

    def metrics(self) -> str:
        """The Prometheus text from the metrics' own port."""
        assert self.metrics_port is not None
        response = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
        response.raise_for_status()
        return response.text

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        with self.client() as http:
            return http.get(path, **kwargs)

    def ready(self) -> bool:
        return self.get("/readyz").status_code == 200

    def stop(self) -> None:
        self.process.stop()

    def _status_mib(self, field: str) -> float:
        # The kernel's own accounting: no sampling, so a short-lived peak is not missed.
        status = Path(f"/proc/{self.process.popen.pid}/status").read_text()
        [line] = [x for x in status.splitlines() if x.startswith(f"{field}:")]
        return int(line.split()[1]) / 1024

    def rss_mib(self) -> float:
        """Resident memory now (VmRSS), in MiB."""
        return self._status_mib("VmRSS")

    def peak_rss_mib(self) -> float:
        """The highest resident memory since the process started (VmHWM), in MiB."""
        return self._status_mib("VmHWM")


ApiFactory = Callable[..., ApiServer]


def launch_api(
    name: str,
    env: Mapping[str, str],
    log_dir: Path,
    wait_ready: bool = True,
    args: Sequence[str] = (),
    key: str | None = None,
) -> ApiServer:
    """One ``stemkube-api`` process from the installed console script on a free loopback port
    (its metrics on another), configured by ``env`` (KUBECONFIG, STEMKUBE_NAMESPACE, AWS_*...)
    and sending ``key``; stopped if it does not become ready."""
    port, metrics_port = procs.free_port(), procs.free_port()
    full_env = dict(env)
    process = procs.start(
        name,
        [
            STEMKUBE_API,
            "--host=127.0.0.1",
            f"--port={port}",
            f"--metrics-port={metrics_port}",
            *args,
        ],
        log_dir,
        env=full_env,
    )
    server = ApiServer(process, port, full_env, key, metrics_port)
    if wait_ready:
        try:
            procs.wait_ready(process, server.ready, timeout=60)
        except BaseException:
            server.stop()
            raise
    return server


def keys_command(
    where: Sequence[str], env: Mapping[str, str], *args: str
) -> "subprocess.CompletedProcess[str]":
    """``stemkube-api keys COMMAND <where> ARGS...`` (``where``: ``--local --data-dir=DIR``, or
    ``--namespace=NS`` with KUBECONFIG in ``env``), as an operator runs it."""
    command, *rest = args
    # This machine's environment, less what would point the command elsewhere.
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith("STEMKUBE_") and k != "KUBECONFIG"
    }
    return subprocess.run(
        [str(STEMKUBE_API), "keys", command, *where, *rest],
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def create_key(
    where: Sequence[str], env: Mapping[str, str], name: str, tenant: str, *flags: str
) -> str:
    """A new key (``flags``: --role admin, --expires 1h, --requests-per-minute 3...), as
    ``KEY=$(stemkube-api keys create ...)`` gets it."""
    done = keys_command(where, env, "create", f"--name={name}", f"--tenant={tenant}", *flags)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def revoke_key(where: Sequence[str], env: Mapping[str, str], name_or_id: str) -> None:
    done = keys_command(where, env, "revoke", name_or_id)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def start_api(
    cluster: Cluster,
    minio_server: MinioServer,
    stemkube_namespace: str,
    bucket: str,
    tmp_path: Path,
) -> Iterator[ApiFactory]:
    """Starts ``stemkube-api`` processes serving the test's namespace and bucket; keyword
    arguments are environment variables (e.g. ``MAX_FILE_SIZE="1MB"``). Without ``keyed`` the
    API runs without keys (STEMKUBE_AUTH=off); with it, keys are required (the chart's
    default) and the server sends the harness's key (made once per test); ``args`` are more
    flags."""
    started: list[ApiServer] = []
    keyed_with: list[str] = []
    kube = {"KUBECONFIG": str(cluster.kubeconfig)}

    def start(
        wait_ready: bool = True, keyed: bool = False, args: Sequence[str] = (), **env: str
    ) -> ApiServer:
        key = None
        if keyed:
            if not keyed_with:
                where = [f"--namespace={stemkube_namespace}"]
                keyed_with.append(create_key(where, kube, HARNESS_KEY_NAME, HARNESS_TENANT))
            key = keyed_with[0]
        else:
            env = {"STEMKUBE_AUTH": "off", **env}
        full_env = {
            "KUBECONFIG": str(cluster.kubeconfig),
            "STEMKUBE_NAMESPACE": stemkube_namespace,
            "STEMKUBE_BUCKET": bucket,
            "AWS_ENDPOINT_URL": minio_server.url,
            "AWS_ACCESS_KEY_ID": minio_server.access_key,
            "AWS_SECRET_ACCESS_KEY": minio_server.secret_key,
            "AWS_REGION": "us-east-1",
            MODELS_ENV: json.dumps(TIER_MODELS.to_json()),
            # As the harness's operator (start_operator): confinement off, keys at the
            # bucket's root. test_storage_scopes.py runs both with the default scopes.
            STORAGE_SCOPES_ENV: UNCONFINED.to_json(),
            **env,
        }
        server = launch_api(
            f"api-{len(started)}",
            full_env,
            tmp_path / "logs",
            wait_ready=False,
            args=args,
            key=key,
        )
        started.append(server)
        if wait_ready:
            procs.wait_ready(server.process, server.ready, timeout=60)
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


def wav_of(size: int) -> Iterator[bytes]:
    """A WAV header then zeros, ``size`` bytes in all, generated as it is sent."""
    head = sine_wav(0.001)
    yield head
    left = size - len(head)
    block = b"\x00" * MB
    while left > 0:
        yield block[: min(left, MB)]
        left -= MB


def post_generated_wav(
    http: httpx.Client, filename: str, size: int, timeout: float = 120
) -> httpx.Response:
    """POSTs /upload with a ``size``-byte WAV generated as it is sent: neither the test nor
    its client ever holds the file."""
    return http.post(
        "/upload",
        content=multipart_stream(filename, wav_of(size)),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        timeout=httpx.Timeout(timeout),
    )


def multipart_stream(filename: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A multipart/form-data body (boundary ``BOUNDARY``) with ``chunks`` as the file field,
    produced as it is sent: the client never holds the file."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    yield from chunks
    yield f"\r\n--{BOUNDARY}--\r\n".encode()
