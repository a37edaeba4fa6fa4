"""Direct upload (``POST /uploads``): the song goes in parts straight to the object store (S3
presigned URLs, or local mode's own part URLs: the same code path), never through the API;
then ``/complete`` checks it and creates the job. For files above ``--direct-upload-threshold``.
"""

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

PART_RETRIES = 3
RETRY_PAUSE = 1.0  # seconds, doubled each retry
READ_CHUNK = 1024 * 1024


def upload_direct(
    api: Any,
    path: Path,
    fields: dict[str, str],
    progress: Any,
    sleep: Callable[[float], None] = time.sleep,
    create_job: bool = True,
) -> dict[str, Any]:
    """The job created from ``path`` uploaded in parts (``api``: the CLI's ``Api``;
    ``fields``: the job's options, as the form's fields). ``create_job`` False: no job, the
    upload completed for a batch (``POST /batches``' ``upload_id`` source): its answer."""
    size = path.stat().st_size
    begun = api.json(
        "POST",
        "/uploads",
        f"upload of {path.name}",
        json={"filename": path.name, "size": size, "options": fields},
    )
    upload_id, part_size = begun["upload_id"], int(begun["part_size"])
    done: list[dict[str, Any]] = []
    sent = 0
    progress.start(f"uploading {path.name}", size)
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0, write=120.0)) as store,
            path.open("rb") as handle,
        ):
            for part in begun["parts"]:
                number = int(part["number"])
                handle.seek((number - 1) * part_size)
                data = handle.read(part_size)
                etag = _put_part(store, part["url"], data, number, api, sleep)
                done.append({"number": number, "etag": etag})
                sent += len(data)
                progress.update(sent)
    except BaseException:
        # Leave nothing behind (the server's sweep would, at the upload's expiry).
        with contextlib.suppress(httpx.HTTPError):
            api.http.delete(f"/uploads/{upload_id}")
        raise
    finally:
        progress.stop()
    created: dict[str, Any] = api.json(
        "POST",
        f"/uploads/{upload_id}/complete",
        f"upload of {path.name}",
        json={"parts": done} if create_job else {"parts": done, "create_job": False},
        timeout=httpx.Timeout(300.0, connect=10.0),
    )
    return created


def _put_part(
    store: httpx.Client,
    url: str,
    data: bytes,
    number: int,
    api: Any,
    sleep: Callable[[float], None],
) -> str:
    """PUTs one part (no API key: the URL is the authorization), retried on a transport
    error or a 5xx; its ETag."""
    pause = RETRY_PAUSE
    for attempt in range(PART_RETRIES + 1):
        try:
            response = store.put(url, content=data)
        except httpx.TransportError as exc:
            if attempt == PART_RETRIES:
                api._fail(exc)
        else:
            if response.status_code < 500 or attempt == PART_RETRIES:
                api.check(response, f"part {number}")
                etag = response.headers.get("etag")
                if not etag:
                    raise RuntimeError(f"part {number}: the store answered no ETag")
                return str(etag)
        sleep(pause)
        pause *= 2
    raise AssertionError("unreachable")
