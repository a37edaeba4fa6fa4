"""Operator benchmark (``make bench-operator``) on the integration tier's real control plane.

1. 100 SeparationJobs created at once: from each CR's creation to its Job's creation, and from
   each Job's completion to its CR's ``Completed`` (p50, p95, max). The separation itself is
   not what is measured here, so the pods run a no-op stand-in image (``stemkube/noop``) and
   ask for no GPU, so that all run at once; the operator, API server, Job controller and
   scheduler are the real ones.
2. What a finished separation leaves in etcd: its SeparationJob, its Events, and its Job and
   pod while they stay (the operator deletes them once the outcome is recorded; sizes are the
   objects' JSON as the API server serves them, what etcd holds to within its encoding).
3. Kueue: 100 SeparationJobs (``BENCH_KUEUE_JOBS``) created at once with a queue, against the
   real Kueue controller (``tests.harness.kueue``) and a ClusterQueue with room for all: from
   each CR's creation to its (suspended) Job, to Kueue admitting it (the Job unsuspended), and
   to the CR's ``Completed``.
4. The operator's resident memory with 10,000 finished SeparationJobs (``BENCH_FINISHED``):
   made while it runs, 1,000 at a time (``BENCH_WAVE``), as a service's history accrues (each
   fails at once for a model the deployment does not serve: a whole lifecycle, finalizer,
   events and the settled label included, without a Job), then again after a restart.

Times are taken by this process from watch events (millisecond resolution; the API's own
timestamps have one-second resolution).
"""

import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from stemkube_contract import kueue
from stemkube_contract.resource import GROUP, PLURAL, SETTLED, SETTLED_LABEL, VERSION
from stemkube_contract.scopes import STORAGE_SCOPES_ENV, UNCONFINED
from tests.harness import procs
from tests.harness.controlplane import ControlPlane, start_control_plane
from tests.harness.images import IMAGES, StandIn
from tests.harness.kueue import Kueue, start_kueue
from tests.harness.minio import start_minio
from tests.harness.node import NodeHeartbeat, NodeSpec
from tests.harness.podrunner import PodRunner
from tests.harness.stemkube import CRD_PATH
from tests.harness.tools import tool

NAMESPACE = "bench"
JOBS = int(os.environ.get("BENCH_JOBS", "100"))
FINISHED = int(os.environ.get("BENCH_FINISHED", "10000"))
WAVE = int(os.environ.get("BENCH_WAVE", "1000"))  # finished ones made at a time
WAVE_LABEL = "bench.stemkube.io/wave"
KUEUE_JOBS = int(os.environ.get("BENCH_KUEUE_JOBS", "100"))
KUEUE_QUEUE = "bench"
# name -> the size of each Job when it completed, and of each pod when last seen
JOB_SIZES: dict[str, int] = {}
POD_SIZES: dict[str, int] = {}


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
        self.job_admitted: dict[str, float] = {}  # a queued Job, when Kueue unsuspended it
        self.cr_completed: dict[str, float] = {}
        self.stop_flag = threading.Event()

    def run(self) -> None:
        threading.Thread(target=self._jobs, daemon=True).start()
        threading.Thread(target=self._pods, daemon=True).start()
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
                queued = kueue.QUEUE_LABEL in (job.metadata.labels or {})
                if queued and job.spec.suspend is False:
                    self.job_admitted.setdefault(job.metadata.name, now)
                done = any(
                    c.type == "Complete" and c.status == "True" for c in job.status.conditions or []
                )
                if done and job.metadata.name not in self.job_completed:
                    self.job_completed[job.metadata.name] = now
                    JOB_SIZES[job.metadata.name] = self._size(job)

    def _size(self, obj: Any) -> int:
        return len(json.dumps(self.api.sanitize_for_serialization(obj), separators=(",", ":")))

    def _pods(self) -> None:
        """The last size of each pod seen: what a finished one would keep in etcd."""
        core = client.CoreV1Api(self.api)
        while not self.stop_flag.is_set():
            for event in watch.Watch().stream(
                core.list_namespaced_pod, NAMESPACE, timeout_seconds=5
            ):
                if event["type"] != "DELETED":
                    POD_SIZES[event["object"].metadata.name] = self._size(event["object"])

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
            # The bench's keys are its own: no storage scope.
            STORAGE_SCOPES_ENV: UNCONFINED.to_json(),
            # The Jobs' no-op pods never call the job link: any address will do.
            "STEMKUBE_LINK_PORT": str(procs.free_port()),
            "STEMKUBE_LINK_URL": "http://127.0.0.1:9",
            **minio_env,
        },
    )
    return process


