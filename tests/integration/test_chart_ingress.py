"""The chart's Ingress for each controller (nginx, traefik, other), with and without TLS: the
annotations and the Traefik Middleware it derives, the body limit computed from api.maxFileSize
as the API reads it, spec.tls; lint-clean; the schema refusing bad ingress values; what it
renders accepted by the real API server (server-side dry run). And the `helm test` Pod: a test
hook in the API's image, accepted in a namespace that enforces Pod Security `restricted`.

No ingress controller runs here (none can be built from the registries this project's CI
reaches): the Ingress is rendered, schema-checked and dry-run applied, not routed."""

import math
import subprocess
from typing import Any

import pytest
import yaml

from stemkube_api.sizes import parse_size
from stemkube_api.upload import FORM_SLACK
from tests.harness.fixtures import Cluster, kubectl
from tests.harness.tools import REPO_ROOT, tool

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "stemkube"
MIB = 1024 * 1024
NGINX = "nginx.ingress.kubernetes.io/"
MIDDLEWARES = "traefik.ingress.kubernetes.io/router.middlewares"
INGRESS_ON = ["--set=ingress.enabled=true", "--set=ingress.host=stemkube.example.com"]
TLS = ['--set-json=ingress.tls=[{"secretName":"stemkube-tls"}]']


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(tool("helm")), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def render(*values: str, namespace: str = "apps") -> str:
    return helm("template", "stemkube", str(CHART), f"--namespace={namespace}", *values).stdout


def documents(*values: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render(*values)) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [doc for doc in docs if doc["kind"] == kind]
    return doc


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return [doc["kind"] for doc in docs]


def body_limit_mib(max_file_size: str) -> int:
    """What the chart should derive: the API's own reading of the size, whole MiB, + 1 MiB."""
    return math.ceil(parse_size(max_file_size) / MIB) + 1


# Rendering ------------------------------------------------------------------------------------


def test_ingress_is_off_by_default() -> None:
    docs = documents()
    assert "Ingress" not in kinds(docs)
    assert "Middleware" not in kinds(docs)


def test_nginx_is_the_default_controller_with_upload_settings() -> None:
    docs = documents(*INGRESS_ON)
    ingress = only(docs, "Ingress")
    assert ingress["metadata"]["annotations"] == {
        NGINX + "proxy-body-size": "501m",  # api.maxFileSize 500MB + 1 MiB
        NGINX + "proxy-request-buffering": "off",
        NGINX + "proxy-read-timeout": "600",
        NGINX + "proxy-send-timeout": "600",
    }
    assert "tls" not in ingress["spec"]
    assert "Middleware" not in kinds(docs)
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "stemkube.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "stemkube-api", "port": {"name": "http"}}


