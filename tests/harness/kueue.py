"""A real Kueue controller (``sigs.k8s.io/kueue/cmd/kueue``, built by ``make tools``) on the
tier's control plane, as a process on loopback.

Real: the controller binary of the pinned release, its scheduler, job integration and webhook
server; the release's CRDs (all of them, applied server-side) with their conversion webhooks;
the release's mutating and validating webhook configurations, which the API server really calls
over TLS. Kueue talks to the tier's API server with the admin kubeconfig (``system:masters``).

Different from the release's deployment (``config/default``):

- no Deployment, Service, RBAC or cert-manager: the process runs on the host, so every webhook
  and conversion webhook is registered by URL (``https://127.0.0.1:<port><path>``) with the
  tier's CA as its bundle, instead of by Service; the serving certificate (for 127.0.0.1) is
  issued by the tier's CA, and ``internalCertManagement`` is off;
- the webhook configurations keep only the webhooks of the Kueue API and of ``batch/v1`` Jobs
  (the one integration enabled, ``integrations.frameworks: ["batch/job"]``): the others would
  send every Pod, Deployment and StatefulSet of the tier through Kueue. The Job webhooks fail
  open (``failurePolicy: Ignore``, where the release has ``Fail``), so that a Kueue that died
  mid-session cannot stop the rest of the suite from creating Jobs; readiness below proves they
  answer. The Kueue API's webhooks keep ``Fail``;
- leader election is off; the on-demand visibility API (``VisibilityOnDemand``) is off, since an
  aggregated API needs a Service to be reached through;
- the metrics server's certificate is read from a folder of ours: build.sh patches one line of
  ``cmd/kueue/main.go`` so that ``STEMKUBE_KUEUE_METRICS_CERT_DIR`` replaces the fixed
  ``/etc/kueue/metrics/certs``; nothing else of Kueue is changed.

:meth:`Kueue.stop` removes the webhook configurations before the process goes and turns the
CRDs' conversion back to ``None``, so that nothing of the session calls a dead port afterwards.
The CRDs stay.
"""

import base64
import contextlib
import secrets
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from stemkube_contract import kueue
from stemkube_contract.kueue import GROUP as KUEUE_GROUP
from stemkube_contract.kueue import QUEUE_LABEL
from tests.harness import procs
from tests.harness.controlplane import ControlPlane
from tests.harness.pki import issue_serving_cert
from tests.harness.tools import tool, tools_bin

CONFIG_API_VERSION = "config.kueue.x-k8s.io/v1beta2"  # v0.17.0's storage version of its config
NAMESPACE = "kueue-system"  # Kueue's own namespace (the default of its `namespace` setting)
# The API groups whose webhooks are registered: Kueue's own and the enabled integration's.
INTEGRATION_GROUPS = frozenset({"batch"})
WEBHOOK_TIMEOUT_SECONDS = 10
START_TIMEOUT = 180.0  # a cold start on the 2-core machine, next to a test run, is slow


def config_dir() -> Path:
    """What build.sh copied out of the pinned Kueue module: CRDs and webhook manifests."""
    path = tools_bin() / "kueue-config"
    if not (path / "webhooks.yaml").is_file():
        raise procs.ComponentError(f"{path} is incomplete: run `tools/build.sh kueue`")
    return path


@dataclass
class Kueue:
    process: procs.Process
    api: client.ApiClient
    webhook_port: int
    health_port: int
    metrics_port: int
    config_path: Path
    webhook_configurations: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    converted_crds: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)

    def ready(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.health_port}/readyz")

    def stop(self) -> None:
        # Webhooks first: while they exist, the API server sends Kueue's objects (and Jobs)
        # to a port that is about to close.
        try:
            _unregister(self.api, self.webhook_configurations, self.converted_crds)
        finally:
            self.process.stop()


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


def _configuration(
    webhook_port: int, health_port: int, metrics_port: int, cert_dir: Path
) -> dict[str, Any]:
    return {
        "apiVersion": CONFIG_API_VERSION,
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": ["batch/job"]},
        "featureGates": {"VisibilityOnDemand": False},
    }


