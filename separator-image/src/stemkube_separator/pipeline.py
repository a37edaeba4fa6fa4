"""One separation from INPUT to OUTPUT: fetch, decode, separate, encode, zip, store."""

import contextlib
import logging
import math
import os
import tempfile
import time
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

log = logging.getLogger(__name__)

CHUNK_ENV = "STEMKUBE_CHUNK_SECONDS"

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


def _wait(futures: list["Future[None]"]) -> None:
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
) -> tuple[float, float]:
    """Separate ``audio`` and encode each stem of ``files`` into its file, chunk by chunk;
    return the seconds spent separating and the seconds spent waiting for the encoders.

    On a GPU the stems of one chunk are encoded while the next chunk is separated; on a CPU
    torch's threads already keep every core busy (its OpenMP workers spin while they wait,
    so even encoder threads at the lowest priority find no idle core) and encoders competing
    with them were measured slower than taking turns, so there each chunk's stems are
    encoded between chunks, in parallel threads: PyAV releases the GIL while LAME encodes
    (four 60-second stems: 11 CPU-seconds in 5.6 s on 2 cores).
    """
    overlap_encoding = device != "cpu"
    separating = waiting = 0.0
    with (
        ThreadPoolExecutor(max_workers=max(1, min(len(files), threads))) as pool,
        contextlib.ExitStack() as stack,
    ):
        encoders = {
            stem: stack.enter_context(
                encode.StemEncoder(
                    path,
                    separator.samplerate,
                    opts.format,
                    opts.wav_depth,
                    opts.bitrate,
                    opts.mp3_quality,
                )
            )
            for stem, path in files.items()
        }
        blocks = separate.separate(
            separator,
            audio,
            device=device,
            shifts=opts.shifts,
            overlap=opts.overlap,
            segment=opts.segment,
            on_fraction=lambda f: reporter.update(progress.stage_percent(DECODED, SEPARATED, f)),
            chunk_seconds=chunk_seconds(env),
        )
        pending: list[Future[None]] = []
        while True:
            started = time.monotonic()
            block = next(blocks, None)
            separating += time.monotonic() - started
            started = time.monotonic()
            _wait(pending)  # a stem's blocks must reach its encoder in order
            if block is None:
                break
            chosen = separate.pick(separator.sources, block, list(files))
            pending = [
                pool.submit(encoders[stem].write, tensor.numpy()) for stem, tensor in chosen.items()
            ]
            del block, chosen
            if not overlap_encoding:
                _wait(pending)
            waiting += time.monotonic() - started
        reporter.update(SEPARATED)
        started = time.monotonic()
        _wait([pool.submit(encoder.finish) for encoder in encoders.values()])
        waiting += time.monotonic() - started
    return separating, waiting


def run(opts: Options, env: Mapping[str, str], reporter: progress.Reporter) -> None:
    source, target = parse_location(opts.input), parse_location(opts.output)
    s3_settings = s3.S3Settings.from_env(env) if "s3://" in (opts.input + opts.output) else None

    def s3_client() -> Minio:
        assert s3_settings is not None
        return s3.client(s3_settings)

    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[stage] = round(now - clock, 3)
        clock = now

    threads = model.configure_threads()
    kept = allocator.keep_freed_memory(env)  # before the model's first allocations
    device = model.resolve_device(opts.device)
    separator = model.load(opts.model, opts.model_repo)
    model.check_segment(separator, opts.segment)
    stems = separate.plan_stems(separator.sources, opts.stems, opts.two_stems)
    log.info(
        "model %s ready on %s",
        opts.model,
        device,
        extra={"device": device, "threads": threads, "stems": stems, "keep_freed_memory": kept},
    )
    lap("load_model")
    reporter.update(0)

    with tempfile.TemporaryDirectory(prefix="stemkube-") as tmp:
        workdir = Path(tmp)
        local_input = storage.fetch_input(source, workdir, s3_client)
        lap("fetch")
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
        lap("decode")
        reporter.update(DECODED)

        ext = encode.extension(opts.format)
        files = {stem: workdir / archive.member_name(stem, ext) for stem in stems}
        separating, encoding = separate_to_files(
            separator, torch.from_numpy(audio), files, opts, device, threads, env, reporter
        )
        del audio
        timings["separate"], timings["encode"] = round(separating, 3), round(encoding, 3)
        clock = time.monotonic()
        reporter.update(ENCODED)

        with storage.open_output(target, s3_client) as out:
            archive.write_zip([(path.name, path) for path in files.values()], out)
        lap("store")
    reporter.update(100)
    log.info(
        "wrote %s (%d stems)",
        target,
        len(files),
        extra={"timings": timings, "duration": round(seconds, 3), "pid": os.getpid()},
    )
