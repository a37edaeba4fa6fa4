"""How the API answers an error: always JSON ``{"detail": "..."}``, never a 500 for bad input.

``ApiError`` is the answer a route chooses; the handlers turn it, an unreachable backend
(``UnavailableError``), FastAPI's validation errors, Starlette's HTTP errors (unknown route,
wrong method) and anything unexpected into that body. ``error_responses`` documents them in
OpenAPI."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from stemkube_api.interfaces import UnavailableError
from stemkube_api.models import ErrorResponse

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        reason: str | None = None,
        drain: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.reason = reason  # for the rejected-uploads metric
        self.drain = drain  # read the rest of an upload's body before answering
        self.headers = headers  # WWW-Authenticate on a 401, Retry-After on a 429


_WORDS = {
    401: "No API key, or one that is not valid (unknown, revoked, mistyped or expired).",
    403: "The key may not do this (only admin keys may filter by tenant), or an upload would "
    "pass its bytes-stored quota; nothing was stored.",
    404: "No such job (or stem).",
    409: "The job has no result yet, or failed.",
    429: "The key's rate limit, or its jobs queued or running at once: wait Retry-After seconds.",
    413: "The file is larger than MAX_FILE_SIZE; nothing was stored.",
    415: "The file is not audio this service reads; nothing was stored.",
    422: "A bad request: the message names the field.",
    502: "The result in storage is not a readable ZIP.",
    503: "The job backend or the object store is unreachable.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route that may answer these error codes."""
    return {code: {"model": ErrorResponse, "description": _WORDS[code]} for code in codes}


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


async def unavailable(request: Request, exc: UnavailableError) -> JSONResponse:
    log.warning("backend unavailable: %s", exc)
    return JSONResponse({"detail": f"service unavailable: {exc}"}, status_code=503)


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    field = str((first.get("loc") or ("request",))[-1])
    return JSONResponse({"detail": f"{field}: {first.get('msg', 'invalid')}"}, status_code=422)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(
        {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error; see the API's log"}, status_code=500)


def add_handlers(app: FastAPI) -> None:
    app.exception_handler(ApiError)(api_error)
    app.exception_handler(UnavailableError)(unavailable)
    app.exception_handler(RequestValidationError)(invalid)
    app.exception_handler(StarletteHTTPException)(http_error)
    app.exception_handler(Exception)(unexpected)
