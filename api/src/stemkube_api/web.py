"""Web hygiene for every response: security headers, bounded request heads, and cross-origin
reads only for the origins a deployment allows (none by default)."""

import json
from collections.abc import Sequence

from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A JSON API and file downloads: nothing of ours is to be framed, sniffed into HTML or run.
HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# HTML pages (the interactive docs) load their own scripts and styles: only framing is barred.
PAGE_CSP = "frame-ancestors 'none'"
# The web page for people (/ui/): its own scripts and styles only (no inline ones), audio decoded
# from fetched stems (blob:), requests to this origin only.
UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
UI_PREFIX = "/ui/"
EXPOSED = [
    "Retry-After",
    "Content-Disposition",
    "Content-Length",
    "Accept-Ranges",
    "Idempotent-Replayed",
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp, https_only: bool = False) -> None:
        self.app = app
        self.https_only = https_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                html = headers.get("content-type", "").startswith("text/html")
                headers.setdefault("content-security-policy", _csp(scope, html))
                if self.https_only:
                    headers.setdefault("strict-transport-security", "max-age=31536000")
            await send(message)

        await self.app(scope, receive, sending)


def _csp(scope: Scope, html: bool) -> str:
    if not html:
        return API_CSP
    return UI_CSP if str(scope.get("path", "")).startswith(UI_PREFIX) else PAGE_CSP


# The request's target and headers, each: past them a 414 or 431 before any route runs (the
# body's bounds are MAX_FILE_SIZE and the form's field limits). Ample for a bearer key and a
# browser's cookies-free requests; HTTP servers' usual limits are 8-16 KiB.
MAX_TARGET_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024


def head_problem(scope: Scope) -> tuple[int, str] | None:
    """(status, message) for a request head past its bounds, else None."""
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    if target > MAX_TARGET_BYTES:
        return 414, f"the request's URL is {target} bytes; at most {MAX_TARGET_BYTES}"
    headers = sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or [])
    if headers > MAX_HEADER_BYTES:
        return 431, f"the request's headers are {headers} bytes; at most {MAX_HEADER_BYTES}"
    return None


class BoundedHead:
    """Refuses a request whose URL or headers pass their bounds, with the API's error body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = head_problem(scope) if scope["type"] == "http" else None
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        body = json.dumps({"detail": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def cors_middleware(app: ASGIApp, origins: Sequence[str]) -> ASGIApp:
    """Browsers on ``origins`` may call the API with a key (``Authorization`` or ``X-API-Key``
    headers; no cookies are used, so no credentials mode); without origins, no CORS headers
    at all and browsers keep other sites out."""
    if not origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "X-API-Key", "Content-Type", "Range"],
        expose_headers=EXPOSED,
        max_age=600,
    )