@pytest.mark.parametrize("max_file_size", ["500MB", "1.5GB", "100KiB", "1048576", "2 GB", "1TB"])
def test_the_body_limit_follows_max_file_size(max_file_size: str) -> None:
    mib = body_limit_mib(max_file_size)
    # An upload the API takes (the file and its form) always gets through the controller.
    assert mib * MIB >= parse_size(max_file_size) + FORM_SLACK
    size = f"--set-string=api.maxFileSize={max_file_size}"
    nginx = only(documents(*INGRESS_ON, size), "Ingress")["metadata"]["annotations"]
    assert nginx[NGINX + "proxy-body-size"] == f"{mib}m"
    traefik = documents(*INGRESS_ON, size, "--set=ingress.controller=traefik")
    buffering = only(traefik, "Middleware")["spec"]["buffering"]
    assert buffering == {"maxRequestBodyBytes": mib * MIB}
    # The API is told the same size it was given.
    [api] = [
        d for d in traefik if d["kind"] == "Deployment" and d["metadata"]["name"] == "stemkube-api"
    ]
    env = {
        e["name"]: e.get("value") for e in api["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MAX_FILE_SIZE"] == max_file_size


def test_nginx_timeouts_follow_the_value() -> None:
    values = (*INGRESS_ON, "--set=ingress.proxyTimeoutSeconds=3600")
    annotations = only(documents(*values), "Ingress")["metadata"]["annotations"]
    assert annotations[NGINX + "proxy-read-timeout"] == "3600"
    assert annotations[NGINX + "proxy-send-timeout"] == "3600"


def test_traefik_gets_a_middleware_named_in_the_router_annotation() -> None:
    docs = documents(
        *INGRESS_ON, "--set=ingress.controller=traefik", "--set=ingress.className=traefik"
    )
    middleware = only(docs, "Middleware")
    assert middleware["apiVersion"] == "traefik.io/v1alpha1"
    assert middleware["metadata"]["name"] == "stemkube-upload-limit"
    assert middleware["spec"] == {"buffering": {"maxRequestBodyBytes": 501 * MIB}}
    ingress = only(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "traefik"
    # <namespace>-<name>@kubernetescrd: the namespace is the release's.
    assert ingress["metadata"]["annotations"] == {
        MIDDLEWARES: "apps-stemkube-upload-limit@kubernetescrd"
    }


def test_traefik_appends_the_users_middlewares_to_its_own() -> None:
    docs = documents(
        *INGRESS_ON,
        "--set=ingress.controller=traefik",
        f'--set-json=ingress.annotations={{"{MIDDLEWARES}":"auth-forward@kubernetescrd"}}',
    )
    annotations = only(docs, "Ingress")["metadata"]["annotations"]
    assert annotations[MIDDLEWARES] == (
        "apps-stemkube-upload-limit@kubernetescrd,auth-forward@kubernetescrd"
    )


def test_other_derives_nothing_and_keeps_the_users_annotations() -> None:
    user = '--set-json=ingress.annotations={"haproxy.org/timeout-server":"10m"}'
    docs = documents(
        *INGRESS_ON, "--set=ingress.controller=other", "--set=ingress.className=haproxy", user
    )
    ingress = only(docs, "Ingress")
    assert ingress["metadata"]["annotations"] == {"haproxy.org/timeout-server": "10m"}
    assert ingress["spec"]["ingressClassName"] == "haproxy"
    assert "Middleware" not in kinds(docs)
    bare = only(documents(*INGRESS_ON, "--set=ingress.controller=other"), "Ingress")
    assert "annotations" not in bare["metadata"]


def test_the_users_annotations_merge_in_and_win() -> None:
    user = (
        '--set-json=ingress.annotations={"cert-manager.io/cluster-issuer":"letsencrypt",'
        f'"{NGINX}proxy-read-timeout":"7200"}}'
    )
    annotations = only(documents(*INGRESS_ON, user), "Ingress")["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert annotations[NGINX + "proxy-read-timeout"] == "7200"
    assert annotations[NGINX + "proxy-body-size"] == "501m"


@pytest.mark.parametrize("controller", ["nginx", "traefik", "other"])
def test_tls_from_a_secret(controller: str) -> None:
    values = (*INGRESS_ON, f"--set=ingress.controller={controller}")
    ingress = only(documents(*values, *TLS), "Ingress")
    # hosts default to the ingress's host
    assert ingress["spec"]["tls"] == [
        {"secretName": "stemkube-tls", "hosts": ["stemkube.example.com"]}
    ]
    named = '--set-json=ingress.tls=[{"secretName":"a","hosts":["x.example.com","y.example.com"]}]'
    ingress = only(documents(*values, named), "Ingress")
    assert ingress["spec"]["tls"] == [
        {"secretName": "a", "hosts": ["x.example.com", "y.example.com"]}
    ]


@pytest.mark.parametrize("controller", ["nginx", "traefik", "other"])
@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_lint_is_clean(controller: str, tls: bool) -> None:
    values = [*INGRESS_ON, f"--set=ingress.controller={controller}", *(TLS if tls else [])]
    result = helm("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in result.stdout


# The schema -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set=ingress.controller=haproxy"], "/ingress/controller"),
        (['--set-json=ingress.tls=[{"hosts":["a.example.com"]}]'], "/ingress/tls/0"),
        (['--set-json=ingress.tls=[{"secretName":""}]'], "/ingress/tls/0/secretName"),
        (
            ['--set-json=ingress.tls=[{"secretName":"a","host":"b"}]'],
            "additional properties 'host'",
        ),
        (["--set=ingress.proxyTimeoutSeconds=0"], "/ingress/proxyTimeoutSeconds"),
        (["--set=ingress.annotations.a=1"], "/ingress/annotations/a"),
        # The old second home of the body limit is refused, not silently ignored.
        (["--set=ingress.maxBodySize=1g"], "additional properties 'maxBodySize' not allowed"),
    ],
)
def test_bad_ingress_values_fail_with_the_path_named(values: list[str], message: str) -> None:
    result = helm("template", "stemkube", str(CHART), *INGRESS_ON, *values, check=False)
    assert result.returncode != 0
    assert message in result.stderr


# The API server --------------------------------------------------------------------------------


@pytest.mark.parametrize("controller", ["nginx", "traefik", "other"])
@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_rendered_ingress_passes_server_side_dry_run(
    cluster: Cluster, namespace: str, separation_crd: None, controller: str, tls: bool
) -> None:
    values = [*INGRESS_ON, f"--set=ingress.controller={controller}", *(TLS if tls else [])]
    docs = [doc for doc in yaml.safe_load_all(render(*values, namespace=namespace)) if doc]
    # Traefik's Middleware CRD is not installed on this API server (nor is any controller), so
    # that one object cannot be dry-run here: it is left out of the apply, and only its
    # rendering is checked (above and below). Everything else, the Ingress included, is applied.
    applied = [doc for doc in docs if doc["kind"] != "Middleware"]
    if controller == "traefik":
        assert len(applied) == len(docs) - 1
    stream = yaml.safe_dump_all(applied)
    out = kubectl(cluster, "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=stream)
    assert "ingress.networking.k8s.io/stemkube created (server dry run)" in out
    assert "deployment.apps/stemkube-api created (server dry run)" in out


# helm test ------------------------------------------------------------------------------------


def test_the_helm_test_pod_checks_the_api_through_its_service() -> None:
    docs = documents()
    pod = only(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert 0 < spec["activeDeadlineSeconds"] <= 300
    assert spec["automountServiceAccountToken"] is False
    [container] = spec["containers"]
    api = only([d for d in docs if d["metadata"]["name"] == "stemkube-api"], "Deployment")
    assert container["image"] == api["spec"]["template"]["spec"]["containers"][0]["image"]
    script = container["args"][0]
    assert container["command"] == ["python3", "-c"]
    compile(script, "test-api", "exec")  # it is Python
    assert '"stemkube-api.apps.svc", 8000' in script
    assert '"STEMKUBE_API_SERVICE_HOST"' in script
    assert "/readyz" in script
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # Left out of the chart's install: it runs only on `helm test`.
    assert "Pod" not in kinds([d for d in yaml.safe_load_all(render("--skip-tests")) if d])


def test_the_helm_test_pod_is_admitted_under_pod_security_restricted(
    cluster: Cluster, namespace: str, separation_crd: None
) -> None:
    """The whole chart, its test hook included, in a namespace that enforces `restricted` (and
    warns of it: Pod Security checks a Deployment's pod template with a warning only, a Pod
    with a refusal)."""
    labels = [f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn")]
    kubectl(cluster, "label", "namespace", namespace, *labels)
    rendered = render(namespace=namespace)
    out = kubectl(cluster, "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=rendered)
    assert "pod/stemkube-test-api created (server dry run)" in out
    assert "deployment.apps/stemkube-api created (server dry run)" in out
    assert "PodSecurity" not in out, out
    # The admission is really enforced there: the same Pod, allowed to run as root, is refused.
    pod = helm(
        "template", "stemkube", str(CHART), f"--namespace={namespace}",
        "--show-only=templates/tests/test-api.yaml",
    ).stdout  # fmt: skip
    loose = pod.replace("runAsNonRoot: true", "runAsNonRoot: false")
    assert loose != pod
    refused = kubectl(
        cluster, "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=loose, check=False
    )
    assert 'violates PodSecurity "restricted' in refused
