"""Operator benchmark (``make bench-operator``) on the integration tier's real control plane.

1. 100 SeparationJobs created at once: from each CR's creation to its Job's creation, and from
   each Job's completion to its CR's ``Completed`` (p50, p95, max). The separation itself is
   not what is measured here, so the pods run a no-op stand-in image (``stemkube/noop``) and
   ask for no GPU, so that all run at once; the operator, API server, Job controller and
   scheduler are the real ones.
2. The operator's resident memory with 1,000 finished SeparationJobs present.

Times are taken by this process from watch events (millisecond resolution; the API's own
timestamps have one-second resolution).
"""

import contextlib
import datetime
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from stemkube_contract.resource import GROUP, PLURAL, VERSION
from tests.harness import procs
from tests.harness.controlplane import start_control_plane
from tests.harness.images import IMAGES, StandIn
from tests.harness.minio import start_minio
from tests.harness.node import NodeHeartbeat, NodeSpec
from tests.harness.podrunner import PodRunner
from tests.harness.stemkube import CRD_PATH
from tests.harness.tools import tool

NAMESPACE = "bench"
JOBS = int(os.environ.get("BENCH_JOBS", "100"))
FINISHED = int(os.environ.get("BENCH_FINISHED", "1000"))


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * 1000:7.0f} ms   p95 {p95 * 1000:7.0f} ms   "
        f"max {ordered[-1] * 1000:7.0f} ms   (n={len(ordered)})"
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cr_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SeparationJob",
        "metadata": {"name": name},
        "spec": {
            "input": {"bucket": "bench", "key": f"inputs/{name}/input.wav"},
            "output": {"bucket": "bench", "key": f"results/{name}.zip"},
        },
    }