def _sizes(response: Any) -> list[int]:
    """The JSON size of each item of a list answer (raw, as the API server sent it)."""
    items = json.loads(response.data).get("items", [])
    return [len(json.dumps(item, separators=(",", ":"))) for item in items]


def footprint(api: client.ApiClient, names: list[str]) -> None:
    """Bytes per finished separation in etcd, once the operator has retired its Job."""
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    objects = client.CustomObjectsApi(api)
    deadline = time.monotonic() + 60
    while batch.list_namespaced_job(NAMESPACE).items and time.monotonic() < deadline:
        time.sleep(1)
    crs = _sizes(
        objects.list_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, _preload_content=False
        )
    )
    jobs = _sizes(batch.list_namespaced_job(NAMESPACE, _preload_content=False))
    pods = _sizes(core.list_namespaced_pod(NAMESPACE, _preload_content=False))
    events = _sizes(core.list_namespaced_event(NAMESPACE, _preload_content=False))
    n = max(1, len(names))
    print(f"\n== what {len(names)} finished separations leave in etcd (bytes of JSON)")
    print(f"SeparationJob  {sum(crs) / max(1, len(crs)):8.0f} per object  ({len(crs)} objects)")
    print(f"Events         {sum(events) / n:8.0f} per separation ({len(events)} objects; 1 h TTL)")
    print(f"Jobs           {sum(jobs) / n:8.0f} per separation ({len(jobs)} left after 60 s)")
    print(f"Pods           {sum(pods) / n:8.0f} per separation ({len(pods)} left)")
    print(
        f"total          {(sum(crs) + sum(events) + sum(jobs) + sum(pods)) / n:8.0f} per separation"
    )
    if JOB_SIZES and POD_SIZES:
        kept = statistics.mean(JOB_SIZES.values()) + statistics.mean(POD_SIZES.values())
        print(f"a finished Job and pod kept until their TTL would add {kept:8.0f} per separation")


def peak_rss(pid: int) -> float:
    """The most of 10 samples a second apart."""
    samples = []
    for _ in range(10):
        samples.append(rss_mib(pid))
        time.sleep(1)
    return max(samples)


def settled_count(objects: client.CustomObjectsApi, wave: int) -> int:
    """How many of a wave's SeparationJobs the operator has labelled settled."""
    selector = f"{WAVE_LABEL}={wave},{SETTLED_LABEL}={SETTLED}"
    page = objects.list_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, label_selector=selector
    )
    return len(page["items"])


