"""API benchmark (``make bench-api``) on the integration tier's real control plane and MinIO.

1. Upload throughput: one large upload (``--size``, default 1GB) POSTed to ``/upload`` of a
   ``stemkube-api`` process, which streams it into MinIO as an S3 multipart upload; beside it
   the same bytes put straight into the same MinIO with the same client library (``minio``'s
   ``put_object`` with a streaming reader, the API's part size, one part at a time, as the API
   sends them). Prints both rates and their ratio.
2. The API process's peak RSS (VmHWM) during that upload, and its RSS before.
3. ``GET /status/{id}`` requests per second with 1,000 SeparationJobs present (created
   directly through the Kubernetes API; no operator runs, so they stay pending), from
   concurrent clients, with p50/p99 latency; and the latency of ``GET /jobs?limit=100``.

The upload bodies are generated as they are sent: nothing is written to this machine's disk
but what MinIO stores. Everything started here is stopped, and the temporary directory
removed, at the end, on an error or on Ctrl-C.
"""

import argparse
import asyncio
import contextlib
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import BinaryIO, cast

import httpx
from kubernetes import client, config
from minio import Minio

from stemkube_api.interfaces import NewJob
from stemkube_api.jobs import input_key, result_key
from stemkube_api.kubernetes.backend import manifest
from stemkube_api.kubernetes.store import part_size_for
from stemkube_api.sizes import format_size, parse_size
from stemkube_contract.models import Catalog
from stemkube_contract.resource import GROUP, PLURAL, VERSION
from tests.harness.api import MB, ApiServer, launch_api, post_generated_wav, wav_of
from tests.harness.controlplane import start_control_plane
from tests.harness.minio import MinioServer, start_minio
from tests.harness.stemkube import CRD_PATH
from tests.harness.tools import tool

