"""The separator's pure parts: stems, progress, clipping, codecs, ZIP layout, exit codes,
messages, logs, the upload pipe, CPU limits, the allocator settings."""

import io
import json
import logging
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stemkube_separator import (
    allocator,
    archive,
    cli,
    encode,
    exitcodes,
    logs,
    model,
    progress,
    separate,
)
from stemkube_separator.errors import InvalidInputError, TransientError, UsageError
from stemkube_separator.storage import _Pipe

FOUR = ["drums", "bass", "other", "vocals"]


def test_exit_codes_are_distinct_and_documented_values() -> None:
    assert (exitcodes.OK, exitcodes.USAGE, exitcodes.INVALID_INPUT, exitcodes.TRANSIENT) == (
        0,
        2,
        3,
        75,
    )
    assert InvalidInputError.exit_code == 3
    assert TransientError.exit_code == 75
    assert UsageError.exit_code == 2


def test_plan_stems() -> None:
    assert separate.plan_stems(FOUR, None, None) == FOUR
    assert separate.plan_stems(FOUR, ["vocals", "bass"], None) == ["vocals", "bass"]
    assert separate.plan_stems(FOUR, None, "vocals") == ["vocals", "no_vocals"]
    with pytest.raises(InvalidInputError, match="no stem 'guitar' \\(it has: drums, bass"):
        separate.plan_stems(FOUR, ["guitar"], None)
    with pytest.raises(InvalidInputError, match="no stem 'piano'"):
        separate.plan_stems(FOUR, None, "piano")


def test_pick_two_stems_sums_the_rest() -> None:
    block = torch.stack([torch.full((2, 3), float(i + 1)) for i in range(4)])
    chosen = separate.pick(FOUR, block, ["vocals", "no_vocals"])
    assert list(chosen) == ["vocals", "no_vocals"]
    assert torch.equal(chosen["vocals"], torch.full((2, 3), 4.0))
    assert torch.equal(chosen["no_vocals"], torch.full((2, 3), 1.0 + 2.0 + 3.0))
    assert list(separate.pick(FOUR, block, ["bass", "drums"])) == ["bass", "drums"]


def test_plan_chunks_cover_the_song_with_overlaps() -> None:
    assert separate.plan_chunks(100, 100, 10) == [separate.Chunk(0, 100)]
    chunks = separate.plan_chunks(250, 100, 10)
    assert chunks == [separate.Chunk(0, 100), separate.Chunk(90, 190), separate.Chunk(180, 250)]
    tail = separate.plan_chunks(191, 100, 10)
    assert tail[-1] == separate.Chunk(180, 191)  # the last chunk is longer than the overlap


def test_crossfade_moves_from_tail_to_head() -> None:
    tail, head = torch.zeros(2, 1000), torch.ones(2, 1000)
    mixed = separate.crossfade(tail, head)
    assert mixed[0, 0] < 0.01
    assert mixed[0, -1] > 0.99
    assert torch.all(mixed[:, 1:] >= mixed[:, :-1])
    assert torch.allclose(separate.crossfade(head, head), head)


