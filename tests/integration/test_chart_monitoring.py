"""The chart's monitoring objects as helm renders them: the operator's PodMonitor selects the
operator's pods and port, the dashboard ConfigMap carries the dashboard file whole with the
Grafana sidecar's label, and the PrometheusRule renders only where its CRD is served."""

import json
from typing import Any

import pytest
import yaml

from tests.integration.test_chart import CHART, helm

pytestmark = pytest.mark.integration

ALL_ON = (
    "--set=serviceMonitor.enabled=true",
    "--set=grafanaDashboard.enabled=true",
    "--set=prometheusRule.enabled=true",
    "--set=prometheusRule.queueAgeSeconds=600",
)
RULE_CRD = "--api-versions=monitoring.coreos.com/v1/PrometheusRule"


def render(*args: str) -> list[dict[str, Any]]:
    text = helm("template", "rel", str(CHART), "--namespace=music", *args).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def test_off_by_default_and_the_rules_only_with_their_crd() -> None:
    kinds = {doc["kind"] for doc in render()}
    assert not kinds & {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
    assert not [d for d in render() if d["metadata"]["name"].endswith("-dashboard")]
    assert by_kind(render(*ALL_ON), "PrometheusRule") == []  # no CRD served: nothing to apply
    [rule] = by_kind(render(*ALL_ON, RULE_CRD), "PrometheusRule")
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {
        "StemkubeSeparationsFailing",
        "StemkubeQueueTooOld",
        "StemkubeOperatorNotLeading",
        "StemkubeNoProgress",
    }
    assert alerts["StemkubeQueueTooOld"]["expr"].endswith("> 600")
    assert alerts["StemkubeNoProgress"]["for"] == "30m"


def test_the_pod_monitor_scrapes_the_operators_metrics_port() -> None:
    docs = render(*ALL_ON)
    [monitor] = by_kind(docs, "PodMonitor")
    [operator] = [
        d
        for d in by_kind(docs, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == "operator"
    ]
    labels = operator["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {
        p["name"] for c in operator["spec"]["template"]["spec"]["containers"] for p in c["ports"]
    }
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"


def test_the_dashboard_config_map_holds_the_dashboard_for_the_sidecar() -> None:
    [config] = [d for d in render(*ALL_ON) if d["metadata"]["name"] == "rel-stemkube-dashboard"]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "stemkube.json").read_text())
    assert json.loads(config["data"]["stemkube.json"]) == shipped


def test_lint_and_bad_thresholds() -> None:
    assert helm("lint", "--strict", str(CHART), *ALL_ON).returncode == 0
    refused = helm(
        "template", "rel", str(CHART), "--set=prometheusRule.failureRatio=2", check=False
    )
    assert refused.returncode != 0
    assert "/prometheusRule/failureRatio" in refused.stderr