NAMESPACE = "bench"
BUCKET = "bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    # The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class GeneratedReader:
    """A read-only file over an iterator of chunks, for ``put_object``: ``read(n)`` answers
    ``n`` bytes at once (fewer only at the end), because the minio client concatenates short
    reads into a part one ``bytes +=`` at a time, a copying cost the API side does not pay."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        parts, have = [self._pending], len(self._pending)
        while size < 0 or have < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if size < 0:
            self._pending = b""
            return data
        self._pending = data[size:]
        return data[:size]


@dataclass
class UploadResult:
    size: int
    part_size: int
    api_seconds: float
    direct_seconds: float
    rss_before_mib: float
    peak_before_mib: float
    peak_during_mib: float
    api_cpu_seconds: float

    @property
    def api_rate(self) -> float:
        return self.size / MB / self.api_seconds

    @property
    def direct_rate(self) -> float:
        return self.size / MB / self.direct_seconds


@dataclass
class DirectResult:
    """A direct upload (POST /uploads, the parts PUT to presigned URLs, complete): the bytes
    go client -> MinIO; the API only presigns, completes and sniffs the first bytes."""

    size: int
    part_size: int
    parts: int
    seconds: float
    peak_before_mib: float
    peak_during_mib: float
    api_cpu_seconds: float


@dataclass
class StatusResult:
    jobs: int
    concurrency: int
    seconds: float
    latencies: list[float]
    errors: int
    api_cpu: float  # share of one core the API process used while serving them
    client_cpu: float  # the same for this process, the clients: which of the two is the limit
    rss_mib: float
    list_latencies: list[float]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


def measure_direct(api: ApiServer, s3: Minio, size: int) -> DirectResult:
    os.sync()
    pid = api.process.popen.pid
    with api.client() as http, httpx.Client(timeout=600) as store:
        http.get("/jobs")
        peak_before, cpu_before = api.peak_rss_mib(), cpu_seconds(pid)
        print(f"uploading {format_size(size)} directly (presigned parts) ...", flush=True)
        started = time.perf_counter()
        created = http.post("/uploads", json={"filename": "bench.wav", "size": size})
        if created.status_code != 200:
            raise RuntimeError(f"POST /uploads: {created.status_code} {created.text}")
        upload = created.json()
        chunks = GeneratedReader(wav_of(size))
        done_parts = []
        for part in upload["parts"]:
            sent = store.put(part["url"], content=chunks.read(upload["part_size"]))
            sent.raise_for_status()
            done_parts.append({"number": part["number"], "etag": sent.headers["etag"]})
        done = http.post(
            f"/uploads/{upload['upload_id']}/complete", json={"parts": done_parts}, timeout=600
        )
        if done.status_code != 200:
            raise RuntimeError(f"complete: {done.status_code} {done.text}")
        seconds = time.perf_counter() - started
        peak_during, cpu = api.peak_rss_mib(), cpu_seconds(pid) - cpu_before
        job_id = done.json()["job_id"]
        stored = s3.stat_object(BUCKET, input_key(job_id, "wav")).size
        if stored != size:
            raise RuntimeError(f"the direct upload stored {stored} bytes of {size}")
        http.delete(f"/job/{job_id}").raise_for_status()
    return DirectResult(
        size,
        upload["part_size"],
        len(upload["parts"]),
        seconds,
        peak_before,
        peak_during,
        cpu,
    )


def measure_uploads(api: ApiServer, s3: Minio, size: int, limit: int) -> UploadResult:
    # Each run starts with MinIO's disk written back, so neither pays for the other's writes.
    os.sync()
    with api.client() as http:
        http.get("/jobs")  # the routes and the watch cache are warm before the baseline
        rss_before, peak_before = api.rss_mib(), api.peak_rss_mib()
        cpu_before = cpu_seconds(api.process.popen.pid)
        print(f"uploading {format_size(size)} through the API ...", flush=True)
        started = time.perf_counter()
        response = post_generated_wav(http, "bench.wav", size, timeout=1800)
        api_seconds = time.perf_counter() - started
        api_cpu = cpu_seconds(api.process.popen.pid) - cpu_before
        if response.status_code != 200:
            raise RuntimeError(f"upload through the API: {response.status_code} {response.text}")
        peak_during = api.peak_rss_mib()
        job_id = response.json()["job_id"]
        stored = s3.stat_object(BUCKET, input_key(job_id, "wav")).size
        if stored != size:
            raise RuntimeError(f"the API stored {stored} bytes of {size}")
        # Its SeparationJob would be a 1,001st job in the status measurement.
        http.delete(f"/job/{job_id}").raise_for_status()

    os.sync()
    part_size = part_size_for(limit)
    print(f"uploading {format_size(size)} straight to MinIO ...", flush=True)
    key = "direct/bench.wav"
    started = time.perf_counter()
    # length -1 and one part at a time: the API does not know the size either, and sends its
    # parts one after the other.
    s3.put_object(
        BUCKET,
        key,
        # put_object only ever calls read(): a whole BinaryIO is more than it needs.
        cast(BinaryIO, GeneratedReader(wav_of(size))),
        length=-1,
        part_size=part_size,
        num_parallel_uploads=1,
        content_type="application/octet-stream",
    )
    direct_seconds = time.perf_counter() - started
    stored = s3.stat_object(BUCKET, key).size
    if stored != size:
        raise RuntimeError(f"the direct upload stored {stored} bytes of {size}")
    s3.remove_object(BUCKET, key)
    return UploadResult(
        size, part_size, api_seconds, direct_seconds, rss_before, peak_before, peak_during, api_cpu
    )


def create_jobs(kube: client.ApiClient, count: int) -> list[str]:
    """``count`` SeparationJobs as the API itself would write them for uploads."""
    objects = client.CustomObjectsApi(kube)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    errors: list[BaseException] = []

    def create(share: list[str]) -> None:
        try:
            for job_id in share:
                job = NewJob(job_id, {}, input_key(job_id, "wav"), "song.wav")
                body = manifest(job, NAMESPACE, BUCKET, result_key(job_id), Catalog())
                objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
        except BaseException as exc:
            errors.append(exc)

    # A few writers at once: the API server and etcd, not this loop, set the pace.
    threads = [threading.Thread(target=create, args=(ids[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return ids


async def hammer_status(
    api: ApiServer, ids: list[str], concurrency: int, seconds: float
) -> tuple[list[float], int, float, float, float]:
    """``concurrency`` clients each sending GET /status/{random id} back to back for
    ``seconds`` (after a one-second warm-up that opens the connections): the latencies, the
    number of answers other than 200, the measured time, and the API's and this process's
    CPU time in it."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=api.url, timeout=30, limits=limits) as http:
        measuring = False
        stop_at = time.perf_counter() + 1.0

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                response = await http.get(f"/status/{random.choice(ids)}")
                elapsed = time.perf_counter() - started
                if not measuring:
                    continue
                if response.status_code == 200:
                    latencies.append(elapsed)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm-up
        measuring = True
        cpu_before = cpu_seconds(api.process.popen.pid)
        client_before = time.process_time()
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        measured = time.perf_counter() - started
        api_cpu = cpu_seconds(api.process.popen.pid) - cpu_before
        client_cpu = time.process_time() - client_before
    return latencies, errors, measured, api_cpu, client_cpu


