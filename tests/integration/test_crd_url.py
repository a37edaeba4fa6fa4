"""The SeparationJob CRD's URL input in the real API server: ``spec.input`` is an object
(bucket and key) or a URL, exactly one of the two; the URL's form is checked."""

from typing import Any

import pytest
import yaml

from tests.harness.fixtures import Cluster, kubectl
from tests.integration.test_crd import manifest

pytestmark = pytest.mark.integration

OUTPUT = {"bucket": "stemkube", "key": "results/probe.zip"}


def apply(cluster: Cluster, namespace: str, source: dict[str, Any]) -> str:
    body = manifest(input=source, output=OUTPUT)
    return kubectl(
        cluster, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body), check=False
    )


def test_a_url_input_is_accepted(cluster: Cluster, namespace: str, separation_crd: None) -> None:
    out = apply(cluster, namespace, {"url": "https://example.com/song.mp3?sig=x", "filename": "s"})
    assert "created" in out, out


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {"url": "https://example.com/a.mp3", "bucket": "stemkube", "key": "inputs/a"},
            "give either url, or bucket and key",
        ),
        ({"bucket": "stemkube"}, "give either url, or bucket and key"),
        ({"filename": "a.mp3"}, "give either url, or bucket and key"),
        ({"url": "ftp://example.com/a.mp3"}, "spec.input.url: Invalid value"),
        ({"url": "https://user:pw@example.com/a.mp3"}, "spec.input.url: Invalid value"),
        ({"url": "https://example.com/" + "a" * 2048}, "spec.input.url: Too long"),
    ],
)
def test_bad_inputs_are_refused(
    cluster: Cluster, namespace: str, separation_crd: None, source: dict[str, Any], expected: str
) -> None:
    out = apply(cluster, namespace, source)
    assert "is invalid" in out, out
    assert expected in out, out
