"""Batching and GPU sharing through the chart: each example values file lints strictly and
renders an operator whose environment carries the GPU resource, count, CPU request and limit
and the batch size; the operator turns that environment into a Job the API server accepts; the
schema and the templates refuse bad values with the value named."""

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stemkube_contract.batch import MAX_PER_JOB_ENV, parse_max_per_job
from stemkube_operator.config import load_config
from stemkube_operator.jobspec import build_job
from tests.harness.fixtures import Cluster, kubectl
from tests.harness.tools import REPO_ROOT, tool

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "stemkube"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(tool("helm")), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def operator_env(*values: str) -> dict[str, str]:
    """The operator container's plain environment variables (not those from Secrets or fields)
    as `helm template` renders them with these arguments."""
    rendered = helm("template", "stemkube", str(CHART), *values).stdout
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("-operator"):
            env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
            return {item["name"]: item["value"] for item in env if "value" in item}
    raise AssertionError("no operator Deployment rendered")


def separation_job(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "stemkube.io/v1alpha1",
        "kind": "SeparationJob",
        "metadata": {"name": "shared-1", "namespace": namespace, "uid": "u-1", "generation": 1},
        "spec": {
            "input": {"bucket": "stemkube", "key": "inputs/shared-1/song.mp3"},
            "output": {"bucket": "stemkube", "key": "results/shared-1.zip"},
            "model": "htdemucs",
        },
    }


def example_values(example: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(example.read_text())
    return loaded


examples = pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)


@examples
def test_example_lints_strictly(example: Path) -> None:
    result = helm("lint", "--strict", str(CHART), f"--values={example}")
    assert "0 chart(s) failed" in result.stdout


@examples
def test_example_reaches_the_operator_and_its_jobs(example: Path) -> None:
    separator = example_values(example)["separator"]
    env = operator_env(f"--values={example}")
    assert env["STEMKUBE_GPU_RESOURCE"] == separator["gpu"]["resource"]
    assert env["STEMKUBE_GPU_COUNT"] == str(separator["gpu"]["count"])
    assert env["STEMKUBE_CPU_REQUEST"] == str(separator["resources"]["requests"]["cpu"])
    assert env["STEMKUBE_CPU_LIMIT"] == str(separator["resources"]["cpuLimit"])
    assert parse_max_per_job(env[MAX_PER_JOB_ENV]) == separator["batch"]["maxPerJob"]
    assert int(env["STEMKUBE_MAX_RUNNING"]) > 0  # a queue, or nothing would be batched

    resources = build_job(separation_job("music"), load_config(env))["spec"]["template"]["spec"][
        "containers"
    ][0]["resources"]
    assert resources["requests"]["cpu"] == env["STEMKUBE_CPU_REQUEST"]
    assert resources["limits"]["cpu"] == env["STEMKUBE_CPU_LIMIT"]
    assert resources["limits"][env["STEMKUBE_GPU_RESOURCE"]] == env["STEMKUBE_GPU_COUNT"]


def test_defaults_batch_four_and_set_no_cpu_limit() -> None:
    env = operator_env()
    assert parse_max_per_job(env[MAX_PER_JOB_ENV]) == 4
    assert env["STEMKUBE_CPU_LIMIT"] == ""
    assert load_config(env).cpu_limit is None


@pytest.mark.parametrize(
    ("values", "value"),
    [
        (
            [
                "--set=separator.resources.requests.cpu=1",
                "--set=separator.resources.cpuLimit=1500m",
            ],
            "1500m",
        ),
        (["--set=separator.resources.cpuLimit=2.5"], "2.5"),
        (
            ["--set=separator.resources.requests.cpu=500m", "--set=separator.resources.cpuLimit=1"],
            "1",
        ),
    ],
)
def test_cpu_limit_quantities(values: list[str], value: str) -> None:
    assert operator_env(*values)["STEMKUBE_CPU_LIMIT"] == value


@examples
def test_example_job_passes_server_side_dry_run(
    cluster: Cluster, namespace: str, example: Path
) -> None:
    """The API server's own validation of the Job's resources: a MIG profile or a shared GPU as
    an extended resource in limits, CPU request <= limit."""
    job = build_job(separation_job(namespace), load_config(operator_env(f"--values={example}")))
    out = kubectl(
        cluster, "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(job)
    )
    assert "created (server dry run)" in out


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set=separator.batch.maxPerJob=0"], "/separator/batch/maxPerJob"),
        (["--set=separator.batch.maxPerJob=33"], "/separator/batch/maxPerJob"),
        (["--set=separator.batch.maxPerJob=two"], "/separator/batch/maxPerJob"),
        (["--set=separator.gpu.resource=gpu"], "/separator/gpu/resource"),
        (["--set=separator.gpu.resource=nvidia.com/mig 1g"], "/separator/gpu/resource"),
        (["--set=separator.gpu.resource=NVIDIA.com/gpu"], "/separator/gpu/resource"),
        (["--set=separator.gpu.resource=kubernetes.io/gpu"], "/separator/gpu/resource"),
        (["--set=separator.resources.cpuLimit=2cores"], "/separator/resources/cpuLimit"),
        (["--set=separator.resources.cpuLimit=2Gi"], "/separator/resources/cpuLimit"),
        (["--set=separator.resources.requests.cpu=lots"], "/separator/resources/requests/cpu"),
        # Kubernetes' own spelling is not the chart's: refused rather than ignored.
        (["--set=separator.resources.limits.cpu=2"], "additional properties 'limits' not allowed"),
    ],
)
def test_bad_values_are_refused(values: list[str], message: str) -> None:
    rendered = helm("template", "stemkube", str(CHART), *values, check=False)
    assert rendered.returncode != 0
    assert message in rendered.stderr
    linted = helm("lint", "--strict", str(CHART), *values, check=False)
    assert linted.returncode != 0
    assert message in linted.stdout + linted.stderr


def test_cpu_limit_below_the_request_is_refused() -> None:
    # A template check, not the schema's (JSON Schema cannot compare two values): `helm lint`
    # only reports a template's fail as INFO, install and template refuse.
    rendered = helm(
        "template", "stemkube", str(CHART), "--set=separator.resources.cpuLimit=1500m", check=False
    )
    assert rendered.returncode != 0
    assert (
        "separator.resources.cpuLimit (1500m) is below separator.resources.requests.cpu (2)"
        in rendered.stderr
    )
