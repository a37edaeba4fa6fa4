"""The pure parts of the test tier: image names, $(VAR) expansion, exit codes, ports."""

from pathlib import Path

import pytest

from tests.harness.images import repository, stand_in_for
from tests.harness.podrunner import exit_code_of, expand
from tests.harness.procs import free_port


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("python:3.11-slim", "python"),
        ("docker.io/library/python:3.11", "python"),
        ("stemkube/separator", "stemkube/separator"),
        ("localhost:5000/stemkube/separator:dev", "stemkube/separator"),
        ("ghcr.io/acme/stemkube/separator@sha256:abcd", "acme/stemkube/separator"),
        ("registry.local:5000/stemkube/separator:1.0@sha256:ab", "stemkube/separator"),
    ],
)
def test_repository(image: str, expected: str) -> None:
    assert repository(image) == expected


def test_unknown_image_has_no_stand_in() -> None:
    assert stand_in_for("nginx:latest") is None
    assert stand_in_for("stemkube/separator:0.1.0") is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "1-2"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("cost: $$5", "cost: $5"),
        ("no refs", "no refs"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "2"}) == expected


def test_exit_code_of_signals() -> None:
    assert exit_code_of(0) == 0
    assert exit_code_of(3) == 3
    assert exit_code_of(-9) == 137
    assert exit_code_of(-15) == 143


def test_free_ports_are_never_handed_out_twice_nor_ephemeral() -> None:
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    low, high = int(ephemeral[0]), int(ephemeral[1])
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if low <= p <= high]
