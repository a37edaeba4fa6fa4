"""The object store on S3 (any endpoint: MinIO, Ceph RGW, SeaweedFS, AWS) through the minio
client. Uploads are multipart: parts go out as they fill, and an error or an overflow aborts the
upload, so nothing is left under the key."""

import datetime
import logging
import math
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.error import MinioException, S3Error

from stemkube_api.interfaces import (
    ObjectInfo,
    ObjectNotFoundError,
    PartsError,
    TooLargeError,
    UnavailableError,
    UploadedPart,
)
from stemkube_api.settings import Settings

log = logging.getLogger(__name__)

MISSING = ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "NoSuchUpload")
# complete_multipart_upload's answers for parts that are not the ones uploaded.
BAD_PARTS = ("InvalidPart", "InvalidPartOrder", "EntityTooSmall")
MIN_PART_SIZE = 8 * 1024 * 1024  # S3: at least 5 MiB per part but the last
MAX_PARTS = 10_000
CHUNK = 256 * 1024
STORE_ERRORS = (MinioException, urllib3.exceptions.HTTPError, OSError)


def part_size_for(limit: int) -> int:
    """Parts big enough that an upload of ``limit`` bytes fits in S3's 10,000 parts."""
    return max(MIN_PART_SIZE, math.ceil(limit / (MAX_PARTS - 1)))


def _client(endpoint: str, settings: Settings, region: str | None) -> Minio:
    url = urllib.parse.urlsplit(endpoint)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=120),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        maxsize=16,
        cert_reqs="CERT_REQUIRED" if url.scheme == "https" else "CERT_NONE",
        ca_certs=settings.ca_bundle,
    )
    return Minio(
        url.netloc,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        session_token=settings.session_token,
        region=region,
        secure=url.scheme == "https",
        http_client=http,
    )


class S3Writer:
    """A streamed upload: buffers up to one part, so memory stays flat whatever the size.
    Uses the client's multipart calls directly (minio 7.2 names them with an underscore) to
    decide part by part and abort on our own overflow."""

    def __init__(self, s3: Minio, bucket: str, key: str, limit: int, content_type: str) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._limit, self._content_type = limit, content_type
        self._part_size = part_size_for(limit)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Part] = []
        self._size = 0
        self._done = False

    def write(self, data: bytes) -> None:
        if self._done:
            raise RuntimeError("write after commit or abort")
        self._size += len(data)
        if self._size > self._limit:
            self._abort_quietly()
            raise TooLargeError(self._limit)
        self._buffer += data
        try:
            while len(self._buffer) >= self._part_size:
                self._flush(self._part_size)
        except BaseException as exc:
            self._abort_quietly()
            if isinstance(exc, STORE_ERRORS):
                raise UnavailableError(f"storage: cannot store the upload: {exc}") from exc
            raise

    def _flush(self, size: int) -> None:
        part = bytes(self._buffer[:size])
        del self._buffer[:size]
        if self._upload_id is None:
            self._upload_id = self._s3._create_multipart_upload(
                self._bucket, self._key, {"Content-Type": self._content_type}
            )
        number = len(self._parts) + 1
        etag = self._s3._upload_part(self._bucket, self._key, part, None, self._upload_id, number)
        self._parts.append(Part(number, etag))

    def commit(self) -> int:
        if self._done:
            raise RuntimeError("commit after commit or abort")
        try:
            if self._upload_id is None:
                data = bytes(self._buffer)
                self._s3._put_object(
                    self._bucket, self._key, data, {"Content-Type": self._content_type}
                )
            else:
                if self._buffer:
                    self._flush(len(self._buffer))
                self._s3._complete_multipart_upload(
                    self._bucket, self._key, self._upload_id, self._parts
                )
        except BaseException as exc:
            self._abort_quietly()
            if isinstance(exc, STORE_ERRORS):
                raise UnavailableError(f"storage: cannot store the upload: {exc}") from exc
            raise
        self._done = True
        self._buffer = bytearray()
        return self._size

    def _abort_quietly(self) -> None:
        try:
            self.abort()
        except STORE_ERRORS as exc:
            # The bucket's lifecycle rule for incomplete uploads is the last resort.
            log.warning("could not abort the multipart upload of %s: %s", self._key, exc)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                self._s3._abort_multipart_upload(self._bucket, self._key, upload_id)
            except S3Error as exc:
                if exc.code not in MISSING:
                    raise


class S3Reader:
    def __init__(self, response: Any, size: int) -> None:
        self._response = response
        self.size = size

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response.stream(CHUNK)
        finally:
            self.close()

    def close(self) -> None:
        self._response.close()
        self._response.release_conn()


