"""``stemkube-api``'s own logic: argument handling, local-mode settings, exit codes."""

import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from stemkube_api import cli
from stemkube_contract.models import Catalog, Model

if TYPE_CHECKING:
    from stemkube_api.local.settings import LocalSettings


def _folder_models(folder: Path) -> list[Model]:
    """What the separator would find in a folder: here, one model per ``<name>.yaml``."""
    return [
        Model(p.stem, ("vocals", "drums", "bass", "other"), str(folder))
        for p in sorted(folder.glob("*.yaml"))
    ]


def _local(argv: list[str], env: dict[str, str]) -> "LocalSettings":
    return cli.local_settings(cli._parser().parse_args(["--local", *argv]), env, _folder_models)


def test_local_settings_flags_over_environment_over_defaults(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    repo.mkdir()
    for name in ("htdemucs", "htdemucs_6s", "mine"):
        (repo / f"{name}.yaml").write_text("models: ['x']")
    env = {"HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    settings = _local([], {**env, "XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert settings.data_dir == tmp_path / "xdg" / "stemkube"
    assert (settings.workers, settings.models.default, settings.model_repo) == (1, "htdemucs", None)
    assert settings.models == Catalog()  # the pretrained models, from the hub
    assert settings.ttl == datetime.timedelta(hours=24)
    assert settings.gpus == ()
    from_env = _local(
        [],
        {
            **env,
            "STEMKUBE_DATA_DIR": str(tmp_path / "d"),
            "STEMKUBE_WORKERS": "3",
            "STEMKUBE_MODEL": "htdemucs_6s",
            "STEMKUBE_MODEL_REPO": str(repo),
            "STEMKUBE_TTL_SECONDS_AFTER_FINISHED": "60",
        },
    )
    assert from_env.data_dir == tmp_path / "d"
    assert (from_env.workers, from_env.models.default, from_env.model_repo) == (
        3,
        "htdemucs_6s",
        repo,
    )
    # the models of the folder, as the separator finds them
    assert from_env.models.names == ("htdemucs", "htdemucs_6s", "mine")
    assert from_env.ttl == datetime.timedelta(minutes=1)
    assert from_env.expiry_interval == 6.0  # a tenth of a short TTL
    flags = _local(
        ["--data-dir", str(tmp_path / "f"), "--workers", "2", "--model", "htdemucs_ft"],
        {**env, "STEMKUBE_WORKERS": "3", "STEMKUBE_MODEL": "htdemucs_6s"},
    )
    assert (flags.data_dir, flags.workers, flags.models.default) == (
        tmp_path / "f",
        2,
        "htdemucs_ft",
    )
    custom = _local(["--model-repo", str(repo), "--model", "mine"], env)
    assert custom.models.default == "mine"
    declared = tmp_path / "models.json"
    declared.write_text('{"default": "k", "models": [{"name": "k", "sources": ["a", "b"]}]}')
    assert _local(["--models", str(declared)], env).models.names == ("k",)
    assert _local([], {**env, "STEMKUBE_MODELS": declared.read_text()}).models.default == "k"


def test_one_worker_per_gpu_by_default(tmp_path: Path) -> None:
    settings = _local(["--data-dir", str(tmp_path)], {"CUDA_VISIBLE_DEVICES": "0,2"})
    assert (settings.workers, settings.gpus) == (2, ("0", "2"))


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["--workers", "0"], {}, "--workers must be at least 1"),
        (["--model-repo", "/no/such/models"], {}, "no such folder"),
        ([], {"STEMKUBE_WORKERS": "many"}, "STEMKUBE_WORKERS must be a whole number"),
        ([], {"STEMKUBE_MODEL": "spleeter"}, "STEMKUBE_MODEL: 'spleeter' is not one of"),
        (["--model", "tiny"], {}, "--model: 'tiny' is not one of the models served"),
        ([], {"STEMKUBE_MODELS": "[{}]"}, "STEMKUBE_MODELS: models"),
        (["--ttl", "0"], {}, "--ttl must be positive"),
    ],
)
def test_bad_local_settings_say_what_is_wrong(
    argv: list[str], env: dict[str, str], words: str, tmp_path: Path
) -> None:
    with pytest.raises(cli.CliError, match=words):
        _local(["--data-dir", str(tmp_path), *argv], env)


def test_local_flags_need_local_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["--workers", "2", "--data-dir", "/tmp"])
    assert caught.value.code == 2
    assert "--data-dir, --workers: only with --local" in capsys.readouterr().err


def test_an_unusable_data_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.main(["--local", "--data-dir", str(blocker / "data")]) == 2
    assert f"--data-dir {blocker / 'data'}" in capsys.readouterr().err


def test_server_options() -> None:
    args = cli._parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    args = cli._parser().parse_args(["--host", "0.0.0.0", "--port", "9000"])
    assert (args.host, args.port) == ("0.0.0.0", 9000)


def test_bad_server_settings_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAX_FILE_SIZE", "huge")
    assert cli.main([]) == 2
    assert "MAX_FILE_SIZE" in capsys.readouterr().err
