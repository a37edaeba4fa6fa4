"""The audio quota's ledger entry a deleted SeparationJob leaves behind (pure): where it goes,
and which entries of a key have left the window (``stemkube_contract.usage``)."""

import datetime
from typing import Any

from stemkube_contract import usage
from stemkube_contract.resource import API_KEY_ID_LABEL


def _created(metadata: dict[str, Any]) -> datetime.datetime | None:
    stamp = metadata.get("creationTimestamp")
    if isinstance(stamp, datetime.datetime):  # Kopf's body may hold parsed times
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.UTC)
    try:
        return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None


def entry_for(cr: dict[str, Any], now: datetime.datetime, root: str = "") -> tuple[str, str] | None:
    """(bucket, key) of the entry for a SeparationJob being deleted, under ``root`` (its
    namespace's storage prefix, where the API of that namespace reads it): only one an API key
    created, whose song was decoded, created within the window; else None."""
    metadata = cr.get("metadata") or {}
    key_id = (metadata.get("labels") or {}).get(API_KEY_ID_LABEL)
    seconds = usage.audio_seconds_of(cr.get("status"))
    created = _created(metadata)
    bucket = ((cr.get("spec") or {}).get("output") or {}).get("bucket")
    uid = str(metadata.get("uid") or "")
    if (
        not isinstance(key_id, str)
        or not usage.valid_key_id(key_id)
        or seconds <= 0
        or created is None
        or not usage.in_window(created, now)
        or not bucket
        or not uid
    ):
        return None
    return bucket, usage.usage_key(usage.Entry(key_id, created, uid, seconds), root)


def expired(keys: list[str], now: datetime.datetime, root: str = "") -> list[str]:
    """The entries among ``keys`` (under ``root``) that no longer count (older than the
    window)."""
    out = []
    for key in keys:
        entry = usage.parse_usage_key(key, root)
        if entry is not None and not usage.in_window(entry.created, now):
            out.append(key)
    return out
