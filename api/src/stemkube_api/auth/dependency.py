"""The caller of every route but the open ones (``/``, ``/healthz``, ``/readyz``, the docs): a
FastAPI dependency (``CallerDep``) over one ``Authenticator`` per app.

The authenticator holds the app's auth mode, its key store and its rate limiter; it turns a
request's headers into a ``Caller`` or an ``ApiError`` (401 with its challenge, 429 with
``Retry-After``), and says so in the log by the key's name and tenant, never the key.
"""

import datetime
import logging
import time
from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from stemkube_api.auth.caller import CHALLENGE, OPEN, Caller, UnauthenticatedError, identify
from stemkube_api.auth.limits import RateLimiter
from stemkube_api.auth.store import KeyStore
from stemkube_api.errors import ApiError
from stemkube_api.settings import AuthMode

log = logging.getLogger(__name__)

# For the OpenAPI document only (its "Authorize" button): the headers are read by identify().
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (stk_...): `Authorization: Bearer <key>`.",
)
API_KEY = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKey",
    description="The same key in its own header.",
)


class Authenticator:
    """Who is calling, per request. ``clock`` gives seconds since the epoch (tests move it)."""

    def __init__(
        self,
        mode: AuthMode,
        store: KeyStore | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode != "off" and store is None:
            # Fail closed: a deployment that asks for keys never runs open for want of a store.
            raise ValueError(f"auth mode {mode!r} needs a key store")
        self.mode = mode
        self.store = store
        self.clock = clock
        self.limiter = RateLimiter(clock)

    def start(self) -> None:
        if self.store is not None:
            self.store.start()

    def stop(self) -> None:
        if self.store is not None:
            self.store.stop()

    def check(self) -> None:
        """For /readyz: raises UnavailableError until the keys can be read."""
        if self.store is not None:
            self.store.check()

    def caller(self, headers: Mapping[str, str], what: str = "") -> Caller:
        """The caller of a request (``what``: its method and path, for the log), or ApiError."""
        if self.mode == "off" or self.store is None:
            return OPEN
        self.store.check()  # 503 until a replica has read the keys: not a 401 for every key
        # Read per request: the first key created on a running service closes it at once.
        if self.mode == "open-until-keys" and not self.store.any_keys():
            return OPEN
        now = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC)
        try:
            who = identify(headers, self.store.lookup, now)
        except UnauthenticatedError as exc:
            log.info("refused %s: %s", what, exc)
            raise ApiError(401, str(exc), headers={"WWW-Authenticate": CHALLENGE}) from None
        refusal = self.limiter.take(who.key_id, who.key_name, who.quotas.requests_per_minute)
        if refusal is not None:
            log.info(
                "refused %s for key %s (tenant %s): %s",
                what,
                who.key_name,
                who.tenant,
                refusal.message,
            )
            retry = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
            raise ApiError(refusal.status, refusal.message, headers=retry)
        return who


def current_caller(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    _api_key: Annotated[str | None, Security(API_KEY)],
) -> Caller:
    # A plain function: FastAPI runs it in a worker thread, as the key store's reads block.
    auth: Authenticator = request.app.state.auth
    return auth.caller(request.headers, f"{request.method} {request.url.path}")


CallerDep = Annotated[Caller, Depends(current_caller)]
