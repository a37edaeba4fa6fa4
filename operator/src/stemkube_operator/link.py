"""The job link's server (``stemkube_contract.joblink``): a separator pod's one channel to its
own SeparationJobs. The pod holds no storage credential and no Kubernetes permission; it shows
a token bound to it (``linkauth``) and gets, for the SeparationJobs of its own Job only,
whether to run each, presigned URLs of its input and output parts, and its status written.

Every replica serves it, leader or standby (like ``health``): the pods' calls are short and
independent, and a standby answering keeps the link up across a change of leader. The objects
it names always come from the SeparationJob, never from the request."""

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException
from minio.error import MinioException

from stemkube_contract import joblink
from stemkube_contract.batch import skip_reason
from stemkube_operator.kube import LinkKube
from stemkube_operator.linkauth import (
    Authenticator,
    BadRequestError,
    LinkError,
    Membership,
    UnavailableError,
    is_same,
)
from stemkube_operator.storage import PartsError, Storage

log = logging.getLogger(__name__)

OUTPUT_TYPE = "application/zip"
READ_SECONDS = 30.0  # a request's whole body must come within this; a stuck client frees its thread
# What the API server and the storage fail with when they cannot answer: 503, worth a retry.
UNREACHABLE = (ApiException, MinioException, urllib3.exceptions.HTTPError, OSError)


def _pointer(field: str) -> str:
    """A JSON Pointer's reference token (RFC 6901)."""
    return field.replace("~", "~0").replace("/", "~1")


