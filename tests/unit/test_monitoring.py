"""What an operations team watches: the operator's metrics record a separation's end (its
model, audio, real-time factor, creation to Job and to completion, the oldest pending one,
leadership), and the chart's dashboard and alert rules name only metrics the code exports."""

import datetime
import json
import re
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from stemkube_api.metrics import Metrics
from stemkube_contract import exitcodes
from stemkube_operator import metrics as operator_metrics
from stemkube_operator.reconcile import _observe_transition
from tests.harness.tools import REPO_ROOT

CHART = REPO_ROOT / "charts" / "stemkube"
T0 = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)
METRIC = re.compile(r"\bstemkube_[a-z0-9_]+\b")


def exported_names() -> set[str]:
    """Every sample name the operator and the API can export."""
    collectors: list[MetricWrapperBase] = [
        value for value in vars(operator_metrics).values() if isinstance(value, MetricWrapperBase)
    ]
    families = [f for c in collectors for f in c.describe()]
    families += list(Metrics().registry.collect())
    names: set[str] = set()
    for family in families:
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


def queries() -> list[str]:
    dashboard = json.loads((CHART / "dashboards" / "stemkube.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = (CHART / "templates" / "monitoring.yaml").read_text()
    exprs += re.findall(r"expr: \|?\n?((?:.+\n)+?)\s+for:", rules)
    return exprs


def test_every_query_names_a_metric_the_code_exports() -> None:
    exported = exported_names()
    exprs = queries()
    assert len(exprs) >= 16  # 13 panels' targets and 4 alerts
    named = {name for expr in exprs for name in METRIC.findall(expr)}
    assert named - exported == set()
    assert {"stemkube_audio_processed_seconds_total", "stemkube_operator_leading"} <= named
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), expr


def test_the_dashboard_is_grafana_json_with_one_datasource_variable() -> None:
    dashboard = json.loads((CHART / "dashboards" / "stemkube.json").read_text())
    assert dashboard["uid"] == "stemkube"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_completed_separation_counts_its_audio_time_and_model() -> None:
    cr: dict[str, Any] = {
        "metadata": {"creationTimestamp": "2026-11-28T12:00:00Z"},
        "spec": {"model": "htdemucs_ft"},
        "status": {"phase": "Running", "startTime": "2026-11-28T12:00:10Z", "audioSeconds": 200.0},
    }
    audio = sample("stemkube_audio_processed_seconds_total", model="htdemucs_ft")
    ratios = sample(
        "stemkube_separation_processing_seconds_per_audio_second_count", model="htdemucs_ft"
    )
    done = sample("stemkube_separation_completion_seconds_count", model="htdemucs_ft")
    now = T0 + datetime.timedelta(seconds=60)  # ran 50 s for 200 s of audio
    _observe_transition(cr, cr["status"], {"phase": "Completed"}, now, "htdemucs_ft")
    assert sample("stemkube_audio_processed_seconds_total", model="htdemucs_ft") == audio + 200
    assert (
        sample("stemkube_separation_processing_seconds_per_audio_second_count", model="htdemucs_ft")
        == ratios + 1
    )
    assert (
        sample(
            "stemkube_separation_processing_seconds_per_audio_second_bucket",
            model="htdemucs_ft",
            le="0.5",
        )
        >= 1
    )  # 0.25 s per audio second
    assert sample("stemkube_separation_completion_seconds_count", model="htdemucs_ft") == done + 1
    failed = sample("stemkube_separation_failures_total", reason="OutOfMemory", model="mdx")
    _observe_transition(cr, cr["status"], {"phase": "Failed", "reason": "OutOfMemory"}, now, "mdx")
    assert (
        sample("stemkube_separation_failures_total", reason="OutOfMemory", model="mdx")
        == failed + 1
    )


def test_the_oldest_pending_separation_is_published() -> None:
    phases = operator_metrics.PhaseCounts()
    phases.observe("a", "Pending", T0)
    phases.observe("b", "Pending", T0 + datetime.timedelta(minutes=5))
    gauge = "stemkube_queue_oldest_pending_created_timestamp_seconds"
    assert sample(gauge) == T0.timestamp()
    phases.observe("a", "Running", T0)
    assert sample(gauge) == (T0 + datetime.timedelta(minutes=5)).timestamp()
    phases.forget("b")
    assert sample(gauge) == 0


def test_the_phase_counts_follow_transitions_and_a_recount() -> None:
    phases = operator_metrics.PhaseCounts()

    def counts() -> dict[str, float | None]:
        return {p: sample("stemkube_separation_jobs", phase=p) for p in ("Pending", "Running")}

    phases.observe("a", "Pending", T0)
    phases.observe("b", "Pending", T0)
    phases.observe("a", "Running", T0)
    phases.observe("a", "Running", T0)  # seen twice, counted once
    assert counts() == {"Pending": 1, "Running": 1}
    # The sweep's listing: what is there now, finished ones included, and nothing else.
    phases.recount([("c", "Completed", None), ("d", "Completed", None), ("e", "Failed", None)])
    assert counts() == {"Pending": 0, "Running": 0}
    assert sample("stemkube_separation_jobs", phase="Completed") == 2
    assert sample("stemkube_separation_jobs", phase="Failed") == 1
    phases.forget("c")
    assert sample("stemkube_separation_jobs", phase="Completed") == 1


def test_the_failure_alert_leaves_out_exactly_the_users_own_failures() -> None:
    """Bad input and bad sources (final, never retried, the user's doing) do not page anyone;
    a missing model (final too, but the deployment's doing) does. The list in the alert is
    the contract's, and a test fails when a new reason is added to one and not the other."""
    rules = (CHART / "templates" / "monitoring.yaml").read_text()
    [listed] = re.findall(r'reason!~"([^"]+)"', rules)
    users = {m.reason for m in exitcodes.MEANINGS.values() if not m.retryable}
    assert set(listed.split("|")) == users - {"ModelNotFound"}
