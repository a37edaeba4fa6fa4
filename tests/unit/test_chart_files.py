"""The chart ships the same CRD as crds/."""

from tests.harness.tools import REPO_ROOT


def test_chart_crd_is_identical_to_crds() -> None:
    source = REPO_ROOT / "crds" / "separationjobs.stemkube.io.yaml"
    shipped = REPO_ROOT / "charts" / "stemkube" / "crds" / "separationjobs.stemkube.io.yaml"
    assert shipped.read_bytes() == source.read_bytes(), (
        "charts/stemkube/crds/ differs from crds/: copy crds/separationjobs.stemkube.io.yaml"
    )
