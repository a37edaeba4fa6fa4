"""Which local program stands in for which container image: the only pretend part of the tier.

A real kubelet pulls the image and runs its entrypoint inside it. The pod runner instead runs
a local program with the pod's command, arguments and environment. Each entry below plays one
image: its entrypoint and command, the directories first on PATH (the image's filesystem), and
the environment variable through which the process learns where to write its termination
message (a real container writes the pod's ``terminationMessagePath``, which the kubelet mounts
from the host; a local process cannot write ``/dev/termination-log``).
"""

import sys
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class StandIn:
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    path: tuple[Path, ...] = (VENV_BIN,)
    termination_log_env: str = "TERMINATION_LOG"


# Keyed by the image's repository, without registry host, tag or digest.
IMAGES: dict[str, StandIn] = {
    "python": StandIn(entrypoint=(), cmd=("python3",)),
    "stemkube/separator": StandIn(
        entrypoint=("stemkube-separate",), termination_log_env="STEMKUBE_TERMINATION_LOG"
    ),
    "stemkube/operator": StandIn(entrypoint=("stemkube-operator",)),
    "stemkube/api": StandIn(entrypoint=("stemkube-api",)),
}


def repository(image: str) -> str:
    """``registry.example:5000/stemkube/separator:1.0@sha256:..`` -> ``stemkube/separator``."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    if name.rfind(":") > last_slash:
        name = name[: name.rfind(":")]
    parts = name.split("/")
    # A first part with a dot, a colon or "localhost" is a registry host, as Docker reads it.
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts[0] == "library" and len(parts) == 2:
        parts = parts[1:]
    return "/".join(parts)


def stand_in_for(image: str, images: dict[str, StandIn] | None = None) -> StandIn | None:
    return (IMAGES if images is None else images).get(repository(image))
