"""Decoding any audio FFmpeg reads into the model's input: float32 stereo at the model's rate.

Channel policy: stereo passes through; mono is copied to both channels (as Demucs itself does,
at full level); three or more channels are downmixed to stereo with FFmpeg's standard matrix
(ITU-style: centre and surrounds folded in at -3 dB), which keeps a 5.1 mix's centre-panned
vocals, where taking the first two channels would drop them.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import av
import av.error
import numpy as np
import numpy.typing as npt

from stemkube_separator import integrity
from stemkube_separator.errors import InvalidInputError
from stemkube_separator.integrity import MAX_BAD_PACKETS, Declared

log = logging.getLogger(__name__)

Audio = npt.NDArray[np.float32]  # shape (2, samples)

# Below 8 kbit/s no real song is encoded: a header claiming more seconds than that is wrong.
MIN_BYTES_PER_SECOND = 1000


@dataclass(frozen=True)
class SourceInfo:
    codec: str
    container: str
    sample_rate: int
    channels: int
    layout: str


def _fmt_seconds(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _too_long(seconds: float, limit: float) -> InvalidInputError:
    return InvalidInputError(
        f"the song is {_fmt_seconds(seconds)} long; the limit is {_fmt_seconds(limit)}"
    )


def _declared_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


@dataclass
class _Decoded:
    audio: Audio
    packets: int = 0  # demuxed, with data
    bad: int = 0  # of which could not be decoded
    first_position: int = 0  # the first packet's byte offset in the file (after the header)


def decode(path: Path, sample_rate: int, max_duration: float) -> tuple[Audio, SourceInfo]:
    """Decode ``path`` to float32 stereo at ``sample_rate``; reject what is not a usable song."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidInputError(f"the input file {path} does not exist") from None
    if path.is_dir():
        raise InvalidInputError(f"the input {path} is a folder, not an audio file")
    if size == 0:
        raise InvalidInputError("the input file is empty")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise InvalidInputError(
            f"the input is not an audio file FFmpeg can read ({exc.strerror or exc})"
        ) from None
    with container:
        if not container.streams.audio:
            raise InvalidInputError(f"the input ({container.format.name}) contains no audio stream")
        stream = container.streams.best("audio")
        if not isinstance(stream, av.AudioStream):
            stream = container.streams.audio[0]
        if stream.codec_context is None or stream.channels == 0:
            raise InvalidInputError("the input's audio stream has no decodable codec")
        declared = _declared_seconds(container, stream)
        # The header's word is checked first so a three-hour upload is refused in
        # milliseconds, when the file is big enough to be that long (a damaged header on a
        # small file must not get a good song refused); the decoded length is checked below
        # because headers can lie either way.
        if declared > max_duration + 1.0 and size / declared >= MIN_BYTES_PER_SECOND:
            raise _too_long(declared, max_duration)
        info = SourceInfo(
            codec=stream.codec_context.name,
            container=container.format.name,
            sample_rate=stream.sample_rate,
            channels=stream.channels,
            layout=stream.layout.name,
        )
        decoded = _decode_stream(container, stream, sample_rate, max_duration)
    audio = decoded.audio
    if audio.shape[1] == 0:
        raise InvalidInputError("the input contains no audio samples (zero duration)")
    # A file cut short, damaged in the middle or with a lying header decodes to another
    # length than it declares (a cut upload once passed as a short song: issue 19).
    integrity.check_packets(decoded.packets, decoded.bad)
    integrity.check_length(
        Declared(
            seconds=declared or None,
            file_size=size,
            data_offset=decoded.first_position,
            bit_rate=stream.bit_rate or 0,
        ),
        audio.shape[1] / sample_rate,
    )
    return audio, info


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    sample_rate: int,
    max_duration: float,
) -> _Decoded:
    mono = stream.channels == 1
    resampler = av.AudioResampler(
        format="fltp", layout="mono" if mono else "stereo", rate=sample_rate
    )
    max_samples = int((max_duration + 1.0) * sample_rate)
    chunks: list[Audio] = []
    total = bad = packets = 0
    first_position = -1

    def take(frames: list[av.AudioFrame]) -> None:
        nonlocal total
        for frame in frames:
            array = cast(Audio, frame.to_ndarray())  # fltp: float32, (channels, samples)
            chunks.append(array)
            total += array.shape[1]
            if total > max_samples:
                raise _too_long(total / sample_rate, max_duration)

    try:
        for packet in container.demux(stream):
            if packet.size:  # the flush packet at the end has none
                packets += 1
                if first_position < 0 and packet.pos is not None and packet.pos >= 0:
                    first_position = packet.pos
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                bad += 1
                log.warning("skipping an undecodable packet", extra={"error": str(exc)})
                if bad > MAX_BAD_PACKETS:
                    raise InvalidInputError(
                        f"the input is corrupt: more than {MAX_BAD_PACKETS} packets "
                        "could not be decoded"
                    ) from None
                continue
            for frame in frames:
                take(resampler.resample(frame))
    except av.error.FFmpegError as exc:
        # A damaged tail: what came before it is kept for now; the length check (``decode``)
        # then refuses it where the file declared more (a raw stream declares nothing).
        if not total:
            reason = exc.strerror or str(exc)
            raise InvalidInputError(f"the input could not be decoded ({reason})") from None
        log.warning(
            "the input is damaged after %.1f s; using the part before it",
            total / sample_rate,
            extra={"error": str(exc)},
        )
    take(resampler.resample(None))
    found = _Decoded(np.zeros((2, 0), dtype=np.float32), packets, bad, max(first_position, 0))
    if not chunks:
        return found
    audio = np.concatenate(chunks, axis=1)
    chunks.clear()
    if mono:
        audio = np.repeat(audio, 2, axis=0)
    # A float WAV may hold NaN or infinities, which would poison every stem.
    np.nan_to_num(audio, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    found.audio = audio
    return found
