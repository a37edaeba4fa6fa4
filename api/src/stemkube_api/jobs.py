"""Jobs as the REST API shows them, and the pure rules around them: status words, storage keys,
download names, ordering and pagination. A SeparationJob CR (a plain dict, as the Kubernetes API
returns it) becomes a JobRecord here; local mode builds its own (local/rules.py)."""

import base64
import binascii
import datetime
import json
import re
import unicodedata
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from stemkube_api.sniff import EXTENSIONS
from stemkube_contract import keys
from stemkube_contract import options as catalogue
from stemkube_contract.keys import result_key, valid_job_id
from stemkube_contract.models import Catalog
from stemkube_contract.options import Options
from stemkube_contract.resource import (
    BATCH_LABEL,
    CREATED_AT_ANNOTATION,
    KEEP_INPUT_ANNOTATION,
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_PENDING,
    STATUS_PROCESSING,
    STATUSES,
    TENANT_LABEL,
    status_of,
)
from stemkube_contract.timefmt import parse_time, precise_stamp
from stemkube_contract.webhooks import Delivery

PENDING, PROCESSING, COMPLETED, FAILED = (
    STATUS_PENDING,
    STATUS_PROCESSING,
    STATUS_COMPLETED,
    STATUS_FAILED,
)
__all__ = ["CREATED_AT_ANNOTATION", "STATUSES", "result_key", "status_of", "valid_job_id"]
STEM_MEDIA_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac"}


# A direct upload's object is named before its bytes are seen: a file name without a known
# audio extension gets this one (the separator tells the format from the bytes anyway).
UNKNOWN_EXTENSION = "bin"


def input_key(job_id: str, extension: str, tenant: str | None = None, root: str = "") -> str:
    """Where an upload is stored: the job id and an extension from the sniffer's allow-list
    (or ``UNKNOWN_EXTENSION``), under its tenant's prefix and the deployment's ``root``."""
    if extension not in EXTENSIONS and extension != UNKNOWN_EXTENSION:
        raise ValueError(f"not an allowed extension: {extension!r}")
    return keys.input_key(job_id, extension, tenant, root)


