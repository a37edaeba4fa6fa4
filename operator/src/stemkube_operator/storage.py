"""The object storage calls the operator makes: the size of a result, removing a job's
objects when its SeparationJob goes, the audio quota's ledger entry it leaves (``ledger``),
and, for the job link (``link``), the presigned URLs and the multipart upload through which a
separator pod, which holds no credentials, reads its input and writes its output. Plain S3
through the minio client; settings from the usual AWS variables."""

import datetime
import io
import logging
import os
import urllib.parse
from collections.abc import Mapping, Sequence

import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.error import S3Error

log = logging.getLogger(__name__)

MISSING = ("NoSuchKey", "NoSuchBucket", "NoSuchObject")
# complete_multipart_upload's answers for parts that are not the ones uploaded, or an upload
# that is not (any more) there: the caller's mistake, which another try does not mend.
BAD_PARTS = ("InvalidPart", "InvalidPartOrder", "EntityTooSmall", "NoSuchUpload")


class PartsError(ValueError):
    """S3 refused to complete a multipart upload with these parts; S3's words."""


class Storage:
    def __init__(self, s3: Minio) -> None:
        self._s3 = s3

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Storage":
        env = os.environ if env is None else env
        endpoint = (
            env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
            or "https://s3.amazonaws.com"
        )
        url = urllib.parse.urlsplit(endpoint)
        http = None
        if env.get("AWS_CA_BUNDLE"):
            http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=env["AWS_CA_BUNDLE"])
        return cls(
            Minio(
                url.netloc,
                access_key=env.get("AWS_ACCESS_KEY_ID"),
                secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
                session_token=env.get("AWS_SESSION_TOKEN"),
                region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
                secure=url.scheme == "https",
                http_client=http,
            )
        )

    def size(self, bucket: str, key: str) -> int | None:
        try:
            size = self._s3.stat_object(bucket, key).size
        except S3Error as exc:
            if exc.code in MISSING:
                return None
            raise
        return int(size) if size is not None else None

    def put_empty(self, bucket: str, key: str) -> None:
        self._s3.put_object(bucket, key, io.BytesIO(b""), 0)

    def keys(self, bucket: str, prefix: str) -> list[str]:
        return [
            str(o.object_name) for o in self._s3.list_objects(bucket, prefix=prefix, recursive=True)
        ]

    def delete(self, bucket: str, key: str) -> None:
        """Removing an object that is already gone is success."""
        try:
            self._s3.remove_object(bucket, key)
        except S3Error as exc:
            if exc.code not in MISSING:
                raise

    # The job link's calls. The multipart calls are minio 7.2's underscore-named ones (its
    # public API has no multipart upload of parts sent by someone else), as the API's store.

    def presign_get(self, bucket: str, key: str, seconds: int) -> str:
        url: str = self._s3.presigned_get_object(
            bucket, key, expires=datetime.timedelta(seconds=seconds)
        )
        return url

    def begin_multipart(self, bucket: str, key: str, content_type: str) -> str:
        upload_id: str = self._s3._create_multipart_upload(
            bucket, key, {"Content-Type": content_type}
        )
        return upload_id

    def part_url(self, bucket: str, key: str, upload_id: str, part: int, seconds: int) -> str:
        """S3's UploadPart, presigned (query-string SigV4): the pod PUTs the part to it."""
        url: str = self._s3.get_presigned_url(
            "PUT",
            bucket,
            key,
            expires=datetime.timedelta(seconds=seconds),
            extra_query_params={"uploadId": upload_id, "partNumber": str(part)},
        )
        return url

    def complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        """PartsError when S3 refuses these parts (or knows no such upload)."""
        try:
            self._s3._complete_multipart_upload(
                bucket, key, upload_id, [Part(number, etag) for number, etag in parts]
            )
        except S3Error as exc:
            if exc.code in BAD_PARTS:
                raise PartsError(f"{exc.code}: {exc.message or exc.code}") from None
            raise

    def abort_uploads(self, bucket: str, key: str) -> int:
        """Aborts every unfinished multipart upload of exactly ``key`` (a job link's upload
        whose SeparationJob went meanwhile); how many. A prefix that is a whole key is one
        every store lists (MinIO lists no other)."""
        try:
            listed = self._s3._list_multipart_uploads(bucket, prefix=key, max_uploads=1000)
        except S3Error as exc:
            # A store (or a policy written before the job link) that refuses the listing must
            # not hold up a SeparationJob's deletion: an unfinished upload is only garbage.
            log.warning(
                "cannot list the unfinished uploads of s3://%s/%s: %s", bucket, key, exc.code
            )
            return 0
        found = [u.upload_id for u in listed.uploads if u.object_name == key and u.upload_id]
        for upload_id in found:
            self.abort_multipart(bucket, key, str(upload_id))
        return len(found)

    def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        """Aborting an upload that is already gone (completed, aborted, expired) is success."""
        try:
            self._s3._abort_multipart_upload(bucket, key, upload_id)
        except S3Error as exc:
            if exc.code not in (*MISSING, "NoSuchUpload"):
                raise
