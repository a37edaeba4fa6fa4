"""Secure by default: which auth mode a service starts in. Pure.

Kubernetes mode requires keys unless ``STEMKUBE_AUTH=off`` (settings). Local mode on a loopback
address stays open until its first key exists, so the README's curl flow works on a fresh
machine; on any other address it requires keys, and without one it does not start (anyone who
reached the port could use it) unless told ``--no-auth``.
"""

import ipaddress

from stemkube_api.settings import AuthMode


def is_loopback(host: str) -> bool:
    """Whether ``host`` (what --host says) is only reachable from this machine. A name other
    than localhost counts as reachable: what it resolves to may change."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def local_mode(host: str, no_auth: bool, has_keys: bool) -> AuthMode | None:
    """Local mode's auth mode; None: refuse to start (not loopback, no key, no --no-auth)."""
    if no_auth:
        return "off"
    if is_loopback(host):
        return "open-until-keys"
    return "required" if has_keys else None


def kubernetes_mode(from_env: AuthMode, no_auth: bool) -> AuthMode:
    return "off" if no_auth else from_env