def clean_filename(name: str | None) -> str:
    """The user's file name as metadata: its last path component, no control characters,
    at most 255 characters (the CRD's limit)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    if base in ("", ".", ".."):
        base = "upload"
    if len(base) > 255:
        stem, dot, ext = base.rpartition(".")
        base = f"{stem[: 254 - len(ext)]}.{ext}" if dot and len(ext) < 16 else base[:255]
    return base


def _stem_of(filename: str) -> str:
    stem, dot, _ = filename.rpartition(".")
    return stem if dot and stem else filename


def zip_download_name(filename: str) -> str:
    """``song.mp3`` -> ``song_stems.zip``, as the original service named it."""
    return f"{_stem_of(filename)}_stems.zip"


def stem_download_name(filename: str, stem: str, fmt: str) -> str:
    return f"{_stem_of(filename)}_{stem}.{fmt}"


# Letters NFKD leaves whole (no combining mark to drop), spelled as ASCII writes them.
_ASCII_LETTERS = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ł": "l",
        "Ł": "L",
        "þ": "th",
        "Þ": "Th",
        "ð": "d",
        "Ð": "D",
        "\u0131": "i",  # dotless i
    }
)
# What stays as it is in the quoted ASCII name: no quote or backslash (they would need
# escaping, which curl and browsers undo differently), no ';' or '%' (some clients split or
# percent-decode the value), no control characters, no path separators.
_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()+,=@\[\]'&!-]")


def ascii_filename(name: str) -> str:
    """``name`` transliterated to ASCII for a header's plain ``filename``: accents dropped
    (NFKD, combining marks removed), typographic dashes and quotes as ``-`` and ``'``, other
    punctuation as ``_``, whitespace runs as one space. Characters with no ASCII form (CJK,
    emoji) are left out; the result is empty when nothing of the name is left."""
    out = []
    for char in unicodedata.normalize("NFKD", name.translate(_ASCII_LETTERS)):
        kind = unicodedata.category(char)
        if char.isspace():
            char = " "
        elif kind == "Mn" or kind[0] == "C":
            continue
        elif kind == "Pd":
            char = "-"
        elif kind in ("Pi", "Pf"):
            char = "'"
        if char.isascii():
            out.append(_UNSAFE.sub("_", char))
    return re.sub(r" {2,}", " ", "".join(out)).strip(" .")


def content_disposition(filename: str, fallback: str | None = None) -> str:
    """``attachment`` with an ASCII ``filename`` (what ``curl -O -J`` saves as) and, when the
    name is not plain ASCII, its exact UTF-8 form in ``filename*`` (RFC 6266, RFC 5987) for
    browsers. The ASCII name is ``fallback`` when given (the caller knows when nothing of the
    song's own name survives transliteration: it names the file after the job instead), else
    ``filename`` transliterated."""
    plain = ascii_filename(fallback if fallback is not None else filename) or "download"
    header = f'attachment; filename="{plain}"'
    if plain != filename:
        header += f"; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"
    return header


def created_stamp(moment: datetime.datetime) -> str:
    return precise_stamp(moment)


def _parse_precise(annotations: dict[str, str]) -> datetime.datetime | None:
    try:
        return parse_time(annotations.get(CREATED_AT_ANNOTATION))
    except ValueError:
        return None


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    status: str
    filename: str
    created_at: datetime.datetime
    progress: int
    options: Options  # every option, defaults filled in
    stems: list[str]
    input_key: str
    result_key: str
    started_at: datetime.datetime | None = None
    completed_at: datetime.datetime | None = None
    duration: str | None = None
    reason: str | None = None
    message: str | None = None
    result_size: int | None = None
    tenant: str | None = None  # None: no tenant (before keys, or made with kubectl)
    # The job's webhook (full URL: shown without its query) and how its delivery stands
    # (None: no attempt yet).
    webhook_url: str | None = None
    webhook: Delivery | None = None
    batch_id: str | None = None  # the request batch (POST /batches) it was created in
    # The input is the caller's object (POST /jobs's s3 source), not the job's: it stays.
    keep_input: bool = False

    @property
    def owned_keys(self) -> tuple[str, ...]:
        """The objects that go with the job: its result, and its input unless kept."""
        keys = (self.result_key,) if self.keep_input else (self.input_key, self.result_key)
        return tuple(key for key in keys if key)

    @property
    def model(self) -> str:
        return str(self.options["model"])

    @property
    def format(self) -> str:
        return str(self.options["format"])

    @property
    def bitrate(self) -> int | None:
        value = self.options.get("bitrate")
        return int(value) if isinstance(value, int) else None

    @property
    def two_stems(self) -> str | None:
        value = self.options.get("two_stems")
        return str(value) if value else None

    @property
    def error(self) -> str | None:
        if self.status != FAILED:
            return None
        return self.message or self.reason or "the separation failed"


def options_of(spec: dict[str, Any], models: Catalog) -> Options:
    """A spec's options with the defaults filled in; what no longer reads as an option (a CR
    written by hand, a field of an older version) is left to its default."""
    return catalogue.effective(catalogue.from_spec(spec, lenient=True), models)


def record_from_cr(cr: dict[str, Any], models: Catalog | None = None) -> JobRecord:
    models = models or Catalog()
    meta = cr.get("metadata") or {}
    spec = cr.get("spec") or {}
    status = cr.get("status") or {}
    result = status.get("result") or {}
    options = options_of(spec, models)
    word = status_of(status.get("phase"))
    # The API's own stamp has microseconds (creationTimestamp only seconds): it orders jobs
    # uploaded within one second.
    created = (
        _parse_precise(meta.get("annotations") or {})
        or parse_time(meta.get("creationTimestamp"))
        or datetime.datetime.now(datetime.UTC)
    )
    input_ref = spec.get("input") or {}
    output_ref = spec.get("output") or {}
    return JobRecord(
        job_id=meta.get("name", ""),
        status=word,
        filename=input_ref.get("filename") or input_ref.get("key", "").rsplit("/", 1)[-1],
        created_at=created,
        progress=int(status.get("progress") or (100 if word == COMPLETED else 0)),
        options=options,
        stems=list(result.get("stems") or catalogue.stems_of(options, models)),
        started_at=parse_time(status.get("startTime")),
        completed_at=parse_time(status.get("completionTime")),
        duration=status.get("duration"),
        reason=status.get("reason"),
        message=status.get("message"),
        input_key=input_ref.get("key", ""),
        result_key=result.get("key") or output_ref.get("key", ""),
        result_size=result.get("size"),
        tenant=(meta.get("labels") or {}).get(TENANT_LABEL) or None,
        webhook_url=(spec.get("webhook") or {}).get("url") or None,
        webhook=Delivery.from_status(status.get("webhook")),
        batch_id=(meta.get("labels") or {}).get(BATCH_LABEL) or None,
        keep_input=(meta.get("annotations") or {}).get(KEEP_INPUT_ANNOTATION) == "true",
    )


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobRecord]
    next_cursor: str | None


class BadCursorError(ValueError):
    pass


def _order_key(record: JobRecord) -> tuple[datetime.datetime, str]:
    return (record.created_at, record.job_id)


def encode_cursor(record: JobRecord) -> str:
    raw = json.dumps([record.created_at.isoformat(), record.job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime.datetime, str]:
    bad = BadCursorError("cursor: not a cursor this API gave out")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, name = json.loads(raw)
        if not isinstance(created, str) or not isinstance(name, str):
            raise bad
        moment = datetime.datetime.fromisoformat(created)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise bad from exc
    if moment.tzinfo is None:
        raise bad
    return moment, name


def paginate(
    records: Iterable[JobRecord],
    status: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    tenant: str | None = None,
) -> JobPage:
    """Newest first (ties by id), optionally of one status and of one tenant (None: every
    job), ``limit`` at a time; a page's ``next_cursor`` continues after its last job. The
    filters come before the page, so that a tenant's pages hold only its jobs."""
    chosen = [
        r
        for r in records
        if (status is None or r.status == status) and (tenant is None or r.tenant == tenant)
    ]
    chosen.sort(key=_order_key, reverse=True)
    if cursor is not None:
        after = decode_cursor(cursor)
        chosen = [r for r in chosen if _order_key(r) < after]
    if limit is None or len(chosen) <= limit:
        return JobPage(chosen, None)
    page = chosen[:limit]
    return JobPage(page, encode_cursor(page[-1]))
