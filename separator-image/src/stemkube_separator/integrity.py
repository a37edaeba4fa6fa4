"""Whether a decoded song is the song its file declares: a file cut short (an interrupted
upload), a damaged middle or a header that lies decodes to less (or more) audio than the
container says it holds, and a separation of it would be a wrong answer given as a right one.

Pure: the facts are gathered by ``decode``; the rules and their tolerances are here.
"""

from dataclasses import dataclass

from stemkube_separator.errors import InvalidInputError

# Decoded audio may fall short of the header by a decoder's priming and padding (AAC and Opus
# trim up to 0.1 s; the last MP3 frame) and one damaged frame skipped: a few hundredths of a
# second. Half a second, or 2% of a long song, is far beyond that and far below what a cut
# upload or a zeroed stretch loses.
SHORT_SECONDS = 0.5
SHORT_FRACTION = 0.02
# More audio than declared is not truncation: only a header that undercounts gives it. Looser,
# since nothing is lost: a second, or a tenth.
LONG_SECONDS = 1.0
LONG_FRACTION = 0.10
# Undecodable packets: a few in a long file are noise (one damaged frame, a cut last packet);
# 1% of the packets, and never more than 100, is a damaged file.
BAD_PACKETS_FLOOR = 3
BAD_PACKETS_FRACTION = 0.01
MAX_BAD_PACKETS = 100
# FFmpeg's estimate from the bit rate (``Estimating duration from bitrate``) is exactly
# (file size - header) * 8 / bit rate; a declared duration within this of it is that guess.
ESTIMATE_MATCH = 0.001


@dataclass(frozen=True)
class Declared:
    """What the container says about its audio, before anything is decoded."""

    seconds: float | None  # None: it declares no duration (a raw stream)
    file_size: int = 0
    data_offset: int = 0  # where the first audio packet starts (after ID3 tags and the like)
    bit_rate: int = 0  # the stream's, bits per second; 0 when unknown


def bit_rate_estimate(declared: Declared) -> bool:
    """Whether the declared duration is only FFmpeg's estimate from the bit rate (an MP3
    without a Xing header, raw ADTS AAC): a guess from the first frames, which a variable
    bitrate song's true length can miss by any amount, and which shrinks with a cut file
    anyway. A header that counts frames (Xing, FLAC's STREAMINFO, MP4's moov, WAV's data size)
    gives another figure for a cut or damaged file, and a complete file's matches its
    decoded length whichever it is."""
    if declared.seconds is None or declared.bit_rate <= 0 or declared.seconds <= 0:
        return False
    estimate = (declared.file_size - declared.data_offset) * 8 / declared.bit_rate
    return abs(estimate - declared.seconds) <= ESTIMATE_MATCH * declared.seconds


def tolerated_bad_packets(packets: int) -> int:
    return min(MAX_BAD_PACKETS, max(BAD_PACKETS_FLOOR, int(packets * BAD_PACKETS_FRACTION)))


def check_packets(packets: int, bad: int) -> None:
    """Refuse a file whose packets too often fail to decode (``packets`` counts them all)."""
    if bad > tolerated_bad_packets(packets):
        raise InvalidInputError(
            f"the input is damaged: {bad} of its {packets} packets could not be decoded"
        )


def check_length(declared: Declared, decoded: float) -> None:
    """Refuse decoded audio (``decoded`` seconds) that is not the length the file declares,
    beyond the tolerances above. Nothing to compare where no duration is declared, or where
    the declared one is FFmpeg's guess from the bit rate."""
    if declared.seconds is None or declared.seconds <= 0 or bit_rate_estimate(declared):
        return
    expected = declared.seconds
    if decoded < expected - max(SHORT_SECONDS, SHORT_FRACTION * expected):
        raise InvalidInputError(
            f"the input is damaged or truncated: its header declares {expected:.2f} s of audio "
            f"but only {decoded:.2f} s could be decoded"
        )
    if decoded > expected + max(LONG_SECONDS, LONG_FRACTION * expected):
        raise InvalidInputError(
            f"the input's header is wrong: it declares {expected:.2f} s of audio but "
            f"{decoded:.2f} s were decoded"
        )
