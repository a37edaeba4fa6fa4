"""Operator benchmark (``make bench-operator``) on the integration tier's real control plane.

1. Bursts: 100, then 1,000 SeparationJobs created at once (``BENCH_BURSTS``), side by side:
   from each CR's creation to its Job's creation, and from each Job's completion to its CR's
   ``Completed`` (p50, p95, p99, max); and where the time went: the API server's requests per
   separation by verb and resource (its ``apiserver_request_total``, every client's), and the
   operator's CPU seconds per separation. The separation itself is not what is measured here,
   so the pods run a no-op stand-in image (``stemkube/noop``) and ask for no GPU, so that all
   run at once; the operator, API server, Job controller and scheduler are the real ones.
2. What a finished separation leaves in etcd: its SeparationJob, its Events, and its Job and
   pod while they stay (the operator deletes them once the outcome is recorded; sizes are the
   objects' JSON as the API server serves them, what etcd holds to within its encoding).
3. Kueue: 100 SeparationJobs (``BENCH_KUEUE_JOBS``; 0 skips this) created at once with a
   queue, against the real Kueue controller (``tests.harness.kueue``) and a ClusterQueue with
   room for all: from each CR's creation to its (suspended) Job, to Kueue admitting it (the
   Job unsuspended), and to the CR's ``Completed``.
4. The operator's resident memory with 10,000 finished SeparationJobs (``BENCH_FINISHED``; 0
   skips this): made while it runs, 1,000 at a time (``BENCH_WAVE``), as a service's history
   accrues (each fails at once for a model the deployment does not serve: a whole lifecycle,
   finalizer, events and the settled label included, without a Job), then again after a
   restart.

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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config

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
BURSTS = [int(n) for n in os.environ.get("BENCH_BURSTS", "100,1000").split(",") if n.strip()]
FINISHED = int(os.environ.get("BENCH_FINISHED", "10000"))
WAVE = int(os.environ.get("BENCH_WAVE", "1000"))  # finished ones made at a time
WAVE_LABEL = "bench.stemkube.io/wave"
KUEUE_JOBS = int(os.environ.get("BENCH_KUEUE_JOBS", "100"))
KUEUE_QUEUE = "bench"
# A path: each burst's moments per SeparationJob (created, Job created, Job complete, CR
# Completed) go to PATH.<size>.json.
DUMP = os.environ.get("BENCH_DUMP", "")
# name -> the size of each Job when it completed, and of each pod when last seen
JOB_SIZES: dict[str, int] = {}
POD_SIZES: dict[str, int] = {}


def percentiles(values: list[float]) -> str:
    if not values:
        return "(none)"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return (
        f"p50 {statistics.median(ordered) * 1000:7.0f} ms   p95 {at(0.95):7.0f} ms   "
        f"p99 {at(0.99):7.0f} ms   max {ordered[-1] * 1000:7.0f} ms   (n={len(ordered)})"
    )


def api_requests(api: client.ApiClient) -> Counter[str]:
    """The API server's requests so far by verb and resource (every client's), from its
    ``apiserver_request_total``."""
    response = api.call_api(
        "/metrics",
        "GET",
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
    )
    counts: Counter[str] = Counter()
    for line in response.data.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line[len("apiserver_request_total{") :].rsplit("} ", 1)
        labels = dict(
            part.split("=", 1) for part in labels_text.replace('"', "").split(",") if "=" in part
        )
        if labels.get("verb") == "WATCH":
            continue
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[f"{labels.get('verb')} {resource}"] += int(float(value))
    return counts


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User and system CPU the process has used so far (with its ended children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14])) * children
    return used / os.sysconf("SC_CLK_TCK")


def tier_cpu() -> dict[str, float]:
    """CPU seconds so far of each process this bench started (the API server, etcd, the
    controllers, MinIO, the operator), and of this one (its watches, and the stand-in
    kubelet's threads and pods)."""
    used = {"bench and pods": cpu_seconds(os.getpid(), children=True)}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if int(rest.split()[1]) == os.getpid():
            name = head.split("(", 1)[1]
            used[name] = used.get(name, 0.0) + cpu_seconds(int(stat.parent.name), children=True)
    return used


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
    """Records when each Job appears and completes, and when each CR reaches Completed.

    It reads the watches' JSON as it comes, without the client's models: with 1,000 Jobs and
    pods changing at once, building those took most of a core from the operator it measures."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.job_created: dict[str, float] = {}
        self.job_completed: dict[str, float] = {}
        self.job_admitted: dict[str, float] = {}  # a queued Job, when Kueue unsuspended it
        self.cr_completed: dict[str, float] = {}
        self.stop_flag = threading.Event()

    def run(self) -> None:
        threading.Thread(
            target=self._watch,
            args=(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", self._job),
            daemon=True,
        ).start()
        threading.Thread(
            target=self._watch,
            args=(f"/api/v1/namespaces/{NAMESPACE}/pods", self._pod),
            daemon=True,
        ).start()
        self._watch(f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}", self._cr)

    def _watch(self, path: str, seen: Callable[[str, dict[str, Any]], None]) -> None:
        """Every event of ``path``'s objects, resumed from the last resourceVersion."""
        version = ""
        while not self.stop_flag.is_set():
            query = [("watch", "true"), ("timeoutSeconds", "30"), ("allowWatchBookmarks", "true")]
            if version:
                query.append(("resourceVersion", version))
            try:
                response = self.api.call_api(
                    path,
                    "GET",
                    query_params=query,
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _return_http_data_only=True,
                    _request_timeout=60,
                )
                for line in response:
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":  # 410: too old; start from now
                        version = ""
                        break
                    version = obj["metadata"].get("resourceVersion", version)
                    if event["type"] != "BOOKMARK":
                        seen(event["type"], obj)
            except (client.ApiException, urllib3.exceptions.HTTPError, OSError):
                # The API server stopped (the bench's end) or dropped the stream: again.
                self.stop_flag.wait(1)

    def _job(self, kind: str, job: dict[str, Any]) -> None:
        now = time.monotonic()
        name = job["metadata"]["name"]
        self.job_created.setdefault(name, now)
        queued = kueue.QUEUE_LABEL in (job["metadata"].get("labels") or {})
        if queued and job["spec"].get("suspend") is False:
            self.job_admitted.setdefault(name, now)
        done = any(
            c.get("type") == "Complete" and c.get("status") == "True"
            for c in (job.get("status") or {}).get("conditions") or []
        )
        if done and name not in self.job_completed:
            self.job_completed[name] = now
            JOB_SIZES[name] = _size(job)

    def _pod(self, kind: str, pod: dict[str, Any]) -> None:
        """The last size of each pod seen: what a finished one would keep in etcd."""
        if kind != "DELETED":
            POD_SIZES[pod["metadata"]["name"]] = _size(pod)

    def _cr(self, kind: str, cr: dict[str, Any]) -> None:
        if (cr.get("status") or {}).get("phase") == "Completed":
            self.cr_completed.setdefault(cr["metadata"]["name"], time.monotonic())


def _size(obj: dict[str, Any]) -> int:
    return len(json.dumps(obj, separators=(",", ":")))


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


@dataclass
class BurstResult:
    size: int
    names: list[str]
    to_job: list[float]
    to_done: list[float]
    completed: int
    creating: float  # seconds the bench took to create them all
    seconds: float
    requests: Counter[str]
    operator_cpu: float
    cpu: dict[str, float]  # seconds of CPU by process

    def show(self) -> None:
        n = max(1, self.size)
        print(
            f"\n== {self.size} SeparationJobs created at once "
            "(operator, real API server and Job controller)"
        )
        print(f"CR created   -> Job created      {percentiles(self.to_job)}")
        print(f"Job complete -> CR Completed     {percentiles(self.to_done)}")
        print(
            f"completed: {self.completed}/{self.size} in {self.seconds:.1f} s "
            f"(the bench created them in {self.creating:.1f} s)"
        )
        print(
            f"operator CPU {self.operator_cpu:.1f} s ({self.operator_cpu / n * 1000:.0f} ms per "
            f"separation); API requests per separation, every client's (bench: 1 create):"
        )
        total = sum(self.requests.values())
        print(f"  {total / n:6.1f}  all")
        for key, count in self.requests.most_common(12):
            print(f"  {count / n:6.1f}  {key}")
        print(
            f"CPU seconds by process over the {self.seconds:.0f} s: "
            + ", ".join(
                f"{name} {used:.0f}" for name, used in sorted(self.cpu.items(), key=lambda i: -i[1])
            )
        )


def burst_phase(
    api: client.ApiClient,
    objects: client.CustomObjectsApi,
    watcher: Watcher,
    operator_pid: int,
    size: int,
    prefix: str,
) -> BurstResult:
    """``size`` SeparationJobs at once, until all are Completed (or 600 s)."""
    names = [f"{prefix}-{i:04d}" for i in range(size)]
    requests_before, cpu_before = api_requests(api), cpu_seconds(operator_pid)
    tier_before = tier_cpu()
    print(f"creating {size} SeparationJobs at once ...", flush=True)
    start = time.monotonic()
    created = burst(objects, names)
    creating = time.monotonic() - start
    deadline = time.monotonic() + 600
    while sum(n in watcher.cr_completed for n in names) < size and time.monotonic() < deadline:
        time.sleep(0.5)
    seconds = time.monotonic() - start
    operator_cpu = cpu_seconds(operator_pid) - cpu_before
    cpu = {name: used - tier_before.get(name, 0.0) for name, used in tier_cpu().items()}
    requests = api_requests(api)
    requests.subtract(requests_before)
    to_job = [watcher.job_created[n] - created[n] for n in names if n in watcher.job_created]
    to_done = [
        watcher.cr_completed[n] - watcher.job_completed[n]
        for n in names
        if n in watcher.cr_completed and n in watcher.job_completed
    ]
    completed = sum(n in watcher.cr_completed for n in names)
    if DUMP:  # each SeparationJob's moments, seconds from the burst's start
        moments = {
            n: [
                round(seen[n] - start, 3) if n in seen else None
                for seen in (created, watcher.job_created, watcher.job_completed)
            ]
            + [round(watcher.cr_completed[n] - start, 3) if n in watcher.cr_completed else None]
            for n in names
        }
        Path(f"{DUMP}.{size}.json").write_text(json.dumps(moments))
    return BurstResult(
        size, names, to_job, to_done, completed, creating, seconds, +requests, operator_cpu, cpu
    )


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
    spec = NodeSpec(pods=max(110, *BURSTS) + 10)
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
        results = [
            burst_phase(api, objects, watcher, operator.popen.pid, size, f"b{i}")
            for i, size in enumerate(BURSTS)
        ]
        for result in results:
            result.show()
        footprint(api, [name for result in results for name in result.names])
        if KUEUE_JOBS:
            kueued = kueue_burst(plane, api, watcher, workdir)
            print(f"CR created   -> Job created      {percentiles(kueued['job'])}")
            print(f"CR created   -> Kueue admitted   {percentiles(kueued['admitted'])}")
            print(f"CR created   -> CR Completed     {percentiles(kueued['done'])}")
            print(f"completed: {len(kueued['done'])}/{KUEUE_JOBS}")
        watcher.stop_flag.set()
        if not FINISHED:
            return 0

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
        print(f"\n== operator memory with {FINISHED + sum(BURSTS)} finished SeparationJobs present")
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
