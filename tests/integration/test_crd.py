"""The SeparationJob CRD in the real API server: the examples apply, bad manifests are refused
with the field named, and kubectl shows the printer columns."""

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.fixtures import Cluster, kubectl
from tests.harness.tools import REPO_ROOT

pytestmark = pytest.mark.integration

EXAMPLES = REPO_ROOT / "crds" / "examples"

VALID: dict[str, Any] = {
    "apiVersion": "stemkube.io/v1alpha1",
    "kind": "SeparationJob",
    "metadata": {"name": "probe"},
    "spec": {
        "input": {"bucket": "stemkube", "key": "inputs/probe/song.mp3"},
        "output": {"bucket": "stemkube", "key": "results/probe.zip"},
    },
}


def manifest(**spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    for key, value in spec.items():
        if value is None:
            del body["spec"][key]
        else:
            body["spec"][key] = value
    return body


def test_examples_apply_as_they_are(cluster: Cluster, namespace: str, separation_crd: None) -> None:
    out = kubectl(cluster, "apply", "-n", namespace, "-f", str(EXAMPLES))
    names = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in EXAMPLES.glob("*.yaml")}
    for name in names:
        assert f"separationjob.stemkube.io/{name} created" in out
    table = kubectl(cluster, "get", "sj", "-n", namespace)
    assert table.split()[:6] == ["NAME", "PHASE", "PROGRESS", "MODEL", "AGE", "DURATION"]
    defaults = yaml.safe_load(kubectl(cluster, "get", "sj", "basic", "-n", namespace, "-o", "yaml"))
    assert defaults["spec"]["model"] == "htdemucs"
    assert defaults["spec"]["format"] == "mp3"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"input": None}, "spec.input: Required value"),
        ({"output": {"bucket": "stemkube"}}, "spec.output.key: Required value"),
        ({"format": "ogg"}, 'spec.format: Unsupported value: "ogg"'),
        ({"model": "spleeter"}, 'spec.model: Unsupported value: "spleeter"'),
        ({"format": "wav", "bitrate": 128}, "spec.bitrate: Invalid value"),
        ({"bitrate": 999}, "spec.bitrate: Invalid value: 999"),
        ({"stems": ["vocals"], "twoStems": "drums"}, "spec.twoStems: Invalid value"),
        ({"stems": ["guitar"]}, "guitar and piano stems need model htdemucs_6s"),
        ({"stems": ["kazoo"]}, 'spec.stems[0]: Unsupported value: "kazoo"'),
        ({"shifts": 0}, "spec.shifts: Invalid value: 0"),
        ({"overlap": 1.5}, "spec.overlap: Invalid value: 1.5"),
        ({"input": {"bucket": "Bad_Bucket", "key": "k"}}, "spec.input.bucket: Invalid value"),
        ({"wavDepth": "24"}, "wavDepth applies only with format wav"),
    ],
)
def test_bad_manifests_are_refused_naming_the_field(
    cluster: Cluster, namespace: str, separation_crd: None, spec: dict[str, Any], expected: str
) -> None:
    out = kubectl(
        cluster,
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump(manifest(**spec)),
        check=False,
    )
    assert "is invalid" in out
    assert expected in out


def test_spec_cannot_change_after_creation(
    cluster: Cluster, namespace: str, separation_crd: None, tmp_path: Path
) -> None:
    kubectl(cluster, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(VALID))
    out = kubectl(
        cluster,
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump(manifest(format="flac")),
        check=False,
    )
    assert "spec cannot change after creation" in out
