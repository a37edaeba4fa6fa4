"""One webhook attempt: a POST of the signed body to the URL, standard library only (the
operator and local mode's worker loop share it). As the separator's URL fetch: the host is
resolved once, every address it resolves to goes through the one address check
(``addresses.check_host``), and the connection goes to a checked address (no second
resolution: DNS rebinding); the Host header and TLS's server name stay the URL's. No redirect
is followed (a 3xx is a failed attempt). Nothing it says names the URL's query."""

import datetime
import http.client
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from stemkube_contract import urls
from stemkube_contract.addresses import (
    AddressPolicy,
    check_host,
    literal_address,
    name_problem,
)
from stemkube_contract.pinned import PinnedConnection, resolve
from stemkube_contract.webhooks import (
    TIMEOUT_SECONDS,
    Attempt,
    Backoff,
    Delivery,
    after_attempt,
    encode,
    headers,
)

# The answer's first bytes kept for the error message (the rest is not read).
ANSWER_BYTES = 4096


def send(
    url: str,
    body: bytes,
    headers: dict[str, str],
    policy: AddressPolicy | None = None,
    timeout: float = TIMEOUT_SECONDS,
) -> Attempt:
    """POSTs ``body`` to ``url``: what came of it (never raises for the network's sake)."""
    shown = urls.redact(url)
    problem = urls.url_problem(url)
    if problem:
        return Attempt(error=f"{shown}: {problem}", refused=True)
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    literal = literal_address(host)
    if literal is None and (local := name_problem(host)):
        return Attempt(error=f"refused: {local}", refused=True)
    try:
        addresses = [literal] if literal is not None else resolve(host, port)
    except socket.gaierror as exc:
        return Attempt(error=f"DNS: {host!r} does not resolve ({exc.strerror})")
    problem = check_host(host, addresses, policy)
    if problem:
        return Attempt(error=f"refused: {problem}", refused=True)
    sock: socket.socket | None = None
    last: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((str(address), port), timeout=timeout)
            break
        except OSError as exc:
            last = exc
    if sock is None:
        if isinstance(last, ConnectionRefusedError):
            return Attempt(error=f"{shown}: connection refused")
        if isinstance(last, TimeoutError):
            return Attempt(error=f"{shown}: connect timed out after {timeout:g} s")
        return Attempt(error=f"{shown}: cannot connect: {last}")
    try:
        sock.settimeout(timeout)
        if https:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        connection = PinnedConnection(host, port, sock, timeout)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        connection.request(
            "POST", target, body=body, headers={**headers, "Content-Length": str(len(body))}
        )
        response = connection.getresponse()
        said = response.read(ANSWER_BYTES)
        if 200 <= response.status < 300:
            return Attempt(status=response.status)
        text = said.decode("utf-8", "replace").strip().splitlines()
        detail = f": {text[0][:200]}" if text else ""
        return Attempt(
            status=response.status,
            error=f"the receiver answered HTTP {response.status} {response.reason}{detail}".strip(),
        )
    except ssl.SSLCertVerificationError as exc:
        return Attempt(error=f"{shown}: TLS: {exc.verify_message}")
    except TimeoutError:
        return Attempt(error=f"{shown}: no answer within {timeout:g} s")
    except (OSError, http.client.HTTPException) as exc:
        return Attempt(error=f"{shown}: {type(exc).__name__}: {exc}")
    finally:
        sock.close()


def deliver(
    url: str,
    body: Mapping[str, Any],
    secret: str | None,
    previous: Delivery | None,
    ended: datetime.datetime,
    backoff: Backoff,
    policy: AddressPolicy | None = None,
    timeout: float = TIMEOUT_SECONDS,
) -> Delivery:
    """One attempt of a job's event (``body``: ``webhooks.payload``), signed with ``secret``
    at this moment: the delivery state that follows. No secret: nothing is sent (an unsigned
    webhook could not be told from a forged one), and it is tried again later."""
    event = str(body["id"])
    now = datetime.datetime.now(datetime.UTC)
    if not secret:
        attempt = Attempt(error="no webhook secret is configured; nothing was sent")
    else:
        raw = encode(body)
        attempt = send(url, raw, headers(secret, raw, event, int(time.time())), policy, timeout)
    return after_attempt(previous, attempt, event, ended, now, backoff)
