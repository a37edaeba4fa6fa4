"""The contract test of the command line: for a grid of option sets, the command line the
operator gives a Job's pod and the one local mode gives its worker process are parsed back by
the separator's own parser, and the separator reads exactly the options the job has."""

import datetime
import itertools
from pathlib import Path
from typing import Any

import pytest

from stemkube_api.interfaces import NewJob
from stemkube_api.local import rules
from stemkube_contract import options as catalogue
from stemkube_contract.models import Catalog, Model
from stemkube_operator.config import OperatorConfig
from stemkube_operator.jobspec import separator_args
from stemkube_separator import options as separator

MODELS = Catalog((*Catalog().models, Model("mine", ("vocals", "accompaniment"), "/w/mine")))


def grid() -> list[catalogue.Options]:
    """Every value of each option alone, and the cross-field cases together."""
    sets: list[catalogue.Options] = [{}]
    sets += [{"model": name} for name in MODELS.names]
    sets += [{"format": f} for f in ("mp3", "wav", "flac")]
    sets += [{"bitrate": b} for b in catalogue.MP3_BITRATES]
    sets += [
        {"format": f, "wav_depth": d}
        for f, d in itertools.product(("wav", "flac"), ("16", "24", "32f"))
        if (f, d) != ("flac", "32f")
    ]
    sets += [{"shifts": s, "overlap": o} for s, o in itertools.product((0, 1, 10), (0.0, 0.9))]
    sets += [{"segment": 1.0}, {"segment": 7.8}, {"overlap": 0.333}]
    sets += [{"stems": ("drums",)}, {"stems": ("vocals", "bass", "other")}]
    sets += [{"two_stems": "vocals", "format": "wav"}]
    sets += [{"model": "htdemucs_6s", "stems": ("guitar", "piano"), "format": "flac"}]
    sets += [{"model": "mine", "two_stems": "accompaniment", "bitrate": 64}]
    for options in sets:  # each is a valid job
        catalogue.validate(options, MODELS)
    return sets


def expected(options: catalogue.Options) -> dict[str, Any]:
    """What the separator must read: the job's options, defaults filled in; an option that
    does not apply keeps the separator's own default (which is the catalogue's)."""
    full = catalogue.effective(options, MODELS)
    defaults = {o.name: o.default for o in catalogue.CATALOGUE}
    return {name: full.get(name, defaults[name]) for name in catalogue.NAMES}


def read_back(argv: list[str]) -> dict[str, Any]:
    parsed = separator.parse(argv, {})
    return {name: getattr(parsed, name) for name in catalogue.NAMES}


@pytest.mark.parametrize("options", grid(), ids=repr)
def test_the_operators_command_line_means_the_job(options: catalogue.Options) -> None:
    cr = {
        "metadata": {"name": "j", "namespace": "music", "uid": "u"},
        "spec": {
            "input": {"bucket": "b", "key": "inputs/j/input.mp3"},
            "output": {"bucket": "b", "key": "results/j.zip"},
            **catalogue.to_spec(options),
        },
    }
    config = OperatorConfig(models=MODELS, model_repo="/models", precision="bf16")
    argv = separator_args(cr, config)
    assert read_back(argv) == expected(options)
    assert separator.parse(argv, {}).precision == "bf16"  # the deployment's, for every job
    mine = str(options.get("model")) == "mine"
    assert f"--model-repo={'/w/mine' if mine else '/models'}" in argv


@pytest.mark.parametrize("options", grid(), ids=repr)
def test_local_modes_command_line_means_the_job(options: catalogue.Options) -> None:
    job = NewJob("j", options, "inputs/j/input.mp3", "a.mp3")
    row = rules.new_row(job, MODELS, datetime.datetime.now(datetime.UTC))
    paths = (Path("/d/in.mp3"), Path("/d/out.zip"), Path("/w/p"), Path("/w/t"))
    command = rules.separator_command(row, ["sep"], *paths, Path("/models"), MODELS, "tf32")
    assert read_back(command[1:]) == expected(options)
    assert separator.parse(command[1:], {}).precision == "tf32"
