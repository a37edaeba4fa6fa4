"""What ``stemkube-api keys`` reads and prints: expiries, quotas, the key list. Pure."""

import datetime
import re
from typing import Any

from stemkube_api.auth.keys import KeyRecord, Quotas
from stemkube_api.sizes import format_size

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, now: datetime.datetime) -> datetime.datetime:
    """``30d``, ``12h``, ``90m``, ``2w`` from now, or a moment (``2027-01-01T00:00:00Z``, a date
    alone is its midnight, UTC when no offset is given). Raises ValueError."""
    raw = text.strip()
    match = _DURATION.match(raw.lower())
    if match:
        amount = int(match.group(1))
        if amount <= 0:
            raise ValueError(f"--expires {text!r}: the duration must be positive")
        return now + datetime.timedelta(seconds=amount * _SECONDS[match.group(2)])
    try:
        moment = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--expires {text!r}: a duration (30d, 12h, 90m, 2w) or a moment (2027-01-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    if moment <= now:
        raise ValueError(f"--expires {text!r} is in the past")
    return moment


def quotas_text(quotas: Quotas) -> str:
    parts = []
    if quotas.requests_per_minute is not None:
        parts.append(f"requests/min={quotas.requests_per_minute}")
    if quotas.active_jobs is not None:
        parts.append(f"active-jobs={quotas.active_jobs}")
    if quotas.audio_minutes_per_day is not None:
        parts.append(f"audio-min/day={quotas.audio_minutes_per_day:g}")
    if quotas.bytes_stored is not None:
        parts.append(f"stored={format_size(quotas.bytes_stored)}")
    return " ".join(parts) or "-"


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(record: KeyRecord, now: datetime.datetime) -> dict[str, Any]:
    """A key as ``keys list --json`` shows it: everything but its hash."""
    return {
        "name": record.name,
        "id": record.key_id,
        "tenant": record.tenant,
        "role": record.role,
        "created": _stamp(record.created),
        "expires": _stamp(record.expires) if record.expires else None,
        "expired": record.expired(now),
        "quotas": {k: v for k, v in vars(record.quotas).items() if v is not None},
    }


HEADERS = ("NAME", "ID", "TENANT", "ROLE", "CREATED", "EXPIRES", "QUOTAS")


def table(records: list[KeyRecord], now: datetime.datetime) -> str:
    """The keys as ``keys list`` prints them: one line each, columns aligned."""
    rows = [HEADERS]
    for record in records:
        expires = _stamp(record.expires) if record.expires else "never"
        if record.expired(now):
            expires += " (expired)"
        rows.append(
            (
                record.name,
                record.key_id,
                record.tenant,
                record.role,
                _stamp(record.created),
                expires,
                quotas_text(record.quotas),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
