"""Encoding one stem to a file, block by block: MP3 (LAME, constant bitrate), WAV or FLAC.

Two ways to write a stem, both fed the song's blocks in time order from a thread pool:

- ``SerialStem``: one encoder for the whole stem (``StemEncoder``), each block encoded after the
  previous one. WAV and FLAC always (FLAC encodes a minute of stereo in 0.2 CPU-seconds), and
  MP3 where no more than one piece per stem would run at once (fewer CPUs than twice the stems).
- ``PiecewiseMp3``: LAME is the program's largest cost after the model (2 CPU-seconds per
  minute of stem at 320 kbps) and one LAME stream cannot use more than one core, so on a
  machine with CPUs to spare each MP3 stem is cut into pieces, each encoded by a LAME of its
  own on its own core, and the pieces' frames are joined into one stream (``splice``) where
  the join is seamless: see there.
"""

import logging
import math
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, cast

import av
import numpy as np

from stemkube_separator.decode import Audio
from stemkube_separator.options import DEFAULT_MP3_QUALITY, Depth, Format

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Packet = av.Packet[Any]  # generic only in PyAV's type stubs
else:
    Packet = av.Packet

# Samples per frame handed to the encoder: large, to keep the Python loop out of the profile.
BLOCK = 1 << 16


@dataclass(frozen=True)
class Codec:
    container: str
    codec: str
    sample_format: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def integer(self) -> bool:
        return self.sample_format in ("s16", "s32")


def codec_for(fmt: Format, depth: Depth, mp3_quality: int = DEFAULT_MP3_QUALITY) -> Codec:
    if fmt == "mp3":
        # Planar float is a format LAME takes: before it run only PyAV's re-framing into
        # 1152-sample frames and FFmpeg's scaling to LAME's range, about 1% of the time
        # (LAME itself is the rest). FFmpeg passes compression_level to LAME as its -q;
        # without it LAME would use its own default, 3.
        return Codec("mp3", "libmp3lame", "fltp", (("compression_level", str(mp3_quality)),))
    if fmt == "wav":
        return {
            "16": Codec("wav", "pcm_s16le", "s16"),
            "24": Codec("wav", "pcm_s24le", "s32"),
            "32f": Codec("wav", "pcm_f32le", "flt"),
        }[depth]
    if depth == "24":
        return Codec("flac", "flac", "s32", (("bits_per_raw_sample", "24"),))
    return Codec("flac", "flac", "s16")


def extension(fmt: Format) -> str:
    return fmt


def for_integer_format(audio: Audio) -> Audio:
    """Clamp to full scale for integer formats (Demucs's ``--clip-mode clamp``): stems are
    written as they are separated, before the song's peak is known. MP3 and float WAV take
    the float values as they are and lose nothing."""
    return np.clip(audio, -1.0, 1.0)


class StemEncoder:
    """One stem's file, open while the song's blocks arrive in time order."""

    def __init__(
        self,
        path: Path,
        sample_rate: int,
        fmt: Format,
        depth: Depth,
        bitrate_kbps: int,
        mp3_quality: int = DEFAULT_MP3_QUALITY,
    ) -> None:
        self.codec = codec_for(fmt, depth, mp3_quality)
        self.sample_rate = sample_rate
        self.samples = 0
        self.closed = False
        self.container = av.open(str(path), mode="w", format=self.codec.container)
        self.stream = cast(
            av.AudioStream,
            self.container.add_stream(
                self.codec.codec,
                rate=sample_rate,
                layout="stereo",
                options=dict(self.codec.options),
            ),
        )
        self.stream.format = self.codec.sample_format
        if fmt == "mp3":
            self.stream.bit_rate = bitrate_kbps * 1000

    def write(self, audio: Audio) -> None:
        """Append ``audio`` (float32, shape (2, n))."""
        if self.codec.integer:
            audio = for_integer_format(audio)
        for start in range(0, audio.shape[1], BLOCK):
            block = np.ascontiguousarray(audio[:, start : start + BLOCK])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = self.sample_rate
            frame.pts = self.samples
            self.samples += block.shape[1]
            self.container.mux(self.stream.encode(frame))

    def finish(self) -> None:
        """Flush the encoder and complete the file."""
        if not self.closed:
            self.closed = True
            self.container.mux(self.stream.encode(None))
            self.container.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.container.close()

    def __enter__(self) -> "StemEncoder":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.finish()
        else:
            self.abort()


