"""Where a model's weights come from, answered without torch (local mode asks at start, in
/readyz and before storing an upload); and the models a weights folder holds."""

import socket
from pathlib import Path

import pytest

from stemkube_separator import weights
from stemkube_separator.describe import names_in


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> socket.socket:
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)


def test_a_folder_has_the_model_or_says_it_has_not(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("models: [abc]\n")
    assert weights.locate("mine", str(tmp_path), {}) == f"model folder {tmp_path}"
    with pytest.raises(LookupError, match=f"'other' is not in the model folder {tmp_path}"):
        weights.locate("other", str(tmp_path), {})


@pytest.mark.usefixtures("no_network")
def test_the_hub_out_of_reach_names_the_cache_and_model_repo(tmp_path: Path) -> None:
    env = {"TORCH_HOME": str(tmp_path / "torch")}
    with pytest.raises(LookupError, match=r"out of reach.*--model-repo") as caught:
        weights.locate("htdemucs", None, env)
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in str(caught.value)
    with pytest.raises(LookupError, match="not a pretrained Demucs model; give its folder"):
        weights.locate("mine", None, env)


@pytest.mark.usefixtures("no_network")
def test_weights_in_the_demucs_cache_need_no_network(tmp_path: Path) -> None:
    checkpoints = weights.torch_hub_checkpoints({"TORCH_HOME": str(tmp_path)})
    checkpoints.mkdir(parents=True)
    (checkpoints / "955717e8-8726e21a.th").write_bytes(b"weights")  # htdemucs's file
    assert weights.locate("htdemucs", None, {"TORCH_HOME": str(tmp_path)}).startswith(
        "Demucs cache"
    )


def test_the_program_exits_with_model_not_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert weights.main(["--model", "x", "--model-repo", str(tmp_path)]) == 4
    assert "'x' is not in the model folder" in capsys.readouterr().err


def test_names_in_a_folder_are_its_bags_then_loose_models(tmp_path: Path) -> None:
    (tmp_path / "bag.yaml").write_text("models:\n- aaaa1111\n- bbbb2222\n")
    for sig in ("aaaa1111", "bbbb2222", "cccc3333"):
        (tmp_path / f"{sig}-0123abcd.th").write_bytes(b"")
    assert names_in(tmp_path) == ["bag", "cccc3333"]
