"""Who is calling: the key in a request's headers, checked against the key store. Pure but
for the lookup it is given.

``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Every refusal is the same 401 for
a missing, malformed, unknown, revoked or wrong key (an attacker learns nothing from which);
an expired key says so, since only its holder can have it.
"""

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from stemkube_api.auth.keys import KeyRecord, Quotas, Role, matches, split

API_KEY_HEADER = "x-api-key"
AUTHORIZATION = "authorization"
CHALLENGE = 'Bearer realm="stemkube"'

# key id -> its record, or None (unknown or revoked)
Lookup = Callable[[str], KeyRecord | None]


class UnauthenticatedError(Exception):
    """A 401: no usable key."""


@dataclass(frozen=True)
class Caller:
    tenant: str | None  # None: no tenant (an open service's caller)
    role: Role
    key_name: str
    key_id: str
    quotas: Quotas = field(default_factory=Quotas)

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def sees(self, tenant: str | None) -> bool:
        """Whether a job of ``tenant`` exists for this caller (else: a 404, as if missing)."""
        return self.admin or tenant == self.tenant


# A service without keys (auth off, or local mode on loopback before the first key): everyone
# is this caller, sees every job, and creates jobs of no tenant (the layout from before keys).
OPEN = Caller(tenant=None, role="admin", key_name="(open)", key_id="")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries, if any (header names in lower case)."""
    auth = headers.get(AUTHORIZATION, "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get(API_KEY_HEADER, "").strip()
    return key or None


def identify(headers: Mapping[str, str], lookup: Lookup, now: datetime.datetime) -> Caller:
    """The caller, or UnauthenticatedError with the message a person can act on."""
    key = presented_key(headers)
    if key is None:
        raise UnauthenticatedError(
            "an API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key'"
        )
    parts = split(key)
    record = lookup(parts[0]) if parts else None
    if parts is None or record is None or not matches(record, parts[1]):
        raise UnauthenticatedError("the API key is not valid (unknown, revoked or mistyped)")
    if record.expired(now):
        assert record.expires is not None
        raise UnauthenticatedError(
            f"the API key {record.name!r} expired at {record.expires:%Y-%m-%dT%H:%M:%SZ}"
        )
    return Caller(record.tenant, record.role, record.name, record.key_id, record.quotas)
