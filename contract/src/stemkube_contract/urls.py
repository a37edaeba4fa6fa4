"""A job's source URL (``POST /jobs`` with ``{"source": {"url": ...}}``): its form, checked by
the API before a job exists (nothing is resolved or fetched there), how it is shown (never
with its query: a presigned link's signature is a credential), and how it reaches the
separator (``SeparationJob.spec.input.url``, then the Job's environment, never its command
line). The fetch and its address check belong to the separator (``addresses``)."""

import posixpath
import urllib.parse
from typing import Final

MAX_URL_LENGTH: Final = 2048
SCHEMES: Final = ("http", "https")
MAX_REDIRECTS: Final = 5
# The CRD's pattern for spec.input.url (what a schema can say of url_problem's rules; the
# contract test compares them): http(s), a host, no user information, no whitespace.
URL_PATTERN: Final = r"^[hH][tT][tT][pP][sS]?://[^/@?#\s]+([/?#]\S*)?$"
# The separator reads a URL INPUT from this variable when INPUT is ``INPUT_FROM_ENV``: the Job
# gets it in its environment (a Secret's or the CR's value), not in its arguments (``ps``).
INPUT_URL_ENV: Final = "STEMKUBE_INPUT_URL"
INPUT_FROM_ENV: Final = f"env:{INPUT_URL_ENV}"
# Fetch limits (the separator's defaults): seconds to connect, between two reads, in all.
CONNECT_TIMEOUT: Final = 10.0
READ_TIMEOUT: Final = 30.0
DEADLINE: Final = 600.0
CONNECT_TIMEOUT_ENV: Final = "STEMKUBE_URL_CONNECT_TIMEOUT"
READ_TIMEOUT_ENV: Final = "STEMKUBE_URL_READ_TIMEOUT"
DEADLINE_ENV: Final = "STEMKUBE_URL_DEADLINE"


def is_url(text: str) -> bool:
    """Whether an INPUT is a URL this service fetches (http or https), by its scheme alone."""
    return text[:8].lower().startswith(("http://", "https://"))


def url_problem(url: str) -> str | None:
    """What is wrong with a source URL's form, in words; None when it may be fetched (its
    address is the separator's to check). http(s) only, at most ``MAX_URL_LENGTH``
    characters, a host, no user or password in it (``user:pass@``: a credential would be
    stored and shown), no whitespace or control characters, a valid port."""
    if not isinstance(url, str) or not url:
        return "a URL is required"
    if len(url) > MAX_URL_LENGTH:
        return f"the URL is {len(url)} characters long; the limit is {MAX_URL_LENGTH}"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "the URL holds whitespace or control characters (percent-encode them)"
    if not url.isascii():
        return "the URL holds characters that are not ASCII (percent-encode them)"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme.lower() not in SCHEMES:
        shown = f"{parts.scheme!r}" if parts.scheme else "none"
        return f"the scheme must be http or https, not {shown}"
    if "@" in parts.netloc:
        return "the URL must not hold a user name or password (user:pass@host)"
    if not parts.hostname:
        return "the URL has no host"
    if port == 0:
        return "the URL's port must be 1 to 65535"
    return None


def redact(url: str) -> str:
    """``url`` as logs and answers show it: scheme, host, port and path; no user information,
    query or fragment (a presigned link's signature lives in its query)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<a malformed URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc, parts.path, "", ""))


def filename_of(url: str) -> str:
    """A name for the job's song (metadata, and the download's name): the URL's last path
    segment, percent-decoded; else its host."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "download"
    name = posixpath.basename(urllib.parse.unquote(parts.path))
    name = "".join(c for c in name if c.isprintable() and c not in "/\\").strip()
    if name in ("", ".", ".."):
        name = parts.hostname or "download"
    return name[:255]
