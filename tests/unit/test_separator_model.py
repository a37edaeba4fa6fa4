"""Loading models through Demucs's local-repo path, with the tiny model the tests build; the
precision the model runs in; the benchmark model's shape."""

from pathlib import Path

import pytest
import torch
from demucs.apply import apply_model

from stemkube_separator import model, options, separate
from stemkube_separator.errors import InvalidInputError, ModelNotFoundError, UsageError
from tests.harness.tiny_model import FULL, FULL_PARAMETERS, build_model


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


def test_precision_on_a_cpu() -> None:
    assert model.resolve_precision("auto", "cpu") == "fp32"
    assert model.resolve_precision("tf32", "cpu") == "fp32"  # nothing to switch on
    assert model.resolve_precision("fp32", "cpu") == "fp32"
    assert model.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        model.resolve_precision("fp16", "cpu")
    assert model.apply_precision("fp32", "cpu") is None
    assert model.apply_precision("bf16", "cpu") is torch.bfloat16


@pytest.mark.parametrize(
    ("capability", "bf16", "choice", "expected"),
    [
        ((9, 0), True, "auto", "tf32"),  # Hopper
        ((8, 0), True, "auto", "tf32"),  # Ampere
        ((7, 5), False, "auto", "fp32"),  # Turing: no TF32
        ((7, 5), False, "tf32", "fp32"),
        ((9, 0), True, "fp32", "fp32"),
        ((9, 0), True, "bf16", "bf16"),
        ((7, 5), False, "fp16", "fp16"),
    ],
)
def test_precision_on_a_gpu(
    capability: tuple[int, int],
    bf16: bool,
    choice: options.Precision,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert model.resolve_precision(choice, "cuda") == expected


def test_bf16_on_a_gpu_without_it_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(UsageError, match="no bfloat16"):
        model.resolve_precision("bf16", "cuda")


def test_tf32_switches_follow_the_precision_on_a_gpu() -> None:
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        assert model.apply_precision("tf32", "cuda") is None
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)
        assert torch.get_float32_matmul_precision() == "high"
        assert model.apply_precision("fp32", "cuda") is None
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)  # convolutions too
        assert torch.get_float32_matmul_precision() == "highest"
        assert model.apply_precision("fp16", "cuda") is torch.float16
        assert model.apply_precision("bf16", "cuda") is torch.bfloat16
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def test_each_precision_stays_close_to_fp32(tiny_model_repo: Path) -> None:
    """The stems of every precision a CPU runs, against fp32: float32 out, and bf16 (8-bit
    mantissa inside the model) within a fraction of a percent (GPU figures: bench_gpu.py)."""
    net = model.load("htdemucs", str(tiny_model_repo))
    torch.manual_seed(5)
    song = torch.randn(2, 6 * 44100) * 0.2

    def stems(precision: options.Precision) -> torch.Tensor:
        resolved = model.resolve_precision(precision, "cpu")
        blocks = separate.separate(
            net, song.clone(), device="cpu", shifts=0, overlap=0.25, segment=None,
            on_fraction=lambda f: None, autocast=model.apply_precision(resolved, "cpu"),
        )  # fmt: skip
        return torch.cat(list(blocks), dim=-1)

    reference = stems("fp32")
    bounds: dict[options.Precision, float] = {"auto": 0.0, "tf32": 0.0, "bf16": 2e-2}
    for precision, bound in bounds.items():  # measured: bf16 2.3e-3
        got = stems(precision)
        assert got.dtype == torch.float32, precision
        assert got.shape == reference.shape
        relative = float((got - reference).norm() / reference.norm())
        assert relative <= bound, (precision, relative)
    assert float((stems("bf16") - reference).norm()) > 0  # bf16 did run in bf16


def test_the_benchmark_model_is_the_published_htdemucs_shape() -> None:
    full = build_model(FULL)
    assert sum(p.numel() for p in full.parameters()) == FULL_PARAMETERS == 41_984_456
