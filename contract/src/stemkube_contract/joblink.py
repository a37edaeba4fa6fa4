"""The job link: a separator pod's one channel to its own SeparationJobs (Kubernetes mode).

A separator pod holds no storage credentials and no Kubernetes permission (its pod has no
service-account token of the API server's). It proves which pod it is with a token the kubelet
projects for the audience ``AUDIENCE`` (bound to the pod, refreshed by the kubelet, refused by
the API server itself), read from the file ``TOKEN_ENV`` names at every request, and asks the
operator's link server at ``URL_ENV`` over HTTP, always naming one SeparationJob of its own Job:

=======================  ==========================================  ==========================
path                     request (JSON object)                       answer (JSON object)
=======================  ==========================================  ==========================
``MEMBER``               ``{"name"}``                                ``MemberAnswer``
``PROGRESS``             ``ProgressReport``                          ``{"gone": bool}``
``UPLOAD_BEGIN``         ``{"name"}``                                ``{"uploadId": str}``
``UPLOAD_PART``          ``{"name", "uploadId", "part": 1...}``      ``{"url": str}``
``UPLOAD_COMPLETE``      ``{"name", "uploadId", "parts": [...]}``    ``{"gone": bool}``
``UPLOAD_ABORT``         ``{"name", "uploadId"}``                    ``{}``
=======================  ==========================================  ==========================

Every request is ``POST`` with ``Authorization: Bearer <token>``. The operator reviews the token
(TokenReview, audience ``AUDIENCE``), takes the pod it is bound to, that pod's Job, and the
Job's SeparationJobs (its owners); ``name`` must be one of them, else 403. So a pod reaches the
input, the output and the status of its own Job's SeparationJobs and nothing else, whatever it
sends.

- ``MEMBER``: whether to run it (``run`` false, with ``why``, when it is gone, being deleted,
  finished, or has an outcome: a retried batch pod redoes only the unfinished members) and a
  presigned GET URL of its input object (None for a URL source: that comes in the pod's
  environment).
- ``PROGRESS``: merged into its status through the status subresource (``report_patch``);
  ``gone`` when it was deleted, is being deleted or is another of the same name.
- ``UPLOAD_*``: its output as an S3 multipart upload. The operator begins it on the
  SeparationJob's own output key and presigns each part's PUT; the pod PUTs the parts and
  reports their ETags; the operator completes it only if the SeparationJob is still there (else
  it aborts it and answers ``gone``), so a deleted job's result never appears.

Errors answer ``{"error": "<words>"}``: 400 a malformed request, 401 no valid token (worth a
retry: a token the kubelet is renewing), 403 not a SeparationJob of the caller's Job, 410
(``GONE_STATUS``) a begin or part of a SeparationJob that is gone or being deleted (a batch
stops that member), 503 the API server or the storage cannot be reached (worth a retry). Every
request may be sent again: a begin repeated leaves an unfinished upload, which the operator's
clean-up aborts when the SeparationJob goes. Standard library only, as the whole contract.
"""

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from stemkube_contract.batch import outcome_patch
from stemkube_contract.usage import audio_patch

AUDIENCE: Final = "stemkube.io/job-link"
URL_ENV: Final = "STEMKUBE_LINK_URL"  # the link server's base URL, e.g. http://10.96.0.20:8082
TOKEN_ENV: Final = "STEMKUBE_LINK_TOKEN"  # the path of the projected token file
TOKEN_DIR: Final = "/var/run/secrets/stemkube.io/link"  # its mount in the separator's container
TOKEN_FILE: Final = "token"
TOKEN_SECONDS: Final = 3600  # the projected token's lifetime; the kubelet renews it at 80 %
DEFAULT_PORT: Final = 8082
URL_SECONDS: Final = 900  # a presigned URL's lifetime: each is asked for just before its use
MAX_PARTS: Final = 10_000  # S3's
MAX_BODY: Final = 1 << 20  # bytes of a request; a complete of MAX_PARTS parts fits
GONE_STATUS: Final = 410

PREFIX: Final = "/link/v1"
MEMBER: Final = f"{PREFIX}/member"
PROGRESS: Final = f"{PREFIX}/progress"
UPLOAD_BEGIN: Final = f"{PREFIX}/upload/begin"
UPLOAD_PART: Final = f"{PREFIX}/upload/part"
UPLOAD_COMPLETE: Final = f"{PREFIX}/upload/complete"
UPLOAD_ABORT: Final = f"{PREFIX}/upload/abort"
PATHS: Final = (MEMBER, PROGRESS, UPLOAD_BEGIN, UPLOAD_PART, UPLOAD_COMPLETE, UPLOAD_ABORT)

MAX_NAME: Final = 253  # a Kubernetes object name
MAX_UPLOAD_ID: Final = 1024
MAX_ETAG: Final = 256


class LinkRequestError(ValueError):
    """A request (or an answer) that does not have the contract's shape: 400, in words."""


def token_path() -> str:
    return f"{TOKEN_DIR}/{TOKEN_FILE}"


def _object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise LinkRequestError("the body is not a JSON object")
    return body


def _text(body: Mapping[str, Any], field: str, limit: int) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise LinkRequestError(
            f"{field!r} must be a non-empty string of at most {limit} characters"
        )
    return value


def _part_number(value: Any, field: str = "part") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARTS:
        raise LinkRequestError(f"{field!r} must be a whole number from 1 to {MAX_PARTS}")
    return value


