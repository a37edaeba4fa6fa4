"""A song from an http(s) URL into the scratch folder (``SeparationJob.spec.input.url``, local
mode's URL jobs), with the checks a fetch the user points anywhere needs:

- http and https only, no user information, at most ``MAX_REDIRECTS`` redirects, each hop
  checked as the first;
- every address the host resolves to is checked (``stemkube_contract.addresses``: loopback,
  private, link-local, CGNAT, multicast, reserved, IPv6 forms of those, the cluster's ranges)
  before any connection, and the connection goes to a checked address itself: the name is
  never resolved a second time by someone else (DNS rebinding); numeric hosts (``127.1``,
  ``2130706433``, ``0x7f000001``) and ``localhost`` names are judged without any lookup;
- a connect timeout, a read timeout (between two reads) and a deadline for the whole fetch;
- the size limit from ``Content-Length`` before the body, and counted while it streams (one
  byte past the limit ends it; the partial file is removed);
- an HTML or other text answer is refused as ``NotAudio`` from its type or first bytes.

Failures are the contract's source codes (``errors``). Nothing logged or said here holds the
URL's query or user information (``urls.redact``): a presigned link's signature is a secret.
"""

import http.client
import logging
import os
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stemkube_contract import pinned, urls
from stemkube_contract.addresses import (
    AddressPolicy,
    IPAddress,
    check_host,
    literal_address,
    name_problem,
)
from stemkube_contract.limits import format_size
from stemkube_separator.errors import (
    NotAudioError,
    SourceForbiddenError,
    SourceTooLargeError,
    SourceUnavailableError,
    SourceUnreachableError,
    UsageError,
)

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
USER_AGENT = "stemkube-separator (+https://github.com/stemkube)"
REDIRECTS = (301, 302, 303, 307, 308)
# Answers worth another try: the server's trouble, or its asking us to wait.
RETRY_STATUSES = (408, 425, 429)
_TEXT_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "application/xml",
    "text/xml",
    "application/json",
    "text/plain",
    "text/css",
    "application/javascript",
    "text/javascript",
)
_MARKUP = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<!--", b"<script", b"<svg")


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise UsageError(f"{name}={text!r}: expected a positive number of seconds")
    return value


@dataclass(frozen=True)
class FetchSettings:
    """How a URL is fetched: what addresses are refused or allowed, and the timeouts."""

    policy: AddressPolicy = field(default_factory=AddressPolicy)
    connect_timeout: float = urls.CONNECT_TIMEOUT
    read_timeout: float = urls.READ_TIMEOUT
    deadline: float = urls.DEADLINE

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "FetchSettings":
        """``STEMKUBE_URL_DENY_CIDRS``, ``STEMKUBE_URL_ALLOW_CIDRS`` (tests only) and the
        timeouts; a malformed value is a usage error naming its variable."""
        try:
            policy = AddressPolicy.from_env(env)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return cls(
            policy,
            _seconds(env, urls.CONNECT_TIMEOUT_ENV, urls.CONNECT_TIMEOUT),
            _seconds(env, urls.READ_TIMEOUT_ENV, urls.READ_TIMEOUT),
            _seconds(env, urls.DEADLINE_ENV, urls.DEADLINE),
        )


@dataclass(frozen=True)
class SourceURL:
    """An INPUT fetched over http(s). Shown without its query (``__str__``)."""

    url: str = field(repr=False)
    settings: FetchSettings = field(default_factory=FetchSettings, repr=False, compare=False)

    def __str__(self) -> str:
        return urls.redact(self.url)


class _Clock:
    def __init__(self, deadline: float) -> None:
        self.limit = deadline
        self.end = time.monotonic() + deadline

    def left(self, shown: str) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise SourceUnavailableError(
                f"fetching {shown}: it took longer than the {self.limit:g} s allowed"
            )
        return left


def _resolve(host: str, port: int, shown: str) -> list[IPAddress]:
    """Every address of ``host`` (a name: literals never get here)."""
    try:
        found = pinned.resolve(host, port)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_AGAIN,):
            raise SourceUnavailableError(
                f"fetching {shown}: DNS lookup of {host!r} failed for now: {exc.strerror}"
            ) from None
        raise SourceUnreachableError(
            f"fetching {shown}: DNS: the host {host!r} does not resolve ({exc.strerror})"
        ) from None
    return found


def _connect(
    addresses: list[IPAddress], port: int, settings: FetchSettings, clock: _Clock, shown: str
) -> socket.socket:
    """A connection to the first checked address that takes one."""
    last: OSError | None = None
    for address in addresses:
        timeout = min(settings.connect_timeout, clock.left(shown))
        try:
            return socket.create_connection((str(address), port), timeout=timeout)
        except OSError as exc:  # the next address, if any
            last = exc
    if isinstance(last, TimeoutError):
        raise SourceUnavailableError(
            f"fetching {shown}: connect timed out after {settings.connect_timeout:g} s"
        )
    if isinstance(last, ConnectionRefusedError):
        raise SourceUnreachableError(f"fetching {shown}: connection refused")
    raise SourceUnavailableError(f"fetching {shown}: cannot connect: {last}")


