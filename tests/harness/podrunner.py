"""A pod runner standing in for the kubelet of one Node.

It watches the pods the real scheduler binds to its node, runs each pod's container as a local
process (the image picks the program, see :mod:`tests.harness.images`) with the pod's command,
arguments and environment, and writes the pod's status back the way a kubelet does, so that the
real Job controller, garbage collector and anyone watching see what they would on a cluster:
Pending (ContainerCreating) -> Running -> Succeeded/Failed with the container's exit code and
termination message. Deleting a pod kills its process; the runner then finishes the graceful
deletion, as a kubelet confirms it.

What it does not do: pull images, mount volumes (emptyDirs and the like are ignored), enforce
resource limits, run init or sidecar containers, or serve logs through the API (tests read them
with :meth:`PodRunner.logs`). A pod's service-account token is real: the runner asks the API
server for one bound to the pod and hands it to the process in a kubeconfig (``KUBECONFIG``),
where a kubelet would mount it at /var/run/secrets/kubernetes.io/serviceaccount (not when the
pod says ``automountServiceAccountToken: false``). Projected service-account tokens (a
``projected`` volume's ``serviceAccountToken`` sources: audience, lifetime, path) are real too:
the runner requests each, bound to the pod, into a file of the pod's scratch folder; since the
process runs on the host, not in a mount namespace, an environment value that names a path
under such a volume's ``mountPath`` is rewritten to the file's place (the only way the
programs here find the file). The runner does not renew them: a test pod lives minutes.
"""

import base64
import contextlib
import itertools
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.harness.images import StandIn, stand_in_for
from tests.harness.node import now_rfc3339

log = logging.getLogger(__name__)

MAX_TERMINATION_MESSAGE = 4096  # bytes, as the kubelet truncates
FALLBACK_LOG_LINES = 80
MAX_GRACE_SECONDS = 10.0  # tests need not wait the default 30 s for a stubborn process
RESTART_BACKOFF_SECONDS = 1.0
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
# Each pod gets an address of this range in its status (EndpointSlices refuse loopback ones),
# while its process really listens on the host's loopback: see PodRunner.local_url.
POD_NETWORK = "10.244.0."


class ContainerConfigError(Exception):
    """The environment names something missing (the kubelet's CreateContainerConfigError)."""


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes, others stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, text)


def exit_code_of(returncode: int) -> int:
    """Popen's -N for "killed by signal N" is 128+N in a container's status."""
    return 128 - returncode if returncode < 0 else returncode


def bound_token(
    core: client.CoreV1Api, pod: client.V1Pod, audience: str | None, seconds: int
) -> str:
    """A real service-account token of the pod's account, bound to the pod (TokenRequest), for
    ``audience`` (None: the API server's), as the kubelet asks for one."""
    spec: dict[str, Any] = {
        "expirationSeconds": seconds,
        "boundObjectRef": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod.metadata.name,
            "uid": pod.metadata.uid,
        },
    }
    if audience:
        spec["audiences"] = [audience]
    request = core.create_namespaced_service_account_token(
        pod.spec.service_account_name or "default", pod.metadata.namespace, {"spec": spec}
    )
    return str(request.status.token)