def test_segment_counter_reaches_one_and_never_passes_it() -> None:
    counter = separate.SegmentCounter.for_run([7.8], 44100, 60 * 44100, shifts=0, overlap=0.25)
    stride = int(0.75 * int(44100 * 7.8))
    assert counter.total == -(-60 * 44100 // stride)
    fractions = []
    for _ in range(counter.total + 2):
        counter.event({"state": "start"})
        fractions.append(counter.event({"state": "end"}))
    assert fractions == sorted(fractions)
    assert fractions[counter.total - 1] == 1.0
    assert fractions[-1] == 1.0
    bag = separate.SegmentCounter.for_run([7.8, 7.8], 44100, 44100, shifts=2, overlap=0.25)
    assert bag.total == 2 * 2 * 1


def test_stage_percent() -> None:
    assert progress.stage_percent(5, 90, 0.0) == 5
    assert progress.stage_percent(5, 90, 0.5) == 47
    assert progress.stage_percent(5, 90, 1.0) == 90
    assert progress.stage_percent(5, 90, 7.0) == 90


def test_throttle() -> None:
    now = [0.0]
    throttle = progress.Throttle(1.0, clock=lambda: now[0])
    assert throttle.ready()
    now[0] = 0.5
    assert not throttle.ready()
    assert throttle.ready(final=True)
    now[0] = 1.6
    assert throttle.ready()


class FakeStatusApi:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> None:
        with self.lock:
            self.calls.append(args)
        if self.fail:
            raise OSError("API server unreachable")


def test_cr_reporter_merge_patches_status_at_most_once_a_second() -> None:
    api = FakeStatusApi()
    reporter = progress.CrReporter("ns", "job", api, interval=1.0)
    for percent in range(0, 101):
        reporter.update(percent)
    reporter.close()
    assert api.calls[0][:5] == ("stemkube.io", "v1alpha1", "ns", "separationjobs", "job")
    bodies = [call[5] for call in api.calls]
    assert bodies[-1] == {"status": {"progress": 100}}  # the last value is never dropped
    assert len(bodies) <= 3  # the first, perhaps one more, the last


def test_cr_reporter_failures_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeStatusApi(fail=True)
    reporter = progress.CrReporter("ns", "job", api, interval=0.0)
    reporter.update(10)
    reporter.update(100)
    reporter.close()
    assert api.calls
    assert "could not write progress to ns/job" in caplog.text


def test_integer_formats_clamp() -> None:
    loud = np.array([[2.0, -4.0], [0.5, 0.0]], dtype=np.float32)
    clamped = encode.for_integer_format(loud)
    assert clamped.tolist() == [[1.0, -1.0], [0.5, 0.0]]
    assert clamped.dtype == np.float32
    assert encode.codec_for("wav", "16").integer
    assert not encode.codec_for("mp3", "16").integer
    assert not encode.codec_for("wav", "32f").integer


def test_codecs() -> None:
    assert encode.codec_for("mp3", "16").codec == "libmp3lame"
    assert encode.codec_for("wav", "24").codec == "pcm_s24le"
    assert encode.codec_for("wav", "32f").sample_format == "flt"
    assert dict(encode.codec_for("flac", "24").options) == {"bits_per_raw_sample": "24"}
    assert encode.codec_for("flac", "16").sample_format == "s16"


def test_mp3_quality_reaches_lame_as_compression_level() -> None:
    assert dict(encode.codec_for("mp3", "16").options) == {"compression_level": "5"}
    assert dict(encode.codec_for("mp3", "16", 2).options) == {"compression_level": "2"}


@pytest.mark.parametrize(
    ("env", "tuned"),
    [
        ({}, False),
        ({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=1"}, False),
        ({"MALLOC_ARENA_MAX": "2"}, True),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, True),
    ],
)
def test_user_malloc_settings_stand(env: dict[str, str], tuned: bool) -> None:
    assert allocator.user_tuned(env) is tuned
    if tuned:
        assert not allocator.keep_freed_memory(env)  # nothing applied to this process


class NonSeekable(io.RawIOBase):
    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += bytes(b)
        return len(b)


def test_zip_streams_to_a_non_seekable_target(tmp_path: Path) -> None:
    files = []
    for stem in ("vocals", "bass"):
        path = tmp_path / archive.member_name(stem, "mp3")
        path.write_bytes(stem.encode() * 1000)
        files.append((path.name, path))
    out = NonSeekable()
    archive.write_zip(files, out)  # type: ignore[arg-type]
    with zipfile.ZipFile(io.BytesIO(bytes(out.data))) as zf:
        assert zf.namelist() == ["bass.mp3", "vocals.mp3"]
        assert zf.read("vocals.mp3") == b"vocals" * 1000
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())


def test_pipe_passes_bytes_in_order_and_reports_eof() -> None:
    pipe = _Pipe(limit=8)
    received = bytearray()

    def reader() -> None:
        while chunk := pipe.read(5):
            received.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(100):
        pipe.write(bytes([i]) * 3)
    pipe.close_writer()
    thread.join(5)
    assert bytes(received) == b"".join(bytes([i]) * 3 for i in range(100))


def test_pipe_failure_reaches_the_reader_and_a_gone_reader_the_writer() -> None:
    pipe = _Pipe(limit=8)
    pipe.write(b"abc")
    pipe.fail(RuntimeError("stop"))
    with pytest.raises(RuntimeError, match="stop"):
        pipe.read(2)
    pipe2 = _Pipe(limit=4)
    pipe2.reader_done()
    with pytest.raises(BrokenPipeError):
        pipe2.write(b"x")


def test_one_line_and_termination_log(tmp_path: Path) -> None:
    assert cli.one_line("bad\n  thing\thappened") == "bad thing happened"
    assert len(cli.one_line("x" * 10_000)) == cli.MAX_MESSAGE
    path = tmp_path / "log"
    cli.write_termination_log(str(path), "the input is\nempty")
    assert path.read_text() == "the input is empty\n"
    cli.write_termination_log(str(tmp_path / "missing" / "log"), "never raises")


def test_json_logs_carry_ts_level_msg_job_and_extras() -> None:
    stream = io.StringIO()
    logs.setup("job-7", stream=stream)
    try:
        logging.getLogger("stemkube_separator.test").info("hello %s", "world", extra={"n": 1})
    finally:
        logging.getLogger().handlers.clear()
    entry = json.loads(stream.getvalue())
    assert entry["msg"] == "hello world"
    assert (entry["level"], entry["job"], entry["n"]) == ("info", "job-7", 1)
    assert entry["ts"].endswith("+00:00")


@pytest.mark.parametrize(
    ("cpu_max", "limit"),
    [("max 100000", None), ("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1)],
)
def test_cgroup_cpu_limit(cpu_max: str, limit: int | None) -> None:
    assert model.cgroup_cpu_limit(cpu_max) == limit


def test_usable_cpus_is_positive() -> None:
    assert model.usable_cpus() >= 1


def test_device_choice_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert model.resolve_device("auto") == "cpu"
    assert model.resolve_device("cpu") == "cpu"
    with pytest.raises(TransientError, match="no CUDA device"):
        model.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert model.resolve_device("auto") == "cuda"


def test_chunk_seconds_from_the_environment() -> None:
    from stemkube_separator import pipeline

    assert pipeline.chunk_seconds({}) == separate.CHUNK_SECONDS
    assert pipeline.chunk_seconds({"STEMKUBE_CHUNK_SECONDS": "90"}) == 90.0
    for bad in ("0", "-5", "nan", "soon"):
        with pytest.raises(UsageError):
            pipeline.chunk_seconds({"STEMKUBE_CHUNK_SECONDS": bad})
