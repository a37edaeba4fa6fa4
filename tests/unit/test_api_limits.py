"""Rate limits and quotas per key: each refusal names its limit and when it resets."""

from stemkube_api.auth.keys import Quotas
from stemkube_api.auth.limits import RateLimiter, Usage, admit_job


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_refuse_with_the_time_to_the_next_window() -> None:
    clock = Clock(1_000_020.0)  # 20 s into a minute (1_000_020 = 16667 * 60 + 0)
    limiter = RateLimiter(clock)
    assert [limiter.take("k", "ci", 3) for _ in range(3)] == [None, None, None]
    refused = limiter.take("k", "ci", 3)
    assert refused is not None
    assert refused.status == 429
    assert refused.retry_after == 60 - (1_000_020 % 60)
    assert "'ci'" in refused.message
    assert "3 requests per minute" in refused.message
    assert limiter.take("other", "other", 3) is None  # per key
    clock.now += refused.retry_after or 0
    assert limiter.take("k", "ci", 3) is None  # a new window
    assert limiter.take("k", "ci", None) is None  # no limit


def test_job_quotas() -> None:
    none = Quotas()
    assert admit_job("ci", none, Usage(active_jobs=99, bytes_stored=10**12), 10**9) is None
    busy = admit_job("ci", Quotas(active_jobs=2), Usage(active_jobs=2), 1)
    assert busy is not None
    assert busy.status == 429
    assert "2 job(s) queued or running" in busy.message
    tired = admit_job(
        "ci",
        Quotas(audio_minutes_per_day=10),
        Usage(audio_seconds_today=600, day_frees_in=3599.5),
        1,
    )
    assert tired is not None
    assert tired.retry_after == 3600
    assert "10 minute(s) of audio in 24 hours" in tired.message
    assert (
        admit_job("ci", Quotas(audio_minutes_per_day=10), Usage(audio_seconds_today=599), 1) is None
    )
    full = admit_job("ci", Quotas(bytes_stored=100), Usage(bytes_stored=60), 41)
    assert full is not None
    assert full.status == 403
    assert "delete finished jobs" in full.message
    assert admit_job("ci", Quotas(bytes_stored=100), Usage(bytes_stored=60), 40) is None
