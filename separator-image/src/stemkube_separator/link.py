"""The job link's client (``stemkube_contract.joblink``): in Kubernetes mode a separator pod
holds no storage credentials and no Kubernetes permission; it asks the operator's link server
for its SeparationJobs' input, output and status, proving which pod it is with the token the
kubelet projects into a file.

Failures map onto the separator's error model: the server unreachable, 401 (a token the
server could not review yet) and 5xx are transient (exit 75, the Job runs the pod again);
410 says the SeparationJob is gone (``MemberGoneError``: a batch stops that member); 400, 403
and any other 4xx are final usage errors (the pod asked for something that is not its own, or
in a shape the server does not take): retrying would ask the same.
"""

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import certifi
import urllib3

from stemkube_contract import joblink
from stemkube_contract.joblink import (
    CompleteRequest,
    LinkRequestError,
    MemberAnswer,
    PartRequest,
    ProgressReport,
    UploadRef,
)
from stemkube_separator import exitcodes
from stemkube_separator.errors import SeparatorError, TransientError, UsageError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Tries of one request, on connection errors and 503: about 30 s of them, so that a rollout
# of the operator's replicas or a short outage of the API server behind it costs a wait, not
# the pod's whole work (exit 75 runs it again from the start).
ATTEMPTS: Final = 10
BACKOFF: Final = 0.5  # seconds before the second try, doubled for each next one up to MAX_BACKOFF
MAX_BACKOFF: Final = 4.0
TIMEOUT: Final = urllib3.Timeout(connect=5, read=30)
# The answer's body is read whole: a sane server's are small; a stray proxy's page is cut.
MAX_ANSWER: Final = joblink.MAX_BODY


class MemberGoneError(SeparatorError):
    """A SeparationJob deleted (or being deleted, or not to run any more) while its work ran:
    nobody waits for its result, and a retry would find it gone too (so final for a single
    run; a batch stops the member and goes on)."""

    exit_code = exitcodes.USAGE


def pool_manager(timeout: urllib3.Timeout) -> urllib3.PoolManager:
    """HTTP(S) connections verified against ``SSL_CERT_FILE``, else certifi's CAs (as
    ``s3.client``); retries are the caller's, which knows what is worth one."""
    return urllib3.PoolManager(
        timeout=timeout,
        maxsize=4,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=False,
    )


class Link:
    """One method per contract path; each raises ``TransientError`` or ``UsageError``."""

    def __init__(
        self,
        base_url: str,
        token_path: str,
        http: urllib3.PoolManager | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_path = token_path
        self.http = http or pool_manager(TIMEOUT)
        self.sleep = sleep

    def member(self, name: str) -> MemberAnswer:
        return self._answer(joblink.MEMBER, {"name": name}, MemberAnswer.from_json)

    def progress(self, report: ProgressReport) -> bool:
        """Whether the SeparationJob is gone."""
        return self._answer(joblink.PROGRESS, report.to_json(), joblink.gone_of)

    def upload_begin(self, name: str) -> str:
        """The upload's id."""
        return self._answer(
            joblink.UPLOAD_BEGIN,
            {"name": name},
            joblink.upload_id_of,
        )

    def upload_part(self, request: PartRequest) -> str:
        """The part's presigned PUT URL."""
        return self._answer(joblink.UPLOAD_PART, request.to_json(), joblink.url_of)

    def upload_complete(self, request: CompleteRequest) -> bool:
        """Whether the SeparationJob is gone (the upload is then aborted, not completed)."""
        return self._answer(joblink.UPLOAD_COMPLETE, request.to_json(), joblink.gone_of)

    def upload_abort(self, ref: UploadRef) -> None:
        self._post(joblink.UPLOAD_ABORT, ref.to_json())

    def _answer(
        self, path: str, body: Mapping[str, Any], parse: Callable[[Mapping[str, Any]], T]
    ) -> T:
        answer = self._post(path, body)
        try:
            return parse(answer)
        except LinkRequestError as exc:  # a server of another version, or not the link at all
            raise TransientError(f"the job link's answer to {path} is malformed: {exc}") from None

    def _token(self) -> str:
        # Read at every request: the kubelet replaces the file before the token expires.
        try:
            with open(self.token_path, encoding="ascii") as file:
                token = file.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the job link's token {self.token_path}: {exc}") from None
        if not token:
            raise UsageError(f"the job link's token file {self.token_path} is empty")
        return token

    def _post(self, path: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        data = json.dumps(body).encode()
        delay = BACKOFF
        for attempt in range(1, ATTEMPTS + 1):
            headers = {
                "Authorization": f"Bearer {self._token()}",
                "Content-Type": "application/json",
            }
            try:
                response = self.http.request(
                    "POST", self.base_url + path, body=data, headers=headers, retries=False
                )
            except urllib3.exceptions.HTTPError as exc:
                error: SeparatorError = TransientError(
                    f"the job link {self.base_url} is unreachable ({path}): {exc}"
                )
            else:
                if response.status == 200:
                    return _json_of(path, response.data)
                error = _status_error(path, response.status, response.data)
                if response.status != 503:
                    raise error
            if attempt == ATTEMPTS:
                raise error
            log.warning("%s (try %d of %d)", error, attempt, ATTEMPTS)
            self.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
        raise AssertionError("unreachable")  # the loop returns or raises


def _json_of(path: str, raw: bytes) -> Mapping[str, Any]:
    try:
        return joblink.parse_json(raw[:MAX_ANSWER])
    except LinkRequestError as exc:
        raise TransientError(f"the job link's answer to {path} is malformed: {exc}") from None


def _status_error(path: str, status: int, raw: bytes) -> SeparatorError:
    """The server's error, in words: transient when a later try may pass, else final."""
    try:
        words = str(joblink.parse_json(raw[:MAX_ANSWER]).get("error") or "")
    except LinkRequestError:
        words = ""
    words = " ".join((words or raw[:200].decode("utf-8", "replace")).split())
    message = f"the job link answered {path} with HTTP {status}" + (f": {words}" if words else "")
    if status == 401 or status >= 500:
        return TransientError(message)
    if status == joblink.GONE_STATUS:
        return MemberGoneError(message)
    return UsageError(message)


def from_env(env: Mapping[str, str]) -> Link | None:
    """The link when ``URL_ENV`` is set (link mode), else None (direct S3 and Kubernetes API,
    as before); a link without ``TOKEN_ENV`` is a usage error."""
    url = env.get(joblink.URL_ENV, "").strip()
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"{joblink.URL_ENV}={url!r}: expected an http:// or https:// URL")
    token_path = env.get(joblink.TOKEN_ENV, "").strip()
    if not token_path:
        raise UsageError(
            f"{joblink.URL_ENV} is set but {joblink.TOKEN_ENV} is not: the job link needs the "
            "path of the pod's projected token"
        )
    return Link(url, token_path)
