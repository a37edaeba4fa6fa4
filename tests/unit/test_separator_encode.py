"""Encoding stems: MP3 in pieces joined into one stream (checked with the ffmpeg tools, not the
separator's own FFmpeg), one encoder per stem byte for byte as before, the stage clock."""

import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from stemkube_separator import encode, pipeline, stages
from stemkube_separator.errors import UsageError
from tests.harness.separator_fixtures import audio_tool, probe

RATE = 44100
FRAME = encode.MP3_FRAME


def song(seconds: float, seed: int = 0) -> npt.NDArray[np.float32]:
    """Tones, a gliding tone, a beat (transients: short blocks) and noise, different per side."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    beat = (np.sin(2 * np.pi * 2 * t) > 0.95).astype(np.float32)
    glide = np.sin(2 * np.pi * (200 + 50 * np.sin(2 * np.pi * 0.1 * t)) * t)
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * beat + 0.1 * glide
    right = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.2 * beat
    noise = rng.standard_normal((2, t.size)) * np.array([[0.05], [0.08]])
    audio: npt.NDArray[np.float32] = (np.stack([left, right]) + noise).astype(np.float32)
    return audio


def decoded(path: Path) -> npt.NDArray[np.float32]:
    """The file as the ffmpeg tool decodes it (encoder delay and padding trimmed); any
    decoding error or warning (a broken frame, a bad bit reservoir) fails the test."""
    result = subprocess.run(
        [audio_tool("ffmpeg"), "-v", "warning", "-i", str(path), "-f", "f32le", "-"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    assert result.stderr == b"", result.stderr.decode()
    return np.frombuffer(result.stdout, dtype=np.float32).reshape(-1, 2).T


def one_stream(path: Path, audio: npt.NDArray[np.float32]) -> Path:
    with encode.StemEncoder(path, RATE, "mp3", "16", 320) as encoder:
        encoder.write(audio)
    return path


def in_pieces(
    path: Path, audio: npt.NDArray[np.float32], blocks: list[int], max_pieces: int = 3
) -> encode.PiecewiseMp3:
    """``audio`` through a PiecewiseMp3 as the pipeline drives it: block by block, each
    block's futures done before the next, then complete()."""
    writer = encode.PiecewiseMp3(path, RATE, 320, 5, max_pieces, min_piece_seconds=8)
    edges = [0, *np.cumsum(blocks).tolist(), audio.shape[1]]
    with ThreadPoolExecutor(4) as pool, writer:
        pending: list[Future[None]] = []
        for i in range(len(edges) - 1):
            for future in pending:
                future.result()
            last = i == len(edges) - 2
            pending = writer.submit(pool, audio[:, edges[i] : edges[i + 1]], last)
        for future in pending:
            future.result()
        writer.complete()
    return writer