class PodRunner:
    def __init__(
        self,
        api: client.ApiClient,
        node_name: str,
        workdir: Path,
        images: dict[str, StandIn] | None = None,
    ) -> None:
        self.node_name = node_name
        self.workdir = workdir
        self._api = api
        self._core = client.CoreV1Api(api)
        self._images = images
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: dict[str, _PodWorker] = {}
        self._deleting: set[str] = set()
        self._pod_ips = itertools.cycle(f"{POD_NETWORK}{n}" for n in range(2, 255))
        self._thread = threading.Thread(
            target=self._run, name=f"podrunner-{node_name}", daemon=True
        )

    # -- public ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.cancel(write_status=False)
        for worker in workers:
            worker.join(timeout=MAX_GRACE_SECONDS + 5)
        self._thread.join(timeout=15)

    def local_url(self, url: str) -> str:
        """A URL to a pod IP of this node as a process here reaches it: the pod network of the
        stand-in is the host's loopback (what kube-proxy's DNAT does on a real node)."""
        return re.sub(r"//10\.244\.0\.\d+", "//127.0.0.1", url)

    def logs(self, namespace: str, name: str) -> str:
        """The output of the pod's container (all its runs), as ``kubectl logs`` would show."""
        with self._lock:
            for worker in self._workers.values():
                if worker.namespace == namespace and worker.name == name:
                    return worker.read_log()
        raise KeyError(f"no pod {namespace}/{name} ran on {self.node_name}")

    # -- the watch ------------------------------------------------------------------------------

    def _run(self) -> None:
        selector = f"spec.nodeName={self.node_name}"
        while not self._stop.is_set():
            try:
                listed = self._core.list_pod_for_all_namespaces(field_selector=selector)
                seen = set()
                for pod in listed.items:
                    seen.add(pod.metadata.uid)
                    self._reconcile(pod)
                self._forget_missing(seen)
                stream = watch.Watch()
                for event in stream.stream(
                    self._core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=5,
                ):
                    if self._stop.is_set():
                        stream.stop()
                        break
                    pod = event["object"]
                    if event["type"] == "DELETED":
                        self._forget(pod.metadata.uid)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self._reconcile(pod)
            except ApiException as exc:
                if exc.status != 410:  # 410 Gone: our resourceVersion is too old; list again
                    log.warning("pod runner watch failed: %s", exc)
                    self._stop.wait(1)
            except Exception:
                if not self._stop.is_set():
                    log.exception("pod runner watch failed")
                    self._stop.wait(1)

    def _reconcile(self, pod: client.V1Pod) -> None:
        uid = pod.metadata.uid
        with self._lock:
            worker = self._workers.get(uid)
            if pod.metadata.deletion_timestamp is not None:
                if uid in self._deleting:
                    return
                self._deleting.add(uid)
                threading.Thread(
                    target=self._finish_deletion, args=(pod, worker), daemon=True
                ).start()
                return
            if worker is not None or (pod.status and pod.status.phase in ("Succeeded", "Failed")):
                return
            worker = _PodWorker(self, pod, next(self._pod_ips))
            self._workers[uid] = worker
        worker.start()

    def _finish_deletion(self, pod: client.V1Pod, worker: "_PodWorker | None") -> None:
        if worker is not None:
            grace = pod.metadata.deletion_grace_period_seconds
            worker.cancel(write_status=True, grace=grace)
            worker.join(timeout=MAX_GRACE_SECONDS + 5)
        self._mark_terminal(pod)
        # The kubelet confirms a graceful deletion once the containers are gone.
        with contextlib.suppress(ApiException):
            self._core.delete_namespaced_pod(
                pod.metadata.name,
                pod.metadata.namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0,
                    preconditions=client.V1Preconditions(uid=pod.metadata.uid),
                ),
            )

    def _mark_terminal(self, pod: client.V1Pod) -> None:
        """A pod deleted before its container ran to the end (never started, say, for want of
        its image) ends Failed, as the kubelet reports it: the Job controller releases its
        tracking finalizer only from a terminal pod."""
        try:
            current = self._core.read_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace
            )
        except ApiException:
            return
        if current.metadata.uid != pod.metadata.uid or current.status.phase in (
            "Succeeded",
            "Failed",
        ):
            return
        stamp = now_rfc3339()
        statuses = [
            {
                "name": container.name,
                "image": container.image,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was deleted",
                        "startedAt": stamp,
                        "finishedAt": stamp,
                    }
                },
            }
            for container in pod.spec.containers
        ]
        self.patch_status(
            pod,
            {
                "phase": "Failed",
                "conditions": _conditions(ready=False),
                "containerStatuses": statuses,
            },
        )

    def _forget(self, uid: str) -> None:
        with self._lock:
            worker = self._workers.get(uid)
        if worker is not None:
            worker.cancel(write_status=False)

    def _forget_missing(self, present: set[str]) -> None:
        with self._lock:
            gone = [uid for uid in self._workers if uid not in present]
        for uid in gone:
            self._forget(uid)

    # -- used by workers ------------------------------------------------------------------------

    def stand_in(self, image: str) -> StandIn | None:
        return stand_in_for(image, self._images)

    def patch_status(self, pod: client.V1Pod, status: dict[str, Any]) -> None:
        try:
            self._core.patch_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace, {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:  # a pod deleted meanwhile needs no status
                raise

    def resolve_env(
        self, pod: client.V1Pod, container: client.V1Container, pod_ip: str
    ) -> dict[str, str]:
        namespace = pod.metadata.namespace
        env: dict[str, str] = {}
        for source in container.env_from or []:
            prefix = source.prefix or ""
            if source.secret_ref is not None:
                data = self._secret_data(
                    namespace, source.secret_ref.name, source.secret_ref.optional
                )
            elif source.config_map_ref is not None:
                data = self._config_map_data(
                    namespace, source.config_map_ref.name, source.config_map_ref.optional
                )
            else:
                continue
            env.update({prefix + key: value for key, value in data.items()})
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = expand(var.value or "", env)
                continue
            value = self._value_from(pod, var.name, var.value_from, pod_ip)
            if value is not None:
                env[var.name] = value
        return env

    def _value_from(
        self, pod: client.V1Pod, name: str, source: client.V1EnvVarSource, pod_ip: str
    ) -> str | None:
        namespace = pod.metadata.namespace
        if source.secret_key_ref is not None:
            ref = source.secret_key_ref
            return self._key(self._secret_data(namespace, ref.name, ref.optional), ref, "secret")
        if source.config_map_key_ref is not None:
            ref = source.config_map_key_ref
            data = self._config_map_data(namespace, ref.name, ref.optional)
            return self._key(data, ref, "configmap")
        if source.field_ref is not None:
            return _field(pod, source.field_ref.field_path, pod_ip)
        raise ContainerConfigError(f"env {name}: only secretKeyRef, configMapKeyRef, fieldRef")

    @staticmethod
    def _key(data: dict[str, str], ref: Any, kind: str) -> str | None:
        if ref.key in data:
            return data[ref.key]
        if ref.optional:
            return None
        raise ContainerConfigError(f"couldn't find key {ref.key} in {kind} {ref.name}")

    def _secret_data(self, namespace: str, name: str, optional: bool | None) -> dict[str, str]:
        try:
            secret = self._core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            if exc.status == 404:
                raise ContainerConfigError(f'secret "{name}" not found') from exc
            raise
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def _config_map_data(self, namespace: str, name: str, optional: bool | None) -> dict[str, str]:
        try:
            config_map = self._core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            if exc.status == 404:
                raise ContainerConfigError(f'configmap "{name}" not found') from exc
            raise
        return dict(config_map.data or {})

    def project_tokens(
        self, pod: client.V1Pod, container: client.V1Container, env: dict[str, str], scratch: Path
    ) -> dict[str, str]:
        """The pod's projected service-account tokens written under ``scratch``, and ``env``
        with the paths under their mounts pointing there (see the module's docstring)."""
        volumes = {v.name: v for v in pod.spec.volumes or [] if v.projected is not None}
        moved: dict[str, Path] = {}
        for mount in container.volume_mounts or []:
            volume = volumes.get(mount.name)
            if volume is None:
                continue
            folder = scratch / "volumes" / mount.name
            for source in volume.projected.sources or []:
                token = source.service_account_token
                if token is None:
                    continue
                path = folder / token.path
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(
                    bound_token(self._core, pod, token.audience, token.expiration_seconds or 3600)
                )
                path.chmod(0o600)
            moved[mount.mount_path.rstrip("/")] = folder
        rewritten = dict(env)
        for name, value in env.items():
            for mount_path, folder in moved.items():
                if value == mount_path or value.startswith(mount_path + "/"):
                    rewritten[name] = str(folder) + value[len(mount_path) :]
        return rewritten

    def service_account_kubeconfig(self, pod: client.V1Pod, path: Path) -> None:
        """A token bound to the pod, as the kubelet projects it, in a kubeconfig at ``path``."""
        account = pod.spec.service_account_name or "default"
        token = bound_token(self._core, pod, None, 3600)
        configuration = self._api.configuration
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "in-cluster",
                    "cluster": {
                        "server": configuration.host,
                        "certificate-authority": configuration.ssl_ca_cert,
                    },
                }
            ],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "in-cluster",
                    "context": {
                        "cluster": "in-cluster",
                        "user": account,
                        "namespace": pod.metadata.namespace,
                    },
                }
            ],
            "current-context": "in-cluster",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)