class StemWriter(Protocol):
    """One stem's file, fed the song's blocks in time order."""

    def submit(self, pool: Executor, audio: Audio, last: bool) -> "list[Future[None]]":
        """Hand ``audio`` (float32, shape (2, n)), the next block, to ``pool``; ``last``: the
        song ends with it. The futures of the previous call must be done before the next."""
        ...

    def complete(self) -> None:
        """Complete the file, once the last block's futures are done."""
        ...

    def abort(self) -> None: ...


class SerialStem:
    """One encoder for the whole stem: each block encoded after the previous one."""

    def __init__(self, encoder: StemEncoder) -> None:
        self.encoder = encoder

    def submit(self, pool: Executor, audio: Audio, last: bool) -> "list[Future[None]]":
        return [pool.submit(self._write, audio, last)]

    def _write(self, audio: Audio, last: bool) -> None:
        self.encoder.write(audio)
        if last:
            self.encoder.finish()

    def complete(self) -> None:
        self.encoder.finish()

    def abort(self) -> None:
        self.encoder.abort()

    def __enter__(self) -> "SerialStem":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.encoder.__exit__(exc_type, exc, tb)


# MPEG-1 Layer III, the MP3 of the sample rates Demucs's models use (44.1 kHz).
MP3_FRAME = 1152  # samples per frame: two granules of 576
MPEG1_RATES = (32000, 44100, 48000)


@dataclass(frozen=True)
class FrameInfo:
    """What joining needs from an MPEG-1 Layer III frame's header and side information."""

    main_start: int  # where the frame's main data area starts (after header, CRC, side info)
    main_data_begin: int  # bytes of this frame's main data that lie in earlier frames
    long_blocks: bool  # every granule of every channel uses the normal long window


def frame_info(frame: bytes) -> FrameInfo:
    header = int.from_bytes(frame[:4], "big")
    if header >> 21 != 0x7FF or (header >> 19) & 3 != 3 or (header >> 17) & 3 != 1:
        raise ValueError(f"not an MPEG-1 Layer III frame: header {header:08x}")
    crc = 0 if (header >> 16) & 1 else 2
    channels = 1 if (header >> 6) & 3 == 3 else 2
    side = 17 if channels == 1 else 32
    bits = int.from_bytes(frame[4 + crc : 4 + crc + side], "big")
    left = side * 8

    def take(n: int) -> int:
        nonlocal left
        left -= n
        return (bits >> left) & ((1 << n) - 1)

    main_data_begin = take(9)
    take(5 if channels == 1 else 3)  # private bits
    take(4 * channels)  # scfsi
    long_blocks = True
    for _ in range(2 * channels):  # granules x channels
        take(12 + 9 + 8 + 4)  # part2_3_length, big_values, global_gain, scalefac_compress
        if take(1):  # window_switching_flag: a start, short or stop window
            long_blocks = False
            take(2 + 1 + 2 * 5 + 3 * 3)
        else:
            take(3 * 5 + 4 + 3)
        take(3)  # preflag, scalefac_scale, count1table_select
    return FrameInfo(4 + crc + side, main_data_begin, long_blocks)


def patch_reservoir(before: Sequence[bytes], donor: Sequence[bytes], size: int) -> list[bytes]:
    """``before``'s frames with the last ``size`` bytes of their main data replaced by the last
    ``size`` bytes of ``donor``'s: what the first frame of the donor's stream after these
    frames reads from the bit reservoir. Raises ValueError if the frames hold too few bytes."""
    tail = bytearray()
    for frame in reversed(donor):
        if len(tail) == size:
            break
        main = frame[frame_info(frame).main_start :]
        take = min(size - len(tail), len(main))
        tail[:0] = main[len(main) - take :]
    if len(tail) < size:
        raise ValueError("the donor frames hold fewer main data bytes than asked")
    out = list(before)
    remaining, index = size, len(out)
    while remaining:
        index -= 1
        if index < 0:
            raise ValueError("the frames hold fewer main data bytes than asked")
        patched = bytearray(out[index])
        take = min(remaining, len(patched) - frame_info(out[index]).main_start)
        patched[len(patched) - take :] = tail[remaining - take : remaining]
        out[index] = bytes(patched)
        remaining -= take
    return out


