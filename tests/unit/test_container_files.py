"""The Dockerfiles and docker-compose.yml, read as files: what a user relies on without
building them (base image as a build argument, non-root, the compose file's ports and data)."""

import re
from pathlib import Path

import pytest
import yaml

from tests.harness.tools import REPO_ROOT

DOCKERFILES = [
    REPO_ROOT / "api" / "Dockerfile",
    REPO_ROOT / "api" / "local.Dockerfile",
    REPO_ROOT / "operator" / "Dockerfile",
    REPO_ROOT / "separator-image" / "Dockerfile",
]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_images_take_their_base_as_an_argument_and_run_as_non_root(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+", text, re.MULTILINE)
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert "${BASE_IMAGE}" in froms
    assert not [f for f in froms if ":" in f and "$" not in f], froms  # no hard-coded base
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")
    assert "org.opencontainers.image.title" in text
    # `make images` prunes the images it superseded by this label: one it lacks would pile up.
    key, value = _makefile_source_label().split("=", 1)
    assert f'{key}="{value}"' in text


def _makefile_source_label() -> str:
    makefile = (REPO_ROOT / "Makefile").read_text()
    [label] = re.findall(r"^IMAGE_SOURCE_LABEL := (\S+)$", makefile, re.MULTILINE)
    return str(label)


def test_compose_runs_local_mode_on_port_8000_with_a_data_volume() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    [service] = compose["services"].values()
    # This machine's loopback only, unless a user publishes it wider on purpose.
    assert service["ports"] == ["127.0.0.1:${STEMKUBE_PORT:-8000}:8000"]
    assert service["init"] is True  # SIGTERM reaches stemkube-api, which stops its separations
    assert "stemkube-data:/data" in service["volumes"]
    assert "stemkube-data" in compose["volumes"]
    dockerfile = REPO_ROOT / service["build"]["context"] / service["build"]["dockerfile"]
    assert dockerfile.is_file()
    local = dockerfile.read_text()
    # The entrypoint is the program, so `docker compose run stemkube keys create ...` works.
    assert 'ENTRYPOINT ["stemkube-api"]' in local
    assert 'CMD ["--local", "--host=0.0.0.0", "--port=8000"]' in local
    assert "STEMKUBE_DATA_DIR=/data" in local
    # The GPU reservation is shown, commented in.
    assert "#           capabilities: [gpu]" in text
    assert "#         - driver: nvidia" in text
    # Every file the local image copies exists.
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", local, re.MULTILINE):
        for path in source.split():
            assert (REPO_ROOT / path).exists(), path
