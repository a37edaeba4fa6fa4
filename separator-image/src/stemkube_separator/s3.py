"""S3 settings from the usual AWS variables, and the client built from them.

Any S3 endpoint works (MinIO, Ceph RGW, SeaweedFS, AWS); nothing here is MinIO-specific
except the client library.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio

from stemkube_separator.errors import UsageError

AWS_ENDPOINT = "s3.amazonaws.com"


@dataclass(frozen=True)
class S3Settings:
    endpoint: str  # host[:port]
    secure: bool
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    region: str | None = None
    ca_bundle: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "S3Settings":
        url = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise UsageError(f"S3 endpoint {url!r} is not an http:// or https:// URL")
            if parts.path.strip("/"):
                raise UsageError(f"S3 endpoint {url!r} has a path; give only scheme://host:port")
            endpoint, secure = parts.netloc, parts.scheme == "https"
        else:
            endpoint, secure = AWS_ENDPOINT, True
        return cls(
            endpoint=endpoint,
            secure=secure,
            access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            ca_bundle=env.get("AWS_CA_BUNDLE") or None,
        )


def client(settings: S3Settings) -> Minio:
    # Few retries, short connect timeout: the Job's own retry (exit 75) is the long-term one,
    # and a pod that waits minutes on a dead endpoint only delays it.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=120),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=settings.ca_bundle or os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        session_token=settings.session_token,
        secure=settings.secure,
        region=settings.region,
        http_client=http,
    )
