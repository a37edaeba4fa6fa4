"""Where the binaries built by ``make tools`` live."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class ToolMissingError(RuntimeError):
    pass


def tools_bin() -> Path:
    return Path(os.environ.get("STEMKUBE_TOOLS_BIN", REPO_ROOT / ".cache" / "bin"))


def tool(name: str) -> Path:
    path = tools_bin() / name
    if not os.access(path, os.X_OK):
        # A missing tool is a failure, never a skip: CI must build it.
        raise ToolMissingError(
            f"{path} is missing: run `make tools` to build the test tier's binaries"
        )
    return path
