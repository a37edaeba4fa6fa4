"""Running the model over the song, a long song in chunks, and choosing which stems come out.

Each chunk goes through Demucs's own ``apply_model`` (segments of the model's length,
overlap-add, the shift trick), so a song up to ``CHUNK_SECONDS`` long gets exactly Demucs's
result. A longer song is cut into chunks that overlap by one model segment and are
cross-faded there, as Demucs cross-fades its own segments; this keeps memory bounded (Demucs
alone holds four stems of the whole song, twice, while it sums its shifts) and lets the stems
of one chunk be encoded while the next is separated.
"""

import contextlib
import logging
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from demucs.apply import BagOfModels, apply_model
from demucs.htdemucs import HTDemucs

from stemkube_separator import allocator
from stemkube_separator.errors import InvalidInputError

log = logging.getLogger(__name__)

CHUNK_SECONDS = 240.0  # most songs fit in one chunk
FALLBACK_OVERLAP_SECONDS = 10.0  # cross-fade for models without a fixed segment


def plan_stems(
    sources: Sequence[str], stems: Sequence[str] | None, two_stems: str | None
) -> list[str]:
    """The stem names the ZIP will hold, checked against what the model produces."""
    known = ", ".join(sources)
    if two_stems is not None:
        if two_stems not in sources:
            raise InvalidInputError(f"the model has no stem {two_stems!r} (it has: {known})")
        return [two_stems, f"no_{two_stems}"]
    if stems is None:
        return list(sources)
    for stem in stems:
        if stem not in sources:
            raise InvalidInputError(f"the model has no stem {stem!r} (it has: {known})")
    return list(stems)


@dataclass
class SegmentCounter:
    """Turns Demucs's per-segment callbacks into a fraction done.

    ``apply_model`` calls back at the start and end of each segment of each shift of each
    model in the bag; counting the ends against the expected total gives the fraction.
    With shifts, each pass covers the audio plus a random shift of up to half a second, so
    the total is estimated for the longest pass and the last pass may end a little short
    of 1.0 (the caller reports completion itself).
    """

    total: int
    done: int = 0

    @classmethod
    def for_run(
        cls,
        segments_per_model: Sequence[float],
        samplerate: int,
        length: int,
        shifts: int,
        overlap: float,
    ) -> "SegmentCounter":
        total = 0
        pass_length = length + (int(0.5 * samplerate) if shifts else 0)
        for segment in segments_per_model:
            segment_length = int(samplerate * segment)
            stride = max(1, int((1 - overlap) * segment_length))
            total += max(1, shifts) * math.ceil(pass_length / stride)
        return cls(total=max(1, total))

    def event(self, info: dict[str, Any]) -> float:
        if info.get("state") == "end":
            self.done += 1
        return min(1.0, self.done / self.total)


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int


def plan_chunks(length: int, chunk: int, overlap: int) -> list[Chunk]:
    """Chunks of ``chunk`` samples covering ``[0, length)``, each overlapping the next by
    ``overlap``; a song no longer than one chunk is one chunk."""
    if length <= chunk:
        return [Chunk(0, length)]
    assert chunk > 2 * overlap
    chunks, start = [], 0
    while True:
        end = min(start + chunk, length)
        chunks.append(Chunk(start, end))
        if end == length:
            return chunks
        start = end - overlap


