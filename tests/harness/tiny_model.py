"""A Demucs model repository built at test time: no weights are ever downloaded.

``build_repo`` writes an HTDemucs with random weights in Demucs's own local-repo format, the
format ``demucs.pretrained.get_model(name, repo=DIR)`` reads: a ``<sig>-<sha256[:8]>.th``
package (class, init arguments, state) and a ``<name>.yaml`` bag naming the signature. The
separator loads it through exactly the code path of a real model (``--model-repo DIR``).

``TINY`` is a few thousand parameters and separates seconds of audio in well under a second;
``FULL`` is the published ``htdemucs`` architecture (the compute is what real weights cost).
"""

import hashlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import yaml
from demucs.htdemucs import HTDemucs
from demucs.states import get_state, save_with_checksum

from tests.harness.custom_model import CUSTOM_MODEL, CUSTOM_SOURCES

FOUR_STEMS = ("drums", "bass", "other", "vocals")
SIX_STEMS = ("drums", "bass", "other", "vocals", "guitar", "piano")

TINY: dict[str, Any] = {
    "channels": 4,
    "depth": 4,  # with a large nfft, keeps the transformer's sequences short (it is quadratic)
    "nfft": 4096,
    "t_layers": 1,
    "t_heads": 1,
    "t_hidden_scale": 1.0,
    "dconv_comp": 2,
    "segment": Fraction(39, 10),  # short segments: several per test input, so progress moves
}

# The published htdemucs (signature 955717e8): the repository's htdemucs defaults with the
# overrides of its training grid (demucs/grids/mmi.py: dconv_mode 3, 5 transformer layers,
# 512 bottom channels around the transformer) and the 7.8 s training segment: 41,984,456
# parameters, the published checkpoint's count (FULL_PARAMETERS; without the bottom channels
# it would be 27.4 M and understate the model's cost by a third).
FULL: dict[str, Any] = {
    "dconv_mode": 3,
    "t_layers": 5,
    "bottom_channels": 512,
    "t_dropout": 0.02,
    "segment": Fraction(39, 5),
}
FULL_PARAMETERS = 41_984_456  # four stems


def build_model(config: dict[str, Any], sources: tuple[str, ...] = FOUR_STEMS) -> HTDemucs:
    torch.manual_seed(0)  # the same weights every run: failures reproduce
    model: HTDemucs = HTDemucs(sources=list(sources), samplerate=44100, audio_channels=2, **config)
    return model


def save_model(model: HTDemucs, repo: Path, name: str) -> Path:
    """Save ``model`` into ``repo`` as the bag ``name`` with one member model."""
    repo.mkdir(parents=True, exist_ok=True)
    # Recorded by Demucs's @capture_init: what load_model calls the class with.
    args, kwargs = model.__dict__["_init_args_kwargs"]
    package = {
        "klass": HTDemucs,
        "args": args,
        "kwargs": kwargs,
        "state": get_state(model, None, half=False),  # type: ignore[no-untyped-call]
        "training_args": {},
    }
    sig = hashlib.sha1(name.encode()).hexdigest()[:8]
    save_with_checksum(package, repo / f"{sig}.th")  # type: ignore[no-untyped-call]
    (repo / f"{name}.yaml").write_text(yaml.safe_dump({"models": [sig]}))
    return repo


def build_repo(
    repo: Path, config: dict[str, Any] | None = None, names: tuple[str, ...] = ("htdemucs",)
) -> Path:
    """A repo with each of ``names``; a name ending in ``_6s`` gets the six stems,
    ``CUSTOM_MODEL`` its own two."""
    for name in names:
        sources: tuple[str, ...] = SIX_STEMS if name.endswith("_6s") else FOUR_STEMS
        if name == CUSTOM_MODEL:
            sources = CUSTOM_SOURCES
        save_model(build_model(TINY if config is None else config, sources), repo, name)
    return repo
