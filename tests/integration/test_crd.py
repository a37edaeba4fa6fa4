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
    # The CRD defaults what the catalogue gives; the model is the deployment's default, which
    # the operator fills, and bitrate depends on the format.
    assert "model" not in defaults["spec"]
    assert "bitrate" not in defaults["spec"]
    assert (defaults["spec"]["format"], defaults["spec"]["shifts"]) == ("mp3", 1)
    assert defaults["spec"]["overlap"] == 0.25


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"input": None}, "spec.input: Required value"),
        ({"output": {"bucket": "stemkube"}}, "spec.output.key: Required value"),
        ({"format": "ogg"}, 'spec.format: Unsupported value: "ogg"'),
        # Any well-formed model name: which are served is the deployment's (the operator's).
        ({"model": "bad name"}, 'spec.model: Invalid value: "bad name"'),
        ({"format": "wav", "bitrate": 128}, "spec.bitrate: Invalid value"),
        ({"bitrate": 999}, "spec.bitrate: Unsupported value: 999"),
        ({"bitrate": 100}, "spec.bitrate: Unsupported value: 100"),  # not a LAME bitrate
        ({"stems": ["vocals"], "twoStems": "drums"}, "spec.twoStems: Invalid value"),
        ({"stems": ["Kazoo"]}, 'spec.stems[0]: Invalid value: "Kazoo"'),
        ({"shifts": 11}, "spec.shifts: Invalid value: 11"),
        ({"overlap": 1.5}, "spec.overlap: Invalid value: 1.5"),
        ({"input": {"bucket": "Bad_Bucket", "key": "k"}}, "spec.input.bucket: Invalid value"),
        ({"output": {"bucket": "stemkube", "key": "../x.zip"}}, "spec.output.key: Invalid value"),
        ({"wavDepth": "24"}, "wav_depth applies only with format wav or flac"),
        ({"format": "flac", "wavDepth": "32f"}, "FLAC stores integers"),
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
