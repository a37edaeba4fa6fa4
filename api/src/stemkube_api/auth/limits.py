"""Rate limits and quotas per key: the decisions, pure (the counts come from the caller).

Requests per minute are counted in fixed one-minute windows per key, in each API replica's
memory: behind N replicas a key gets at most N times its limit (documented; the jobs' own
quotas below are exact, being counted from the jobs themselves). Each refusal names the limit
and when it resets.
"""

import datetime
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from stemkube_api.auth.keys import Quotas
from stemkube_contract.usage import WINDOW as DAY
from stemkube_contract.usage import in_window

WINDOW = 60.0  # seconds


@dataclass(frozen=True)
class Refusal:
    status: int  # 429: wait and retry; 403: over a standing quota (delete jobs first)
    message: str
    retry_after: int | None = None  # seconds, for the Retry-After header


class RateLimiter:
    """Fixed windows per key, aligned to the clock's minutes."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.windows: dict[str, tuple[int, int]] = {}  # key id -> (window number, requests)

    def take(self, key_id: str, key_name: str, limit: int | None) -> Refusal | None:
        if limit is None:
            return None
        now = self.clock()
        window = int(now // WINDOW)
        with self.lock:
            seen, count = self.windows.get(key_id, (window, 0))
            if seen != window:
                count = 0
            if count >= limit:
                wait = max(1, math.ceil((window + 1) * WINDOW - now))
                return Refusal(
                    429,
                    f"rate limit of key {key_name!r}: {limit} requests per minute; "
                    f"the next minute starts in {wait} s",
                    wait,
                )
            self.windows[key_id] = (window, count + 1)
            if len(self.windows) > 10000:  # keys that stopped calling: forget old windows
                self.windows = {k: v for k, v in self.windows.items() if v[0] == window}
        return None


@dataclass(frozen=True)
class Usage:
    """What a key's jobs hold now, counted from the jobs themselves."""

    active_jobs: int = 0  # pending or processing
    audio_seconds_today: float = 0.0  # the audio of its jobs created in the last 24 hours
    bytes_stored: int = 0  # its uploads and results
    # When the oldest of today's jobs leaves the 24-hour window, seconds from now.
    day_frees_in: float | None = None


@dataclass(frozen=True)
class Held:
    """What one job holds: whether it is queued or running, and its bytes in storage."""

    active: bool
    stored: int = 0


@dataclass(frozen=True)
class Heard:
    """One job's song, as the audio quota counts it: its length, on the day it was created."""

    created: datetime.datetime
    seconds: float


def usage_of(
    jobs: Iterable[Held], heard: Iterable[Heard] = (), now: datetime.datetime | None = None
) -> Usage:
    """A key's usage from its jobs (each backend says what each of its jobs holds) and the
    songs of the jobs it created, deleted ones too (each once; those of the last day count)."""
    active = stored = 0
    for job in jobs:
        active += job.active
        stored += max(0, job.stored)
    today = [h for h in heard if now is not None and in_window(h.created, now)]
    frees_in = None
    if today and now is not None:
        oldest = min(h.created for h in today)
        frees_in = max(1.0, (oldest + DAY - now).total_seconds())
    return Usage(
        active_jobs=active,
        audio_seconds_today=sum(max(0.0, h.seconds) for h in today),
        bytes_stored=stored,
        day_frees_in=frees_in,
    )


def counts_usage(quotas: Quotas) -> bool:
    """Whether admitting a job of a key with ``quotas`` needs its usage at all."""
    return (
        quotas.active_jobs is not None
        or quotas.bytes_stored is not None
        or quotas.audio_minutes_per_day is not None
    )


def admit_job(
    key_name: str, quotas: Quotas, usage: Usage, size: int, at_least: bool = False
) -> Refusal | None:
    """Whether one more job (``size`` bytes uploaded) fits. A song's length is known once it
    is decoded, so the audio quota refuses new jobs once the day's audio reached it: a key
    may pass it by the songs it had in flight then (at most its ``active_jobs``).
    ``at_least``: ``size`` is what has come of an upload so far."""
    if quotas.active_jobs is not None and usage.active_jobs >= quotas.active_jobs:
        return Refusal(
            429,
            f"key {key_name!r} may have {quotas.active_jobs} job(s) queued or running at once "
            f"and has {usage.active_jobs}; try again when one finishes",
            10,
        )
    if quotas.audio_minutes_per_day is not None:
        used = usage.audio_seconds_today / 60
        if used >= quotas.audio_minutes_per_day:
            frees = math.ceil(usage.day_frees_in) if usage.day_frees_in else None
            when = f"; the oldest of them leaves the window in {frees} s" if frees else ""
            return Refusal(
                429,
                f"key {key_name!r} may separate {quotas.audio_minutes_per_day:g} minute(s) of "
                f"audio in 24 hours and separated {used:.1f}{when}",
                frees,
            )
    if quotas.bytes_stored is not None and usage.bytes_stored + size > quotas.bytes_stored:
        return Refusal(
            403,
            f"key {key_name!r} may keep {quotas.bytes_stored} bytes of uploads and results and "
            f"keeps {usage.bytes_stored}; this upload is {'at least ' if at_least else ''}{size}: "
            "delete finished jobs (or wait for them to expire)",
        )
    return None