def _open(
    url: str, settings: FetchSettings, clock: _Clock
) -> tuple[http.client.HTTPResponse, socket.socket]:
    """One hop: checks, connects, sends the GET, returns the answer's head."""
    shown = urls.redact(url)
    problem = urls.url_problem(url)
    if problem:
        raise SourceUnreachableError(f"fetching {shown}: {problem}")
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    literal = literal_address(host)
    if literal is None and (local := name_problem(host)):  # before any lookup
        raise SourceForbiddenError(f"fetching {shown}: refused: {local}")
    addresses = [literal] if literal is not None else _resolve(host, port, shown)
    problem = check_host(host, addresses, settings.policy)
    if problem:
        raise SourceForbiddenError(f"fetching {shown}: refused: {problem}")
    sock = _connect(addresses, port, settings, clock, shown)
    try:
        sock.settimeout(min(settings.read_timeout, clock.left(shown)))
        if https:
            context = ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=host)
        connection = pinned.PinnedConnection(host, port, sock, settings.read_timeout)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.putheader("User-Agent", USER_AGENT)
        connection.putheader("Accept", "audio/*, video/*;q=0.5, */*;q=0.1")
        connection.putheader("Accept-Encoding", "identity")
        connection.endheaders()
        return connection.getresponse(), sock
    except ssl.SSLCertVerificationError as exc:  # the same on any try
        sock.close()
        raise SourceUnreachableError(f"fetching {shown}: TLS: {exc.verify_message}") from None
    except ssl.SSLError as exc:  # a handshake cut short...: another try may do
        sock.close()
        raise SourceUnavailableError(f"fetching {shown}: TLS: {exc}") from None
    except TimeoutError:
        sock.close()
        raise SourceUnavailableError(
            f"fetching {shown}: no answer within {settings.read_timeout:g} s"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        sock.close()
        raise SourceUnavailableError(f"fetching {shown}: {type(exc).__name__}: {exc}") from None


def _status_error(url: str, response: http.client.HTTPResponse) -> Exception:
    said = f"fetching {urls.redact(url)}: HTTP {response.status} {response.reason}".rstrip()
    if response.status >= 500 or response.status in RETRY_STATUSES:
        return SourceUnavailableError(said)
    if response.status >= 400:
        return SourceUnreachableError(said)
    return SourceUnreachableError(f"{said}: no file in the answer")


def _check_type(url: str, response: http.client.HTTPResponse) -> None:
    kind = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
    if kind in _TEXT_TYPES:
        raise NotAudioError(
            f"{urls.redact(url)} is not audio: the server answered with {kind}, not a song"
        )


def _check_head(url: str, head: bytes) -> None:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith(_MARKUP):
        raise NotAudioError(f"{urls.redact(url)} is not audio: the answer is an HTML/XML page")


def too_large(url: str, limit: int, size: int | None = None) -> SourceTooLargeError:
    """``size``: what the server said (Content-Length); None: counted while streaming."""
    said = f"it is {format_size(size)} ({size} bytes)" if size is not None else "more arrived"
    return SourceTooLargeError(
        f"the file at {urls.redact(url)} is larger than the limit of {format_size(limit)} "
        f"({limit} bytes): {said}; nothing was kept"
    )


def fetch(source: SourceURL, target: Path, max_size: int) -> Path:
    """The file at ``source`` into ``target``, or a source error and no ``target``."""
    settings = source.settings
    clock = _Clock(settings.deadline)
    url = source.url
    log.info("fetching %s", urls.redact(url))
    for hop in range(urls.MAX_REDIRECTS + 1):
        response, sock = _open(url, settings, clock)
        try:
            if response.status in REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise SourceUnreachableError(
                        f"fetching {urls.redact(url)}: HTTP {response.status} without a Location"
                    )
                following = urllib.parse.urljoin(url, location.strip())
                if hop == urls.MAX_REDIRECTS:
                    raise SourceUnreachableError(
                        f"fetching {urls.redact(source.url)}: more than {urls.MAX_REDIRECTS} "
                        "redirects"
                    )
                log.info("%s redirects to %s", urls.redact(url), urls.redact(following))
                url = following
                continue
            if response.status != 200:
                raise _status_error(url, response)
            _check_type(url, response)
            length = response.getheader("Content-Length")
            if length and length.strip().isdigit() and int(length) > max_size:
                raise too_large(url, max_size, int(length))
            _stream(url, response, sock, target, max_size, settings, clock)
            return target
        finally:
            response.close()
            sock.close()
    raise AssertionError("unreachable")  # pragma: no cover


def _stream(
    url: str,
    response: http.client.HTTPResponse,
    sock: socket.socket,
    target: Path,
    max_size: int,
    settings: FetchSettings,
    clock: _Clock,
) -> None:
    shown = urls.redact(url)
    written = 0
    started = time.monotonic()
    try:
        with target.open("wb") as file:
            while True:
                # Each read waits at most the read timeout, and never past the deadline.
                sock.settimeout(min(settings.read_timeout, clock.left(shown)))
                try:
                    chunk = response.read1(CHUNK)
                except TimeoutError:
                    if clock.end - time.monotonic() <= 0:
                        clock.left(shown)
                    raise SourceUnavailableError(
                        f"fetching {shown}: read timed out (nothing for "
                        f"{settings.read_timeout:g} s) after {written} bytes"
                    ) from None
                except (OSError, http.client.HTTPException) as exc:
                    raise SourceUnavailableError(
                        f"fetching {shown}: the download broke off after {written} bytes: "
                        f"{type(exc).__name__}"
                    ) from None
                if not chunk:
                    break
                if written == 0:
                    _check_head(url, chunk)
                written += len(chunk)
                if written > max_size:
                    raise too_large(url, max_size)
                file.write(chunk)
        if written == 0:
            raise NotAudioError(f"{shown} is not audio: the answer is empty")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    log.info(
        "fetched %s: %d bytes in %.2f s",
        shown,
        written,
        time.monotonic() - started,
        extra={"bytes": written, "pid": os.getpid()},
    )
