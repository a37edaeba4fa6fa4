"""Several separator pods per GPU: the operator gives each Job the chart's GPU resource (a MIG
profile, a time-sliced replica) and CPU limit, which the separator sizes its threads from."""

from typing import Any

import pytest

from stemkube_operator.config import OperatorConfig, load_config
from stemkube_operator.jobspec import build_job
from tests.unit.test_operator_jobspec import separation_job


def resources(config: OperatorConfig) -> dict[str, Any]:
    job = build_job(separation_job(), config)
    container: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return dict(container["resources"])


def test_cpu_limit_is_read_from_the_environment() -> None:
    assert load_config({"STEMKUBE_CPU_LIMIT": "1500m"}).cpu_limit == "1500m"


@pytest.mark.parametrize("env", [{}, {"STEMKUBE_CPU_LIMIT": ""}])
def test_no_cpu_limit_unless_set(env: dict[str, str]) -> None:
    # The chart always sets the variable; its empty default means no limit.
    config = load_config(env)
    assert config.cpu_limit is None
    assert "cpu" not in resources(config).get("limits", {})


@pytest.mark.parametrize(
    ("resource", "cpu_request", "cpu_limit"),
    [
        ("nvidia.com/mig-1g.18gb", "4", "4"),
        ("nvidia.com/gpu.shared", "3", "3"),
        ("nvidia.com/gpu", "1500m", "2"),
    ],
)
def test_shared_gpu_job_asks_for_its_slice_and_bounded_cpus(
    resource: str, cpu_request: str, cpu_limit: str
) -> None:
    config = load_config(
        {
            "STEMKUBE_GPU_RESOURCE": resource,
            "STEMKUBE_GPU_COUNT": "1",
            "STEMKUBE_CPU_REQUEST": cpu_request,
            "STEMKUBE_CPU_LIMIT": cpu_limit,
            "STEMKUBE_MEMORY_LIMIT": "16Gi",
        }
    )
    got = resources(config)
    assert got["requests"]["cpu"] == cpu_request
    assert got["limits"] == {"cpu": cpu_limit, "memory": "16Gi", resource: "1"}


def test_cpu_limit_without_a_gpu() -> None:
    got = resources(OperatorConfig(gpu_count=0, cpu_limit="2"))
    assert got["limits"] == {"cpu": "2"}
