"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler, each a process of the binaries built by ``make tools``."""

import contextlib
import os
import signal
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.harness import procs
from tests.harness.pki import Pki, create_pki
from tests.harness.tools import tool

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # the first address of SERVICE_CIDR: the `kubernetes` Service

# The controllers a test of ours relies on, by their kube-controller-manager names. The
# node-lifecycle controller is on so that a Node is Ready only while it keeps a heartbeat.
CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "node-lifecycle-controller",
    "pod-garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "disruption-controller",
    # A real kubelet's pods: the CA bundle every service-account token volume mounts, and
    # static PersistentVolumes bound to their claims (the model cache).
    "root-ca-certificate-publisher-controller",
    "persistentvolume-binder-controller",
    # The chart's user roles fold into the built-in admin, edit and view roles by label.
    "clusterrole-aggregation-controller",
)


@dataclass
class ControlPlane:
    server: str
    kubeconfig: Path
    pki: Pki
    processes: list[procs.Process] = field(default_factory=list)

    def stop(self) -> None:
        # Dependants first: etcd goes last so the others can shut down cleanly.
        for proc in reversed(self.processes):
            proc.stop()

    def log_tails(self) -> str:
        return "\n\n".join(f"== {p.name} ==\n{p.log_tail()}" for p in self.processes)

    def restart_apiserver(self, down_seconds: float) -> None:
        """Stops the plane's kube-apiserver for ``down_seconds`` and starts it again in place: the
        same command line, so the same port, certificates and etcd data, and every client of the
        session finds it where it was. The tier is shared by the whole session: whatever happens
        here, the server is back and ready before this returns (or the session cannot go on)."""
        index = next(i for i, p in enumerate(self.processes) if p.name == "kube-apiserver")
        old = self.processes[index]
        argv = [str(a) for a in old.popen.args]  # type: ignore[union-attr]
        try:
            # Killed, as a crashed server goes: a graceful stop waits out the open watches here
            # (30 s and more), which would make the outage longer than asked.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(old.popen.pid, signal.SIGKILL)
            old.popen.wait(timeout=30)
            time.sleep(down_seconds)
        finally:
            # Appended to the first run's log: a failed test's log tail shows both runs.
            with old.log_path.open("ab") as log:
                popen = subprocess.Popen(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            new = procs.Process(name=old.name, popen=popen, log_path=old.log_path)
            self.processes[index] = new
            procs.wait_ready(new, lambda: _https_ok(f"{self.server}/readyz", self.pki), timeout=120)


def write_kubeconfig(path: Path, server: str, pki: Pki) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "stemkube-test",
                "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": str(pki.admin_cert),
                    "client-key": str(pki.admin_key),
                },
            }
        ],
        "contexts": [{"name": "admin", "context": {"cluster": "stemkube-test", "user": "admin"}}],
        "current-context": "admin",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def _https_ok(url: str, pki: Pki | None) -> bool:
    if pki is None:
        # kube-controller-manager and kube-scheduler serve /healthz with a self-signed cert.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return bool(response.status == 200)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


def start_etcd(workdir: Path, log_dir: Path) -> tuple[procs.Process, str]:
    client_port, peer_port = procs.free_port(), procs.free_port()
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    proc = procs.start(
        "etcd",
        [
            tool("etcd"),
            "--name=default",
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            # Tests throw the data away: skipping fsync makes every write far cheaper.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        log_dir,
    )
    procs.wait_ready(proc, lambda: _http_ok(f"{client_url}/health"), timeout=60)
    return proc, client_url


def start_control_plane(workdir: Path, log_dir: Path, advertise: str = "127.0.0.1") -> ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler. With ``advertise``
    other than loopback, the API server listens on every address and advertises that one, so
    that pods reach it through the ``kubernetes`` Service (a real node's bridge address)."""
    workdir.mkdir(parents=True, exist_ok=True)
    loopback = advertise == "127.0.0.1"
    pki = create_pki(workdir / "pki", SERVICE_IP, () if loopback else (advertise,))
    plane = ControlPlane(server="", kubeconfig=workdir / "admin.kubeconfig", pki=pki)
    try:
        etcd, etcd_url = start_etcd(workdir, log_dir)
        plane.processes.append(etcd)

        api_port = procs.free_port()
        plane.server = f"https://127.0.0.1:{api_port}"
        apiserver = procs.start(
            "kube-apiserver",
            [
                tool("kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={'127.0.0.1' if loopback else '0.0.0.0'}",
                f"--advertise-address={advertise}",
                # A loopback address may not be an Endpoints address: the reconciler of the
                # `kubernetes` Service would log that error every 10 s and bury the real cause
                # in a failed test's log tail.
                *(["--endpoint-reconciler-type=none"] if loopback else []),
                f"--secure-port={api_port}",
                # A real kubelet's node name resolves nowhere: logs and exec go to its IP.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--cert-dir={workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                # Serves the front-proxy CA to the components that delegate authentication;
                # without it they log an error about the missing bundle every few seconds.
                f"--requestheader-client-ca-file={pki.ca_cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--v=1",
            ],
            log_dir,
        )
        plane.processes.append(apiserver)
        procs.wait_ready(apiserver, lambda: _https_ok(f"{plane.server}/readyz", pki), timeout=120)
        write_kubeconfig(plane.kubeconfig, plane.server, pki)

        cm_port = procs.free_port()
        controller_manager = procs.start(
            "kube-controller-manager",
            [
                tool("kube-controller-manager"),
                f"--kubeconfig={plane.kubeconfig}",
                f"--authentication-kubeconfig={plane.kubeconfig}",
                f"--authorization-kubeconfig={plane.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                f"--cert-dir={workdir / 'controller-manager-certs'}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--v=1",
            ],
            log_dir,
        )
        plane.processes.append(controller_manager)

        sched_port = procs.free_port()
        scheduler = procs.start(
            "kube-scheduler",
            [
                tool("kube-scheduler"),
                f"--kubeconfig={plane.kubeconfig}",
                f"--authentication-kubeconfig={plane.kubeconfig}",
                f"--authorization-kubeconfig={plane.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                f"--cert-dir={workdir / 'scheduler-certs'}",
                "--v=1",
            ],
            log_dir,
        )
        plane.processes.append(scheduler)
        procs.wait_ready(
            controller_manager,
            lambda: _https_ok(f"https://127.0.0.1:{cm_port}/healthz", None),
            timeout=60,
        )
        procs.wait_ready(
            scheduler,
            lambda: _https_ok(f"https://127.0.0.1:{sched_port}/healthz", None),
            timeout=60,
        )
    except BaseException:
        plane.stop()
        raise
    return plane
