"""Time stamps as the Kubernetes API writes them, and durations as kubectl shows them."""

import datetime


def rfc3339(moment: datetime.datetime) -> str:
    """Seconds precision, UTC, ``Z``: what ``metav1.Time`` holds."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def precise_stamp(moment: datetime.datetime) -> str:
    """Microseconds, UTC, ``Z``: orders jobs created within one second."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def human_duration(seconds: float) -> str:
    """Like kubectl's: 45s, 3m12s, 2h5m."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