# Piecewise MP3 (see PiecewiseMp3).
LEAD_FRAMES = 32  # encoded before a piece's first frame: its LAME's analysis and psychoacoustics
# are warm where its frames are used (16 measured enough: noise near the joins as elsewhere)
JOIN_FRAMES = 24  # the frames, from a piece's nominal start, where the join may fall
PAD_FRAMES = 4  # a piece encodes this far past the join window: its frames used are not its end's
MIN_PIECE_SECONDS = 20.0  # a piece's overhead (lead and join window, 1.5 s) stays under 8%


@dataclass
class _Piece:
    first: int  # the frame (of the whole stem) its encoder's first frame is: input from first*1152
    start: int  # the first frame it is meant to give: the join with the previous piece is after
    clean_stop: int  # its frames before this are not shaped by the end of its input
    packets: list[Packet] = field(default_factory=list)

    @property
    def stop(self) -> int:
        return self.first + len(self.packets)

    def frame(self, index: int) -> bytes:
        return bytes(self.packets[index - self.first])

    def info(self, index: int) -> FrameInfo:
        return frame_info(self.frame(index))


class PiecewiseMp3:
    """One MP3 stem encoded as pieces, each by a LAME of its own (on a core of its own), joined
    into one stream that decodes as one: no seams, the same length as one LAME's stream.

    Alignment: every piece's input starts on a frame boundary of the stem (a multiple of 1152
    samples) and LAME's delay is the same for each, so a piece's frame n is frame
    ``first + n`` of the stem, covering the same samples as the one stream's would.

    Warm-up: each piece also encodes ``LEAD_FRAMES`` before its nominal start, which it does not
    give: LAME's filterbank and psychoacoustic model start from silence, and its first frames
    would be poorer. The previous piece encodes past the join window for the same reason.

    The join, at frame m of the window, takes the previous piece's frames up to m - 1 and this
    piece's from m on, where MPEG's rules make that seamless:

    - the bit reservoir: frame m's main data may begin up to 511 bytes earlier, in the bytes the
      frames before it left unused (its ``main_data_begin``). Those bytes are this piece's, not
      the previous piece's: they are copied into the end of the previous piece's frame(s),
      which is possible without touching the previous piece's own data where the previous
      piece left at least as many bytes unused there (its own frame m's ``main_data_begin`` is
      at least as large). LAME runs with a full reservoir most of the time, so 9 frames in 10
      qualify (measured);
    - the MDCT windows: frame m - 1 (previous piece) and frame m (this piece) both use normal
      long windows in every granule, so the overlapping halves of the two granules cancel each
      other's aliasing as within one stream (a short block's start/stop windows would not
      match).

    Quality: the decoded stream's error against the stem is the one stream's, within 1%,
    both overall and in the frames around the joins (measured on 60 s of tones, beats and
    noise; ``tests/unit/test_separator_encode.py``); a join where no frame of the window
    qualifies (not seen) falls back to any frame where both pieces overlap, reservoir rule
    first.

    The first and last frames come from the first and last pieces as LAME made them, with the
    encoder delay and end padding the muxer records (the LAME tag): players trim them as for
    one stream. Not byte-identical to one LAME's stream: after a join the reservoir and the
    bit allocation follow the new piece (many frames are identical again a few frames on).
    """

    def __init__(
        self,
        path: Path,
        sample_rate: int,
        bitrate_kbps: int,
        mp3_quality: int,
        max_pieces: int,
        min_piece_seconds: float = MIN_PIECE_SECONDS,
    ) -> None:
        if sample_rate not in MPEG1_RATES:
            raise ValueError(f"{sample_rate} Hz has no MPEG-1 frames")
        self.codec = codec_for("mp3", "16", mp3_quality)
        self.sample_rate = sample_rate
        self.bit_rate = bitrate_kbps * 1000
        self.max_pieces = max(1, max_pieces)
        self.min_frames = max(
            LEAD_FRAMES + JOIN_FRAMES + PAD_FRAMES,
            round(min_piece_seconds * sample_rate / MP3_FRAME),
        )
        self.segments: list[tuple[int, Audio]] = []  # (first sample, samples), not yet used up
        self.received = 0
        self.next_frame = 0  # the nominal start of the next piece
        self.waiting: list[_Piece] = []  # submitted, not yet joined into the file
        self.tail: _Piece | None = None  # the last piece joined: its frames from written on
        self.written = 0  # frames in the file
        self.joins: list[int] = []  # the frames where a piece took over
        self.closed = False
        self.lock = threading.Lock()  # the file: one join at a time
        self.container = av.open(str(path), mode="w", format="mp3")
        self.stream = cast(
            av.AudioStream,
            self.container.add_stream(
                self.codec.codec,
                rate=sample_rate,
                layout="stereo",
                options=dict(self.codec.options),
            ),
        )
        self.stream.format = self.codec.sample_format
        self.stream.bit_rate = self.bit_rate

    # The blocks and the pieces.

    def submit(self, pool: Executor, audio: Audio, last: bool) -> "list[Future[None]]":
        if audio.shape[1]:
            self.segments.append((self.received, audio))
            self.received += audio.shape[1]
        futures: list[Future[None]] = []
        ready, self.waiting = self.waiting, []
        if ready:  # encoded (the previous call's futures are done): join them while these encode
            futures.append(pool.submit(self._join, ready, False))
        for first, start, stop in self._plan(last):
            piece = _Piece(first, start, clean_stop=math.ceil(stop / MP3_FRAME) - PAD_FRAMES)
            self.waiting.append(piece)
            futures.append(pool.submit(self._encode, piece, self._slice(first * MP3_FRAME, stop)))
        self._forget_before(self.received if last else (self.next_frame - LEAD_FRAMES) * MP3_FRAME)
        return futures

    def _plan(self, last: bool) -> list[tuple[int, int, int]]:
        """The next pieces as (first frame encoded, nominal start frame, input end sample): the
        audio received so far in about equal pieces of at least ``min_frames`` (at most
        ``max_pieces``), holding back, until the next block or the end, what the last piece's
        join window needs."""
        if last:
            frames, hold = math.ceil(self.received / MP3_FRAME), 0
        else:
            frames, hold = self.received // MP3_FRAME, JOIN_FRAMES + PAD_FRAMES
        usable = frames - hold - self.next_frame
        if usable <= 0 or (not last and usable < self.min_frames):
            return []
        count = max(1, min(self.max_pieces, round(usable / self.min_frames)))
        bounds = [self.next_frame + usable * i // count for i in range(count + 1)]
        plan = []
        for i in range(count):
            start, end = bounds[i], bounds[i + 1]
            final = last and i == count - 1
            stop = self.received if final else (end + JOIN_FRAMES + PAD_FRAMES) * MP3_FRAME
            plan.append((max(0, start - LEAD_FRAMES), start, min(stop, self.received)))
        self.next_frame = bounds[-1]
        return plan

    def _slice(self, start: int, stop: int) -> Audio:
        parts = []
        for first, samples in self.segments:
            a, b = max(start, first), min(stop, first + samples.shape[1])
            if a < b:
                parts.append(samples[:, a - first : b - first])
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def _forget_before(self, sample: int) -> None:
        """Drop what no piece will need; copy a partly needed block's tail, so that the
        block itself (a whole chunk of stems) can be freed."""
        kept = []
        for first, samples in self.segments:
            end = first + samples.shape[1]
            if end <= sample:
                continue
            if first < sample:
                samples, first = samples[:, sample - first :].copy(), sample
            kept.append((first, samples))
        self.segments = kept

    def _encode(self, piece: _Piece, audio: Audio) -> None:
        ctx = cast(av.AudioCodecContext, av.CodecContext.create(self.codec.codec, "w"))
        ctx.sample_rate = self.sample_rate
        ctx.layout = "stereo"
        ctx.format = self.codec.sample_format
        ctx.bit_rate = self.bit_rate
        ctx.options = dict(self.codec.options)
        packets: list[Packet] = []
        pts = piece.first * MP3_FRAME
        for start in range(0, audio.shape[1], BLOCK):
            block = np.ascontiguousarray(audio[:, start : start + BLOCK])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = self.sample_rate
            frame.pts = pts
            pts += block.shape[1]
            packets += ctx.encode(frame)
        packets += ctx.encode(None)
        # One packet per frame, consecutive: packet n is the stem's frame first + n.
        times = [p.pts for p in packets]
        expected = [(times[0] or 0) + n * MP3_FRAME for n in range(len(times))] if times else []
        if times != expected:  # LAME through FFmpeg always frames so
            raise RuntimeError("the MP3 encoder's packets are not consecutive frames")
        piece.packets = packets

    # Joining into the file.

    def _join(self, pieces: Sequence[_Piece], final: bool) -> None:
        with self.lock:
            for piece in pieces:
                if self.tail is None:
                    self.tail = piece  # the first piece starts the file
                    continue
                at = self._join_point(self.tail, piece)
                frames = [self.tail.frame(i) for i in range(self.written, at)]
                need = min(piece.info(at).main_data_begin, self._room(self.tail, at))
                if need:
                    donor = [piece.frame(i) for i in range(max(piece.first, at - 16), at)]
                    frames = patch_reservoir(frames, donor, need)
                self._write(self.tail, range(self.written, at), frames)
                self.tail = piece
                self.joins.append(at)
            if final and self.tail is not None:
                indices = range(self.written, self.tail.stop)
                self._write(self.tail, indices, [self.tail.frame(i) for i in indices])
                self.tail = None

    def _join_point(self, before: _Piece, after: _Piece) -> int:
        """The frame at which ``after`` takes over from ``before`` (see the class)."""
        lowest = max(self.written + 1, after.first + 2, before.first + 1)
        top = min(before.clean_stop, before.stop - 1, after.stop)
        window = range(max(lowest, after.start), min(top, after.start + JOIN_FRAMES))
        anywhere = range(lowest, top)
        for frames, strict in ((window, True), (anywhere, True), (anywhere, False)):
            for at in frames:
                prev, mine, theirs = before.info(at - 1), before.info(at), after.info(at)
                if mine.main_data_begin < theirs.main_data_begin:
                    continue
                if strict and not (prev.long_blocks and theirs.long_blocks):
                    continue
                if self._room(before, at) < theirs.main_data_begin:
                    continue
                return at
        at = max(lowest, min(after.start, top - 1))
        log.warning(
            "MP3 pieces joined at %.2f s without a clean frame: a glitch of one frame is possible",
            at * MP3_FRAME / self.sample_rate,
        )
        return at

    def _room(self, piece: _Piece, at: int) -> int:
        """Main data bytes in ``piece``'s frames not yet written, before frame ``at``."""
        room = 0
        for index in range(at - 1, self.written - 1, -1):
            frame = piece.frame(index)
            room += len(frame) - frame_info(frame).main_start
            if room >= 511:
                break
        return room

    def _write(self, piece: _Piece, indices: range, frames: Sequence[bytes]) -> None:
        for index, data in zip(indices, frames, strict=True):
            packet = piece.packets[index - piece.first]
            if bytes(packet) != data:  # a patched frame: a new packet with the same timing
                patched = av.Packet(data)
                patched.pts, patched.dts = packet.pts, packet.dts
                patched.duration = packet.duration
                patched.time_base = packet.time_base or Fraction(1, self.sample_rate)
                packet = patched
            packet.stream = self.stream
            self.container.mux(packet)
        self.written = indices.stop if len(indices) else self.written

    # The file.

    def complete(self) -> None:
        if self.closed:
            return
        ready, self.waiting = self.waiting, []
        self._join(ready, True)
        self.closed = True
        self.container.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.container.close()

    def __enter__(self) -> "PiecewiseMp3":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.complete()
        else:
            self.abort()


def open_stem(
    path: Path,
    sample_rate: int,
    fmt: Format,
    depth: Depth,
    bitrate_kbps: int,
    mp3_quality: int = DEFAULT_MP3_QUALITY,
    mp3_pieces: int = 1,
) -> "SerialStem | PiecewiseMp3":
    """The writer for one stem: MP3 in up to ``mp3_pieces`` pieces at once where that is more
    than one (and the rate has MPEG-1 frames), else one encoder for the whole stem."""
    if fmt == "mp3" and mp3_pieces > 1 and sample_rate in MPEG1_RATES:
        return PiecewiseMp3(path, sample_rate, bitrate_kbps, mp3_quality, mp3_pieces)
    return SerialStem(StemEncoder(path, sample_rate, fmt, depth, bitrate_kbps, mp3_quality))
