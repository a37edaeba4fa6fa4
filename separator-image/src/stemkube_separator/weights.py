"""Where a model's weights would come from, and whether they can: a model folder, or Demucs's
hub (its download cache, else its download site). Answered without torch, so that local mode
can ask at start and in its readiness check (``python -m stemkube_separator.weights``).

Exit codes: 0 the weights are reachable (a line of JSON says where); MODEL_NOT_FOUND with the
reason on stderr otherwise."""

import argparse
import json
import os
import socket
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from importlib import util
from pathlib import Path

import yaml  # Demucs's own dependency: its bags are YAML

from stemkube_contract import exitcodes

HUB_TIMEOUT = 3.0


def _demucs_remote() -> Path:
    spec = util.find_spec("demucs")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the demucs package is not installed")
    return Path(spec.origin).parent / "remote"


def _hub_files(remote: Path) -> dict[str, str]:
    """Signature -> download URL, as ``demucs.pretrained`` reads ``remote/files.txt``."""
    files: dict[str, str] = {}
    root = ""
    for line in (remote / "files.txt").read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        if line.startswith("root:"):
            root = line.split(":", 1)[1].strip()
        elif line:
            files[line.split("-", 1)[0]] = f"https://dl.fbaipublicfiles.com/demucs/{root}{line}"
    return files


def bag_members(path: Path) -> list[str]:
    """The signatures a Demucs bag (``<name>.yaml``) names; none where it cannot be read."""
    try:
        members = (yaml.safe_load(path.read_text()) or {}).get("models") or []
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    return [str(m) for m in members]


def _bag(remote: Path, name: str) -> list[str]:
    path = remote / f"{name}.yaml"
    return bag_members(path) if path.is_file() else [name]


def torch_hub_checkpoints(env: Mapping[str, str]) -> Path:
    """torch.hub's download folder: ``$TORCH_HOME/hub/checkpoints``."""
    home = env.get("TORCH_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    return Path(home) / "hub" / "checkpoints"


def _reachable(url: str) -> str | None:
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=HUB_TIMEOUT):
            return None
    except OSError as exc:
        return f"{host} unreachable ({exc})"


def locate(name: str, repo: str | None, env: Mapping[str, str]) -> str:
    """Where ``name``'s weights are; raises LookupError saying why none can be had."""
    if repo is not None:
        folder = Path(repo)
        if (folder / f"{name}.yaml").is_file() or any(folder.glob(f"{name}*.th")):
            return f"model folder {folder}"
        raise LookupError(f"model {name!r} is not in the model folder {folder}")
    remote = _demucs_remote()
    files = _hub_files(remote)
    sigs = _bag(remote, name)
    missing = [s for s in sigs if s not in files]
    if missing:
        raise LookupError(
            f"model {name!r} is not a pretrained Demucs model; give its folder with --model-repo"
        )
    cache = torch_hub_checkpoints(env)
    urls = [files[s] for s in sigs]
    if all((cache / urllib.parse.urlsplit(u).path.rsplit("/", 1)[-1]).is_file() for u in urls):
        return f"Demucs cache {cache}"
    problem = _reachable(urls[0])
    if problem:
        raise LookupError(
            f"the weights of {name!r} are not in the Demucs cache ({cache}) and the Demucs hub "
            f"is out of reach: {problem}; download them once, or give a folder of weights with "
            "--model-repo"
        )
    return "Demucs hub (downloaded on first use)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stemkube_separator.weights",
        description="Say where a model's weights come from, or why they cannot be had.",
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-repo")
    args = parser.parse_args(argv)
    try:
        where = locate(args.model, args.model_repo, os.environ)
    except (LookupError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return exitcodes.MODEL_NOT_FOUND
    print(json.dumps({"model": args.model, "weights": where}))
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