def measure_status(
    api: ApiServer, kube: client.ApiClient, jobs: int, concurrency: int, seconds: float
) -> StatusResult:
    print(f"creating {jobs} SeparationJobs ...", flush=True)
    ids = create_jobs(kube, jobs)
    deadline = time.monotonic() + 300
    with api.client() as http:
        while True:
            count = http.get("/jobs").json()["count"]
            if count == jobs:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API lists {count} jobs, not {jobs}, after 300 s")
            time.sleep(0.5)
    print(
        f"GET /status/{{id}} from {concurrency} concurrent clients for {seconds:.0f} s ...",
        flush=True,
    )
    latencies, errors, measured, api_cpu, client_cpu = asyncio.run(
        hammer_status(api, ids, concurrency, seconds)
    )
    with api.client() as http:
        list_latencies = []
        for i in range(55):
            started = time.perf_counter()
            response = http.get("/jobs", params={"limit": 100})
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if i >= 5:  # the first few warm the connection
                list_latencies.append(elapsed)
    return StatusResult(
        jobs,
        concurrency,
        measured,
        latencies,
        errors,
        api_cpu / measured,
        client_cpu / measured,
        api.rss_mib(),
        list_latencies,
    )


def set_up_cluster(kubeconfig: Path, kube: client.ApiClient, s3: Minio) -> None:
    kubectl = [str(tool("kubectl")), f"--kubeconfig={kubeconfig}"]
    subprocess.run([*kubectl, "apply", "-f", str(CRD_PATH)], check=True, capture_output=True)
    subprocess.run(
        [*kubectl, "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}"],
        check=True,
        capture_output=True,
    )
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": NAMESPACE}})
    s3.make_bucket(BUCKET)


def api_env(kubeconfig: Path, minio: MinioServer, limit: int) -> dict[str, str]:
    return {
        "KUBECONFIG": str(kubeconfig),
        "STEMKUBE_AUTH": "off",  # throughput, not keys: one less lookup per request
        "STEMKUBE_NAMESPACE": NAMESPACE,
        "STEMKUBE_BUCKET": BUCKET,
        "MAX_FILE_SIZE": str(limit),
        "AWS_ENDPOINT_URL": minio.url,
        "AWS_ACCESS_KEY_ID": minio.access_key,
        "AWS_SECRET_ACCESS_KEY": minio.secret_key,
        "AWS_REGION": "us-east-1",
    }


