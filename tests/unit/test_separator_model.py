"""Loading models through Demucs's local-repo path, with the tiny model the tests build."""

from pathlib import Path

import pytest
import torch
from demucs.apply import apply_model

from stemkube_separator import model, separate
from stemkube_separator.errors import InvalidInputError, ModelNotFoundError, UsageError


def test_loads_the_tiny_model_from_a_local_repo(tiny_model_repo: Path) -> None:
    four = model.load("htdemucs", str(tiny_model_repo))
    six = model.load("htdemucs_6s", str(tiny_model_repo))
    assert list(four.sources) == ["drums", "bass", "other", "vocals"]
    assert list(six.sources)[-2:] == ["guitar", "piano"]
    assert four.samplerate == 44100
    assert model.max_segment(four) == pytest.approx(3.9)
    model.check_segment(four, 3.0)
    with pytest.raises(InvalidInputError, match="longer than model allows"):
        model.check_segment(four, 8.0)


def test_unknown_model_is_model_not_found(tiny_model_repo: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="model 'mdx_nope' is not in the model folder"):
        model.load("mdx_nope", str(tiny_model_repo))


def test_missing_repo_folder_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a folder"):
        model.load("htdemucs", str(tmp_path / "absent"))


def test_one_chunk_is_exactly_demucs_apply_model(tiny_model_repo: Path) -> None:
    net = model.load("htdemucs", str(tiny_model_repo))
    torch.manual_seed(3)
    song = torch.randn(2, 2 * 44100) * 0.2
    mix = song.clone()
    ref = mix.mean(0)
    mix = (mix - ref.mean()) / ref.std()
    expected = apply_model(net, mix[None], shifts=0, split=True, overlap=0.25)[0]
    expected = expected * ref.std() + ref.mean()

    blocks = list(
        separate.separate(
            net, song.clone(), device="cpu", shifts=0, overlap=0.25, segment=None,
            on_fraction=lambda f: None,
        )
    )  # fmt: skip

    assert len(blocks) == 1
    assert torch.allclose(blocks[0], expected, atol=1e-5)


def test_long_songs_come_in_ordered_chunks_with_progress(tiny_model_repo: Path) -> None:
    net = model.load("htdemucs", str(tiny_model_repo))
    song = torch.randn(2, 30 * 44100) * 0.2
    fractions: list[float] = []

    blocks = list(
        separate.separate(
            net, song, device="cpu", shifts=1, overlap=0.25, segment=None,
            on_fraction=fractions.append, chunk_seconds=12,
        )
    )  # fmt: skip

    assert len(blocks) == 4  # 12 s chunks, each overlapping the next by a 3.9 s segment
    assert sum(b.shape[-1] for b in blocks) == song.shape[-1]
    assert all(b.shape[:2] == (4, 2) for b in blocks)
    assert all(torch.isfinite(b).all() for b in blocks)
    assert fractions == sorted(fractions)
    assert 0.9 < fractions[-1] <= 1.0
