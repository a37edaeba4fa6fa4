"""S3 INPUT and OUTPUT through the job link (``link``): the pod holds no storage credentials.

The input object is downloaded from the presigned GET URL the link gives for the
SeparationJob; the output is a multipart upload the operator begins, presigns part by part and
completes only if the SeparationJob is still there. Both keep ``storage``'s rules: the same
size limits and messages, and an output that appears whole or not at all.
"""

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, NoReturn

import urllib3

from stemkube_contract.joblink import CompleteRequest, PartRequest, UploadRef
from stemkube_separator import storage
from stemkube_separator.errors import SeparatorError, TransientError, UsageError
from stemkube_separator.link import Link, MemberGoneError, pool_manager
from stemkube_separator.locations import Location, S3Object

log = logging.getLogger(__name__)

# The store, not the link: a part of 16 MiB may take a while on a slow network (as s3.client).
STORE_TIMEOUT: Final = urllib3.Timeout(connect=10, read=120)
STORE_RETRIES: Final = urllib3.Retry(
    total=3, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504], allowed_methods=None
)
_ERROR_FIELD = re.compile(rb"<(Code|Message)>([^<]{0,500})</\1>")


@dataclass(frozen=True)
class LinkStore:
    """S3 locations of one SeparationJob, reached through the link."""

    link: Link
    namespace: str
    name: str
    http: urllib3.PoolManager

    @property
    def member(self) -> str:
        return f"{self.namespace}/{self.name}"


def link_store(link: Link, namespace: str, name: str) -> LinkStore:
    return LinkStore(link, namespace, name, pool_manager(STORE_TIMEOUT))


# What reaches S3 locations: a client of its own (direct mode), or the link.
Store = storage.ClientFactory | LinkStore


def store_error(response: urllib3.BaseHTTPResponse) -> storage.StoreAnswerError:
    """The store's error answer (S3's XML ``<Error>``), as ``storage_error`` words it."""
    fields = {
        key.decode(): value.decode("utf-8", "replace")
        for key, value in _ERROR_FIELD.findall(response.data[:4096])
    }
    return storage.StoreAnswerError(
        response.status, fields.get("Code", ""), fields.get("Message", "")
    )


def fetch_input(location: S3Object, workdir: Path, store: LinkStore, max_size: int) -> Path:
    """As ``storage.fetch_input``, from the URL the link presigns just before (each is valid
    for minutes only)."""
    answer = store.link.member(store.name)
    if not answer.run:
        raise MemberGoneError(f"SeparationJob {store.member} is not to run: {answer.why}")
    if answer.input_url is None:
        raise TransientError(f"the job link gave no input URL for {location}")
    target = workdir / "input"
    what = f"downloading {location}"
    try:
        response = store.http.request(
            "GET",
            answer.input_url,
            preload_content=False,
            decode_content=False,  # the object's bytes, whatever its Content-Encoding says
            retries=STORE_RETRIES,
        )
    except urllib3.exceptions.HTTPError as exc:
        raise storage.storage_error(what, exc) from exc
    if response.status != 200:
        error = store_error(response)
        response.release_conn()
        # NoSuchKey: the job named an object that is not there. (A missing bucket stays
        # transient, as in storage.fetch_input.)
        if response.status == 404 and error.code != "NoSuchBucket":
            raise storage.missing_input(location, error.code or "HTTP 404")
        raise storage.storage_error(what, error) from error
    stated = response.headers.get("Content-Length")
    if stated is not None and stated.isdigit() and int(stated) > max_size:
        response.close()
        raise storage.too_large(location, int(stated), max_size)
    try:
        storage.save(response, location, target, max_size)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise storage.storage_error(what, exc) from exc
    return target


def open_output(location: Location, store: Store) -> contextlib.AbstractContextManager[BinaryIO]:
    """As ``storage.open_output``; an S3 OUTPUT through the link when ``store`` is one."""
    if isinstance(store, LinkStore):
        if isinstance(location, S3Object):
            return _link_writer(location, store)
        return storage.open_output(location, no_client)  # a local path: no client needed
    return storage.open_output(location, store)


def no_client() -> NoReturn:
    """The client factory of link mode's local locations, which need none."""
    raise UsageError("link mode has no S3 client: S3 locations go through the job link")


def _link_writer(target: S3Object, store: LinkStore) -> contextlib.AbstractContextManager[BinaryIO]:
    def classify(exc: BaseException) -> Exception:
        if isinstance(exc, SeparatorError):  # the link's own, or the member gone
            return exc
        return storage.storage_error(f"uploading {target}", exc)

    return storage.piped_upload(lambda source: upload(source, target, store), classify)


def upload(source: BinaryIO, target: S3Object, store: LinkStore) -> None:
    """``source`` read to its end, part by part, into the SeparationJob's output; aborted on
    any failure (a read raising among them: the writer failed), so no partial object
    appears. Raises ``MemberGoneError`` when the link completes it no more: the member was
    deleted meanwhile."""
    link, name = store.link, store.name
    upload_id = link.upload_begin(name)
    try:
        parts: list[tuple[int, str]] = []
        while True:
            data = _read_part(source)
            if parts and not data:
                break  # an empty object still has its one (empty) part
            number = len(parts) + 1
            url = link.upload_part(PartRequest(name, upload_id, number))
            parts.append((number, _put(store.http, url, data, target)))
            if len(data) < storage.PART_SIZE:
                break
        gone = link.upload_complete(CompleteRequest(name, upload_id, tuple(parts)))
    except BaseException:
        _abort(link, UploadRef(name, upload_id), target)
        raise
    if gone:  # the link aborted it itself
        raise MemberGoneError(f"SeparationJob {store.member} was deleted")


def _read_part(source: BinaryIO) -> bytes:
    part = bytearray()
    while len(part) < storage.PART_SIZE and (chunk := source.read(storage.PART_SIZE - len(part))):
        part += chunk
    return bytes(part)


def _put(http: urllib3.PoolManager, url: str, data: bytes, target: S3Object) -> str:
    """One part PUT to its presigned URL: its ETag."""
    response = http.request(
        "PUT", url, body=data, headers={"Content-Length": str(len(data))}, retries=STORE_RETRIES
    )
    if response.status != 200:
        raise store_error(response)
    etag = response.headers.get("ETag")
    if not etag:
        raise storage.StoreAnswerError(response.status, "NoETag", f"a part of {target}")
    return str(etag)


def _abort(link: Link, ref: UploadRef, target: S3Object) -> None:
    # The failure itself is the caller's to report; this only says what became of the parts.
    try:
        link.upload_abort(ref)
    except Exception as exc:  # best effort: what stays is the bucket's lifecycle rule's
        log.warning("could not abort the upload of %s: %s", target, exc)
    else:
        log.info("aborted the upload of %s", target)