class S3Store:
    def __init__(self, s3: Minio, bucket: str, presigner: Minio | None = None) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._presigner = presigner or s3

    @classmethod
    def from_settings(cls, settings: Settings) -> "S3Store":
        s3 = _client(settings.s3_endpoint, settings, settings.region)
        presigner = None
        if settings.s3_public_endpoint:
            # Presigning is local computation, but the client looks the region up unless told.
            presigner = _client(
                settings.s3_public_endpoint, settings, settings.region or "us-east-1"
            )
        return cls(s3, settings.bucket, presigner)

    @property
    def bucket(self) -> str:
        return self._bucket

    def writer(self, key: str, limit: int, content_type: str) -> S3Writer:
        return S3Writer(self._s3, self._bucket, key, limit, content_type)

    def open(self, key: str, offset: int = 0, length: int | None = None) -> S3Reader:
        try:
            response = self._s3.get_object(self._bucket, key, offset=offset, length=length or 0)
        except S3Error as exc:
            if exc.code in MISSING:
                raise ObjectNotFoundError(key) from None
            raise UnavailableError(f"storage: {exc.code}: {exc.message}") from exc
        except STORE_ERRORS as exc:
            raise UnavailableError(f"storage unreachable: {exc}") from exc
        size = int(response.headers.get("Content-Length") or 0)
        return S3Reader(response, size)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            info = self._s3.stat_object(self._bucket, key)
        except S3Error as exc:
            if exc.code in MISSING:
                return None
            raise UnavailableError(f"storage: {exc.code}: {exc.message}") from exc
        except STORE_ERRORS as exc:
            raise UnavailableError(f"storage unreachable: {exc}") from exc
        return ObjectInfo(key, int(info.size or 0))

    def presigned_url(self, key: str, expires: datetime.timedelta, disposition: str) -> str | None:
        try:
            url: str = self._presigner.presigned_get_object(
                self._bucket,
                key,
                expires=expires,
                response_headers={
                    "response-content-disposition": disposition,
                    "response-content-type": "application/zip",
                },
            )
        except STORE_ERRORS as exc:
            raise UnavailableError(f"storage: cannot presign a URL: {exc}") from exc
        return url

    def delete(self, key: str) -> None:
        try:
            self._s3.remove_object(self._bucket, key)
        except S3Error as exc:
            if exc.code not in MISSING:
                raise UnavailableError(f"storage: {exc.code}: {exc.message}") from exc
        except STORE_ERRORS as exc:
            raise UnavailableError(f"storage unreachable: {exc}") from exc

    def keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (the audio ledger's: one listing, no object read)."""
        try:
            return [
                str(o.object_name)
                for o in self._s3.list_objects(self._bucket, prefix=prefix, recursive=True)
            ]
        except S3Error as exc:
            raise UnavailableError(f"storage: {exc.code}: {exc.message}") from exc
        except STORE_ERRORS as exc:
            raise UnavailableError(f"storage unreachable: {exc}") from exc

    # Direct uploads (MultipartStore): the client PUTs the parts to presigned URLs. The
    # client's multipart calls are minio 7.2's underscore-named ones, as S3Writer's.

    def begin_multipart(self, key: str, content_type: str) -> str:
        try:
            upload_id: str = self._s3._create_multipart_upload(
                self._bucket, key, {"Content-Type": content_type}
            )
        except S3Error as exc:
            raise UnavailableError(f"storage: {exc.code}: {exc.message}") from exc
        except STORE_ERRORS as exc:
            raise UnavailableError(f"storage unreachable: {exc}") from exc
        return upload_id

    def part_url(
        self, key: str, upload_id: str, number: int, expires: datetime.timedelta
    ) -> str | None:
        """S3's UploadPart, presigned (query-string SigV4) on the public endpoint if set."""
        try:
            url: str = self._presigner.get_presigned_url(
                "PUT",
                self._bucket,
                key,
                expires=expires,
                extra_query_params={"uploadId": upload_id, "partNumber": str(number)},
            )
        except STORE_ERRORS as exc:
            raise UnavailableError(f"storage: cannot presign a URL: {exc}") from exc
        return url

    def part_writer(self, upload_id: str, number: int, limit: int) -> Any:
        raise NotImplementedError("S3 parts go to their presigned URLs, not through the API")

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[UploadedPart]) -> None:
        listed = [Part(p.number, p.etag) for p in parts]
        try:
            self._s3._complete_multipart_upload(self._bucket, key, upload_id, listed)
        except S3Error as exc:
            if exc.code in BAD_PARTS:
                raise PartsError(exc.message or exc.code) from None
            if exc.code in MISSING:
                raise ObjectNotFoundError(key) from None
            raise UnavailableError(f"storage: {exc.code}: {exc.message}") from exc
        except STORE_ERRORS as exc:
            raise UnavailableError(f"storage unreachable: {exc}") from exc

    def stale_multiparts(
        self, prefixes: tuple[str, ...], begun_before: datetime.datetime
    ) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        key_marker = upload_marker = None
        try:
            while True:
                # The whole bucket's, filtered here: MinIO lists a prefix's uploads only when
                # the prefix is a whole object name.
                listed = self._s3._list_multipart_uploads(
                    self._bucket, key_marker=key_marker, upload_id_marker=upload_marker
                )
                for upload in listed.uploads:
                    begun, key = upload.initiated_time, str(upload.object_name)
                    if key.startswith(prefixes) and begun is not None and begun < begun_before:
                        found.append((str(upload.object_name), str(upload.upload_id)))
                if not listed.is_truncated:
                    return found
                key_marker, upload_marker = listed.next_key_marker, listed.next_upload_id_marker
        except S3Error as exc:
            raise UnavailableError(f"storage: {exc.code}: {exc.message}") from exc
        except STORE_ERRORS as exc:
            raise UnavailableError(f"storage unreachable: {exc}") from exc

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self._s3._abort_multipart_upload(self._bucket, key, upload_id)
        except S3Error as exc:
            if exc.code not in MISSING:
                raise UnavailableError(f"storage: {exc.code}: {exc.message}") from exc
        except STORE_ERRORS as exc:
            raise UnavailableError(f"storage unreachable: {exc}") from exc

    def check(self) -> None:
        try:
            exists = self._s3.bucket_exists(self._bucket)
        except S3Error as exc:
            raise UnavailableError(f"storage: {exc.code}: {exc.message}") from exc
        except STORE_ERRORS as exc:
            raise UnavailableError(f"storage unreachable: {exc}") from exc
        if not exists:
            raise UnavailableError(f"storage: bucket {self._bucket} does not exist")
