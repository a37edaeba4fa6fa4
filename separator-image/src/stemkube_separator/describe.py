"""The models in a folder of weights (Demucs's local-repo format) and the stems each gives,
as a models declaration (``stemkube_contract.models``) in JSON: how local mode learns the
models of ``--model-repo`` (``python -m stemkube_separator.describe DIR``). Each model is
loaded with the code that separates with it, so a model listed here is one that loads."""

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from stemkube_contract import exitcodes
from stemkube_separator.weights import bag_members


def names_in(folder: Path) -> list[str]:
    """Bags (``<name>.yaml``), then single models (``<sig>-<hash>.th``) that no bag names."""
    bags = sorted(p.stem for p in folder.glob("*.yaml"))
    in_bags = {sig for bag in bags for sig in bag_members(folder / f"{bag}.yaml")}
    singles = sorted({p.name.split("-", 1)[0] for p in folder.glob("*.th")} - in_bags - set(bags))
    return bags + singles


def describe(folder: Path) -> list[dict[str, object]]:
    from stemkube_separator import model  # torch: only when there is something to load

    found: list[dict[str, object]] = []
    for name in names_in(folder):
        try:
            loaded = model.load(name, str(folder))
        except Exception as exc:  # a broken file must not hide the others
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        found.append({"name": name, "sources": list(loaded.sources), "repo": str(folder)})
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m stemkube_separator.describe FOLDER", file=sys.stderr)
        return exitcodes.USAGE
    print(json.dumps({"models": describe(Path(args[0]))}))
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
