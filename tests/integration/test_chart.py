"""The Helm chart: lint-clean, its values schema refuses bad values with the path named, and
what it renders is accepted by the real API server (server-side dry run)."""

import subprocess

import pytest

from tests.harness.fixtures import Cluster, kubectl
from tests.harness.tools import REPO_ROOT, tool

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "stemkube"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(tool("helm")), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_lint_is_clean() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    "values",
    [
        [],
        [
            "--set=ingress.enabled=true",
            "--set=ingress.className=nginx",
            '--set-json=ingress.tls=[{"secretName":"stemkube-tls"}]',
            "--set=networkPolicy.enabled=true",
            "--set=operator.replicas=2",
            "--set=operator.maxRunning=4",
            "--set=separator.gpu.count=0",
            "--set=separator.modelCache.existingClaim=weights",
            "--set=separator.runtimeClassName=nvidia",
        ],
        [
            "--set=minio.enabled=false",
            "--set=storage.external.endpoint=https://s3.example.com",
            "--set=storage.external.existingSecret=s3-credentials",
            "--set=operator.watchNamespaces={*}",
        ],
        # The GPU-sharing examples the README points to, as a user would install them.
        [f"--values={CHART / 'examples' / 'values-mig.yaml'}"],
        [f"--values={CHART / 'examples' / 'values-time-sliced.yaml'}"],
    ],
    ids=[
        "defaults",
        "everything-on",
        "external-storage-all-namespaces",
        "example-mig",
        "example-time-sliced",
    ],
)
def test_rendered_chart_passes_server_side_dry_run(
    cluster: Cluster, namespace: str, separation_crd: None, values: list[str]
) -> None:
    rendered = helm("template", "stemkube", str(CHART), f"--namespace={namespace}", *values).stdout
    out = kubectl(cluster, "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=rendered)
    assert "deployment.apps/stemkube-api created (server dry run)" in out
    assert "deployment.apps/stemkube-operator created (server dry run)" in out


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set=separator.gpu.count=-1"], "/separator/gpu/count"),
        (["--set=api.maxFileSize=lots"], "/api/maxFileSize"),
        (["--set=minio.enabled=false"], "/storage/external/endpoint"),
        (["--set=operator.typo=1"], "additional properties 'typo' not allowed"),
        (["--set=storage.bucket=Bad_Bucket"], "/storage/bucket"),
        (["--set=ingress.controller=haproxy"], "/ingress/controller"),
    ],
)
def test_bad_values_fail_with_the_path_named(values: list[str], message: str) -> None:
    result = helm("template", "stemkube", str(CHART), *values, check=False)
    assert result.returncode != 0
    assert message in result.stderr
