"""Local mode's progress file: what a separator run tells its worker while it runs, replaced
whole on every write so a reader never sees half of it.

Line 1: the percentage (what it always was). Line 2, once the song is decoded:
``audio <seconds>``, the song's length (``usage``: the audio quota).
"""

import math
from dataclasses import dataclass

AUDIO_WORD = "audio"


@dataclass(frozen=True)
class Progress:
    percent: int
    audio_seconds: float | None = None


def format_progress(progress: Progress) -> str:
    text = f"{progress.percent}\n"
    if progress.audio_seconds is not None:
        text += f"{AUDIO_WORD} {progress.audio_seconds:.3f}\n"
    return text


def parse_progress(text: str) -> Progress | None:
    """None for anything but a whole file (empty, cut, another program's)."""
    lines = text.splitlines()
    if not lines or not lines[0].isdigit():
        return None
    audio: float | None = None
    for line in lines[1:]:
        word, _, value = line.partition(" ")
        if word == AUDIO_WORD:
            try:
                audio = float(value)
            except ValueError:
                return None
            if not math.isfinite(audio) or audio < 0:
                return None
    return Progress(int(lines[0]), audio)
