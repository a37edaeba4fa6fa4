"""The chart's files: the same CRD as crds/; the ingress's values, schema and templates; the
helm test hook."""

import json
import re
from typing import Any

import yaml

from stemkube_api import sizes
from stemkube_api.upload import FORM_SLACK
from tests.harness.tools import REPO_ROOT


def test_chart_crd_is_identical_to_crds() -> None:
    source = REPO_ROOT / "crds" / "separationjobs.stemkube.io.yaml"
    shipped = REPO_ROOT / "charts" / "stemkube" / "crds" / "separationjobs.stemkube.io.yaml"
    assert shipped.read_bytes() == source.read_bytes(), (
        "charts/stemkube/crds/ differs from crds/: copy crds/separationjobs.stemkube.io.yaml"
    )


# The ingress and the helm test hook, read from the chart's files (no helm here: the unit tier
# needs no tools; tests/integration/test_chart_ingress.py renders them).

CHART = REPO_ROOT / "charts" / "stemkube"
TEMPLATES = CHART / "templates"


def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def _values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def test_every_ingress_value_has_its_schema_and_no_more() -> None:
    ingress = _schema()["properties"]["ingress"]
    assert ingress["additionalProperties"] is False
    assert set(_values()["ingress"]) == set(ingress["properties"])


def test_the_default_controller_is_nginx_as_before() -> None:
    controller = _schema()["properties"]["ingress"]["properties"]["controller"]
    assert controller["enum"] == ["nginx", "traefik", "other"]
    assert _values()["ingress"]["controller"] == "nginx"


def test_the_body_limit_has_one_home_api_max_file_size() -> None:
    # No second number to keep in step with api.maxFileSize: the old ingress.maxBodySize is
    # gone, and the ingress's limit is computed from api.maxFileSize.
    assert "maxBodySize" not in _values()["ingress"]
    for path in (CHART / "values.yaml", *TEMPLATES.rglob("*")):
        if path.is_file():
            assert "maxBodySize" not in path.read_text(), path
    helper = (TEMPLATES / "_ingress.tpl").read_text()
    assert ".Values.api.maxFileSize" in helper
    annotations = helper.split('define "stemkube.ingressAnnotations"')[1]
    assert 'include "stemkube.ingressBodyMiB"' in annotations
    assert 'include "stemkube.ingressAnnotations"' in (TEMPLATES / "ingress.yaml").read_text()
    middleware = (TEMPLATES / "ingress-middleware.yaml").read_text()
    assert 'include "stemkube.ingressBodyMiB"' in middleware


def test_the_templates_size_units_are_the_apis() -> None:
    # _ingress.tpl reads api.maxFileSize as the API does (binary units; KiB as KB). The
    # schema admits these units only.
    helper = (TEMPLATES / "_ingress.tpl").read_text()
    [factors] = re.findall(r'\$factors := dict ((?:"\w*" \d+ ?)+)', helper)
    pairs = re.findall(r'"(\w*)" (\d+)', factors)
    factors = {unit: int(factor) for unit, factor in pairs}
    assert set(factors) == {"", "B", "KB", "MB", "GB", "TB"}
    for unit, factor in factors.items():
        assert sizes.parse_size(f"1{unit}") == factor
        if unit not in ("", "B"):  # the template reads KiB as KB, as the API does
            assert sizes.parse_size(f"1{unit[0]}iB") == factor
    pattern = _schema()["properties"]["api"]["properties"]["maxFileSize"]["pattern"]
    for text in ("500MB", "1.5GB", "100KiB", "1048576", "2 TB"):
        assert re.match(pattern, text)
        sizes.parse_size(text)


def test_the_headroom_covers_the_apis_form_slack() -> None:
    # The ingress allows the file plus 1 MiB; the API allows the file plus FORM_SLACK.
    helper = (TEMPLATES / "_ingress.tpl").read_text()
    assert "(divf $bytes 1048576) | int64) 1 -}}" in helper
    assert FORM_SLACK <= 1024 * 1024


def test_the_helm_test_pod_is_a_test_hook_in_the_apis_image_and_restricted() -> None:
    template = (TEMPLATES / "tests" / "test-api.yaml").read_text()
    assert "helm.sh/hook: test\n" in template
    assert "kind: Pod\n" in template
    assert "restartPolicy: Never" in template
    assert re.search(r"activeDeadlineSeconds: \d+", template)
    assert '"image" .Values.api.image' in template  # the API's image, no other
    assert 'securityContext: {{- include "stemkube.podSecurity" . | nindent 4 }}' in template
    assert 'securityContext: {{- include "stemkube.containerSecurity" . | nindent 8 }}' in template
    assert "/readyz" in template
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    for line in (
        "runAsNonRoot: true",
        "seccompProfile: {type: RuntimeDefault}",
        "allowPrivilegeEscalation: false",
        "readOnlyRootFilesystem: true",
        "capabilities: {drop: [ALL]}",
    ):
        assert line in helpers