def status_ops(uid: str, patch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A status merge patch (``joblink.report_patch``) as a JSON patch that lands only on the
    SeparationJob of ``uid``: the test fails, and nothing is written, on another of the same
    name. Each field is a top-level member of the status, so ``add`` (which replaces) merges
    it as the merge patch would."""
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": uid}]
    for field, value in (patch.get("status") or {}).items():
        ops.append({"op": "add", "path": f"/status/{_pointer(field)}", "value": value})
    return ops


def _deleting(cr: Mapping[str, Any]) -> bool:
    return bool((cr.get("metadata") or {}).get("deletionTimestamp"))


def _gone(cr: Mapping[str, Any] | None, uid: str) -> bool:
    """Deleted, being deleted, or another SeparationJob of the name: no more the pod's."""
    return cr is None or not is_same(cr, uid) or _deleting(cr)


def _ref(cr: Mapping[str, Any], side: str) -> tuple[str, str]:
    ref = (cr.get("spec") or {}).get(side) or {}
    bucket, key = ref.get("bucket"), ref.get("key")
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
        raise BadRequestError(f"the SeparationJob has no {side} object")
    return bucket, key


class GoneError(LinkError):
    """The named member is gone: what an answer without ``gone`` (member, begin, part) says."""

    status = joblink.GONE_STATUS


class Link:
    """The link's requests, apart from HTTP: ``answer(path, token, body)`` -> JSON object, or a
    LinkError. Its I/O (the API server, the storage) is what it is given."""

    def __init__(
        self,
        kube: LinkKube,
        storage: Storage,
        service_account: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.storage = storage
        self.auth = Authenticator(kube, service_account, clock)
        self._handlers: dict[str, Callable[[Membership, Mapping[str, Any]], dict[str, Any]]] = {
            joblink.MEMBER: self._member,
            joblink.PROGRESS: self._progress,
            joblink.UPLOAD_BEGIN: self._upload_begin,
            joblink.UPLOAD_PART: self._upload_part,
            joblink.UPLOAD_COMPLETE: self._upload_complete,
            joblink.UPLOAD_ABORT: self._upload_abort,
        }

    def answer(self, path: str, token: str, raw: bytes) -> dict[str, Any]:
        # Who calls first: an unknown caller learns nothing, not even what its body lacks.
        membership = self.auth.authenticate(token)
        try:
            body = joblink.parse_json(raw)
            name = joblink.name_of(body)
        except joblink.LinkRequestError as exc:
            raise BadRequestError(str(exc)) from None
        membership.uid_of(name)  # 403 for any other name
        try:
            return self._handlers[path](membership, body)
        except joblink.LinkRequestError as exc:
            raise BadRequestError(str(exc)) from None

    # -- the requests

    def _read(self, who: Membership, name: str) -> dict[str, Any] | None:
        return self.kube.read_separation_job(who.namespace, name)

    def _live(self, who: Membership, name: str) -> dict[str, Any]:
        """The member as it is now; 403 when it is gone (deleted, being deleted, or another of
        its name): a gone member's objects are not the pod's to write any more."""
        cr = self._read(who, name)
        if cr is None or _gone(cr, who.uid_of(name)):
            raise GoneError(f"the SeparationJob {who.namespace}/{name} is gone")
        return cr

    def _member(self, who: Membership, body: Mapping[str, Any]) -> dict[str, Any]:
        name = joblink.name_of(body)
        uid = who.uid_of(name)
        cr = self._read(who, name)
        why = skip_reason(cr, uid)
        if cr is None or why is not None:
            return joblink.MemberAnswer(name, uid, False, why or "").to_json()
        url: str | None = None
        if not ((cr.get("spec") or {}).get("input") or {}).get("url"):
            bucket, key = _ref(cr, "input")
            url = self.storage.presign_get(bucket, key, joblink.URL_SECONDS)
        return joblink.MemberAnswer(name, uid, True, input_url=url).to_json()

    def _progress(self, who: Membership, body: Mapping[str, Any]) -> dict[str, Any]:
        report = joblink.ProgressReport.from_json(body)
        uid = who.uid_of(report.name)
        patch = joblink.report_patch(report)
        try:
            written = self.kube.json_patch_status(
                who.namespace, report.name, status_ops(uid, patch)
            )
        except ApiException as exc:
            if exc.status == 404:
                return joblink.gone_answer(True)
            if exc.status != 422:
                raise
            # The test failed (another SeparationJob of the name), or the status is missing
            # (the operator has not yet seen it), or its values were refused: look.
            cr = self._read(who, report.name)
            if _gone(cr, uid):
                return joblink.gone_answer(True)
            if isinstance((cr or {}).get("status"), dict):
                raise BadRequestError(f"the status patch was refused: {_words(exc)}") from None
            written = self.kube.patch_status(who.namespace, report.name, patch["status"])
            if not is_same(written, uid):
                # Replaced between the read and the patch: the report went to the new one,
                # whose own operator sync overwrites what matters. Rare; said.
                log.warning(
                    "a progress report of %s/%s reached a new SeparationJob of its name",
                    who.namespace,
                    report.name,
                    extra={"job": report.name},
                )
                return joblink.gone_answer(True)
        return joblink.gone_answer(_deleting(written))

    def _upload_begin(self, who: Membership, body: Mapping[str, Any]) -> dict[str, Any]:
        name = joblink.name_of(body)
        bucket, key = _ref(self._live(who, name), "output")
        upload_id = self.storage.begin_multipart(bucket, key, OUTPUT_TYPE)
        log.info(
            "began the upload of %s/%s's result",
            who.namespace,
            name,
            extra={"job": name},
        )
        return joblink.begun_answer(upload_id)

    def _upload_part(self, who: Membership, body: Mapping[str, Any]) -> dict[str, Any]:
        request = joblink.PartRequest.from_json(body)
        bucket, key = _ref(self._live(who, request.name), "output")
        url = self.storage.part_url(
            bucket, key, request.upload_id, request.part, joblink.URL_SECONDS
        )
        return joblink.url_answer(url)

    def _upload_complete(self, who: Membership, body: Mapping[str, Any]) -> dict[str, Any]:
        request = joblink.CompleteRequest.from_json(body)
        uid = who.uid_of(request.name)
        cr = self._read(who, request.name)
        if cr is None or _gone(cr, uid):
            # No result for a job that is no more. Another of the same name may have another
            # output key: aborting there is harmless (S3 knows no such upload under it).
            if cr is not None:
                self.storage.abort_multipart(*_ref(cr, "output"), request.upload_id)
            else:
                log.warning(
                    "%s/%s is gone: its upload is left to the bucket's lifecycle rules",
                    who.namespace,
                    request.name,
                    extra={"job": request.name},
                )
            return joblink.gone_answer(True)
        bucket, key = _ref(cr, "output")
        try:
            self.storage.complete_multipart(bucket, key, request.upload_id, request.parts)
        except PartsError as exc:
            raise BadRequestError(str(exc)) from None
        log.info(
            "completed the upload of %s/%s's result (%d parts)",
            who.namespace,
            request.name,
            len(request.parts),
            extra={"job": request.name},
        )
        return joblink.gone_answer(False)

    def _upload_abort(self, who: Membership, body: Mapping[str, Any]) -> dict[str, Any]:
        ref = joblink.UploadRef.from_json(body)
        cr = self._read(who, ref.name)
        if cr is not None:
            # Of another of the same name too: harmless where S3 knows no such upload.
            self.storage.abort_multipart(*_ref(cr, "output"), ref.upload_id)
        return {}


def _words(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def _bearer(header: str | None) -> str | None:
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def serve_link(port: int, host: str, link: Link) -> ThreadingHTTPServer:
    """Serves ``link`` on a daemon thread; returns the server (``shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        timeout = READ_SECONDS

        def do_POST(self) -> None:
            if self.path not in joblink.PATHS:
                self._send(404, joblink.error_answer(f"no such path: {self.path}"))
                return
            length = self._length()
            if length is None:
                return
            token = _bearer(self.headers.get("Authorization"))
            if token is None:
                self._send(401, joblink.error_answer("a bearer token is required"))
                return
            try:
                raw = self.rfile.read(length)
            except OSError:  # too slow (READ_SECONDS) or gone: no one to answer
                self.close_connection = True
                return
            try:
                self._send(200, link.answer(self.path, token, raw))
            except LinkError as exc:
                self._refused(exc, raw)
            except UNREACHABLE as exc:
                log.warning(
                    "job link %s: the API server or the storage failed: %s",
                    self.path,
                    _short(exc),
                    extra=_job_extra(raw),
                )
                self._send(503, joblink.error_answer("the API server or the storage failed"))
            except Exception:
                log.exception("job link %s failed", self.path, extra=_job_extra(raw))
                self._send(500, joblink.error_answer("internal error"))

        def _other(self) -> None:
            if self.path not in joblink.PATHS:
                self._send(404, joblink.error_answer(f"no such path: {self.path}"))
            else:
                self._send(405, joblink.error_answer("only POST"), {"Allow": "POST"})

        def do_GET(self) -> None:
            self._other()

        def do_PUT(self) -> None:
            self._other()

        def do_DELETE(self) -> None:
            self._other()

        def do_PATCH(self) -> None:
            self._other()

        def _length(self) -> int | None:
            raw = self.headers.get("Content-Length")
            try:
                length = int(raw) if raw is not None else -1
            except ValueError:
                length = -1
            if length < 0:
                self._send(400, joblink.error_answer("a Content-Length is required"))
                return None
            if length > joblink.MAX_BODY:
                self._send(413, joblink.error_answer(f"the body is over {joblink.MAX_BODY} bytes"))
                return None
            return length

        def _refused(self, exc: LinkError, raw: bytes) -> None:
            level = logging.WARNING if isinstance(exc, UnavailableError) else logging.INFO
            log.log(
                level,
                "job link %s refused (%d): %s",
                self.path,
                exc.status,
                exc.message,
                extra=_job_extra(raw),
            )
            self._send(exc.status, joblink.error_answer(exc.message))

        def _send(
            self, code: int, answer: dict[str, Any], headers: Mapping[str, str] | None = None
        ) -> None:
            body = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if code in (400, 413):
                # The body may be unread: the next request on this connection would start in it.
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the outcomes worth a line are logged above, with the job they concern

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="link", daemon=True).start()
    return server


def _job_extra(raw: bytes) -> dict[str, str]:
    """The log record's ``job``, when the body names one (never the body or a header)."""
    try:
        return {"job": joblink.name_of(joblink.parse_json(raw))}
    except (joblink.LinkRequestError, ValueError):
        return {}


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return " ".join(str(exc).split())[:300]


__all__ = ["Link", "serve_link", "status_ops"]
