"""One separation from INPUT to OUTPUT: fetch, decode, separate, encode, zip, store; every
second of it given to a named stage (``stages``)."""

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from minio import Minio

from stemkube_separator import (
    allocator,
    archive,
    decode,
    encode,
    model,
    progress,
    s3,
    separate,
    storage,
)
from stemkube_separator.errors import UsageError
from stemkube_separator.locations import parse_location
from stemkube_separator.options import Options
from stemkube_separator.stages import (
    DECODE,
    ENCODE,
    ENCODE_TAIL,
    FETCH,
    LOAD_MODEL,
    SEPARATE,
    STORE,
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


def separate_to_files(
    separator: model.AnyModel,
    audio: torch.Tensor,
    files: Mapping[str, Path],
    opts: Options,
    device: str,
    threads: int,
    env: Mapping[str, str],
    reporter: progress.Reporter,
    stages: Stages | None = None,
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
    overlap_encoding = device != "cpu"
    length = audio.shape[-1]
    pieces = mp3_pieces(env, threads, len(files))
    with contextlib.ExitStack() as stack:
        writers: dict[str, encode.StemWriter] = {}
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
            stack.enter_context(writer)
            writers[stem] = writer
        pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="encode")
        # Unwound first: running encodes end (queued ones are dropped) before a file is closed.
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)
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
        pending: list[Future[None]] = []
        done = 0
        while done < length:
            block = next(blocks)
            stages.lap(SEPARATE)
            _wait(pending)  # the previous chunk's: a stem's blocks reach its writer in order
            done += block.shape[-1]
            last = done >= length
            chosen = separate.pick(separator.sources, block, list(files))
            pending = [
                future
                for stem, tensor in chosen.items()
                for future in writers[stem].submit(pool, tensor.numpy(), last)
            ]
            del block, chosen
            if not overlap_encoding and not last:
                _wait(pending)
            stages.lap(ENCODE)
        blocks.close()
        stages.lap(SEPARATE)
        reporter.update(SEPARATED)
        _wait(pending)
        _wait([pool.submit(writer.complete) for writer in writers.values()])
        stages.lap(ENCODE_TAIL)


def run(
    opts: Options,
    env: Mapping[str, str],
    reporter: progress.Reporter,
    stages: Stages | None = None,
    loaded: model.Loaded | None = None,
) -> None:
    """The separation, its time given to ``stages`` from ``load_model`` to ``store`` (the
    caller laps ``finish`` once the reporter is closed). ``loaded``: the models a long-lived
    process keeps between songs (none: this run loads its own)."""
    stages = stages or Stages()
    source, target = parse_location(opts.input), parse_location(opts.output)
    s3_settings = s3.S3Settings.from_env(env) if "s3://" in (opts.input + opts.output) else None

    def s3_client() -> Minio:
        assert s3_settings is not None
        return s3.client(s3_settings)

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
    stages.lap(LOAD_MODEL)
    reporter.update(0)

    with tempfile.TemporaryDirectory(prefix="stemkube-") as tmp:
        workdir = Path(tmp)
        local_input = storage.fetch_input(source, workdir, s3_client)
        stages.lap(FETCH)
        audio, info = decode.decode(local_input, separator.samplerate, opts.max_duration)
        if local_input.parent == workdir:
            local_input.unlink()  # the download is no longer needed; free the disk
        seconds = audio.shape[1] / separator.samplerate
        log.info(
            "decoded %.2f s of %s/%s, %d Hz, %d channels (%s)",
            seconds,
            info.container,
            info.codec,
            info.sample_rate,
            info.channels,
            info.layout,
            extra={"duration": round(seconds, 3)},
        )
        stages.lap(DECODE)
        reporter.update(DECODED)

        ext = encode.extension(opts.format)
        files = {stem: workdir / archive.member_name(stem, ext) for stem in stems}
        separate_to_files(
            separator,
            torch.from_numpy(audio),
            files,
            opts,
            device,
            threads,
            env,
            reporter,
            stages,
            autocast,
        )
        del audio
        reporter.update(ENCODED)

        with storage.open_output(target, s3_client) as out:
            archive.write_zip([(path.name, path) for path in files.values()], out)
        stages.lap(STORE)
        log.info(
            "wrote %s (%d stems)",
            target,
            len(files),
            extra={"duration": round(seconds, 3), "pid": os.getpid()},
        )
    reporter.update(100)
