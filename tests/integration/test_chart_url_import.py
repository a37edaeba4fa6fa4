"""The chart's ``separator.urlImport.clusterCIDRs``: the operator's STEMKUBE_URL_DENY_CIDRS
(which it hands to every URL job's separator), checked by the values schema."""

from typing import Any

import pytest
import yaml

from stemkube_contract.addresses import DENY_CIDRS_ENV
from tests.integration.test_chart import CHART, helm

pytestmark = pytest.mark.integration


def operator_env(*values: str) -> dict[str, Any]:
    out = helm("template", "t", str(CHART), *values).stdout
    for doc in yaml.safe_load_all(out):
        if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("operator"):
            [container] = doc["spec"]["template"]["spec"]["containers"]
            return {e["name"]: e.get("value") for e in container["env"]}
    raise AssertionError("no operator Deployment rendered")


def test_the_cluster_ranges_reach_the_operator() -> None:
    assert operator_env()[DENY_CIDRS_ENV] == ""
    env = operator_env('--set-json=separator.urlImport.clusterCIDRs=["10.96.0.0/12","fd00::/108"]')
    assert env[DENY_CIDRS_ENV] == "10.96.0.0/12,fd00::/108"


def test_a_range_that_is_not_cidr_is_refused() -> None:
    result = helm(
        "template", "t", str(CHART), "--set-json=separator.urlImport.clusterCIDRs=[\"ten\"]",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "urlImport" in result.stderr
