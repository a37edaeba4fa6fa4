"""API keys: their form, their hashes and what each grants. Pure.

A key reads ``stk_<id>_<secret>``: the prefix makes a leaked key easy to recognise (secret
scanners, logs), the id (12 hex characters, public) finds its record without a scan, and the
secret (32 random bytes, base64url) is never stored: only its SHA-256 is. A fast hash is
right here: the secret has 256 bits of entropy, so there is nothing for a slow hash to
protect against, and every request checks one.
"""

import datetime
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Literal

PREFIX = "stk_"
ID_BYTES = 6
SECRET_BYTES = 32
_FORM = re.compile(r"stk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# A tenant names a label value and an object key prefix: DNS-label-like, lower case.
TENANT_PATTERN = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")


@dataclass(frozen=True)
class Quotas:
    """Per key; None is no limit."""

    requests_per_minute: int | None = None
    active_jobs: int | None = None  # queued or running at once
    audio_minutes_per_day: float | None = None  # the audio of the jobs created in 24 hours
    bytes_stored: int | None = None  # uploads and results kept


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    name: str
    tenant: str
    role: Role
    digest: str  # SHA-256 of the secret, hex
    created: datetime.datetime
    expires: datetime.datetime | None = None
    quotas: Quotas = field(default_factory=Quotas)

    def expired(self, now: datetime.datetime) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True)
class NewKey:
    record: KeyRecord
    plaintext: str  # shown once, at creation


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split(plaintext: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    match = _FORM.fullmatch(plaintext.strip())
    return (match.group(1), match.group(2)) if match else None


def matches(record: KeyRecord, secret: str) -> bool:
    """Constant time: how much of a guessed secret was right never shows in the answer's time."""
    return hmac.compare_digest(record.digest, digest(secret))


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"key name {name!r}: 1-63 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def check_tenant(tenant: str) -> str:
    if not TENANT_PATTERN.fullmatch(tenant):
        raise ValueError(
            f"tenant {tenant!r}: 1-32 lower-case letters, digits or '-', not starting or "
            "ending with '-'"
        )
    return tenant


def create(
    name: str,
    tenant: str,
    role: Role,
    now: datetime.datetime,
    expires: datetime.datetime | None = None,
    quotas: Quotas | None = None,
) -> NewKey:
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
    if expires is not None and expires <= now:
        raise ValueError("the expiry is in the past")
    key_id = secrets.token_hex(ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    record = KeyRecord(
        key_id=key_id,
        name=check_name(name),
        tenant=check_tenant(tenant),
        role=role,
        digest=digest(secret),
        created=now,
        expires=expires,
        quotas=quotas or Quotas(),
    )
    return NewKey(record, f"{PREFIX}{key_id}_{secret}")
