"""Loading a Demucs model (local repo folder or the hub/cache) and choosing where it runs."""

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from demucs.apply import BagOfModels
from demucs.htdemucs import HTDemucs
from demucs.pretrained import get_model
from demucs.repo import ModelLoadingError

from stemkube_separator.errors import (
    InvalidInputError,
    ModelNotFoundError,
    TransientError,
    UsageError,
)
from stemkube_separator.options import Device, Precision

log = logging.getLogger(__name__)

AnyModel = Any  # demucs ships no type information: a BagOfModels or a single model


def load(name: str, repo: str | None) -> AnyModel:
    """The model ``name`` from ``repo`` (Demucs's local-repo format: ``<sig>.th`` files and
    ``<name>.yaml`` bags), or from the Demucs hub and its cache when ``repo`` is None."""
    repo_path = None
    if repo is not None:
        repo_path = Path(repo)
        if not repo_path.is_dir():
            raise UsageError(f"--model-repo {repo} is not a folder")
    try:
        model = get_model(name, repo=repo_path)
    except ModelLoadingError as exc:
        where = f"the model folder {repo}" if repo is not None else "the Demucs hub"
        raise ModelNotFoundError(f"model {name!r} is not in {where}: {exc}") from None
    except OSError as exc:  # the hub or the download site unreachable, a full cache disk
        raise TransientError(f"could not fetch model {name!r}: {exc}") from exc
    model.eval()
    return model


class Loaded:
    """The models a long-lived process (a batch, local mode's worker) has loaded, by name and
    folder: the second song of a model pays nothing for its weights. A single run uses one."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, str | None], AnyModel] = {}

    def get(self, name: str, repo: str | None) -> AnyModel:
        key = (name, repo)
        if key not in self.models:
            self.models[key] = load(name, repo)
        return self.models[key]


def max_segment(model: AnyModel) -> float:
    """The longest segment (seconds) the model accepts: a transformer model cannot look
    further than it was trained on."""
    if isinstance(model, BagOfModels):
        return float(model.max_allowed_segment)
    if isinstance(model, HTDemucs):
        return float(model.segment)
    return math.inf


def check_segment(model: AnyModel, segment: float | None) -> None:
    if segment is not None and segment > max_segment(model):
        raise InvalidInputError(
            f"--segment {segment:g} is longer than model allows ({max_segment(model):g} s)"
        )


def resolve_device(choice: Device) -> str:
    if choice == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if choice == "cuda" and not available:
        # A GPU node whose driver is not ready yet; another try (or node) may have one.
        raise TransientError("--device cuda was asked for but no CUDA device is available")
    return "cuda" if available else "cpu"


def tf32_supported() -> bool:
    """TF32 tensor cores: NVIDIA Ampere (compute capability 8.0) and later."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def resolve_precision(choice: Precision, device: str) -> str:
    """What ``--precision`` means on ``device``: ``auto`` is TF32 on a GPU that has it (10^-4
    from fp32 in the stems, a third faster on an H200) and fp32 elsewhere; ``tf32`` is fp32 on
    a CPU or an older GPU (nothing to switch on); ``fp16`` needs a GPU."""
    if device == "cpu":
        if choice == "fp16":
            raise UsageError("--precision fp16 needs a CUDA device (on a CPU: fp32 or bf16)")
        return "fp32" if choice in ("auto", "tf32") else choice
    if choice == "auto":
        return "tf32" if tf32_supported() else "fp32"
    if choice == "tf32" and not tf32_supported():
        log.warning("--precision tf32: this GPU has no TF32; running in fp32")
        return "fp32"
    if choice == "bf16" and not torch.cuda.is_bf16_supported():
        raise UsageError("--precision bf16: this GPU has no bfloat16 (fp32, tf32 or fp16)")
    return choice


def _set_tf32(enabled: bool) -> None:
    # The long-standing switches: torch maps them onto its newer per-backend fp32_precision
    # settings consistently, whereas setting those for some backends only makes torch refuse
    # to answer (a RuntimeError, "a mix of the legacy and new APIs") when asked the old way.
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def apply_precision(precision: str, device: str) -> torch.dtype | None:
    """Set the process's TF32 switches for ``precision`` (a resolved one) on a GPU: on for
    ``tf32`` and off otherwise, convolutions included (torch's own default lets cuDNN use
    TF32 even for fp32); return the dtype ``separate`` runs the model under autocast in
    (bf16, fp16), or None. Whatever the precision, the stems come out as float32."""
    if device != "cpu":
        _set_tf32(precision == "tf32")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def cgroup_cpu_limit(cpu_max: str) -> int | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line ("max 100000" or "150000 100000")."""
    quota, _, period = cpu_max.strip().partition(" ")
    if quota == "max" or not period:
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def usable_cpus() -> int:
    """CPUs this process may really use: its affinity, capped by a container's CPU limit
    (torch's default counts the host's cores, which oversubscribes a limited pod)."""
    count = len(os.sched_getaffinity(0))
    try:
        limit = cgroup_cpu_limit(Path("/sys/fs/cgroup/cpu.max").read_text())
    except (OSError, ValueError):
        limit = None
    return min(count, limit) if limit else count


def configure_threads() -> int:
    threads = usable_cpus()
    torch.set_num_threads(threads)
    return threads
