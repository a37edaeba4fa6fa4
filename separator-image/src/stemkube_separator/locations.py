"""Where INPUT and OUTPUT live: a local path or an S3 object."""

from dataclasses import dataclass
from pathlib import Path

from stemkube_separator.errors import UsageError


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


Location = Path | S3Object


def parse_location(text: str) -> Location:
    if text.startswith("s3://"):
        bucket, _, key = text[len("s3://") :].partition("/")
        if not bucket or not key or key.endswith("/"):
            raise UsageError(f"{text!r} is not s3://BUCKET/KEY")
        return S3Object(bucket, key)
    if "://" in text:
        raise UsageError(f"{text!r}: only local paths and s3:// URLs are supported")
    return Path(text)
