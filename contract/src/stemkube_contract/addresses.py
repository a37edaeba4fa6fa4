"""The one address check for everything a user can make the service fetch or call (URL import;
later webhooks): no loopback, private, link-local, multicast, unspecified, reserved or shared
(CGNAT) address, no IPv6 form that carries such an IPv4 address, and none of the cluster's own
ranges (its Services and Pods: ``STEMKUBE_URL_DENY_CIDRS``, set by the chart). Pure: the caller
resolves the host (or reads a literal with ``literal_address``) and connects to an address this
check allowed, never resolving the name a second time (DNS rebinding).

A test-only allow-list, ``STEMKUBE_URL_ALLOW_CIDRS`` (e.g. ``127.0.0.0/8``), lets a test tier's
loopback server through; no deployment sets it (the chart has no value for it).
"""

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The cluster's own ranges (Service and Pod CIDRs), comma- or space-separated: refused.
DENY_CIDRS_ENV: Final = "STEMKUBE_URL_DENY_CIDRS"
# Test only: ranges allowed whatever the rules below say (the test tier's loopback server).
ALLOW_CIDRS_ENV: Final = "STEMKUBE_URL_ALLOW_CIDRS"

_CGNAT = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 shared address space
# IPv6 prefixes that carry an IPv4 address a gateway forwards to: NAT64 (RFC 6052, RFC 8215)
# and 6to4 (RFC 3056).
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # ::a.b.c.d (deprecated, RFC 4291)


def parse_cidrs(text: str, name: str = "CIDRs") -> tuple[IPNetwork, ...]:
    """``"10.96.0.0/12, 10.244.0.0/16 fd00::/8"`` -> networks; a bare address is its /32 or
    /128. ValueError naming ``name`` and the bad entry."""
    networks: list[IPNetwork] = []
    for entry in re.split(r"[,\s]+", text.strip()):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"{name}: {entry!r} is not a CIDR range ({exc})") from None
    return tuple(networks)


@dataclass(frozen=True)
class AddressPolicy:
    """What is refused beyond the fixed rules (``deny``: the cluster's ranges) and what is
    allowed whatever they say (``allow``: tests only)."""

    deny: tuple[IPNetwork, ...] = ()
    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "AddressPolicy":
        """From ``STEMKUBE_URL_DENY_CIDRS`` and ``STEMKUBE_URL_ALLOW_CIDRS`` (unset: none);
        ValueError naming the variable."""
        return cls(
            deny=parse_cidrs(env.get(DENY_CIDRS_ENV, ""), DENY_CIDRS_ENV),
            allow=parse_cidrs(env.get(ALLOW_CIDRS_ENV, ""), ALLOW_CIDRS_ENV),
        )

    def env(self) -> dict[str, str]:
        """The variables that give this policy (empty ones left out)."""
        out = {}
        if self.deny:
            out[DENY_CIDRS_ENV] = ",".join(str(n) for n in self.deny)
        if self.allow:
            out[ALLOW_CIDRS_ENV] = ",".join(str(n) for n in self.allow)
        return out


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: mapped (``::ffff:a.b.c.d``), compatible
    (``::a.b.c.d``), NAT64 (``64:ff9b::a.b.c.d``) or 6to4 (``2002:AABB:CCDD::``)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _in(ip: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def _kind(ip: IPAddress) -> str | None:
    """What makes ``ip`` no public address, in words; None for a public one."""
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a shared (carrier-grade NAT) address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def _show(ip: IPAddress) -> str:
    inner = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return f"::ffff:{inner}" if inner is not None else str(ip)


def address_problem(ip: IPAddress | str, policy: AddressPolicy | None = None) -> str | None:
    """Why the service may not connect to ``ip``, in words (``"127.0.0.1 is a loopback
    address"``); None when it may. An IPv6 form of an IPv4 address (mapped, compatible,
    NAT64, 6to4) is judged as that IPv4 address first, then as itself."""
    policy = policy or AddressPolicy()
    ip = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    if policy.allow and (_in(ip, policy.allow) or (inner is not None and _in(inner, policy.allow))):
        return None
    candidates: list[IPAddress] = [ip] if inner is None else [inner, ip]
    for candidate in candidates:
        shown = f"{_show(ip)} (the IPv4 address {candidate})" if candidate is inner else _show(ip)
        if _in(candidate, policy.deny):
            return f"{shown} is in the cluster's own ranges"
        kind = _kind(candidate)
        if kind is not None:
            return f"{shown} is {kind}"
    return None


_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def name_problem(host: str) -> str | None:
    """Why a host name is refused before any resolution: the names that mean this machine
    (RFC 6761's ``localhost`` and its subdomains, with or without the final dot)."""
    name = host.lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return f"{host!r} names this machine (loopback)"
    return None


_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """``host`` as the C library's ``inet_aton`` reads it (what a resolver does with a numeric
    name before any DNS): one to four parts, each decimal, octal (``0177``) or hexadecimal
    (``0x7f``); the last part fills the bytes left (``127.1``, ``2130706433``). None when
    it is not such a number."""
    parts = host.split(".")
    if host.endswith("."):  # "127.0.0.1." is numeric too for some resolvers
        parts = parts[:-1]
    if not 1 <= len(parts) <= 4 or not all(_PART.match(p) for p in parts):
        return None
    values = []
    for part in parts:
        if part[:2].lower() == "0x":
            values.append(int(part[2:] or "0", 16))
        elif part.startswith("0") and len(part) > 1:
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for v in head:
        number = number << 8 | v
    number = number << (8 * (4 - len(head))) | last
    return ipaddress.IPv4Address(number)


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host spells without any resolution: an IPv6 literal (``[::1]`` or
    ``::1``, a zone index refused as not literal), dotted IPv4 and every form ``inet_aton``
    reads (``127.1``, ``2130706433``, ``0x7f000001``, ``0177.0.0.1``); None for a name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _inet_aton(text)


def check_host(
    host: str, addresses: Iterable[IPAddress | str], policy: AddressPolicy | None = None
) -> str | None:
    """The check itself: ``host`` (a URL's, as written) and every address it resolved to ->
    None when the service may connect to each of them, else why not, naming the host and the
    first address refused. No address at all is refused too (nothing was checked)."""
    policy = policy or AddressPolicy()
    literal = literal_address(host)
    if literal is None:
        problem = name_problem(host)
        if problem is not None:
            return problem
    listed = [literal] if literal is not None else list(addresses)
    if not listed:
        return f"{host!r} resolved to no address"
    for address in listed:
        problem = address_problem(address, policy)
        if problem is not None:
            return problem if literal is not None else f"{host!r} resolves to {problem}"
    return None
