"""Where keys are kept: one interface, a store per mode (local: SQLite in the data folder;
Kubernetes: labelled Secrets in the release namespace). Records hold hashes, never keys."""

import datetime
import json
from typing import Any, Protocol

from stemkube_api.auth.keys import ROLES, KeyRecord, Quotas, Role


class KeyStore(Protocol):
    def start(self) -> None:
        """Begins following the stored keys (a watch), for a serving API; the command line
        reads without it."""
        ...

    def stop(self) -> None: ...

    def check(self) -> None:
        """Raises UnavailableError (interfaces) unless lookups answer from the stored keys:
        a replica that has not read them yet must not call every key unknown."""
        ...

    def lookup(self, key_id: str) -> KeyRecord | None:
        """The key's record; None when unknown or revoked. Called on every request."""
        ...

    def any_keys(self) -> bool: ...

    def add(self, record: KeyRecord) -> None: ...

    def records(self) -> list[KeyRecord]: ...

    def revoke(self, name_or_id: str) -> list[KeyRecord]:
        """Removes the keys with that name or id; those removed."""
        ...


def _stamp(when: datetime.datetime | None) -> str | None:
    return when.astimezone(datetime.UTC).isoformat() if when else None


def _time(text: Any) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(text) if isinstance(text, str) and text else None


def to_json(record: KeyRecord) -> str:
    quotas = {k: v for k, v in vars(record.quotas).items() if v is not None}
    return json.dumps(
        {
            "id": record.key_id,
            "name": record.name,
            "tenant": record.tenant,
            "role": record.role,
            "sha256": record.digest,
            "created": _stamp(record.created),
            "expires": _stamp(record.expires),
            "quotas": quotas,
        },
        sort_keys=True,
    )


def from_json(text: str) -> KeyRecord | None:
    """A stored record; None for anything malformed (never a half-read key)."""
    try:
        data = json.loads(text)
        role: Role = data["role"]
        created = _time(data["created"])
        if role not in ROLES or created is None:
            return None
        return KeyRecord(
            key_id=str(data["id"]),
            name=str(data["name"]),
            tenant=str(data["tenant"]),
            role=role,
            digest=str(data["sha256"]),
            created=created,
            expires=_time(data.get("expires")),
            quotas=Quotas(**(data.get("quotas") or {})),
        )
    except (ValueError, KeyError, TypeError):
        return None