class Watcher(threading.Thread):
    """Records when each Job appears and completes, and when each CR reaches Completed."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.job_created: dict[str, float] = {}
        self.job_completed: dict[str, float] = {}
        self.cr_completed: dict[str, float] = {}
        self.stop_flag = threading.Event()

    def run(self) -> None:
        threading.Thread(target=self._jobs, daemon=True).start()
        self._crs()

    def _jobs(self) -> None:
        batch = client.BatchV1Api(self.api)
        while not self.stop_flag.is_set():
            for event in watch.Watch().stream(
                batch.list_namespaced_job, NAMESPACE, timeout_seconds=5
            ):
                now = time.monotonic()
                job = event["object"]
                self.job_created.setdefault(job.metadata.name, now)
                for condition in job.status.conditions or []:
                    if condition.type == "Complete" and condition.status == "True":
                        self.job_completed.setdefault(job.metadata.name, now)

    def _crs(self) -> None:
        objects = client.CustomObjectsApi(self.api)
        while not self.stop_flag.is_set():
            for event in watch.Watch().stream(
                objects.list_namespaced_custom_object,
                GROUP,
                VERSION,
                NAMESPACE,
                PLURAL,
                timeout_seconds=5,
            ):
                cr = event["object"]
                if (cr.get("status") or {}).get("phase") == "Completed":
                    self.cr_completed.setdefault(cr["metadata"]["name"], time.monotonic())


def start_operator(
    plane_kubeconfig: Path, minio_env: dict[str, str], log_dir: Path
) -> procs.Process:
    process = procs.start(
        "operator",
        [
            Path(sys.executable).parent / "stemkube-operator",
            f"--namespace={NAMESPACE}",
            f"--port={procs.free_port()}",
            f"--lease-namespace={NAMESPACE}",
            "--log-format=plain",
        ],
        log_dir,
        env={
            "KUBECONFIG": str(plane_kubeconfig),
            "STEMKUBE_SEPARATOR_IMAGE": "stemkube/noop:bench",
            "STEMKUBE_GPU_COUNT": "0",
            "STEMKUBE_CPU_REQUEST": "10m",
            "STEMKUBE_MEMORY_REQUEST": "16Mi",
            **minio_env,
        },
    )
    return process


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="stemkube-bench-"))
    logs = workdir / "logs"
    plane = start_control_plane(workdir / "control-plane", logs)
    minio = start_minio(workdir / "minio", logs)
    minio_env = {
        "AWS_ENDPOINT_URL": minio.url,
        "AWS_ACCESS_KEY_ID": minio.access_key,
        "AWS_SECRET_ACCESS_KEY": minio.secret_key,
    }
    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    spec = NodeSpec(pods=max(110, JOBS + 10))
    heartbeat = NodeHeartbeat(api, spec)
    heartbeat.start()
    images = {**IMAGES, "stemkube/noop": StandIn(entrypoint=("true",))}
    runner = PodRunner(api, spec.name, workdir / "pods", images)
    runner.start()
    operator: procs.Process | None = None
    try:
        import subprocess

        subprocess.run(
            [
                str(tool("kubectl")),
                f"--kubeconfig={plane.kubeconfig}",
                "apply",
                "-f",
                str(CRD_PATH),
            ],
            check=True,
            capture_output=True,
        )
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        for account in ("default", "stemkube-separator"):
            with contextlib.suppress(client.ApiException):
                core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": account}})
        core.create_namespaced_secret(
            NAMESPACE,
            {
                "metadata": {"name": "stemkube-storage"},
                "stringData": {
                    "AWS_ACCESS_KEY_ID": minio.access_key,
                    "AWS_SECRET_ACCESS_KEY": minio.secret_key,
                },
            },
        )
        time.sleep(2)  # the CRD's discovery reaches the controllers

        operator = start_operator(plane.kubeconfig, minio_env, logs)
        time.sleep(5)
        watcher = Watcher(api)
        watcher.start()
        time.sleep(1)
        objects = client.CustomObjectsApi(api)
        created: dict[str, float] = {}
        names = [f"burst-{i:03d}" for i in range(JOBS)]
        print(f"creating {JOBS} SeparationJobs at once ...", flush=True)
        barrier = threading.Barrier(8)

        def create_share(share: list[str]) -> None:
            barrier.wait()
            for name in share:
                objects.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, cr_body(name)
                )
                created[name] = time.monotonic()

        threads = [threading.Thread(target=create_share, args=(names[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 600
        while len(watcher.cr_completed) < JOBS and time.monotonic() < deadline:
            time.sleep(0.5)
        watcher.stop_flag.set()
        to_job = [watcher.job_created[n] - created[n] for n in names if n in watcher.job_created]
        to_done = [
            watcher.cr_completed[n] - watcher.job_completed[n]
            for n in names
            if n in watcher.cr_completed and n in watcher.job_completed
        ]
        print(
            f"\n== {JOBS} SeparationJobs created at once "
            "(operator, real API server and Job controller)"
        )
        print(f"CR created   -> Job created      {percentiles(to_job)}")
        print(f"Job complete -> CR Completed     {percentiles(to_done)}")
        print(f"completed: {len(watcher.cr_completed)}/{JOBS}")

        # Memory with many finished jobs: stop the operator, add finished CRs, start it again.
        operator.stop()
        print(f"\ncreating {FINISHED} finished SeparationJobs ...", flush=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def create_finished(share: list[str]) -> None:
            for name in share:
                objects.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, cr_body(name)
                )
                objects.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    NAMESPACE,
                    PLURAL,
                    name,
                    {"status": {"phase": "Completed", "progress": 100, "completionTime": stamp}},
                )

        finished = [f"done-{i:04d}" for i in range(FINISHED)]
        threads = [
            threading.Thread(target=create_finished, args=(finished[i::8],)) for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        operator = start_operator(plane.kubeconfig, minio_env, logs)
        time.sleep(30)  # it lists everything, builds its index and starts its timers
        samples = []
        for _ in range(10):
            samples.append(rss_mib(operator.popen.pid))
            time.sleep(1)
        total = FINISHED + JOBS
        print(f"== operator memory with {total} finished SeparationJobs present")
        print(f"RSS: {max(samples):.0f} MiB (max of 10 samples over 10 s, 30 s after start)")
        return 0
    finally:
        if operator is not None:
            operator.stop()
        runner.stop()
        heartbeat.stop()
        minio.stop()
        plane.stop()


if __name__ == "__main__":
    sys.exit(main())
