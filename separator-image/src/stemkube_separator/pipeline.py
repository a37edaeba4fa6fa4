"""One separation from INPUT to OUTPUT: fetch, decode, separate, encode, zip, store; every
second of it given to a named stage (``stages``).

``run`` is the single run. Its steps are separate functions so that a batch (``batch``) can
load the model once (``load``), fetch and decode the next song in another thread
(``fetch_input``, ``decode_input``), and on a GPU finish a song's encoding and storing
(``StemEncoders.complete``, ``store``) while the next one is separated (``separate_chunks``).
"""

import contextlib
import logging
import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, cast

import torch

from stemkube_separator import (
    allocator,
    archive,
    encode,
    linkstorage,
    logs,
    model,
    progress,
    separate,
    storage,
)
from stemkube_separator.errors import UsageError
from stemkube_separator.inputs import Early, start_early
from stemkube_separator.linkstorage import Store
from stemkube_separator.locations import Location, parse_location
from stemkube_separator.options import Format, Options
from stemkube_separator.stages import (
    DECODE,
    ENCODE,
    ENCODE_TAIL,
    FETCH,
    LOAD_MODEL,
    SEPARATE,
    STORE,
    Laps,
    Stages,
)

log = logging.getLogger(__name__)

CHUNK_ENV = "STEMKUBE_CHUNK_SECONDS"
MP3_PIECES_ENV = "STEMKUBE_MP3_PIECES"

# Where each stage lands on the 0-100 progress scale.
DECODED, SEPARATED, ENCODED = 5, 90, 97


def chunk_seconds(env: Mapping[str, str]) -> float:
    """``STEMKUBE_CHUNK_SECONDS``: shorter chunks need less memory and cost more compute."""
    text = env.get(CHUNK_ENV)
    if not text:
        return separate.CHUNK_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:  # also NaN; separate() keeps a chunk at least three overlaps long
        raise UsageError(f"{CHUNK_ENV}={text!r}: expected a positive number of seconds")
    return value


