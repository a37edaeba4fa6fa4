"""Calling an address a user gave us (URL import, webhooks) without a second DNS answer: the
host's addresses, resolved once (each then judged by ``addresses.check_host``), and an HTTP
connection over a socket already connected to the one that passed, so DNS rebinding cannot
swap it. Standard library only."""

import http.client
import ipaddress
import socket

from stemkube_contract.addresses import IPAddress


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address of ``host`` (a name; raises ``socket.gaierror``), each once."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        try:  # an IPv6 link-local answer carries its zone ("fe80::1%eth0"): judged without it
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        except ValueError:
            continue
        if address not in found:
            found.append(address)
    return found


class PinnedConnection(http.client.HTTPConnection):
    """An HTTP connection over a socket already connected to a checked address (the Host
    header still names the URL's host)."""

    def __init__(self, host: str, port: int, sock: socket.socket, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.sock = sock

    def connect(self) -> None:  # never a connection of its own (no second resolution)
        raise OSError("the connection was closed")
