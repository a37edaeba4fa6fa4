"""The limits on an input song that every part enforces: its size in bytes (``MAX_FILE_SIZE``:
the API refuses a larger upload, the separator a larger object, whoever created the
SeparationJob) and its length in seconds (``STEMKUBE_MAX_DURATION``), and the scratch space a
separation of such a song can need. Sizes are written as people write them (``500MB``)."""

import re
from collections.abc import Mapping
from typing import Final

MAX_FILE_SIZE_ENV: Final = "MAX_FILE_SIZE"
DEFAULT_MAX_FILE_SIZE: Final = "500MB"
MAX_DURATION_ENV: Final = "STEMKUBE_MAX_DURATION"
DEFAULT_MAX_DURATION: Final = 3600.0  # seconds

# Binary multiples, as nginx's client_max_body_size and Docker read "MB": 100MB = 100 MiB.
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """``"500MB"`` -> 524288000; ``"1.5GB"``, ``"100 MiB"``, ``"1048576"`` work too.
    Raises ValueError naming what is wrong."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (expected e.g. 100MB, 1.5GB, 1048576)")
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown size unit {unit!r} in {text!r} (use B, KB, MB, GB or TB)")
    value = int(float(number) * factor)
    if value <= 0:
        raise ValueError(f"a size must be positive, not {text!r}")
    return value


def format_size(size: int) -> str:
    """524288000 -> ``"500MB"``; 1610612736 -> ``"1.5GB"``; 1000 -> ``"1000B"``."""
    for unit, factor in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor:
            value = size / factor
            text = f"{value:.2f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return f"{size}B"


def max_file_size_from_env(env: Mapping[str, str]) -> int:
    """``MAX_FILE_SIZE`` in bytes (unset or empty: 500MB); ValueError naming the variable."""
    try:
        return parse_size(env.get(MAX_FILE_SIZE_ENV) or DEFAULT_MAX_FILE_SIZE)
    except ValueError as exc:
        raise ValueError(f"{MAX_FILE_SIZE_ENV}: {exc}") from None


# What the stems of one second of song take on disk, per stem, by output format: stereo at
# Demucs's 44.1 kHz. FLAC is bounded by the PCM it compresses (its worst case, noise, is
# PCM plus a few header bytes a frame); MP3 is its constant bitrate.
STEM_RATE: Final = 44100
_PCM_BYTES = {"16": 2, "24": 3, "32f": 4}
# Room for what is not the song: Demucs's hub cache (HOME is the scratch folder; a bag of
# four models is about 330 MB) and the encoders' small temporary files.
SCRATCH_HEADROOM: Final = 1024**3


def stem_bytes_per_second(fmt: str, wav_depth: str = "16", bitrate: int = 320) -> int:
    """The most one second of one stem takes in ``fmt`` (mp3, wav, flac)."""
    if fmt == "mp3":
        return bitrate * 1000 // 8
    depth = "24" if fmt == "flac" and wav_depth == "32f" else wav_depth
    return 2 * STEM_RATE * _PCM_BYTES.get(depth, 4)


def scratch_bytes(
    max_file_size: int,
    stems: int,
    stem_rate: int,
    max_duration: float = DEFAULT_MAX_DURATION,
    songs: int = 1,
) -> int:
    """The scratch space a separation can fill: the download (at most ``max_file_size``)
    plus the encoded stems of the longest song accepted (``stems`` files of ``stem_rate``
    bytes a second), for each of ``songs`` in flight at once (a batch holds the next
    member's download and the previous member's stems beside the current one's), plus
    ``SCRATCH_HEADROOM``."""
    song = max_file_size + stems * stem_rate * int(max_duration + 1)
    return songs * song + SCRATCH_HEADROOM