def frame_errors(
    got: npt.NDArray[np.float32], reference: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    n = reference.shape[1] // FRAME * FRAME
    diff = got[:, :n].astype(np.float64) - reference[:, :n]
    return np.asarray((diff**2).sum(0).reshape(-1, FRAME).sum(1))


@pytest.mark.parametrize(
    "blocks",
    [
        [],  # the whole song at once: one chunk
        [11 * RATE, 9 * RATE, 13 * RATE],  # chunks, not on frame boundaries
    ],
    ids=["one-block", "chunks"],
)
def test_mp3_in_pieces_decodes_as_one_stream(blocks: list[int], tmp_path: Path) -> None:
    audio = song(40.0)
    single = decoded(one_stream(tmp_path / "one.mp3", audio))

    writer = in_pieces(tmp_path / "pieces.mp3", audio, blocks)
    joined = decoded(tmp_path / "pieces.mp3")

    assert len(writer.joins) >= 2  # the test joins pieces
    assert joined.shape == single.shape == audio.shape  # delay and padding as one stream's
    assert probe(tmp_path / "pieces.mp3").bit_rate == 320_000
    mine, theirs = frame_errors(joined, audio), frame_errors(single, audio)
    assert 0.97 < mine.sum() / theirs.sum() < 1.03  # as good as one LAME overall
    for at in writer.joins:  # and where the pieces meet: no click, no dropout
        near = slice(at - 3, at + 8)
        assert mine[near].sum() / theirs[near].sum() < 1.25, at
        assert np.abs(joined[:, (at - 3) * FRAME : (at + 8) * FRAME]).max() < 1.0


def test_joins_without_a_clean_window_still_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every frame said to use short windows: the join falls back to the reservoir rule alone.
    real = encode.frame_info

    def no_long_blocks(frame: bytes) -> encode.FrameInfo:
        info = real(frame)
        return encode.FrameInfo(info.main_start, info.main_data_begin, long_blocks=False)

    monkeypatch.setattr(encode, "frame_info", no_long_blocks)
    audio = song(30.0, seed=1)

    writer = in_pieces(tmp_path / "pieces.mp3", audio, [])

    assert len(writer.joins) == 2
    assert decoded(tmp_path / "pieces.mp3").shape == audio.shape


def test_frame_info_reads_lame_frames(tmp_path: Path) -> None:
    writer = encode.PiecewiseMp3(tmp_path / "x.mp3", RATE, 320, 5, 2)
    piece = encode._Piece(first=0, start=0, clean_stop=10**9)
    writer._encode(piece, song(3.0))
    writer.abort()
    infos = [encode.frame_info(bytes(p)) for p in piece.packets]
    assert len(piece.packets) == -(-(3 * RATE + 1105) // FRAME)  # delay included
    assert all(info.main_start == 36 for info in infos)  # header + stereo side info, no CRC
    assert infos[0].main_data_begin == 0  # nothing before the first frame
    assert max(info.main_data_begin for info in infos) > 0  # LAME uses the reservoir
    assert all(0 <= info.main_data_begin <= 511 for info in infos)
    with pytest.raises(ValueError, match="not an MPEG-1 Layer III frame"):
        encode.frame_info(b"RIFF" + bytes(40))


def test_patch_reservoir_copies_the_donors_last_main_data_bytes() -> None:
    header = bytes.fromhex("fffb9064")  # MPEG-1 Layer III, 320 kbps, 44.1 kHz, joint stereo
    side = bytes(32)

    def frame(fill: int, size: int = 100) -> bytes:
        return header + side + bytes([fill]) * size

    before = [frame(1), frame(2, size=10)]
    donor = [frame(7), frame(8, size=5)]
    patched = encode.patch_reservoir(before, donor, 12)
    # The last 12 main data bytes of the donor (7 x 7, 5 x 8) over the last 12 of before's,
    # across the frame boundary; headers and side information untouched.
    assert patched[1] == header + side + bytes([7] * 5 + [8] * 5)
    assert patched[0] == header + side + bytes([1] * 98 + [7] * 2)
    assert encode.patch_reservoir(before, donor, 0) == before
    with pytest.raises(ValueError, match="fewer main data bytes"):
        encode.patch_reservoir(before, donor, 111)


def test_one_encoder_per_stem_is_byte_for_byte_the_stem_encoder(tmp_path: Path) -> None:
    audio = song(6.0)
    one_stream(tmp_path / "one.mp3", audio)
    with ThreadPoolExecutor(2) as pool:
        writer = encode.open_stem(tmp_path / "serial.mp3", RATE, "mp3", "16", 320, 5, 1)
        assert isinstance(writer, encode.SerialStem)
        with writer:
            for future in writer.submit(pool, audio, True):
                future.result()
            writer.complete()
    assert (tmp_path / "serial.mp3").read_bytes() == (tmp_path / "one.mp3").read_bytes()
    assert isinstance(
        encode.open_stem(tmp_path / "p.mp3", RATE, "mp3", "16", 320, 5, 2), encode.PiecewiseMp3
    )
    for fmt in ("wav", "flac"):  # never in pieces
        with encode.open_stem(tmp_path / f"s.{fmt}", RATE, fmt, "16", 320, 5, 8) as serial:
            assert isinstance(serial, encode.SerialStem)


def test_mp3_pieces_from_the_environment() -> None:
    assert pipeline.mp3_pieces({}, 16, 4) == 4
    assert pipeline.mp3_pieces({}, 16, 2) == 8
    assert pipeline.mp3_pieces({}, 2, 4) == 1  # the 2-core machine: one stream per stem
    assert pipeline.mp3_pieces({"STEMKUBE_MP3_PIECES": "1"}, 16, 4) == 1
    assert pipeline.mp3_pieces({"STEMKUBE_MP3_PIECES": "3"}, 2, 4) == 3
    for bad in ("0", "-1", "x", "1.5"):
        with pytest.raises(UsageError, match="STEMKUBE_MP3_PIECES"):
            pipeline.mp3_pieces({"STEMKUBE_MP3_PIECES": bad}, 16, 4)


def test_stages_partition_the_wall_time() -> None:
    clock = stages.Stages()
    clock.lap(stages.IMPORT)
    time.sleep(0.02)
    clock.lap(stages.SEPARATE)
    clock.lap(stages.ENCODE)
    time.sleep(0.01)
    clock.lap(stages.SEPARATE)  # alternating stages add up
    clock.lap(stages.FINISH)
    assert list(clock.timings()) == ["import", "separate", "encode", "finish"]  # run order
    assert clock.seconds["separate"] >= 0.03
    assert sum(clock.seconds.values()) == pytest.approx(clock.wall())
    assert clock.wall() >= 0.03


def test_the_clock_starts_with_the_process() -> None:
    age = stages.process_age()
    assert age is not None
    assert 0 < age < 24 * 3600  # this test process started before the test
    clock = stages.Stages.since_process_start()
    clock.lap(stages.IMPORT)
    assert clock.seconds["import"] == pytest.approx(age, abs=0.5)
