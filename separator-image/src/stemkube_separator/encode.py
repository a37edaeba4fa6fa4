"""Encoding one stem to a file, block by block: MP3 (LAME, constant bitrate), WAV or FLAC."""

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import cast

import av
import numpy as np

from stemkube_separator.decode import Audio
from stemkube_separator.options import DEFAULT_MP3_QUALITY, Depth, Format

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