def burst(objects: client.CustomObjectsApi, names: list[str], **spec: str) -> dict[str, float]:
    """Creates the SeparationJobs ``names`` from 8 threads at once; when each was created."""
    created: dict[str, float] = {}
    barrier = threading.Barrier(8)

    def create_share(share: list[str]) -> None:
        barrier.wait()
        for name in share:
            body = cr_body(name)
            body["spec"].update(spec)
            objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
            created[name] = time.monotonic()

    threads = [threading.Thread(target=create_share, args=(names[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return created


def kueue_burst(
    plane: ControlPlane, api: client.ApiClient, watcher: Watcher, workdir: Path
) -> dict[str, list[float]]:
    """KUEUE_JOBS SeparationJobs at once through a real Kueue whose ClusterQueue has room for
    all: what Kueue adds between a CR and its running Job."""
    started: Kueue = start_kueue(plane, api, workdir / "kueue", workdir / "logs")
    try:
        objects = client.CustomObjectsApi(api)

        def make(plural: str, body: dict[str, Any], namespace: str | None = None) -> None:
            body = {"apiVersion": f"{kueue.GROUP}/{kueue.VERSION}", **body}
            if namespace:
                objects.create_namespaced_custom_object(
                    kueue.GROUP, kueue.VERSION, namespace, plural, body
                )
            else:
                objects.create_cluster_custom_object(kueue.GROUP, kueue.VERSION, plural, body)

        make("resourceflavors", {"kind": "ResourceFlavor", "metadata": {"name": "bench"}})
        quota = [{"name": "cpu", "nominalQuota": "1000"}, {"name": "memory", "nominalQuota": "1Ti"}]
        make(
            "clusterqueues",
            {
                "kind": "ClusterQueue",
                "metadata": {"name": "bench"},
                "spec": {
                    "namespaceSelector": {},
                    "resourceGroups": [
                        {
                            "coveredResources": ["cpu", "memory"],
                            "flavors": [{"name": "bench", "resources": quota}],
                        }
                    ],
                },
            },
        )
        make(
            "localqueues",
            {
                "kind": "LocalQueue",
                "metadata": {"name": KUEUE_QUEUE},
                "spec": {"clusterQueue": "bench"},
            },
            NAMESPACE,
        )
        time.sleep(5)  # the queues become active
        names = [f"queued-{i:03d}" for i in range(KUEUE_JOBS)]
        print(f"\ncreating {KUEUE_JOBS} SeparationJobs at once, queued in Kueue ...", flush=True)
        created = burst(objects, names, queueName=KUEUE_QUEUE)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if all(n in watcher.cr_completed for n in names):
                break
            time.sleep(0.5)
        print(f"\n== {KUEUE_JOBS} SeparationJobs created at once through Kueue (real controller)")

        def since(seen: dict[str, float]) -> list[float]:
            return [seen[n] - created[n] for n in names if n in seen]

        return {
            "job": since(watcher.job_created),
            "admitted": since(watcher.job_admitted),
            "done": since(watcher.cr_completed),
        }
    finally:
        started.stop()


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
        time.sleep(2)  # the CRD's discovery reaches the controllers

        operator = start_operator(plane.kubeconfig, minio_env, logs)
        time.sleep(5)
        watcher = Watcher(api)
        watcher.start()
        time.sleep(1)
        objects = client.CustomObjectsApi(api)
        names = [f"burst-{i:03d}" for i in range(JOBS)]
        print(f"creating {JOBS} SeparationJobs at once ...", flush=True)
        created = burst(objects, names)
        deadline = time.monotonic() + 600
        while len(watcher.cr_completed) < JOBS and time.monotonic() < deadline:
            time.sleep(0.5)
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
        footprint(api, names)
        kueued = kueue_burst(plane, api, watcher, workdir)
        watcher.stop_flag.set()
        print(f"CR created   -> Job created      {percentiles(kueued['job'])}")
        print(f"CR created   -> Kueue admitted   {percentiles(kueued['admitted'])}")
        print(f"CR created   -> CR Completed     {percentiles(kueued['done'])}")
        print(f"completed: {len(kueued['done'])}/{KUEUE_JOBS}")

        # Memory with a history: finished SeparationJobs made while the operator runs, in
        # waves (a service's history accrues; a burst's own peak is phase 1's question).
        print(f"\ncreating {FINISHED} SeparationJobs that fail at once, {WAVE} at a time ...")
        before = rss_mib(operator.popen.pid)

        def create_refused(share: list[str], wave: int) -> None:
            for name in share:
                body = cr_body(name)
                body["metadata"]["labels"] = {WAVE_LABEL: str(wave)}
                body["spec"]["model"] = "not-served"  # refused: UnknownModel, no Job
                objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)

        finished = [f"done-{i:05d}" for i in range(FINISHED)]
        waves: list[tuple[int, float]] = []
        for start in range(0, FINISHED, WAVE):
            wave = finished[start : start + WAVE]
            threads = [
                threading.Thread(target=create_refused, args=(wave[i::8], start)) for i in range(8)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            deadline = time.monotonic() + 600
            while settled_count(objects, start) < len(wave) and time.monotonic() < deadline:
                time.sleep(2)
            waves.append((start + len(wave), rss_mib(operator.popen.pid)))
            print(f"  {waves[-1][0]:6d} settled: RSS {waves[-1][1]:6.0f} MiB", flush=True)
        time.sleep(30)
        live = peak_rss(operator.popen.pid)
        operator.stop()
        operator = start_operator(plane.kubeconfig, minio_env, logs)
        time.sleep(60)  # it lists what is unsettled, and the settled watch lists the rest
        restarted = peak_rss(operator.popen.pid)
        half, half_rss = waves[len(waves) // 2 - 1] if len(waves) > 1 else waves[0]
        each = (live - half_rss) * 1024 / max(1, FINISHED - half)
        print(f"\n== operator memory with {FINISHED + JOBS} finished SeparationJobs present")
        print(f"RSS before them          {before:6.0f} MiB")
        print(f"RSS with {half:6d} of them  {half_rss:6.0f} MiB")
        print(
            f"RSS with all (live)      {live:6.0f} MiB   "
            f"({each:5.2f} KiB each from {half} to {FINISHED})"
        )
        print(f"RSS after a restart      {restarted:6.0f} MiB   (60 s after its start)")
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
