"""The chart's batching and GPU-sharing values agree with the contract and the operator, read
from the chart's files (no helm: tests/integration/test_chart_gpu_sharing.py renders them)."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stemkube_contract.batch import LIMIT_MAX_PER_JOB, MAX_PER_JOB_ENV, parse_max_per_job
from tests.harness.tools import REPO_ROOT

CHART = REPO_ROOT / "charts" / "stemkube"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))


def schema_of(*path: str) -> dict[str, Any]:
    node: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    for key in path:
        node = node["properties"][key]
    return node


def values(path: Path = CHART / "values.yaml") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_batch_bounds_are_the_contracts() -> None:
    # A schema wider than the contract would install an operator that refuses to start.
    spec = schema_of("separator", "batch", "maxPerJob")
    assert (spec["minimum"], spec["maximum"]) == (1, LIMIT_MAX_PER_JOB)
    assert "operator.maxRunning" in spec["description"]
    default = values()["separator"]["batch"]["maxPerJob"]
    assert parse_max_per_job(str(default)) == default == 4


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (MAX_PER_JOB_ENV, ".Values.separator.batch.maxPerJob"),
        ("STEMKUBE_CPU_LIMIT", ".Values.separator.resources.cpuLimit"),
        ("STEMKUBE_CPU_REQUEST", ".Values.separator.resources.requests.cpu"),
        ("STEMKUBE_GPU_RESOURCE", ".Values.separator.gpu.resource"),
        ("STEMKUBE_GPU_COUNT", ".Values.separator.gpu.count"),
    ],
)
def test_operator_deployment_passes_the_value(variable: str, value: str) -> None:
    template = (CHART / "templates" / "operator.yaml").read_text()
    line = rf"- \{{name: {re.escape(variable)}, value: \{{\{{ {re.escape(value)} \| quote \}}\}}\}}"
    assert re.search(line, template), f"operator.yaml does not set {variable} from {value}"


def test_examples_exist_for_mig_and_time_slicing() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"values-mig.yaml", "values-time-sliced.yaml"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_shares_gpus_with_bounded_cpus_and_a_queue(example: Path) -> None:
    separator = values(example)["separator"]
    assert separator["gpu"]["count"] == 1  # a slice or a replica: a pod never needs two
    assert separator["resources"]["cpuLimit"]  # else each pod's threads count every core
    # Without a queue nothing waits, so the example's batching would never happen.
    assert values(example)["operator"]["maxRunning"] > 0
    assert parse_max_per_job(str(separator["batch"]["maxPerJob"])) > 1
