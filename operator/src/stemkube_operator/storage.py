"""The object storage calls the operator makes: the size of a result, removing a job's
objects when its SeparationJob goes, and the audio quota's ledger entry it leaves (``ledger``).
Plain S3 through the minio client; settings from the usual AWS variables, as the separator
reads them."""

import io
import os
import urllib.parse
from collections.abc import Mapping

import urllib3
from minio import Minio
from minio.error import S3Error

MISSING = ("NoSuchKey", "NoSuchBucket", "NoSuchObject")


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