def _kubectl(plane: ControlPlane, *args: str) -> str:
    result = subprocess.run(
        [str(tool("kubectl")), f"--kubeconfig={plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise procs.ComponentError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def _apply_crds(
    plane: ControlPlane, crd_dir: Path, workdir: Path, webhook_base: str, ca_bundle: str
) -> list[str]:
    """Applies every CRD, with the conversion webhooks the release's kustomization enables
    pointed at ``webhook_base``; returns the names of the converted CRDs."""
    patches_dir = crd_dir / "patches"
    kustomization = yaml.safe_load((patches_dir / "kustomization.yaml").read_text())
    conversions: dict[str, dict[str, Any]] = {}
    for entry in kustomization.get("patches") or []:
        patch = yaml.safe_load((patches_dir / Path(entry["path"]).name).read_text())
        webhook = patch["spec"]["conversion"]["webhook"]
        path = webhook["clientConfig"]["service"]["path"]
        conversions[patch["metadata"]["name"]] = {
            "strategy": "Webhook",
            "webhook": {
                "clientConfig": {"url": f"{webhook_base}{path}", "caBundle": ca_bundle},
                "conversionReviewVersions": webhook["conversionReviewVersions"],
            },
        }
    documents = []
    for path in sorted(crd_dir.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["metadata"]["name"] in conversions:
            crd["spec"]["conversion"] = conversions[crd["metadata"]["name"]]
        documents.append(crd)
    rendered = workdir / "crds.yaml"
    rendered.write_text(yaml.safe_dump_all(documents))
    # Server-side: the Workload CRD is larger than client-side apply's annotation may be.
    _kubectl(plane, "apply", "--server-side", "--force-conflicts", "-f", str(rendered))
    names = [f"crd/{d['metadata']['name']}" for d in documents]
    _kubectl(plane, "wait", "--for=condition=Established", "--timeout=60s", *names)
    return sorted(conversions)


def _webhook_configurations(
    webhooks_file: Path, webhook_base: str, ca_bundle: str, suffix: str
) -> list[dict[str, Any]]:
    configurations = []
    for document in yaml.safe_load_all(webhooks_file.read_text()):
        if not document:
            continue
        kept = []
        for webhook in document["webhooks"]:
            groups = {g for rule in webhook["rules"] for g in rule["apiGroups"]}
            if groups == {KUEUE_GROUP}:
                failure_policy = webhook["failurePolicy"]
            elif groups <= INTEGRATION_GROUPS:
                failure_policy = "Ignore"
            else:
                continue
            path = webhook["clientConfig"]["service"]["path"]
            kept.append(
                {
                    **webhook,
                    "clientConfig": {"url": f"{webhook_base}{path}", "caBundle": ca_bundle},
                    "failurePolicy": failure_policy,
                    "timeoutSeconds": WEBHOOK_TIMEOUT_SECONDS,
                }
            )
        kind = document["kind"]
        short = "mutating" if kind == "MutatingWebhookConfiguration" else "validating"
        configurations.append(
            {
                "apiVersion": document["apiVersion"],
                "kind": kind,
                "metadata": {
                    "name": f"stemkube-kueue-{suffix}-{short}",
                    "labels": {"app.kubernetes.io/part-of": "stemkube-test-kueue"},
                },
                "webhooks": kept,
            }
        )
    return configurations


def _register(api: client.ApiClient, configurations: list[dict[str, Any]]) -> None:
    admission = client.AdmissionregistrationV1Api(api)
    for body in configurations:
        if body["kind"] == "MutatingWebhookConfiguration":
            admission.create_mutating_webhook_configuration(body)
        else:
            admission.create_validating_webhook_configuration(body)


def _unregister(
    api: client.ApiClient, configurations: list[tuple[str, str]], converted_crds: list[str]
) -> None:
    admission = client.AdmissionregistrationV1Api(api)
    extensions = client.ApiextensionsV1Api(api)
    errors: list[Exception] = []
    for kind, name in configurations:
        delete = (
            admission.delete_mutating_webhook_configuration
            if kind == "MutatingWebhookConfiguration"
            else admission.delete_validating_webhook_configuration
        )
        try:
            delete(name)
        except ApiException as exc:
            if exc.status != 404:
                errors.append(exc)
    # Without Kueue a v1beta1 request could not be converted; None serves the stored object.
    for name in converted_crds:
        try:
            extensions.patch_custom_resource_definition(
                name, [{"op": "replace", "path": "/spec/conversion", "value": {"strategy": "None"}}]
            )
        except ApiException as exc:
            if exc.status != 404:
                errors.append(exc)
    if errors:
        raise procs.ComponentError(f"removing Kueue's webhooks: {errors}")


def _job_webhook_answers(api: client.ApiClient) -> bool:
    """A dry-run Job with a queue name comes back suspended only if the API server reached
    Kueue's mutating Job webhook (it fails open, so nothing else would tell)."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"generateName": "kueue-probe-", "labels": {QUEUE_LABEL: "probe"}},
        "spec": {
            "suspend": False,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "probe", "image": "python:3.11-slim"}],
                }
            },
        },
    }
    created = client.BatchV1Api(api).create_namespaced_job("default", job, dry_run="All")
    return bool(created.spec.suspend)


def _kueue_webhook_answers(api: client.ApiClient) -> bool:
    """A dry-run ResourceFlavor passes Kueue's own webhooks (failurePolicy Fail): an error here
    is the API server failing to call them."""
    flavor = {
        "apiVersion": f"{KUEUE_GROUP}/{kueue.VERSION}",
        "kind": "ResourceFlavor",
        "metadata": {"generateName": "kueue-probe-"},
    }
    client.CustomObjectsApi(api).create_cluster_custom_object(
        KUEUE_GROUP, kueue.VERSION, "resourceflavors", flavor, dry_run="All"
    )
    return True


def _ensure_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def start_kueue(plane: ControlPlane, api: client.ApiClient, workdir: Path, log_dir: Path) -> Kueue:
    """Applies Kueue's CRDs, starts the controller, registers its webhooks, and returns once
    it is ready and the API server gets answers from its webhooks."""
    source = config_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    webhook_port, health_port, metrics_port = (procs.free_port() for _ in range(3))
    webhook_base = f"https://127.0.0.1:{webhook_port}"
    ca_bundle = base64.b64encode(plane.pki.ca_cert.read_bytes()).decode()
    cert_dir = workdir / "certs"
    issue_serving_cert(plane.pki, cert_dir, "kueue-webhook")

    converted = _apply_crds(plane, source / "crd", workdir, webhook_base, ca_bundle)
    _ensure_namespace(api, NAMESPACE)

    config_path = workdir / "kueue-config.yaml"
    config_path.write_text(
        yaml.safe_dump(_configuration(webhook_port, health_port, metrics_port, cert_dir))
    )
    process = procs.start(
        "kueue",
        [
            tool("kueue"),
            f"--config={config_path}",
            f"--kubeconfig={plane.kubeconfig}",
            "--zap-encoder=console",
        ],
        log_dir,
        env={"STEMKUBE_KUEUE_METRICS_CERT_DIR": str(cert_dir)},
    )
    kueue = Kueue(
        process=process,
        api=api,
        webhook_port=webhook_port,
        health_port=health_port,
        metrics_port=metrics_port,
        config_path=config_path,
        converted_crds=converted,
    )
    try:
        procs.wait_ready(process, kueue.ready, timeout=START_TIMEOUT)
        configurations = _webhook_configurations(
            source / "webhooks.yaml", webhook_base, ca_bundle, secrets.token_hex(4)
        )
        # Recorded before they exist, so that a failure half-way still removes what was made.
        kueue.webhook_configurations = [(c["kind"], c["metadata"]["name"]) for c in configurations]
        _register(api, configurations)
        # The API server picks new webhook configurations up from a watch, a moment later.
        procs.wait_ready(
            process, lambda: _job_webhook_answers(api), timeout=60, what="answering webhooks"
        )
        procs.wait_ready(
            process, lambda: _kueue_webhook_answers(api), timeout=60, what="answering webhooks"
        )
    except BaseException:
        with contextlib.suppress(Exception):
            kueue.stop()
        raise
    return kueue
