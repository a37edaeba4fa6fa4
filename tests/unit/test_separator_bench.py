"""The GPU benchmark's wheel list (separator-image/bench/gpu-wheels.sh) against the separator's
dependency tree as the project's venv has it: every dependency pinned as installed, the ones
left out by default only those a run never imports."""

import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

SCRIPT = Path(__file__).resolve().parents[2] / "separator-image" / "bench" / "gpu-wheels.sh"
# What only torch needs: the GPU machine's own torch brings it.
TORCH_ONLY = {
    "torch", "triton", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "setuptools",
}  # fmt: skip


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def listed(array: str) -> dict[str, str]:
    body = re.search(rf"^{array}=\(\n(.*?)^\)", SCRIPT.read_text(), re.S | re.M)
    assert body, array
    pins = [line.strip() for line in body.group(1).splitlines() if line.strip()]
    return {norm(pin.split("==")[0]): pin.split("==")[1] for pin in pins}


def dependency_tree() -> dict[str, str]:
    """The separator's dependencies for Python 3.12 on Linux, without torch's own."""
    env: dict[str, str] = {
        **{key: str(value) for key, value in default_environment().items()},
        "python_version": "3.12",
        "python_full_version": "3.12.3",
    }
    found: dict[str, str] = {}

    def walk(name: str) -> None:
        key = norm(name)
        if key in found or key in TORCH_ONLY or key.startswith(("nvidia-", "cuda-")):
            return
        dist = metadata.distribution(name)
        found[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                walk(req.name)

    walk("stemkube-separator")
    del found["stemkube-separator"], found["stemkube-contract"]  # built from the tree
    return found


def test_the_wheel_list_is_the_dependency_tree_pinned_as_installed() -> None:
    runtime, unused = listed("RUNTIME"), listed("UNUSED")
    assert not set(runtime) & set(unused)
    assert {**runtime, **unused} == dependency_tree()


def test_a_run_imports_nothing_left_out_by_default() -> None:
    """The distributions whose modules a separation imports (the program's modules, Demucs's
    model loading and apply_model), torch's aside, are all in RUNTIME."""
    code = (
        "import sys, importlib.metadata as m\n"
        "import stemkube_separator.cli, stemkube_separator.pipeline\n"
        "import demucs.pretrained, demucs.apply, demucs.htdemucs\n"
        "owners = m.packages_distributions()\n"
        "names = {d for mod in list(sys.modules) for d in owners.get(mod.split('.')[0], [])}\n"
        "print('\\n'.join(sorted(names)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    imported = {norm(name) for name in out.split()}
    imported -= TORCH_ONLY | {"stemkube-separator", "stemkube-contract"}
    imported = {name for name in imported if not name.startswith(("nvidia-", "cuda-"))}
    assert imported <= set(listed("RUNTIME")), imported - set(listed("RUNTIME"))