def crossfade(tail: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Blend the previous chunk's ``tail`` into the next chunk's ``head`` (same shape, time
    last) with a linear ramp, which gives each chunk's edge, where it saw no context, the
    least weight."""
    n = tail.shape[-1]
    ramp = (torch.arange(n, dtype=tail.dtype) + 0.5) / n
    return tail * (1 - ramp) + head * ramp


def _segments(model: Any, segment: float | None) -> list[float]:
    models: list[Any] = list(model.models) if isinstance(model, BagOfModels) else [model]
    return [segment if segment is not None else float(m.segment) for m in models]


def overlap_samples(model: Any, segment: float | None) -> int:
    """One model segment: what Demucs itself cross-fades over, at most."""
    models: list[Any] = list(model.models) if isinstance(model, BagOfModels) else [model]
    if segment is None and not all(isinstance(m, HTDemucs) for m in models):
        segment = min(FALLBACK_OVERLAP_SECONDS, *_segments(model, None))
    seconds = segment if segment is not None else max(_segments(model, None))
    samplerate: int = model.samplerate
    return math.ceil(seconds * samplerate)


def separate(
    model: Any,
    audio: torch.Tensor,
    *,
    device: str,
    shifts: int,
    overlap: float,
    segment: float | None,
    on_fraction: Callable[[float], None],
    chunk_seconds: float = CHUNK_SECONDS,
    autocast: torch.dtype | None = None,
) -> Generator[torch.Tensor, None, None]:
    """Every source of ``model`` for ``audio`` (float32, shape (2, n)), as consecutive blocks
    of shape (sources, 2, block) in time order that together cover the song, float32.

    ``autocast``: run the model under ``torch.autocast`` in this dtype (bf16, fp16); Demucs
    sums the segments into float32 tensors, and the blocks are float32 whatever it is.

    The song stays in host memory and only each segment moves to the device, so GPU memory
    does not grow with the song. ``audio`` is normalised in place, as Demucs's command line
    does (the models were trained on normalised mixes), and each block is scaled back.
    """
    reference = audio.mean(0)
    mean, std = reference.mean(), reference.std()
    std = std if std > 1e-8 else torch.ones_like(std)  # silence: nothing to normalise
    audio -= mean
    audio /= std
    length = audio.shape[-1]
    fade = overlap_samples(model, segment)
    chunks = plan_chunks(length, max(int(chunk_seconds * model.samplerate), 3 * fade), fade)
    total = sum(c.end - c.start for c in chunks)
    done = 0
    tail: torch.Tensor | None = None
    for chunk in chunks:
        size = chunk.end - chunk.start
        counter = SegmentCounter.for_run(
            _segments(model, segment), model.samplerate, size, shifts, overlap
        )
        before = done

        def report(
            info: dict[str, Any],
            counter: SegmentCounter = counter,
            before: int = before,
            size: int = size,
        ) -> None:
            on_fraction((before + counter.event(info) * size) / total)

        with _autocast(device, autocast):
            estimates = apply_model(
                model,
                audio[None, :, chunk.start : chunk.end],
                shifts=shifts,
                split=True,
                overlap=overlap,
                progress=False,
                device=device,
                segment=segment,
                callback=report,
            )[0]
        estimates = estimates.float()  # a no-op when it already is
        done += size
        if tail is not None:
            estimates[..., : tail.shape[-1]] = crossfade(tail, estimates[..., : tail.shape[-1]])
        last = chunk.end == length
        keep = size if last else size - fade
        tail = None if last else estimates[..., keep:].clone()
        block = estimates[..., :keep]
        block *= std
        block += mean
        yield block
        # The consumer has this chunk's stems (or its encoders do): drop this frame's hold on
        # them before the next chunk is separated, and return the freed memory to the kernel
        # (the allocator keeps it otherwise), so one chunk's stems at most are resident.
        del estimates, block
        allocator.release_free_memory()


def _autocast(device: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def pick(
    sources: Sequence[str], block: torch.Tensor, stems: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The requested stems of one block (sources, 2, n); ``no_X`` is the sum of every source
    but X, as in Demucs's ``--two-stems``."""
    index = {name: i for i, name in enumerate(sources)}
    chosen: dict[str, torch.Tensor] = {}
    for stem in stems:
        if stem.startswith("no_") and stem not in index:
            rest = [i for name, i in index.items() if name != stem[3:]]
            chosen[stem] = block[rest].sum(0)
        else:
            chosen[stem] = block[index[stem]]
    return chosen