def parse_json(raw: bytes) -> Mapping[str, Any]:
    try:
        return _object(json.loads(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LinkRequestError(f"the body is not JSON: {exc}") from None


def name_of(body: Any) -> str:
    """The SeparationJob a request names (every request names one)."""
    return _text(_object(body), "name", MAX_NAME)


@dataclass(frozen=True)
class MemberAnswer:
    name: str
    uid: str
    run: bool
    why: str = ""  # when not run: "gone", "being deleted", "finished (Completed)", ...
    input_url: str | None = None  # presigned GET of the input object; None for a URL source

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uid": self.uid,
            "run": self.run,
            "why": self.why,
            "inputUrl": self.input_url,
        }

    @classmethod
    def from_json(cls, body: Any) -> "MemberAnswer":
        body = _object(body)
        run = body.get("run")
        url = body.get("inputUrl")
        if not isinstance(run, bool) or not (url is None or isinstance(url, str)):
            raise LinkRequestError(f"not a member answer: {body!r}")
        uid = body.get("uid")
        return cls(
            name_of(body), uid if isinstance(uid, str) else "", run, str(body.get("why") or ""), url
        )


@dataclass(frozen=True)
class ProgressReport:
    """What a pod says of one of its SeparationJobs; at least one of the three."""

    name: str
    progress: int | None = None  # 0-100
    audio_seconds: float | None = None  # the song's length, once decoded
    outcome: tuple[int, str] | None = None  # a batch member's exit code and message, once

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name}
        if self.progress is not None:
            body["progress"] = self.progress
        if self.audio_seconds is not None:
            body["audioSeconds"] = self.audio_seconds
        if self.outcome is not None:
            body["outcome"] = {"exitCode": self.outcome[0], "message": self.outcome[1]}
        return body

    @classmethod
    def from_json(cls, body: Any) -> "ProgressReport":
        body = _object(body)
        name = name_of(body)
        progress = body.get("progress")
        if progress is not None and (
            isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100
        ):
            raise LinkRequestError("'progress' must be a whole number from 0 to 100")
        seconds = body.get("audioSeconds")
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise LinkRequestError("'audioSeconds' must be a finite number of seconds, 0 or more")
        outcome = body.get("outcome")
        parsed: tuple[int, str] | None = None
        if outcome is not None:
            code = outcome.get("exitCode") if isinstance(outcome, Mapping) else None
            message = outcome.get("message", "") if isinstance(outcome, Mapping) else None
            if isinstance(code, bool) or not isinstance(code, int) or not isinstance(message, str):
                raise LinkRequestError('\'outcome\' must be {"exitCode": int, "message": str}')
            parsed = (code, message)
        if progress is None and seconds is None and parsed is None:
            raise LinkRequestError("a report needs 'progress', 'audioSeconds' or 'outcome'")
        return cls(name, progress, None if seconds is None else float(seconds), parsed)


def report_patch(report: ProgressReport) -> dict[str, Any]:
    """The status merge patch a report makes (what the separator used to write itself)."""
    status: dict[str, Any] = {}
    if report.progress is not None:
        status["progress"] = report.progress
    if report.audio_seconds is not None:
        status.update(audio_patch(report.audio_seconds)["status"])
    if report.outcome is not None:
        status.update(outcome_patch(*report.outcome)["status"])
    return {"status": status}


@dataclass(frozen=True)
class PartRequest:
    name: str
    upload_id: str
    part: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "uploadId": self.upload_id, "part": self.part}

    @classmethod
    def from_json(cls, body: Any) -> "PartRequest":
        body = _object(body)
        return cls(
            name_of(body), _text(body, "uploadId", MAX_UPLOAD_ID), _part_number(body.get("part"))
        )


@dataclass(frozen=True)
class CompleteRequest:
    name: str
    upload_id: str
    parts: tuple[tuple[int, str], ...]  # (part number, ETag), ascending, at least one

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uploadId": self.upload_id,
            "parts": [{"part": n, "etag": etag} for n, etag in self.parts],
        }

    @classmethod
    def from_json(cls, body: Any) -> "CompleteRequest":
        body = _object(body)
        raw = body.get("parts")
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_PARTS:
            raise LinkRequestError(f"'parts' must be a list of 1 to {MAX_PARTS} parts")
        parts: list[tuple[int, str]] = []
        for item in raw:
            item = _object(item)
            parts.append((_part_number(item.get("part")), _text(item, "etag", MAX_ETAG)))
        numbers = [n for n, _ in parts]
        if numbers != sorted(set(numbers)):
            raise LinkRequestError("'parts' must be in ascending order of part, each once")
        return cls(name_of(body), _text(body, "uploadId", MAX_UPLOAD_ID), tuple(parts))


@dataclass(frozen=True)
class UploadRef:
    """An abort's request (and what a begin answers, with the name)."""

    name: str
    upload_id: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "uploadId": self.upload_id}

    @classmethod
    def from_json(cls, body: Any) -> "UploadRef":
        body = _object(body)
        return cls(name_of(body), _text(body, "uploadId", MAX_UPLOAD_ID))


def begun_answer(upload_id: str) -> dict[str, Any]:
    return {"uploadId": upload_id}


def upload_id_of(body: Any) -> str:
    """What an ``UPLOAD_BEGIN`` answers."""
    return _text(_object(body), "uploadId", MAX_UPLOAD_ID)


def url_answer(url: str) -> dict[str, Any]:
    return {"url": url}


def url_of(body: Any) -> str:
    """What an ``UPLOAD_PART`` answers: an http(s) URL."""
    url = _text(_object(body), "url", 1 << 16)
    if not url.startswith(("http://", "https://")):
        raise LinkRequestError("'url' is not an http(s) URL")
    return url


def gone_answer(gone: bool) -> dict[str, Any]:
    return {"gone": gone}


def gone_of(body: Any) -> bool:
    gone = _object(body).get("gone")
    if not isinstance(gone, bool):
        raise LinkRequestError(f"not an answer with 'gone': {body!r}")
    return gone


def error_answer(message: str) -> dict[str, Any]:
    return {"error": message}