def _field(pod: client.V1Pod, path: str, pod_ip: str) -> str:
    simple = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.hostIP": "127.0.0.1",
        "status.podIP": pod_ip,
    }
    if path in simple:
        return simple[path] or ""
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        values = getattr(pod.metadata, match.group(1)) or {}
        return str(values.get(match.group(2), ""))
    raise ContainerConfigError(f"unsupported fieldRef {path}")


class _PodWorker:
    """Runs one pod's container to the end, restarting it as the pod's restartPolicy says."""

    def __init__(self, runner: PodRunner, pod: client.V1Pod, pod_ip: str) -> None:
        self.runner = runner
        self.pod = pod
        self.name: str = pod.metadata.name
        self.namespace: str = pod.metadata.namespace
        self.scratch = runner.workdir / f"{self.namespace}_{self.name}_{pod.metadata.uid[:8]}"
        self.log_path = self.scratch / "container.log"
        self.pod_ip = pod_ip
        self._cancelled = threading.Event()
        self._write_status_on_cancel = True
        self._grace = MAX_GRACE_SECONDS
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def cancel(self, *, write_status: bool, grace: int | None = None) -> None:
        self._write_status_on_cancel = write_status
        if grace is not None:
            self._grace = min(float(grace), MAX_GRACE_SECONDS)
        self._cancelled.set()

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- the pod's life -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._live()
        except Exception:
            log.exception("pod runner: pod %s/%s", self.namespace, self.name)

    def _container_status(
        self, state: dict[str, Any], restarts: int, **extra: Any
    ) -> dict[str, Any]:
        container = self.pod.spec.containers[0]
        running = "running" in state
        return {
            "name": container.name,
            "image": container.image,
            "imageID": "",
            "ready": running,
            "started": running,
            "restartCount": restarts,
            "state": state,
            **extra,
        }

    def _wait_state(self, reason: str, message: str) -> None:
        self.runner.patch_status(
            self.pod,
            {
                "phase": "Pending",
                "hostIP": "127.0.0.1",
                "startTime": now_rfc3339(),
                "conditions": _conditions(ready=False),
                "containerStatuses": [
                    self._container_status({"waiting": {"reason": reason, "message": message}}, 0)
                ],
            },
        )

    def _live(self) -> None:
        spec = self.pod.spec
        if len(spec.containers) != 1 or spec.init_containers:
            self._wait_state(
                "CreateContainerConfigError",
                "the test pod runner runs pods of exactly one container and no init containers",
            )
            return
        container = spec.containers[0]
        stand_in = self.runner.stand_in(container.image)
        if stand_in is None:
            self._wait_state(
                "ErrImagePull",
                f'image "{container.image}" has no stand-in in tests/harness/images.py',
            )
            return
        self._wait_state("ContainerCreating", "")

        env = self._environment(container, stand_in)
        if env is None:
            return
        argv = [expand(a, env) for a in (container.command or list(stand_in.entrypoint))]
        argv += [
            expand(a, env)
            for a in (container.args or ([] if container.command else list(stand_in.cmd)))
        ]
        policy = spec.restart_policy or "Always"
        restarts = 0
        last_state: dict[str, Any] = {}
        while True:
            terminated = self._run_once(argv, env, stand_in, container, restarts, last_state)
            if terminated is None:  # cancelled, the pod is going away
                return
            exit_code = terminated["exitCode"]
            done = policy == "Never" or (policy == "OnFailure" and exit_code == 0)
            if done:
                self.runner.patch_status(
                    self.pod,
                    {
                        "phase": "Succeeded" if exit_code == 0 else "Failed",
                        "conditions": _conditions(ready=False),
                        "containerStatuses": [
                            self._container_status(
                                {"terminated": terminated}, restarts, **last_state
                            )
                        ],
                    },
                )
                return
            restarts += 1
            last_state = {"lastState": {"terminated": terminated}}
            if self._cancelled.wait(RESTART_BACKOFF_SECONDS):
                return

    def _environment(
        self, container: client.V1Container, stand_in: StandIn
    ) -> dict[str, str] | None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        (self.scratch / "tmp").mkdir(exist_ok=True)
        base = {
            "PATH": ":".join([*(str(p) for p in stand_in.path), SYSTEM_PATH]),
            "HOME": str(self.scratch),
            "TMPDIR": str(self.scratch / "tmp"),
            "HOSTNAME": self.name,
            "LANG": "C.UTF-8",
            stand_in.termination_log_env: str(self.scratch / "termination-log"),
        }
        while True:
            try:
                env = {**base, **self.runner.resolve_env(self.pod, container, self.pod_ip)}
                env = self.runner.project_tokens(self.pod, container, env, self.scratch)
                if self.pod.spec.automount_service_account_token is not False:
                    kubeconfig = self.scratch / "serviceaccount.kubeconfig"
                    self.runner.service_account_kubeconfig(self.pod, kubeconfig)
                    env["KUBECONFIG"] = str(kubeconfig)
                return env
            except ContainerConfigError as exc:
                # The kubelet keeps retrying: the Secret may yet be created.
                self._wait_state("CreateContainerConfigError", str(exc))
                if self._cancelled.wait(1.0):
                    return None

    def _run_once(
        self,
        argv: list[str],
        env: dict[str, str],
        stand_in: StandIn,
        container: client.V1Container,
        restarts: int,
        last_state: dict[str, Any],
    ) -> dict[str, Any] | None:
        termination_log = Path(env[stand_in.termination_log_env])
        termination_log.unlink(missing_ok=True)
        started_at = now_rfc3339()
        executable = shutil.which(argv[0], path=env["PATH"]) if argv else None
        if executable is None:
            return self._terminated(
                128,
                "StartError",
                f"exec: {argv[:1]!r}: executable file not found in $PATH",
                started_at,
            )
        self.runner.patch_status(
            self.pod,
            {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": self.pod_ip,
                "podIPs": [{"ip": self.pod_ip}],
                "conditions": _conditions(ready=True),
                "containerStatuses": [
                    self._container_status(
                        {"running": {"startedAt": started_at}}, restarts, **last_state
                    )
                ],
            },
        )
        with self.log_path.open("ab") as out:
            process = subprocess.Popen(
                [executable, *argv[1:]],
                cwd=self.scratch,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while process.poll() is None:
            if self._cancelled.wait(0.1):
                self._kill(process)
                if not self._write_status_on_cancel:
                    return None
                terminated = self._terminated(
                    exit_code_of(process.returncode), "Error", "", started_at
                )
                self.runner.patch_status(
                    self.pod,
                    {
                        "phase": "Failed",
                        "conditions": _conditions(ready=False),
                        "containerStatuses": [
                            self._container_status({"terminated": terminated}, restarts)
                        ],
                    },
                )
                return None
        code = exit_code_of(process.returncode)
        message = _read_message(termination_log)
        if (
            not message
            and code != 0
            and container.termination_message_policy == "FallbackToLogsOnError"
        ):
            message = "\n".join(self.read_log().splitlines()[-FALLBACK_LOG_LINES:])[
                -MAX_TERMINATION_MESSAGE:
            ]
        return self._terminated(code, "Completed" if code == 0 else "Error", message, started_at)

    def _kill(self, process: "subprocess.Popen[bytes]") -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=self._grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _terminated(self, code: int, reason: str, message: str, started_at: str) -> dict[str, Any]:
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started_at,
            "finishedAt": now_rfc3339(),
        }
        if message:
            terminated["message"] = message
        return terminated


def _read_message(path: Path) -> str:
    try:
        data = path.read_bytes()[:MAX_TERMINATION_MESSAGE]
    except OSError:
        return ""
    return data.decode(errors="replace")


def _conditions(*, ready: bool) -> list[dict[str, Any]]:
    stamp = now_rfc3339()
    status = "True" if ready else "False"
    return [
        {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
        {"type": "ContainersReady", "status": status, "lastTransitionTime": stamp},
        {"type": "Ready", "status": status, "lastTransitionTime": stamp},
    ]
