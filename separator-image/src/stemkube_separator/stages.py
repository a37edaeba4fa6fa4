"""Where the program's wall time goes: every second from the process's start to its end belongs
to exactly one named stage (the ``timings`` field of the last log line).

One clock, read once per boundary: each ``lap`` gives the time since the previous boundary to
the stage that just ended, so the stages add up to the wall time by construction and nothing
between two stages is lost. The first stage, ``import``, starts at the process's own start
time as the kernel recorded it (Python's start-up and the imports of torch, Demucs and PyAV
come before any line of the program runs).
"""

import os
import time
from pathlib import Path
from typing import Protocol

# The stages in the order a run goes through them (``encode`` and ``separate`` alternate).
IMPORT = "import"  # process start to main(): the interpreter, torch, Demucs, PyAV...
SETUP = "setup"  # the command line, logging, the progress reporter
LOAD_MODEL = "load_model"  # threads, allocator, device, precision, the model's weights
FETCH = "fetch"  # INPUT to a local file (the S3 download)
DECODE = "decode"
SEPARATE = "separate"  # the model, chunk by chunk
ENCODE = "encode"  # between chunks: handing stems to the encoders, waiting for them
ENCODE_TAIL = "encode_tail"  # after the last chunk: its stems' encoding, completing the files
STORE = "store"  # the ZIP streamed to OUTPUT (the multipart upload)
FINISH = "finish"  # the last progress write, temporary files removed, the reporter closed
ORDER = (
    IMPORT,
    SETUP,
    LOAD_MODEL,
    FETCH,
    DECODE,
    SEPARATE,
    ENCODE,
    ENCODE_TAIL,
    STORE,
    FINISH,
)


def process_age() -> float | None:
    """Seconds since this process started (Linux: ``/proc/self/stat``'s start time, in clock
    ticks since boot, 10 ms on every common kernel); None where that is not available."""
    try:
        stat = Path("/proc/self/stat").read_text(encoding="ascii")
        # Field 22 (starttime); the command name (field 2) may hold spaces and parentheses.
        start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
        ticks = os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / ticks)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class Stages:
    """Seconds per stage, measured as consecutive laps of one monotonic clock."""

    def __init__(self, origin: float | None = None) -> None:
        self.origin = time.monotonic() if origin is None else origin
        self.clock = self.origin
        self.seconds: dict[str, float] = {}

    @classmethod
    def since_process_start(cls) -> "Stages":
        """Stages whose clock starts when the process did (not when this is called)."""
        now = time.monotonic()
        return cls(now - (process_age() or 0.0))

    def lap(self, stage: str, now: float | None = None) -> float:
        """Give the time since the previous lap to ``stage`` (added to what it already has:
        stages that alternate accumulate); return that time. ``now``: a reading of the
        clock shared with other ``Stages`` lapped at the same boundary."""
        now = time.monotonic() if now is None else now
        elapsed = now - self.clock
        self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed
        self.clock = now
        return elapsed

    def idle(self, now: float | None = None) -> None:
        """Move the clock on without giving the time to any stage: a batch member waiting
        for work another thread does for it and counts in its own stages. The process's
        stages never idle (their sum is its wall)."""
        self.clock = time.monotonic() if now is None else now

    def wall(self) -> float:
        """Seconds from the origin to the last lap: the sum of the stages."""
        return self.clock - self.origin

    def timings(self) -> dict[str, float]:
        """The stages in run order, rounded to milliseconds, for the log."""
        ordered = sorted(self.seconds, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))
        return {stage: round(self.seconds[stage], 3) for stage in ordered}


class Laps(Protocol):
    """What a step of the separation needs of its clock: the end of a stage."""

    def lap(self, stage: str) -> float: ...


class Both:
    """Laps given to two ``Stages`` at one reading of the clock: a batch member's steps count
    in the process's stages and in the member's own."""

    def __init__(self, process: Stages, member: Stages) -> None:
        self.process, self.member = process, member

    def lap(self, stage: str) -> float:
        now = time.monotonic()
        self.member.lap(stage, now)
        return self.process.lap(stage, now)

    def wait(self, stage: str) -> float:
        """The process waited for another thread's ``stage`` of this member: the process's
        time, not the member's (that thread counted the work itself)."""
        now = time.monotonic()
        self.member.idle(now)
        return self.process.lap(stage, now)


def merged(*parts: Stages) -> dict[str, float]:
    """Several ``Stages``' seconds added up by stage, in run order, rounded as ``timings``."""
    total: dict[str, float] = {}
    for part in parts:
        for stage, seconds in part.seconds.items():
            total[stage] = total.get(stage, 0.0) + seconds
    ordered = sorted(total, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))
    return {stage: round(total[stage], 3) for stage in ordered}