def mp3_pieces(env: Mapping[str, str], cpus: int, stems: int) -> int:
    """``STEMKUBE_MP3_PIECES``: how many pieces of one MP3 stem may encode at once. Unset: the
    usable CPUs shared by the stems (16 CPUs, four stems: 4), so that the last chunk's stems
    use every CPU; 1: one LAME stream per stem, as before (byte-identical output)."""
    text = env.get(MP3_PIECES_ENV)
    if not text:
        return max(1, cpus // max(1, stems))
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{MP3_PIECES_ENV}={text!r}: expected a whole number of pieces, 1 or more")
    return value


def _wait(futures: "list[Future[None]]") -> None:
    for future in futures:
        future.result()


@dataclass(frozen=True)
class Ready:
    """What every song of a run shares: the model on its device and how it runs there."""

    separator: model.AnyModel
    device: str
    precision: str
    autocast: torch.dtype | None
    threads: int
    stems: list[str]


def load(opts: Options, env: Mapping[str, str], loaded: model.Loaded | None = None) -> Ready:
    """Threads, allocator, device, precision and the model (``loaded``'s if it has it): the
    ``load_model`` stage. Its failures concern every song of the run."""
    threads = model.configure_threads()
    kept = allocator.keep_freed_memory(env)  # before the model's first allocations
    device = model.resolve_device(opts.device)
    precision = model.resolve_precision(opts.precision, device)
    autocast = model.apply_precision(precision, device)
    separator = (loaded or model.Loaded()).get(opts.model, opts.model_repo)
    model.check_segment(separator, opts.segment)
    stems = separate.plan_stems(separator.sources, opts.stems, opts.two_stems)
    log.info(
        "model %s ready on %s (%s)",
        opts.model,
        device,
        precision,
        extra={
            "device": device,
            "precision": precision,
            "threads": threads,
            "stems": stems,
            "keep_freed_memory": kept,
        },
    )
    return Ready(separator, device, precision, autocast, threads, stems)


def stem_files(stems: list[str], fmt: Format, workdir: Path) -> dict[str, Path]:
    """Where each stem's file is encoded, in ``workdir``, named as its ZIP member."""
    ext = encode.extension(fmt)
    return {stem: workdir / archive.member_name(stem, ext) for stem in stems}


class StemEncoders:
    """The stems' files of one song and the pool of threads that encodes them (one thread per
    usable CPU: PyAV releases the GIL while LAME or FLAC encodes), fed block by block.

    Closing it without ``complete`` (an error, an abort) stops the running encodes, drops the
    queued ones and removes what the writers wrote."""

    def __init__(
        self,
        separator: model.AnyModel,
        files: Mapping[str, Path],
        opts: Options,
        threads: int,
        env: Mapping[str, str],
    ) -> None:
        self.stack = contextlib.ExitStack()
        self.writers: dict[str, encode.StemWriter] = {}
        self.pending: list[Future[None]] = []
        pieces = mp3_pieces(env, threads, len(files))
        with self.stack:  # unwound here only if opening one of them fails
            for stem, path in files.items():
                writer = encode.open_stem(
                    path,
                    separator.samplerate,
                    opts.format,
                    opts.wav_depth,
                    opts.bitrate,
                    opts.mp3_quality,
                    pieces,
                )
                self.stack.enter_context(writer)
                self.writers[stem] = writer
            self.pool = ThreadPoolExecutor(
                max_workers=max(1, threads),
                thread_name_prefix="encode",
                initializer=logs.inheriting_job(),  # lines name the caller's job
            )
            # Unwound first: running encodes end (queued ones are dropped) before a file is
            # closed.
            self.stack.callback(self.pool.shutdown, wait=True, cancel_futures=True)
            self.stack = self.stack.pop_all()

    def submit(self, chosen: Mapping[str, torch.Tensor], last: bool) -> None:
        """Hand one block's stems to the encoders, once the previous block's are encoded (a
        stem's blocks reach its writer in order)."""
        self.wait()
        self.pending = [
            future
            for stem, tensor in chosen.items()
            for future in self.writers[stem].submit(self.pool, tensor.numpy(), last)
        ]

    def wait(self) -> None:
        _wait(self.pending)

    def complete(self) -> None:
        """The last block's encoding finished and every file completed."""
        self.wait()
        _wait([self.pool.submit(writer.complete) for writer in self.writers.values()])

    def close(self, error: BaseException | None = None) -> None:
        if error is None:
            self.stack.close()
        else:
            self.stack.__exit__(type(error), error, error.__traceback__)

    def __enter__(self) -> "StemEncoders":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(exc)


def separate_chunks(
    separator: model.AnyModel,
    audio: torch.Tensor,
    encoders: StemEncoders,
    opts: Options,
    device: str,
    env: Mapping[str, str],
    reporter: progress.Reporter,
    stages: Laps,
    autocast: torch.dtype | None = None,
) -> None:
    """The model over ``audio``, chunk by chunk, each chunk's stems handed to ``encoders``,
    the time given to ``separate`` and ``encode`` (between chunks); the last chunk's stems
    are left encoding (``StemEncoders.complete``). On a GPU the stems of one chunk are
    encoded while the next chunk is separated; on a CPU between chunks (``separate_to_files``).
    """
    overlap_encoding = device != "cpu"
    length = audio.shape[-1]
    blocks = separate.separate(
        separator,
        audio,
        device=device,
        shifts=opts.shifts,
        overlap=opts.overlap,
        segment=opts.segment,
        on_fraction=lambda f: reporter.update(progress.stage_percent(DECODED, SEPARATED, f)),
        chunk_seconds=chunk_seconds(env),
        autocast=autocast,
    )
    done = 0
    while done < length:
        block = next(blocks)
        stages.lap(SEPARATE)
        done += block.shape[-1]
        last = done >= length
        encoders.submit(separate.pick(separator.sources, block, list(encoders.writers)), last)
        del block
        if not overlap_encoding and not last:
            encoders.wait()
        stages.lap(ENCODE)
    blocks.close()
    stages.lap(SEPARATE)
    reporter.update(SEPARATED)


def separate_to_files(
    separator: model.AnyModel,
    audio: torch.Tensor,
    files: Mapping[str, Path],
    opts: Options,
    device: str,
    threads: int,
    env: Mapping[str, str],
    reporter: progress.Reporter,
    stages: Laps | None = None,
    autocast: torch.dtype | None = None,
) -> None:
    """Separate ``audio`` and encode each stem of ``files`` into its file, chunk by chunk,
    giving the time to ``stages``: ``separate`` (the model), ``encode`` (between chunks) and
    ``encode_tail`` (after the last chunk: its stems' encoding, the files completed).

    Encoding runs in a pool of one thread per usable CPU (PyAV releases the GIL while LAME or
    FLAC encodes): every stem at once, and an MP3 stem in several pieces at once where there
    are CPUs to spare (``encode.PiecewiseMp3``, ``mp3_pieces``). On a GPU the stems of one
    chunk are encoded while the next chunk is separated; on a CPU torch's threads already keep
    every core busy (its OpenMP workers spin while they wait, so even encoder threads at the
    lowest priority find no idle core) and encoders competing with them were measured slower
    than taking turns, so there each chunk's stems are encoded between chunks.
    """
    stages = stages or Stages()
    with StemEncoders(separator, files, opts, threads, env) as encoders:
        separate_chunks(separator, audio, encoders, opts, device, env, reporter, stages, autocast)
        encoders.complete()
        stages.lap(ENCODE_TAIL)


def store(
    files: Mapping[str, Path],
    target: Location,
    s3_client: Store,
    check: Callable[[], None] | None = None,
) -> None:
    """The ZIP of ``files`` streamed to OUTPUT (the ``store`` stage), directly or through the
    job link (``s3_client``). ``check``: called before each write; what it raises aborts the
    upload (a batch member deleted meanwhile)."""
    with linkstorage.open_output(target, s3_client) as out:
        sink = out if check is None else cast(BinaryIO, storage.Checked(out, check))
        archive.write_zip([(path.name, path) for path in files.values()], sink)


def run(
    opts: Options,
    env: Mapping[str, str],
    reporter: progress.Reporter,
    stages: Stages | None = None,
    loaded: model.Loaded | None = None,
    early: Early | None = None,
) -> None:
    """The separation, its time given to ``stages`` from ``load_model`` to ``store`` (the
    caller laps ``finish`` once the reporter is closed). ``loaded``: the models a long-lived
    process keeps between songs (none: this run loads its own). ``early``: the song already
    being fetched and decoded (``cli`` starts that before importing torch); without it, this
    run starts it now, still while the model loads. ``fetch`` and ``decode`` are then what
    the run waited for once the model was ready."""
    stages = stages or Stages()
    with contextlib.ExitStack() as stack:
        if early is None:
            early = stack.enter_context(start_early(opts, env))
        _run(opts, env, reporter, stages, loaded, early)


def _run(
    opts: Options,
    env: Mapping[str, str],
    reporter: progress.Reporter,
    stages: Stages,
    loaded: model.Loaded | None,
    early: Early,
) -> None:
    target = parse_location(opts.output)
    ready = load(opts, env, loaded)
    stages.lap(LOAD_MODEL)
    reporter.update(0)
    early.wait_fetched()
    stages.lap(FETCH)
    audio, seconds = early.take_audio(ready.separator.samplerate)
    stages.lap(DECODE)
    reporter.audio(seconds)
    reporter.update(DECODED)

    files = stem_files(ready.stems, opts.format, early.workdir)
    separate_to_files(
        ready.separator,
        torch.from_numpy(audio),
        files,
        opts,
        ready.device,
        ready.threads,
        env,
        reporter,
        stages,
        ready.autocast,
    )
    del audio
    reporter.update(ENCODED)

    store(files, target, early.s3_client)
    stages.lap(STORE)
    log.info(
        "wrote %s (%d stems)",
        target,
        len(files),
        extra={"duration": round(seconds, 3), "pid": os.getpid()},
    )
    reporter.update(100)
