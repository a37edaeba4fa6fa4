"""A song's length, as the audio quota counts it (``--audio-minutes-per-day`` of an API key).

The API stores an upload without decoding it, so the length is learnt from the separator,
once it decoded the song: ``status.audioSeconds`` on the SeparationJob (local mode: the
progress file, ``progressfile``). A job counts for the day it was created in, whatever
becomes of it. So that deleting a job does not give its minutes back, the operator's cleanup
leaves a ledger entry behind for a job of the last day that a key created: an empty object
whose key holds what the quota needs, so one listing counts a key's day without reading an
object.
"""

import datetime
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from stemkube_contract.keys import check_root

AUDIO_SECONDS_FIELD: Final = "audioSeconds"
# The window of the audio quota: the jobs created in the last day.
WINDOW: Final = datetime.timedelta(days=1)
# An API key's public id (``stk_<id>_<secret>``): 12 hex characters.
KEY_ID_PATTERN: Final = r"[0-9a-f]{12}"
_KEY_ID = re.compile(KEY_ID_PATTERN)
USAGE_PREFIX: Final = "usage/"
# [root]usage/<key id>/<created, Unix seconds>-<SeparationJob uid>-<audio, milliseconds>
_ENTRY = re.compile(
    rf"{USAGE_PREFIX}({KEY_ID_PATTERN})/([0-9]{{1,12}})-([0-9a-f-]{{1,64}})-([0-9]{{1,12}})"
)


def valid_key_id(key_id: str) -> bool:
    return bool(_KEY_ID.fullmatch(key_id))


def audio_patch(seconds: float) -> dict[str, Any]:
    """The status merge patch the separator writes once it decoded the song."""
    return {"status": {AUDIO_SECONDS_FIELD: round(max(0.0, seconds), 3)}}


def audio_seconds_of(status: Any) -> float:
    """A SeparationJob status's audio seconds; 0 when not (yet, or validly) written."""
    value = status.get(AUDIO_SECONDS_FIELD) if isinstance(status, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0.0
    return max(0.0, float(value))


@dataclass(frozen=True)
class Entry:
    """One job's audio in a key's ledger."""

    key_id: str
    created: datetime.datetime
    uid: str
    seconds: float


def usage_prefix(key_id: str, root: str = "") -> str:
    """Where a key's entries are, under ``root``: the storage scope's prefix of the namespace
    of its SeparationJobs (``stemkube_contract.scopes``), so that only the jobs of the API's
    own namespace ever count against its keys."""
    if not valid_key_id(key_id):
        raise ValueError(f"not an API key id: {key_id!r}")
    return f"{check_root(root)}{USAGE_PREFIX}{key_id}/"


def usage_key(entry: Entry, root: str = "") -> str:
    uid = entry.uid.lower()
    if not re.fullmatch(r"[0-9a-f-]{1,64}", uid):
        raise ValueError(f"not a uid: {entry.uid!r}")
    created = int(entry.created.timestamp())
    millis = round(max(0.0, entry.seconds) * 1000)
    return f"{usage_prefix(entry.key_id, root)}{created}-{uid}-{millis}"


def parse_usage_key(key: str, root: str = "") -> Entry | None:
    """The entry an object key names under ``root``; None for anything else."""
    if not key.startswith(root):
        return None
    match = _ENTRY.fullmatch(key[len(root) :])
    if match is None:
        return None
    key_id, created, uid, millis = match.groups()
    moment = datetime.datetime.fromtimestamp(int(created), datetime.UTC)
    return Entry(key_id, moment, uid, int(millis) / 1000)


def in_window(created: datetime.datetime, now: datetime.datetime) -> bool:
    return now - WINDOW < created <= now + datetime.timedelta(minutes=5)  # clocks differ