def report(upload: UploadResult, status: StatusResult, direct: DirectResult) -> None:
    size = format_size(upload.size)
    ms = [x * 1000 for x in status.latencies]
    list_ms = [x * 1000 for x in status.list_latencies]
    print(f"\n== summary ({size} = {upload.size:,} bytes; MB = 1,048,576 bytes, as MAX_FILE_SIZE)")
    print(f"upload via API:   {upload.api_rate:7.1f} MB/s   ({upload.api_seconds:.2f} s)")
    print(
        f"direct to MinIO:  {upload.direct_rate:7.1f} MB/s   ({upload.direct_seconds:.2f} s; "
        f"minio put_object, {format_size(upload.part_size)} parts one at a time)"
    )
    print(f"ratio API/direct: {upload.api_rate / upload.direct_rate:7.2f}")
    print(
        f"direct upload (POST /uploads, {direct.parts} presigned parts of "
        f"{format_size(direct.part_size)}, complete): {direct.size / MB / direct.seconds:.1f} MB/s "
        f"({direct.seconds:.2f} s); API process: {direct.api_cpu_seconds:.2f} s CPU, peak RSS "
        f"{direct.peak_during_mib:.0f} MiB (before {direct.peak_before_mib:.0f} MiB)"
    )
    cpu_ratio = direct.api_cpu_seconds / max(upload.api_cpu_seconds, 1e-9)
    print(
        f"API process CPU for {size}: {upload.api_cpu_seconds:.2f} s through /upload, "
        f"{direct.api_cpu_seconds:.2f} s direct (ratio {cpu_ratio:.3f})"
    )
    print(
        f"API peak RSS during {size} upload: {upload.peak_during_mib:.0f} MiB "
        f"(before: {upload.rss_before_mib:.0f} MiB; peak before: {upload.peak_before_mib:.0f} MiB)"
    )
    print(
        f"status: {status.rate:.0f} req/s, p50 {statistics.median(ms):.1f} ms, "
        f"p99 {percentile(ms, 0.99):.1f} ms ({status.jobs} jobs, {status.concurrency} "
        f"concurrent, {len(ms)} requests in {status.seconds:.1f} s, {status.errors} errors)"
    )
    # CPU per request tells what one API process could serve were the clients not the limit.
    per_request = status.api_cpu * status.seconds / max(1, len(ms)) * 1000
    print(
        f"status CPU: API process {status.api_cpu:.0%} of one core ({per_request:.2f} ms per "
        f"request), clients {status.client_cpu:.0%}"
    )
    print(
        f"jobs?limit=100: p50 {statistics.median(list_ms):.1f} ms, "
        f"p99 {percentile(list_ms, 0.99):.1f} ms (n={len(list_ms)}, one at a time)"
    )
    print(f"API RSS with {status.jobs} jobs: {status.rss_mib:.0f} MiB")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", default="1GB", help="upload size, e.g. 200MB (default 1GB)")
    parser.add_argument("--jobs", type=int, default=1000, help="SeparationJobs present")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent status clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="status hammering time")
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    # As Ctrl-C: unwinds through the clean-up below.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    size = parse_size(args.size)
    # Room above the upload (the form's own bytes), and the same part size on both paths.
    limit = 2 * size
    signal.signal(signal.SIGTERM, _terminate)
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="stemkube-bench-api-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        logs = workdir / "logs"
        print("starting etcd, kube-apiserver, controllers and MinIO ...", flush=True)
        plane = start_control_plane(workdir / "control-plane", logs)
        stack.callback(plane.stop)
        minio = start_minio(workdir / "minio", logs)
        stack.callback(minio.stop)
        kube = config.new_client_from_config(config_file=str(plane.kubeconfig))
        stack.callback(kube.close)
        s3 = minio.client()
        api: ApiServer | None = None
        try:
            set_up_cluster(plane.kubeconfig, kube, s3)
            api = launch_api("api", api_env(plane.kubeconfig, minio, limit), logs)
            stack.callback(api.stop)
            direct = measure_direct(api, s3, size)
            upload = measure_uploads(api, s3, size, limit)
            status = measure_status(api, kube, args.jobs, args.concurrency, args.seconds)
        except Exception:
            # The logs go with the temporary directory: show what they say first.
            for process in [*plane.processes, minio.process, *([api.process] if api else [])]:
                print(f"== {process.name} log tail ==\n{process.log_tail(20)}", file=sys.stderr)
            raise
    report(upload, status, direct)
    return 0


if __name__ == "__main__":
    sys.exit(main())
